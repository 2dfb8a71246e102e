"""Reading `vllm bench serve`'s result table back from its output (the Job's log). Pure.

vLLM 0.33.0 (vllm/benchmarks/serve.py) prints a block that starts with a `=== Serving Benchmark Result ===`
line, then one `label: value` line each (label padded to 40 columns), with `---` section lines such as
`---Time to First Token---` before the latency figures (`Mean TTFT (ms):`, `P99 ITL (ms):`, ...), and ends
with a line of `=`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from infra.errors import UserError

HEADER = "Serving Benchmark Result"
_LINE = re.compile(r"^(?P<label>[^:]+):\s+(?P<value>[-+]?(?:\d+(?:\.\d*)?|\.\d+|inf|nan))\s*$")
_LATENCY = re.compile(r"^(?P<stat>Mean|Median|P\d+(?:\.\d+)?) (?P<metric>TTFT|TPOT|ITL|E2EL) \(ms\)$")

# label in vLLM's table -> field of BenchResult
_FIELDS = {
    "Successful requests": "completed",
    "Failed requests": "failed",
    "Request rate configured (RPS)": "request_rate",
    "Maximum request concurrency": "max_concurrency",
    "Benchmark duration (s)": "duration_s",
    "Total input tokens": "input_tokens",
    "Total generated tokens": "output_tokens",
    "Request throughput (req/s)": "request_throughput",
    "Output token throughput (tok/s)": "output_throughput",
    "Peak output token throughput (tok/s)": "peak_output_throughput",
    "Total token throughput (tok/s)": "total_token_throughput",
}


@dataclass(frozen=True)
class BenchResult:
    completed: int
    failed: int
    duration_s: float
    request_throughput: float
    request_rate: float | None = None  # None: every request at once (rate inf)
    max_concurrency: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    output_throughput: float | None = None
    peak_output_throughput: float | None = None
    total_token_throughput: float | None = None
    # metric (ttft, tpot, itl, e2el) -> statistic (mean, median, p50, p90, p99) -> milliseconds
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)


def parse(output: str) -> BenchResult:
    """The result table in `vllm bench serve`'s output; UserError when the output has none."""
    lines = output.splitlines()
    starts = [i for i, line in enumerate(lines) if HEADER in line and line.strip().startswith("=")]
    if not starts:
        tail = " | ".join(line.strip() for line in lines[-3:] if line.strip())
        raise UserError(f"no '{HEADER}' table in the benchmark's output (it ends: {tail or 'nothing'})")
    values: dict[str, float] = {}
    latency: dict[str, dict[str, float]] = {}
    for line in lines[starts[-1] + 1 :]:
        stripped = line.strip()
        if stripped and set(stripped) == {"="}:
            break
        match = _LINE.match(stripped)
        if not match:
            continue  # section lines (---TTFT---) and anything a later vLLM adds
        label, value = match["label"].strip(), float(match["value"])
        if latency_match := _LATENCY.match(label):
            stat = latency_match["stat"].lower()
            latency.setdefault(latency_match["metric"].lower(), {})[stat] = value
        elif label in _FIELDS:
            values[_FIELDS[label]] = value
    missing = [label for label, name in _FIELDS.items() if name in _REQUIRED and name not in values]
    if missing:
        raise UserError(f"the benchmark's result table has no {', '.join(missing)} line")

    def integer(name: str) -> int | None:
        return None if name not in values else int(values[name])

    def number(name: str) -> float | None:
        value = values.get(name)
        return None if value is None or math.isnan(value) else value

    return BenchResult(
        completed=int(values["completed"]),
        failed=int(values["failed"]),
        duration_s=values["duration_s"],
        request_throughput=values["request_throughput"],
        request_rate=number("request_rate"),
        max_concurrency=number("max_concurrency"),
        input_tokens=integer("input_tokens"),
        output_tokens=integer("output_tokens"),
        output_throughput=number("output_throughput"),
        peak_output_throughput=number("peak_output_throughput"),
        total_token_throughput=number("total_token_throughput"),
        latency_ms=latency,
    )


_REQUIRED = frozenset({"completed", "failed", "duration_s", "request_throughput"})


def cost_per_million_output_tokens(result: BenchResult, cost_per_hour_usd: float | None) -> float | None:
    """What a million generated tokens cost at the measured throughput, on the plan's $/h per replica."""
    if not cost_per_hour_usd or not result.output_throughput:
        return None
    return cost_per_hour_usd / (result.output_throughput * 3600) * 1_000_000


def _percentiles(result: BenchResult, metric: str) -> str:
    stats = result.latency_ms.get(metric) or {}
    shown = [f"{stats[p]:.1f}" if p in stats else "-" for p in ("p50", "p90", "p99")]
    return " / ".join(shown)


def report(result: BenchResult, plan: dict[str, Any], *, title: str) -> str:
    """The measured numbers next to what the planner expected for this stack, as a Markdown table."""
    cost = plan.get("cost_per_hour_usd")
    per_million = cost_per_million_output_tokens(result, cost)
    rate = "all at once" if result.request_rate is None else f"{result.request_rate:g} req/s"
    rows = [
        ("requests", f"{result.completed} succeeded, {result.failed} failed at {rate}", ""),
        ("TTFT p50 / p90 / p99 (ms)", _percentiles(result, "ttft"), ""),
        ("inter-token p50 / p90 / p99 (ms)", _percentiles(result, "itl"), ""),
        ("end-to-end p50 / p90 / p99 (ms)", _percentiles(result, "e2el"), ""),
        ("request throughput (req/s)", f"{result.request_throughput:.2f}", ""),
        (
            "output tokens/s (peak)",
            f"{result.output_throughput or 0:.1f} ({result.peak_output_throughput or 0:.1f})",
            "",
        ),
        (
            "KV cache",
            "",
            f"{plan.get('kv_cache_tokens')} tokens: {plan.get('max_concurrency')} full-length "
            f"({plan.get('max_model_len')}-token) sequences at once",
        ),
        (
            "$ per million output tokens",
            "-" if per_million is None else f"{per_million:.2f}",
            "-" if cost is None else f"${cost:.2f}/h per replica ({plan.get('instance_type')})",
        ),
    ]
    lines = [f"### {title}", "", "| | measured | planner |", "|---|---|---|"]
    lines += [f"| {label} | {measured} | {planned} |" for label, measured, planned in rows]
    return "\n".join(lines) + "\n"
