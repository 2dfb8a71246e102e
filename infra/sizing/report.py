"""How a ServingPlan reads to a person: a rich table for the CLI, plain lines for logs."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table

from infra.sizing.plan import ServingPlan


def _money(value: float | None) -> str:
    return f"${value:,.2f}/h" if value is not None else "unknown"


def _dollars(value: float | None) -> str:
    return f"${value:,.2f}" if value is not None else "unknown"


def _cost(plan: ServingPlan) -> str:
    if plan.stack_cost_per_hour_usd is None:
        return f"unknown (no price for {plan.instance_type}), {plan.capacity_type}"
    spot = " estimated as on-demand x 0.6" if plan.capacity_type == "spot" else ""
    return (
        f"{_money(plan.stack_cost_per_hour_usd)} for {plan.priced_for_replicas} replica(s) on "
        f"{plan.nodes_for_replicas} node(s), {_money(plan.cost_per_hour_usd)} per replica on a full node; "
        f"{plan.capacity_type}{spot}, {plan.price_region} list prices read {plan.prices_read_on}"
    )


def summary_rows(plan: ServingPlan, vllm_args: Sequence[str] = ()) -> list[tuple[str, str]]:
    """(label, value) pairs: the plan in the order an operator reads it (with the serve flags it decides,
    when the caller built them: infra/vllm owns the command line, and sizing does not import it)."""
    gib = plan.memory_per_gpu.gib()
    quantization = plan.quantization or "none"
    offloaded = f" (+ {plan.cpu_offload_gib:g} in host memory)" if plan.cpu_offload_gib else ""
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
            f"budget {gib['budget']} GiB = weights {gib['weights']}{offloaded} + activations {gib['activations']} + "
            f"CUDA graphs {gib['cuda_graphs']} + runtime {gib['other']} + KV cache {gib['kv_cache']}",
        ),
        (
            "KV cache",
            f"{plan.kv_cache_tokens:,} tokens ({plan.kv_bytes_per_token_per_gpu / 1024:g} KiB per token per GPU), "
            f"{plan.max_concurrency:g} x full-length requests"
            + (" (approximate)" if plan.approximate else ""),
        ),
        ("cost", _cost(plan)),
        ("cold start", f"~{plan.estimated_cold_start_s:.0f} s (weights from S3, load, warm engine start)"),
    ]
    rows += [("vllm args", " ".join(vllm_args))] if vllm_args else []
    return rows + [("note", note) for note in plan.notes]


def summary_lines(plan: ServingPlan, vllm_args: Sequence[str] = ()) -> list[str]:
    return [f"{label}: {value}" for label, value in summary_rows(plan, vllm_args)]


def plan_tables(plan: ServingPlan, vllm_args: Sequence[str] = ()) -> list[Table]:
    main = Table(title=f"Serving plan for {plan.model}", show_header=False, title_justify="left")
    main.add_column(style="bold", no_wrap=True)
    main.add_column(overflow="fold")
    for label, value in summary_rows(plan, vllm_args):
        main.add_row(label, value)
    tables = [main]
    if plan.alternatives:
        replicas = f"{plan.priced_for_replicas} replica(s)"
        alternatives = Table(
            title=f"Alternatives that also fit, cheapest for {replicas} first; "
            "then CPU-offload layouts, far slower per token",
            title_justify="left",
        )
        headers = (
            "instance",
            "GPUs",
            "TP x PP",
            "CPU offload",
            "KV tokens",
            "max seqs",
            "$/h total",
            "$/h per replica",
        )
        rows = [
            (
                alt.instance_type,
                f"{alt.gpus_per_replica} x {alt.gpu_name}",
                f"{alt.tensor_parallel_size} x {alt.pipeline_parallel_size}",
                f"{alt.cpu_offload_gib:g} GiB/GPU" if alt.cpu_offload_gib else "-",
                f"{alt.kv_cache_tokens:,}",
                f"{alt.max_concurrency:g}",
                _dollars(alt.stack_cost_per_hour_usd),
                _dollars(alt.cost_per_hour_usd),
            )
            for alt in plan.alternatives
        ]
        for index, header in enumerate(headers):
            # Values are never cut ("g6e.12xlar…"): a narrow terminal wraps the headers instead.
            widest = max([len(row[index]) for row in rows] + [len(word) for word in header.split()])
            alternatives.add_column(header, justify="left" if index == 0 else "right", min_width=widest)
        for row in rows:
            alternatives.add_row(*row)
        tables.append(alternatives)
    return tables
