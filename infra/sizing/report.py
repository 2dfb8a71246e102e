"""How a ServingPlan reads to a person: a rich table for the CLI, plain lines for logs."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table

from infra.sizing.plan import ServingPlan


def _money(value: float | None) -> str:
    return f"${value:,.2f}/h" if value is not None else "unknown"


def summary_rows(plan: ServingPlan, vllm_args: Sequence[str] = ()) -> list[tuple[str, str]]:
    """(label, value) pairs: the plan in the order an operator reads it (with the serve flags it decides,
    when the caller built them: infra/vllm owns the command line, and sizing does not import it)."""
    gib = plan.memory_per_gpu.gib()
    quantization = plan.quantization or "none"
    rows = [
        ("model", f"{plan.model} ({plan.params_billion:g}B parameters)"),
        ("precision", f"{plan.dtype}, quantization {quantization}, KV cache {plan.kv_cache_dtype}"),
        (
            "instance",
            f"{plan.instance_type} ({plan.gpu.count} x {plan.gpu.name} {plan.gpu.memory_gib:g} GiB)",
        ),
        (
            "parallelism",
            f"TP={plan.tensor_parallel_size} PP={plan.pipeline_parallel_size}: {plan.gpus_per_replica} GPU(s) "
            f"on {plan.nodes_per_replica} node(s) per replica",
        ),
        (
            "context",
            f"max_model_len {plan.max_model_len:,}, gpu_memory_utilization {plan.gpu_memory_utilization:g}",
        ),
        (
            "memory per GPU",
            f"budget {gib['budget']} GiB = weights {gib['weights']} + activations {gib['activations']} + "
            f"CUDA graphs {gib['cuda_graphs']} + runtime {gib['other']} + KV cache {gib['kv_cache']}",
        ),
        (
            "KV cache",
            f"{plan.kv_cache_tokens:,} tokens ({plan.kv_bytes_per_token_per_gpu / 1024:g} KiB per token per GPU), "
            f"{plan.max_concurrency:g} x full-length requests"
            + (" (approximate)" if plan.approximate else ""),
        ),
        ("cost", f"{_money(plan.cost_per_hour_usd)} per replica, {plan.capacity_type}"),
        ("cold start", f"~{plan.estimated_cold_start_s:.0f} s (weights from S3, load, warm engine start)"),
    ]
    rows += [("vllm args", " ".join(vllm_args))] if vllm_args else []
    return rows + [("note", note) for note in plan.notes]


def summary_lines(plan: ServingPlan, vllm_args: Sequence[str] = ()) -> list[str]:
    return [f"{label}: {value}" for label, value in summary_rows(plan, vllm_args)]


def plan_tables(plan: ServingPlan, vllm_args: Sequence[str] = ()) -> list[Table]:
    main = Table(title=f"Serving plan for {plan.model}", show_header=False, title_justify="left")
    main.add_column(style="bold")
    main.add_column(overflow="fold")
    for label, value in summary_rows(plan, vllm_args):
        main.add_row(label, value)
    tables = [main]
    if plan.alternatives:
        alternatives = Table(title="Alternatives that also fit (cheapest first)", title_justify="left")
        for column in ("instance", "GPUs", "TP", "PP", "KV tokens", "concurrency", "$/h per replica"):
            alternatives.add_column(column, justify="right" if column != "instance" else "left")
        for alt in plan.alternatives:
            alternatives.add_row(
                alt.instance_type,
                f"{alt.gpus_per_replica} x {alt.gpu_name}",
                str(alt.tensor_parallel_size),
                str(alt.pipeline_parallel_size),
                f"{alt.kv_cache_tokens:,}",
                f"{alt.max_concurrency:g}",
                _money(alt.cost_per_hour_usd),
            )
        tables.append(alternatives)
    return tables
