"""The `vllm serve` flags of the pinned vLLM, and the check that user arguments neither misspell a flag nor
override what the plan or the program decides.

The table (`serve-flags-<version>.tsv`) is written by vLLM's own parser (`make vllm-flags`), because
`pulumi preview` runs without vLLM or torch installed; a test regenerates it and fails on drift.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from infra.errors import UserError
from infra.versions import VLLM_VERSION

TABLE_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Flag:
    dest: str  # argparse's name for it (tensor_parallel_size)
    nargs: str  # argparse's: "0" for switches (--enforce-eager), "1", "?", "+" or "*"
    spellings: tuple[str, ...]  # --tensor-parallel-size, -tp

    @property
    def name(self) -> str:
        return self.spellings[0]


def table_path(version: str = VLLM_VERSION) -> Path:
    return TABLE_DIR / f"serve-flags-{version}.tsv"


@cache
def serve_flags(version: str = VLLM_VERSION) -> dict[str, Flag]:
    """Every spelling of every `vllm serve` option -> its Flag."""
    flags: dict[str, Flag] = {}
    for line in table_path(version).read_text().splitlines():
        dest, nargs, *spellings = line.split("\t")
        flag = Flag(dest=dest, nargs=nargs, spellings=tuple(spellings))
        flags.update({spelling: flag for spelling in spellings})
    return flags


# What the plan decides: overriding one would serve a layout or memory split the planner did not size.
PLANNED = {
    "tensor_parallel_size": "the planner picks it from the GPUs (set gpus or instanceTypes)",
    "pipeline_parallel_size": "the planner adds pipeline stages only across nodes",
    "max_model_len": "set maxModelLen, and the planner sizes the KV cache for it",
    "gpu_memory_utilization": "the planner sizes every GPU's budget from it",
    "max_num_seqs": "the planner profiles activation memory for it",
    "max_num_batched_tokens": "the planner profiles activation memory for it",
    "data_parallel_size": "run more replicas instead (replicas.max)",
    "dtype": "set dtype",
    "quantization": "set quantization",
    "kv_cache_dtype": "set kvCacheDtype",
    "cpu_offload_gb": "set cpuOffloadGb, and the planner checks the node's host memory holds it",
    "enable_lora": "list loraAdapters; the planner sizes their LoRA slots",
    "max_loras": "the planner gives every listed adapter (loraAdapters) a slot",
    "max_lora_rank": "the planner takes it from the adapters' adapter_config.json (loraAdapters)",
    "lora_dtype": "the planner sizes LoRA slots in the model dtype",
    "fully_sharded_loras": "the planner sizes LoRA slots as vLLM shards them by default",
}
# What the program sets: the model's source and name, the port, the API key (only ever from the Secret),
# multi-node wiring, and the metrics every dashboard and autoscaler needs.
OWNED = {
    "model": "the program points vLLM at the model cache",
    "load_format": "set modelLoadMode",
    "model_loader_extra_config": "set modelLoadMode",
    "served_model_name": "set servedModelName",
    "lora_modules": "list loraAdapters; they are pulled from the model cache and served by name",
    "port": "the Service, probes and load balancer use port 8000",
    "host": "vLLM listens on every interface of its pod",
    "uds": "the Service and probes use TCP port 8000",
    "api_key": "the key reaches vLLM only as VLLM_API_KEY from its Secret (set apiKey as a secret)",
    "nnodes": "multi-node layout comes from the plan",
    "node_rank": "the LeaderWorkerSet gives every node its rank",
    "master_addr": "the LeaderWorkerSet gives the leader's address",
    "master_port": "the program sets the multi-node port",
    "headless": "workers of a multi-node replica run headless by themselves",
    "distributed_executor_backend": "multi-node layout comes from the plan",
    "disable_log_stats": "it removes every vllm:* metric the dashboards, alerts and autoscaler read",
    "shutdown_timeout": "the program drains in-flight requests within the pod's termination grace period",
}


def resolve(token: str, flags: dict[str, Flag]) -> Flag | None:
    """The flag a command-line token names, as argparse reads it: exact spelling, underscores for dashes
    (vLLM's parser accepts both), `--flag=value`, or an unambiguous prefix (argparse's abbreviations)."""
    spelling = token.split("=", 1)[0]
    if spelling.startswith("--"):
        spelling = "--" + spelling[2:].replace("_", "-")
    if spelling in flags:
        return flags[spelling]
    if spelling.startswith("--"):
        matches = {flags[s].dest: flags[s] for s in flags if s.startswith(spelling) and s.startswith("--")}
        if len(matches) == 1:
            return next(iter(matches.values()))
    return None


def nearest(token: str, flags: dict[str, Flag]) -> str:
    spelling = token.split("=", 1)[0]
    close = difflib.get_close_matches(spelling, [s for s in flags if s.startswith("--")], n=1, cutoff=0.5)
    return f"; nearest valid flag: {close[0]}" if close else ""


def check_extra_args(args: Sequence[str], *, key: str, version: str = VLLM_VERSION) -> tuple[str, ...]:
    """User arguments for `vllm serve`, checked: every flag exists in vLLM `version` and none overrides what
    the plan or the program decides. Raises UserError naming `key` (the config key that holds them)."""
    flags = serve_flags(version)
    values_left = 0  # how many more values the last flag takes (a large number for lists)
    for token in args:
        if not token.startswith("-") or _is_number(token):
            if values_left == 0:
                raise UserError(
                    f"{token!r} is not a flag and follows no flag that takes a value; write flags as "
                    '["--name", "value"] or ["--name=value"]',
                    key=key,
                )
            values_left -= 1
            continue
        flag = resolve(token, flags)
        if flag is None:
            raise UserError(
                f"{token.split('=', 1)[0]} is not a `vllm serve` flag of vLLM {version}{nearest(token, flags)}",
                key=key,
            )
        reason = PLANNED.get(flag.dest) or OWNED.get(flag.dest)
        if reason:
            raise UserError(f"{flag.name} cannot be set here: {reason}", key=key)
        values_left = 0 if "=" in token else {"0": 0, "1": 1, "?": 1}.get(flag.nargs, len(args))
    return tuple(args)


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True
