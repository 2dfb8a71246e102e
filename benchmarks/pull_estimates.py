"""Estimate `cache pull` and `runai_streamer` times for the planner's picks, from measured CPU per GiB.

    .venv/bin/python benchmarks/pull_estimates.py --cpu-s-per-gib 1.9 --serial-s-per-gib 1.9

For each model the planner sizes (its default workload and constraints), takes the instance type it picks,
that instance's network bandwidth from the GPU catalog and the planner's own assumption that S3 downloads
reach S3_NETWORK_EFFICIENCY of it, and prints a Markdown table:

- link: the checkpoint over the instance's share of the network, the bound for any downloader;
- ours: the slowest of link, CPU (all vCPUs at --cpu-s-per-gib), the event loops (--serial-s-per-gib:
  the CPU time of a pull's one loop thread per GiB, divided over the worker processes), and the
  connections (x ~90 MB/s per S3 connection, AWS's published per-connection figure), with the
  connections and processes the serving pod passes for that instance (infra/sizing/model_pull.py);
- runai_streamer: one pass over the link (no hash, no local copy), and with TP ranks each reading every
  file, as vLLM's default loader does, TP passes. Its CPU per GiB is not measured here (no GPU).
The inputs are measured in benchmarks/modelcache_pull.py; the outputs are estimates, not measurements.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from infra.sizing.gpus import load_catalog
from infra.sizing.model_pull import S3_BYTES_PER_S_PER_CONNECTION, link_share_bytes_per_s, pull_settings
from infra.sizing.models import load_model
from infra.sizing.plan import Constraints, Workload
from infra.sizing.planner import plan_serving

GiB = 1024**3
MODELS = (
    "meta-llama/Llama-3.1-8B-Instruct",
    "meta-llama/Llama-3.1-70B-Instruct",
    "meta-llama/Llama-3.1-405B-Instruct",
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cpu-s-per-gib", type=float, required=True, help="client CPU s per GiB, measured")
    parser.add_argument(
        "--serial-s-per-gib", type=float, required=True, help="CPU s per GiB of one event-loop thread"
    )
    args = parser.parse_args()
    catalog = load_catalog()
    instances = {it.name: it for it in catalog.instance_types}
    print(
        "| model | instance (planner) | TP | checkpoint GB | network Gb/s | vCPUs | link bound s "
        "| ours s (bound by) | runai_streamer s (1 pass / TP passes) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in MODELS:
        plan = plan_serving(load_model(name), Workload(), Constraints(), catalog)
        instance = instances[plan.instance_type]
        size = plan.weights_total_bytes
        gib = size / GiB
        link = size / link_share_bytes_per_s(instance.network_gbps)
        pull = pull_settings(instance.network_gbps, instance.vcpus)
        bounds = {
            "link": link,
            "CPU": gib * args.cpu_s_per_gib / instance.vcpus,
            "event loops": gib * args.serial_s_per_gib / pull.processes,
            "connections": size / (pull.connections * S3_BYTES_PER_S_PER_CONNECTION),
        }
        bound = max(bounds, key=lambda k: bounds[k])
        tp = plan.tensor_parallel_size
        print(
            f"| {name} | {plan.instance_type} | {tp} | {size / 1e9:.0f} | {instance.network_gbps:g} "
            f"| {instance.vcpus} | {link:.0f} | {bounds[bound]:.0f} ({bound}) | {link:.0f} / {link * tp:.0f} |"
        )


if __name__ == "__main__":
    main()
