"""The `vllm serve` command line, built in one place: where the model comes from (the cache patch), the name
clients send, the plan's layout and memory flags, the port, draining, multi-node wiring, and the user's extra
arguments (checked by `infra.vllm.flags`). The planner produces the numbers; this module owns the flags.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from infra.sizing.plan import ServingPlan
from infra.vllm.flags import check_extra_args

SERVE_PORT = 8000
MULTI_NODE_PORT = 29501  # vLLM's --master-port default, named so the NetworkPolicy and args agree
# SIGTERM makes vLLM stop taking requests and wait this long for in-flight ones (0 would abort them).
SHUTDOWN_TIMEOUT_S = 90
API_KEY_ENV = "VLLM_API_KEY"  # vLLM reads the key from here when --api-key is absent (it always is)


def plan_args(plan: ServingPlan) -> list[str]:
    """The flags the plan decides. Batch limits are pinned so the server profiles what the planner sized."""
    args = [
        "--max-model-len", str(plan.max_model_len),
        "--gpu-memory-utilization", f"{plan.gpu_memory_utilization:g}",
        "--max-num-batched-tokens", str(plan.max_num_batched_tokens),
        "--max-num-seqs", str(plan.max_num_seqs),
        "--dtype", plan.dtype,
    ]  # fmt: skip
    if plan.tensor_parallel_size > 1:
        args += ["--tensor-parallel-size", str(plan.tensor_parallel_size)]
    if plan.pipeline_parallel_size > 1:
        args += ["--pipeline-parallel-size", str(plan.pipeline_parallel_size)]
    if plan.nodes_per_replica > 1:
        # Multi-node without Ray: one process group across the replica's nodes (node_args adds the rank).
        args += ["--distributed-executor-backend", "mp", "--nnodes", str(plan.nodes_per_replica)]
    if plan.quantization_arg:
        args += ["--quantization", plan.quantization_arg]
    if plan.kv_cache_dtype != "auto":
        args += ["--kv-cache-dtype", plan.kv_cache_dtype]
    if plan.lora is not None:
        # The slots the planner charged; which adapters (--lora-modules) comes with the cache patch.
        args += [
            "--enable-lora",
            "--max-loras",
            str(plan.lora.max_loras),
            "--max-lora-rank",
            str(plan.lora.max_lora_rank),
        ]
    if plan.cpu_offload_gib:
        args += ["--cpu-offload-gb", f"{plan.cpu_offload_gib:g}"]
    return args


def serve_args(
    plan: ServingPlan,
    *,
    model_args: Sequence[str],
    served_name: str,
    extra_args: Sequence[str] = (),
    extra_args_key: str = "extraArgs",
) -> list[str]:
    """The whole argument list after `vllm serve`: model source, served name, plan, port, draining, then
    the user's arguments (refused, naming `extra_args_key`, when they misspell a flag or override the plan)."""
    checked = check_extra_args(extra_args, key=extra_args_key)
    return [
        *model_args,
        "--served-model-name", served_name,
        *plan_args(plan),
        "--port", str(SERVE_PORT),
        "--shutdown-timeout", str(SHUTDOWN_TIMEOUT_S),
        *checked,
    ]  # fmt: skip


def node_args(*, rank: str, leader_address: str, leader: bool) -> list[str]:
    """What each node of a multi-node replica adds: its rank and the leader's address (vLLM 0.33's mp
    backend); workers run headless (no API server: no HTTP, /health or /metrics)."""
    args = ["--node-rank", rank, "--master-addr", leader_address, "--master-port", str(MULTI_NODE_PORT)]
    return args if leader else [*args, "--headless"]


def api_key_env(secret_name: str, secret_key: str) -> dict[str, Any]:
    """The API key as vLLM reads it: an environment variable from the Secret, never an argument (arguments
    show in `ps`, in the pod spec and in logs)."""
    return {"name": API_KEY_ENV, "valueFrom": {"secretKeyRef": {"name": secret_name, "key": secret_key}}}
