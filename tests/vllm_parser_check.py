# pyright: reportMissingImports=false
"""Runs inside .venv-vllm (vLLM 0.33.0, CPU torch), not the project venv: parses argument lists with the
parser `vllm serve` (or, for cases with "command": "bench serve", `vllm bench serve`) itself builds, and
prints what it made of each as JSON.

stdin: [{"name": str, "args": [str, ...], "command": "serve" | "bench serve"}, ...]
stdout: {name: {"ok": bool, "error": str, "values": {dest: value}}}
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys

os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")

from vllm.benchmarks.serve import add_cli_args as add_bench_serve_args
from vllm.entrypoints.common.cli_args import make_arg_parser
from vllm.utils.argparse_utils import FlexibleArgumentParser

REPORTED = (
    "model", "model_tag", "tensor_parallel_size", "pipeline_parallel_size", "max_model_len",
    "gpu_memory_utilization", "dtype", "quantization", "kv_cache_dtype", "max_num_seqs",
    "max_num_batched_tokens", "load_format", "served_model_name", "nnodes", "distributed_executor_backend",
    "node_rank", "master_addr", "master_port", "headless", "port", "shutdown_timeout", "enable_prefix_caching",
    "enable_lora", "max_loras", "max_lora_rank", "lora_modules",
    "cpu_offload_gb",
    # vllm bench serve
    "backend", "base_url", "endpoint", "tokenizer", "request_rate", "num_prompts", "seed", "percentile_metrics",
    "metric_percentiles", "dataset_name", "dataset_path", "random_input_len", "random_output_len",
)  # fmt: skip


def bench_serve_parser() -> FlexibleArgumentParser:
    parser = FlexibleArgumentParser(prog="vllm bench serve")
    add_bench_serve_args(parser)
    return parser


PARSERS = {
    "serve": lambda: make_arg_parser(FlexibleArgumentParser(prog="vllm serve")),
    "bench serve": bench_serve_parser,
}


def parse(args: list[str], command: str = "serve") -> dict:
    parser = PARSERS[command]()
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            namespace = parser.parse_args(args)
    except SystemExit:
        return {"ok": False, "error": errors.getvalue().strip().splitlines()[-1:], "values": {}}
    values = {key: getattr(namespace, key) for key in REPORTED if hasattr(namespace, key)}
    return {"ok": True, "error": "", "values": json.loads(json.dumps(values, default=str))}


def main() -> None:
    cases = json.load(sys.stdin)
    json.dump({case["name"]: parse(case["args"], case.get("command", "serve")) for case in cases}, sys.stdout)


if __name__ == "__main__":
    main()
