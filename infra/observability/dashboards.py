"""Grafana dashboards built with grafana-foundation-sdk (typed builders, no hand-written JSON).

Each `*_dashboard()` returns the dashboard model as a JSON-ready dict; the Monitoring component delivers
it as a ConfigMap that Grafana's sidecar loads. vLLM names come from infra.vllm.metrics, shared series from
the recording rules in infra.observability.rules, so panels, alerts and the autoscaler read the same numbers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from grafana_foundation_sdk.builders import dashboard as gd
from grafana_foundation_sdk.builders import prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as gm
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from infra.errors import UserError
from infra.observability import rules as r
from infra.versions import VLLM_VERSION
from infra.vllm.metrics import FINISHED_REASON_LABEL, METRICS, MODEL_NAME_LABEL

# kube-prometheus-stack's Grafana provisions its Prometheus data source with this uid.
DEFAULT_DATASOURCE_UID = "prometheus"
TAGS = ["llm-serving", "vllm"]
WIDTH = 24

REVISION_SELECTOR = f'{MODEL_NAME_LABEL}=~"${MODEL_NAME_LABEL}", {r.REVISION_LABEL}=~"${r.REVISION_LABEL}"'
GPU_SELECTOR = 'Hostname=~"$Hostname", gpu=~"$gpu"'


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""
    table: bool = False


@dataclass(frozen=True)
class Panel:
    title: str
    description: str
    unit: str
    queries: tuple[Query, ...]
    kind: str = "timeseries"  # timeseries | stat | table
    width: int = 12


def _datasource(uid: str) -> gm.DataSourceRef:
    return gm.DataSourceRef(type_val="prometheus", uid=uid)


def _query_builder(query: Query, ref_id: str, datasource: gm.DataSourceRef) -> prometheus.Dataquery:
    builder = prometheus.Dataquery().expr(query.expr).ref_id(ref_id).datasource(datasource)
    if query.table:
        return builder.instant().format(PromQueryFormat.TABLE)
    return builder.range().legend_format(query.legend or "__auto")


def _panel_builder(panel: Panel, datasource: gm.DataSourceRef):
    if panel.kind == "timeseries":
        builder = timeseries.Panel()
    elif panel.kind == "stat":
        builder = stat.Panel()
    elif panel.kind == "table":
        builder = table.Panel()
    else:
        raise ValueError(f"unknown panel kind {panel.kind!r}")
    builder = builder.title(panel.title).description(panel.description).unit(panel.unit)
    builder = builder.datasource(datasource).span(panel.width).height(8)
    for index, query in enumerate(panel.queries):
        builder = builder.with_target(_query_builder(query, chr(ord("A") + index), datasource))
    return builder


def _query_variable(name: str, query: str, datasource: gm.DataSourceRef) -> gd.QueryVariable:
    return (
        gd.QueryVariable(name)
        .label(name)
        .query(query)
        .datasource(datasource)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .refresh(gm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(gm.VariableSort.ALPHABETICAL_ASC)
    )


def _build(
    uid: str,
    title: str,
    description: str,
    variables: Sequence[tuple[str, str]],
    panels: Sequence[Panel],
    datasource_uid: str,
) -> dict[str, object]:
    datasource = _datasource(datasource_uid)
    builder = (
        gd.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(TAGS)
        .timezone("utc")
        .time("now-3h", "now")
        .refresh("30s")
        .readonly()
    )
    for name, query in variables:
        builder = builder.with_variable(_query_variable(name, query, datasource))
    for panel in panels:
        builder = builder.with_panel(_panel_builder(panel, datasource))
    # The SDK's models serialize through its encoder; a JSON round trip gives plain dicts and lists.
    return json.loads(json.dumps(builder.build(), cls=JSONEncoder))


def _quantile_queries(short: str) -> tuple[Query, ...]:
    return tuple(
        Query(f"{r.quantile_record(short, q)}{{{REVISION_SELECTOR}}}", f"p{round(q * 100)} {{{{revision}}}}")
        for q in r.QUANTILES
    )


def _mean_seconds(histogram_name: str) -> str:
    return (
        f"sum by (revision) (rate({histogram_name}_sum{{{REVISION_SELECTOR}}}[$__rate_interval]))"
        f" / sum by (revision) (rate({histogram_name}_count{{{REVISION_SELECTOR}}}[$__rate_interval]))"
    )


def serving_dashboard(datasource_uid: str = DEFAULT_DATASOURCE_UID) -> dict[str, object]:
    m = METRICS
    sel = REVISION_SELECTOR
    panels = (
        Panel(
            "Requests running and waiting",
            "Requests in the running batch and in vLLM's queue, per revision. A queue that stays above zero "
            "means the replicas are saturated; the autoscaler scales on it.",
            "short",
            (
                Query(f"{r.RUNNING}{{{sel}}}", "running {{revision}}"),
                Query(f"{r.WAITING}{{{sel}}}", "waiting {{revision}}"),
            ),
        ),
        Panel(
            "End-to-end request latency",
            "Arrival to last token, p50/p90/p95/p99 over 5 minutes.",
            "s",
            _quantile_queries("e2e_seconds"),
        ),
        Panel(
            "Time to first token",
            "Arrival to first generated token (queueing plus prefill), p50/p90/p95/p99 over 5 minutes; the "
            "TTFT SLO alert reads the p95.",
            "s",
            _quantile_queries("ttft_seconds"),
        ),
        Panel(
            "Inter-token latency",
            "Time between generated tokens while decoding, p50/p90/p95/p99 over 5 minutes.",
            "s",
            _quantile_queries("itl_seconds"),
        ),
        Panel(
            "Tokens per second",
            "Prompt tokens prefilled and tokens generated per second, per revision.",
            "short",
            (
                Query(
                    f"sum by (revision) (rate({m.prompt_tokens.total}{{{sel}}}[$__rate_interval]))",
                    "prompt {{revision}}",
                ),
                Query(
                    f"sum by (revision) (rate({m.generation_tokens.total}{{{sel}}}[$__rate_interval]))",
                    "generation {{revision}}",
                ),
            ),
        ),
        Panel(
            "KV-cache usage",
            "Fraction of each pod's KV-cache blocks in use. Near 1, new requests wait and running ones are "
            "preempted.",
            "percentunit",
            (
                Query(
                    f"max by (revision, pod) ({m.kv_cache_usage_perc.name}{{{sel}}})", "{{revision}} {{pod}}"
                ),
            ),
        ),
        Panel(
            "Prefix-cache hit rate",
            "Share of queried prompt tokens served from the prefix cache over 5 minutes.",
            "percentunit",
            (Query(f"{r.PREFIX_CACHE_HIT_RATIO}{{{sel}}}", "{{revision}}"),),
        ),
        Panel(
            "Preemptions",
            "Requests preempted per second: the KV cache was too small for the batch and work is recomputed.",
            "short",
            (
                Query(
                    f"sum by (revision) (rate({m.num_preemptions.total}{{{sel}}}[$__rate_interval]))",
                    "{{revision}}",
                ),
            ),
        ),
        Panel(
            "Requests by finish reason",
            "Finished requests per second by reason: stop, length, abort (client went away), error, repetition.",
            "reqps",
            (
                Query(
                    f"sum by (revision, {FINISHED_REASON_LABEL}) "
                    f"(rate({m.request_success.total}{{{sel}}}[$__rate_interval]))",
                    f"{{{{revision}}}} {{{{{FINISHED_REASON_LABEL}}}}}",
                ),
                Query(f"{r.ERROR_RATIO}{{{sel}}}", "error ratio {{revision}}"),
            ),
        ),
        Panel(
            "Queue, prefill and decode time",
            "Mean seconds a request spends waiting in the queue, in prefill and in decode.",
            "s",
            (
                Query(_mean_seconds(m.request_queue_time_seconds.name), "queue {{revision}}"),
                Query(_mean_seconds(m.request_prefill_time_seconds.name), "prefill {{revision}}"),
                Query(_mean_seconds(m.request_decode_time_seconds.name), "decode {{revision}}"),
            ),
        ),
    )
    variables = (
        (MODEL_NAME_LABEL, f"label_values({m.num_requests_running.name}, {MODEL_NAME_LABEL})"),
        (
            r.REVISION_LABEL,
            f'label_values({m.num_requests_running.name}{{{MODEL_NAME_LABEL}=~"${MODEL_NAME_LABEL}"}}, '
            f"{r.REVISION_LABEL})",
        ),
    )
    return _build(
        "llm-serving-vllm",
        "vLLM serving",
        f"vLLM {VLLM_VERSION} per model and revision: load, latency, tokens, KV cache, preemptions, outcomes.",
        variables,
        panels,
        datasource_uid,
    )


def gpu_dashboard(datasource_uid: str = DEFAULT_DATASOURCE_UID) -> dict[str, object]:
    legend = "{{Hostname}} GPU {{gpu}}"
    panels = (
        Panel(
            "GPU utilization",
            "Share of time a kernel ran (DCGM_FI_DEV_GPU_UTIL). It sits near 100% whenever vLLM batches, so it "
            "shows load poorly; the autoscaler prefers vLLM's queue.",
            "percent",
            (Query(f"DCGM_FI_DEV_GPU_UTIL{{{GPU_SELECTOR}}}", legend),),
        ),
        Panel(
            "GPU memory used",
            "Framebuffer memory in use. vLLM reserves --gpu-memory-utilization of it at start-up, so a flat "
            "line near that share is normal.",
            "decmbytes",
            (Query(f"DCGM_FI_DEV_FB_USED{{{GPU_SELECTOR}}}", legend),),
        ),
        Panel(
            "GPU power",
            "Board power draw in watts.",
            "watt",
            (Query(f"DCGM_FI_DEV_POWER_USAGE{{{GPU_SELECTOR}}}", legend),),
        ),
        Panel(
            "GPU temperature",
            "GPU temperature; the GpuTemperatureHigh alert fires above its threshold.",
            "celsius",
            (Query(f"DCGM_FI_DEV_GPU_TEMP{{{GPU_SELECTOR}}}", legend),),
        ),
    )
    variables = (
        ("Hostname", "label_values(DCGM_FI_DEV_GPU_UTIL, Hostname)"),
        ("gpu", 'label_values(DCGM_FI_DEV_GPU_UTIL{Hostname=~"$Hostname"}, gpu)'),
    )
    return _build(
        "llm-serving-gpu",
        "GPUs",
        "Per node and GPU, from the NVIDIA DCGM exporter.",
        variables,
        panels,
        datasource_uid,
    )


def cold_start_dashboard(datasource_uid: str = DEFAULT_DATASOURCE_UID) -> dict[str, object]:
    sel = f'{r.REVISION_LABEL}=~"${r.REVISION_LABEL}"'
    panels = (
        Panel(
            "Cold start per pod",
            "Seconds from pod creation to Ready (image pull, model download, weight load, compile, CUDA "
            "graphs), from kube-state-metrics.",
            "s",
            (Query(f"{r.COLD_START_SECONDS}{{{sel}}}", "{{revision}} {{pod}}"),),
            width=24,
        ),
        Panel(
            "Slowest cold start per revision",
            "The longest creation-to-Ready time among the revision's current pods.",
            "s",
            (Query(f"max by (revision) ({r.COLD_START_SECONDS}{{{sel}}})", "{{revision}}"),),
            kind="stat",
        ),
        Panel(
            "Pods not Ready yet",
            "Age of serving pods that are not Ready; 0 once Ready. VllmPodNotReady fires past its threshold.",
            "s",
            (Query(f"{r.POD_AGE_NOT_READY_SECONDS}{{{sel}}}", "{{revision}} {{pod}}"),),
        ),
        Panel(
            "Cold starts",
            "Every current serving pod with its cold start.",
            "s",
            (Query(f"{r.COLD_START_SECONDS}{{{sel}}}", table=True),),
            kind="table",
            width=24,
        ),
    )
    variables = ((r.REVISION_LABEL, f"label_values({r.POD_REVISION}, {r.REVISION_LABEL})"),)
    return _build(
        "llm-serving-cold-start",
        "vLLM cold start",
        "Pod created to Ready, per revision.",
        variables,
        panels,
        datasource_uid,
    )


@dataclass(frozen=True)
class CapacityPlan:
    """What the planner promised for one revision: KV-cache tokens and requests of max-model-len that fit
    at once (vLLM's "Maximum concurrency")."""

    revision: str
    kv_cache_tokens: int
    max_concurrency: float

    def __post_init__(self) -> None:
        if self.kv_cache_tokens <= 0:
            raise UserError(f"must be positive, got {self.kv_cache_tokens}", key="kv_cache_tokens")
        if self.max_concurrency <= 0:
            raise UserError(f"must be positive, got {self.max_concurrency}", key="max_concurrency")

    def constant(self, value: float) -> str:
        """A plan number as a series labelled with the revision, so it plots beside the observed one."""
        return f'label_replace(vector({value}), "{r.REVISION_LABEL}", "{self.revision}", "", "")'


def capacity_dashboard(
    plans: Sequence[CapacityPlan], datasource_uid: str = DEFAULT_DATASOURCE_UID
) -> dict[str, object]:
    if not plans:
        raise UserError("needs at least one revision's plan", key="plans")
    m = METRICS
    sel = f'{r.REVISION_LABEL}=~"${r.REVISION_LABEL}"'
    panels = (
        Panel(
            "Running requests against the planned concurrency",
            "Requests in the running batch per pod, next to the planner's maximum concurrency at full "
            "context length (more fit when requests are shorter).",
            "short",
            (
                Query(
                    f"max by (revision) ({m.num_requests_running.name}{{{sel}}})",
                    "running (busiest pod) {{revision}}",
                ),
                *(Query(plan.constant(plan.max_concurrency), "planned {{revision}}") for plan in plans),
            ),
        ),
        Panel(
            "Planned KV-cache tokens",
            "KV-cache tokens per replica the planner sized for; compare with num_gpu_blocks x block_size below.",
            "short",
            tuple(Query(plan.constant(plan.kv_cache_tokens), "{{revision}}") for plan in plans),
            kind="stat",
        ),
        Panel(
            "KV-cache usage",
            "Highest KV-cache usage among each revision's pods.",
            "percentunit",
            (Query(f"{r.KV_CACHE_USAGE_MAX}{{{sel}}}", "{{revision}}"),),
        ),
        Panel(
            "KV-cache sizing vLLM reported",
            "vllm:cache_config_info: vLLM's start-up KV sizing per pod (num_gpu_blocks, block_size, "
            "gpu_memory_utilization, ...), to set against the plan.",
            "short",
            (Query(f"{m.cache_config_info.name}{{{sel}}}", table=True),),
            kind="table",
            width=24,
        ),
    )
    variables = ((r.REVISION_LABEL, f"label_values({m.cache_config_info.name}, {r.REVISION_LABEL})"),)
    return _build(
        "llm-serving-capacity",
        "vLLM capacity: plan and reality",
        "The planner's KV-cache tokens and concurrency next to what vLLM reports and serves.",
        variables,
        panels,
        datasource_uid,
    )


def all_dashboards(
    plans: Sequence[CapacityPlan], datasource_uid: str = DEFAULT_DATASOURCE_UID
) -> dict[str, dict[str, object]]:
    """Every dashboard by file name (the ConfigMap key Grafana's sidecar writes to disk). The capacity one
    needs a plan; the others are useful before any model is served."""
    boards = {
        "vllm-serving.json": serving_dashboard(datasource_uid),
        "gpu.json": gpu_dashboard(datasource_uid),
        "vllm-cold-start.json": cold_start_dashboard(datasource_uid),
    }
    if plans:
        boards["vllm-capacity.json"] = capacity_dashboard(plans, datasource_uid)
    return boards


def panel_expressions(model: dict[str, object]) -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) for every query of every panel in a dashboard model."""
    panels = model.get("panels", [])
    assert isinstance(panels, list)
    for panel in panels:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]


def variable_queries(model: dict[str, object]) -> Iterator[tuple[str, str]]:
    """(variable name, `label_values(...)` query) for every query variable of a dashboard model."""
    templating = model.get("templating", {})
    assert isinstance(templating, dict)
    for variable in templating.get("list", []):
        yield variable["name"], variable["query"]
