"""Recording rules that panels, alerts and the autoscaler share, and the alerts an on-call person acts on.

Series are aggregated per `namespace`, `revision` (the PodMonitor copies it from the pod label
`llm-serving/revision`) and `model_name` (vLLM's own label). Everything here is plain data: the Monitoring
component wraps `rule_groups()` in a PrometheusRule, tests feed the same groups to promtool and to a real
Prometheus.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from infra.errors import UserError
from infra.vllm.metrics import FINISHED_REASON_ERROR, FINISHED_REASON_LABEL, METRICS, Histogram

REVISION_LABEL = "revision"
# kube-state-metrics exposes an allowlisted pod label `llm-serving/revision` as this label on kube_pod_labels
# (its --metric-labels-allowlist=pods=[llm-serving/revision]; characters outside [a-z0-9_] become `_`).
KSM_REVISION_LABEL = "label_llm_serving_revision"
BY_REVISION = "namespace, revision, model_name"
RATE_WINDOW = "5m"
QUANTILES = (0.5, 0.9, 0.95, 0.99)


@dataclass(frozen=True)
class RecordingRule:
    record: str
    expr: str

    def as_dict(self) -> dict[str, str]:
        return {"record": self.record, "expr": self.expr}


@dataclass(frozen=True)
class AlertRule:
    """`signal` is the measurement `expr` compares; while the workload runs it always has a value, so a
    test can prove every alert reads series that exist (an `expr` that never matches is silent either way).
    """

    alert: str
    signal: str
    expr: str
    for_: str
    severity: str
    summary: str
    description: str

    def as_dict(self) -> dict[str, object]:
        return {
            "alert": self.alert,
            "expr": self.expr,
            "for": self.for_,
            "labels": {"severity": self.severity},
            "annotations": {"summary": self.summary, "description": self.description},
        }


def _latency_record(short: str) -> str:
    return f"revision_le:vllm_{short}_bucket:rate{RATE_WINDOW}"


def quantile_record(short: str, quantile: float) -> str:
    """The recorded p50/p90/p95/p99 of a vLLM latency histogram, e.g. `revision:vllm_ttft_seconds:p95`."""
    return f"revision:vllm_{short}:p{round(quantile * 100)}"


# Short names for the latency histograms whose quantiles are recorded.
LATENCY_HISTOGRAMS: dict[str, Histogram] = {
    "ttft_seconds": METRICS.time_to_first_token_seconds,
    "itl_seconds": METRICS.inter_token_latency_seconds,
    "e2e_seconds": METRICS.e2e_request_latency_seconds,
}

RUNNING = "revision:vllm_num_requests_running:sum"
WAITING = "revision:vllm_num_requests_waiting:sum"
KV_CACHE_USAGE_MAX = "revision:vllm_kv_cache_usage:max"
KV_CACHE_USAGE_SUM = "revision:vllm_kv_cache_usage:sum"
PROMPT_TOKENS_RATE = f"revision:vllm_prompt_tokens:rate{RATE_WINDOW}"
GENERATION_TOKENS_RATE = f"revision:vllm_generation_tokens:rate{RATE_WINDOW}"
REQUESTS_RATE = f"revision:vllm_requests:rate{RATE_WINDOW}"
ERROR_RATIO = f"revision:vllm_request_errors:ratio_rate{RATE_WINDOW}"
PREEMPTIONS_RATE = f"revision:vllm_preemptions:rate{RATE_WINDOW}"
PREFIX_CACHE_HIT_RATIO = f"revision:vllm_prefix_cache_hits:ratio_rate{RATE_WINDOW}"
POD_REVISION = "pod:llm_serving_revision:info"
COLD_START_SECONDS = "revision_pod:cold_start_seconds"
POD_AGE_NOT_READY_SECONDS = "revision_pod:age_not_ready_seconds"
GPU_MEMORY_USED_RATIO = "gpu:dcgm_fb_used:ratio"


def _rate(series: str) -> str:
    return f"rate({series}[{RATE_WINDOW}])"


def recording_rules() -> tuple[RecordingRule, ...]:
    m = METRICS
    errors = f'{m.request_success.total}{{{FINISHED_REASON_LABEL}="{FINISHED_REASON_ERROR}"}}'
    rules = [
        RecordingRule(RUNNING, f"sum by ({BY_REVISION}) ({m.num_requests_running.name})"),
        RecordingRule(WAITING, f"sum by ({BY_REVISION}) ({m.num_requests_waiting.name})"),
        RecordingRule(KV_CACHE_USAGE_MAX, f"max by ({BY_REVISION}) ({m.kv_cache_usage_perc.name})"),
        RecordingRule(KV_CACHE_USAGE_SUM, f"sum by ({BY_REVISION}) ({m.kv_cache_usage_perc.name})"),
        RecordingRule(PROMPT_TOKENS_RATE, f"sum by ({BY_REVISION}) ({_rate(m.prompt_tokens.total)})"),
        RecordingRule(GENERATION_TOKENS_RATE, f"sum by ({BY_REVISION}) ({_rate(m.generation_tokens.total)})"),
        RecordingRule(REQUESTS_RATE, f"sum by ({BY_REVISION}) ({_rate(m.request_success.total)})"),
        # No traffic gives 0/0 = NaN, which compares false: an idle model does not alert.
        RecordingRule(ERROR_RATIO, f"sum by ({BY_REVISION}) ({_rate(errors)}) / {REQUESTS_RATE}"),
        RecordingRule(PREEMPTIONS_RATE, f"sum by ({BY_REVISION}) ({_rate(m.num_preemptions.total)})"),
        RecordingRule(
            PREFIX_CACHE_HIT_RATIO,
            f"sum by ({BY_REVISION}) ({_rate(m.prefix_cache_hits.total)})"
            f" / sum by ({BY_REVISION}) ({_rate(m.prefix_cache_queries.total)})",
        ),
    ]
    for short, histogram in LATENCY_HISTOGRAMS.items():
        buckets = _latency_record(short)
        rules.append(RecordingRule(buckets, f"sum by ({BY_REVISION}, le) ({_rate(histogram.bucket)})"))
        rules.extend(
            RecordingRule(quantile_record(short, q), f"histogram_quantile({q}, {buckets})") for q in QUANTILES
        )
    rules += [
        # kube-state-metrics knows pods, not revisions: one series per serving pod with its revision.
        RecordingRule(
            POD_REVISION,
            f"max by (namespace, pod, {REVISION_LABEL}) (label_replace("
            f'kube_pod_labels{{{KSM_REVISION_LABEL}!=""}}, "{REVISION_LABEL}", "$1", "{KSM_REVISION_LABEL}", "(.+)"))',
        ),
        # Cold start: pod created to pod Ready (model download, weight load, compile, graph capture).
        RecordingRule(
            COLD_START_SECONDS,
            "(max by (namespace, pod) (kube_pod_status_ready_time) - max by (namespace, pod) (kube_pod_created))"
            f" * on (namespace, pod) group_left ({REVISION_LABEL}) {POD_REVISION}",
        ),
        # The pod's age while it is not Ready, 0 once it is (condition="false" is 1 exactly when not Ready).
        RecordingRule(
            POD_AGE_NOT_READY_SECONDS,
            "(time() - max by (namespace, pod) (kube_pod_created))"
            ' * on (namespace, pod) max by (namespace, pod) (kube_pod_status_ready{condition="false"})'
            f" * on (namespace, pod) group_left ({REVISION_LABEL}) {POD_REVISION}",
        ),
        # MiB used over MiB on the board, per GPU (DCGM reports both in MiB).
        RecordingRule(
            GPU_MEMORY_USED_RATIO, "DCGM_FI_DEV_FB_USED / (DCGM_FI_DEV_FB_USED + DCGM_FI_DEV_FB_FREE)"
        ),
    ]
    return tuple(rules)


@dataclass(frozen=True)
class AlertThresholds:
    """What counts as trouble. The TTFT SLO comes from stack config; the rest are defaults a stack may
    override. Durations are Prometheus durations ("5m")."""

    ttft_p95_slo_seconds: float = 2.0
    ttft_for: str = "10m"
    kv_cache_usage: float = 0.9
    kv_cache_for: str = "10m"
    queue_waiting: float = 10
    queue_for: str = "5m"
    error_ratio: float = 0.05
    error_for: str = "5m"
    preemptions_per_second: float = 0.1
    preemptions_for: str = "10m"
    engine_down_for: str = "2m"
    # Cold starts take minutes (download, load, compile, graph capture); past this a pod is stuck.
    not_ready_after_seconds: float = 1200
    gpu_memory_used_ratio: float = 0.98
    gpu_memory_for: str = "10m"
    gpu_temperature_celsius: float = 85
    gpu_temperature_for: str = "5m"

    def __post_init__(self) -> None:
        for name in ("kv_cache_usage", "error_ratio", "gpu_memory_used_ratio"):
            value = getattr(self, name)
            if not 0 < value <= 1:
                raise UserError(f"must be a fraction in (0, 1], got {value}", key=name)
        for name in (
            "ttft_p95_slo_seconds",
            "queue_waiting",
            "preemptions_per_second",
            "not_ready_after_seconds",
            "gpu_temperature_celsius",
        ):
            value = getattr(self, name)
            if value <= 0:
                raise UserError(f"must be positive, got {value}", key=name)
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if name.endswith("_for") and not re.fullmatch(r"[0-9]+[smhd]", value):
                raise UserError(f"must be a Prometheus duration such as 5m, got {value!r}", key=name)


def _runbook(text: str) -> str:
    return " ".join(text.split())


def alert_rules(thresholds: AlertThresholds | None = None) -> tuple[AlertRule, ...]:
    t = thresholds or AlertThresholds()
    ttft_p95 = quantile_record("ttft_seconds", 0.95)
    engine_up = f'up{{{REVISION_LABEL}!=""}}'
    return (
        AlertRule(
            "VllmKvCacheNearFull",
            KV_CACHE_USAGE_MAX,
            f"{KV_CACHE_USAGE_MAX} > {t.kv_cache_usage}",
            t.kv_cache_for,
            "warning",
            "vLLM KV cache of {{ $labels.revision }} is {{ $value | humanizePercentage }} full",
            _runbook(f"""A pod of revision {{{{ $labels.revision }}}} has used more than {t.kv_cache_usage:.0%}
                of its KV cache for {t.kv_cache_for}; new requests queue and running ones get preempted.
                Add replicas (raise autoscaling max) or lower max-num-seqs / max-model-len."""),
        ),
        AlertRule(
            "VllmQueueGrowing",
            WAITING,
            f"{WAITING} > {t.queue_waiting} and deriv({WAITING}[{RATE_WINDOW}]) > 0",
            t.queue_for,
            "warning",
            "{{ $value }} requests waiting on {{ $labels.revision }}, and the queue is growing",
            _runbook(f"""More than {t.queue_waiting:g} requests have waited and the queue kept growing for
                {t.queue_for}. Check that the autoscaler is at its maximum or the GPU pool is out of capacity
                (pending pods)."""),
        ),
        AlertRule(
            "VllmTtftP95AboveSlo",
            ttft_p95,
            f"{ttft_p95} > {t.ttft_p95_slo_seconds}",
            t.ttft_for,
            "warning",
            "TTFT p95 of {{ $labels.revision }} is {{ $value | humanizeDuration }}",
            _runbook(f"""Time to first token p95 has been above the {t.ttft_p95_slo_seconds:g} s SLO for {t.ttft_for}.
                Usually queueing (see waiting requests) or long prompts; scale out or cap prompt length."""),
        ),
        AlertRule(
            "VllmErrorRate",
            ERROR_RATIO,
            f"{ERROR_RATIO} > {t.error_ratio}",
            t.error_for,
            "critical",
            "{{ $value | humanizePercentage }} of requests to {{ $labels.revision }} end in error",
            _runbook(f"""More than {t.error_ratio:.0%} of finished requests ended with finished_reason=error
                for {t.error_for}. Read the vLLM pod logs."""),
        ),
        AlertRule(
            "VllmPreempting",
            PREEMPTIONS_RATE,
            f"{PREEMPTIONS_RATE} > {t.preemptions_per_second}",
            t.preemptions_for,
            "warning",
            "{{ $labels.revision }} preempts {{ $value }} requests/s",
            _runbook(f"""vLLM has preempted more than {t.preemptions_per_second:g} requests/s for
                {t.preemptions_for}: the KV cache is too small for the batch, which recomputes work.
                Scale out or lower max-num-seqs."""),
        ),
        AlertRule(
            "VllmEngineDown",
            engine_up,
            f"{engine_up} == 0",
            t.engine_down_for,
            "critical",
            "vLLM pod {{ $labels.pod }} of {{ $labels.revision }} does not answer /metrics",
            _runbook(f"""Prometheus could not scrape the pod for {t.engine_down_for}. vLLM exits when its engine
                dies (/health answers 503 first), so this is a crashed or hung engine; read the pod's logs and
                events."""),
        ),
        AlertRule(
            "VllmPodNotReady",
            POD_AGE_NOT_READY_SECONDS,
            f"{POD_AGE_NOT_READY_SECONDS} > {t.not_ready_after_seconds:g}",
            "1m",
            "warning",
            "{{ $labels.pod }} of {{ $labels.revision }} is not Ready {{ $value | humanizeDuration }} after start",
            _runbook(f"""A serving pod has not become Ready {t.not_ready_after_seconds:g} s after it was
                created. Look for a stuck model download, an image pull, a GPU node that never came up, or a
                start-up that fails and restarts."""),
        ),
        AlertRule(
            "GpuMemoryNearFull",
            GPU_MEMORY_USED_RATIO,
            f"{GPU_MEMORY_USED_RATIO} > {t.gpu_memory_used_ratio}",
            t.gpu_memory_for,
            "warning",
            "GPU {{ $labels.gpu }} on {{ $labels.Hostname }} has {{ $value | humanizePercentage }} memory used",
            _runbook(f"""vLLM reserves --gpu-memory-utilization (0.92 by default) of the GPU up front; more
                than {t.gpu_memory_used_ratio:.0%} used for {t.gpu_memory_for} means another process shares
                the GPU or memory is leaking, and an out-of-memory crash is close."""),
        ),
        AlertRule(
            "GpuTemperatureHigh",
            "DCGM_FI_DEV_GPU_TEMP",
            f"DCGM_FI_DEV_GPU_TEMP > {t.gpu_temperature_celsius:g}",
            t.gpu_temperature_for,
            "warning",
            "GPU {{ $labels.gpu }} on {{ $labels.Hostname }} is at {{ $value }} °C",
            _runbook(f"""The GPU has been above {t.gpu_temperature_celsius:g} °C for {t.gpu_temperature_for};
                it throttles its clocks. Replace the node if it persists."""),
        ),
    )


RECORDING_GROUP = "llm-serving.recording"
ALERT_GROUP = "llm-serving.alerts"


def rule_groups(thresholds: AlertThresholds | None = None) -> list[dict[str, object]]:
    """The rule groups in Prometheus' rule-file format (also the PrometheusRule `spec.groups`)."""
    return [
        {"name": RECORDING_GROUP, "rules": [rule.as_dict() for rule in recording_rules()]},
        {"name": ALERT_GROUP, "rules": [rule.as_dict() for rule in alert_rules(thresholds)]},
    ]
