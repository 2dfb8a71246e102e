"""`python -m infra plan MODEL`: what a model needs and costs, offline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from infra.errors import UserError
from infra.sizing.adapters import AdapterRef, lora_slots
from infra.sizing.models import load_model
from infra.sizing.plan import Constraints, Workload, parse_token_count
from infra.sizing.planner import plan_serving
from infra.sizing.report import plan_tables
from infra.vllm.args import plan_args  # the CLI shows the command line; the planner does not own it


def _split(values: list[str] | None) -> tuple[str, ...]:
    """Repeated options and comma-separated lists both work: --gpu L4 --gpu A10G, --gpu L4,A10G."""
    return tuple(part.strip() for value in values or () for part in value.split(",") if part.strip())


def _adapter(value: str) -> AdapterRef:
    """--lora-adapter org/name[@revision]; a local folder is taken whole."""
    source, _, revision = value.rpartition("@") if "@" in value else (value, "", "main")
    return AdapterRef(source=source, revision=revision or "main", key="--lora-adapter")


def plan_command(
    model: Annotated[
        str,
        typer.Argument(
            help="Hugging Face repo id, modelscope://org/name, catalog model, or local model directory"
        ),
    ],
    config: Annotated[
        Path | None, typer.Option(help="A config.json to size instead of looking MODEL up")
    ] = None,
    revision: Annotated[
        str | None, typer.Option(help="Hub revision when MODEL is fetched from the Hub")
    ] = None,
    gpu: Annotated[
        list[str] | None, typer.Option(help="Allowed GPU (A10G, L4, L40S, A100-80GB, H100...)")
    ] = None,
    gpu_memory_gib: Annotated[
        float | None, typer.Option(help="Plan for a GPU outside the catalog with this total memory")
    ] = None,
    gpu_compute_capability: Annotated[
        float | None,
        typer.Option(
            help="CUDA compute capability of that GPU: 8.0 A100, 8.9 L4/L40S, 9.0 H100 (default 8.9)"
        ),
    ] = None,
    instance_type: Annotated[
        list[str] | None, typer.Option(help="Allowed EC2 instance type or family")
    ] = None,
    tensor_parallel_size: Annotated[
        int | None, typer.Option(help="Fix TP instead of the smallest fit")
    ] = None,
    max_model_len: Annotated[str | None, typer.Option(help="Context to serve: 32768, 32k or 32K")] = None,
    gpu_memory_utilization: Annotated[
        float | None, typer.Option(help="vLLM's budget fraction (0.92)")
    ] = None,
    dtype: Annotated[str | None, typer.Option(help="auto, bfloat16, float16...")] = None,
    quantization: Annotated[
        str | None, typer.Option(help="awq, gptq, fp8, compressed-tensors, bitsandbytes")
    ] = None,
    kv_cache_dtype: Annotated[str, typer.Option(help="auto, fp8, fp8_e4m3, fp8_e5m2")] = "auto",
    cpu_offload_gb: Annotated[
        float, typer.Option(help="GiB of weights per GPU to keep in host memory (vLLM's flag); 0: none")
    ] = 0.0,
    concurrency: Annotated[int, typer.Option(help="Full-length sequences that must fit at once")] = 1,
    replicas: Annotated[
        int, typer.Option(help="Replicas to price: plans are ranked by the whole nodes they need")
    ] = 1,
    capacity_type: Annotated[str, typer.Option(help="on-demand or spot")] = "on-demand",
    params_billion: Annotated[float | None, typer.Option(help="Override the parameter count")] = None,
    lora_adapter: Annotated[
        list[str] | None,
        typer.Option(
            help="A LoRA adapter to serve (Hub id, folder or s3://BUCKET/PREFIX, optionally @REVISION); "
            "repeatable"
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON")] = False,
) -> None:
    """Compute the GPUs, parallelism, vLLM memory settings and cost a model needs."""
    if gpu_memory_gib is not None and (gpu or instance_type):
        raise UserError(
            "use either --gpu-memory-gib or --gpu/--instance-type, not both", key="--gpu-memory-gib"
        )
    architecture = load_model(model, revision=revision, config_path=config)
    if params_billion is not None:
        if params_billion <= 0:
            raise UserError(f"must be positive, got {params_billion}", key="--params-billion")
        architecture = architecture.with_param_override(params_billion)
    workload = Workload(
        max_model_len=parse_token_count(max_model_len, "--max-model-len") if max_model_len else None,
        concurrency=concurrency,
        replicas=replicas,
        dtype=dtype,
        quantization=quantization,
        kv_cache_dtype=kv_cache_dtype,
        gpu_memory_utilization=gpu_memory_utilization,
        lora=lora_slots([_adapter(value) for value in lora_adapter or ()]),
        cpu_offload_gib=cpu_offload_gb,
    )
    if capacity_type not in ("on-demand", "spot"):
        raise UserError(f"{capacity_type!r}: use on-demand or spot", key="--capacity-type")
    constraints = Constraints(
        gpus=_split(gpu),
        instance_types=_split(instance_type),
        tensor_parallel_size=tensor_parallel_size,
        capacity_type=capacity_type,  # type: ignore[arg-type]  # checked just above
        gpu_memory_gib=gpu_memory_gib,
        gpu_compute_capability=gpu_compute_capability,
    )
    plan = plan_serving(architecture, workload, constraints)
    if as_json:
        typer.echo(json.dumps({**plan.to_dict(), "vllm_args": plan_args(plan)}, indent=2))
        return
    console = Console()
    for table in plan_tables(plan, plan_args(plan)):
        console.print(table, crop=False)  # a table wider than the terminal wraps; it is never cut
