"""The Prometheus metric names of the pinned vLLM, keyed by version, and the names vLLM has removed.

Every dashboard, recording rule, alert and autoscaling trigger takes its vLLM names from here, so a vLLM
bump is one new entry in `_BY_VERSION`, checked by tests against ../shared/vllm-<version>/metrics.tsv.
Shipped vLLM dashboards went "No Data" when vLLM renamed metrics (`gpu_cache_usage_perc` ->
`kv_cache_usage_perc`); `REMOVED` lists those names so a test can refuse any reference to them.
"""

from __future__ import annotations

from dataclasses import dataclass

from infra.errors import UserError
from infra.versions import VLLM_VERSION


@dataclass(frozen=True)
class Gauge:
    name: str

    @property
    def series(self) -> tuple[str, ...]:
        return (self.name,)


@dataclass(frozen=True)
class Counter:
    """prometheus_client exposes a counter family `x` as the series `x_total`; PromQL queries that."""

    name: str

    @property
    def total(self) -> str:
        return f"{self.name}_total"

    @property
    def series(self) -> tuple[str, ...]:
        return (self.total,)


@dataclass(frozen=True)
class Histogram:
    name: str

    @property
    def bucket(self) -> str:
        return f"{self.name}_bucket"

    @property
    def sum(self) -> str:
        return f"{self.name}_sum"

    @property
    def count(self) -> str:
        return f"{self.name}_count"

    @property
    def series(self) -> tuple[str, ...]:
        return (self.bucket, self.sum, self.count)


Metric = Gauge | Counter | Histogram


@dataclass(frozen=True)
class VllmMetrics:
    """The vLLM metrics this program reads, each with its type. Labels: `model_name` (the first served
    model name) and `engine` on all of them except `cache_config_info`, which carries `engine` and every
    CacheConfig field (block_size, num_gpu_blocks, ...) as labels, value 1."""

    num_requests_running: Gauge
    num_requests_waiting: Gauge
    kv_cache_usage_perc: Gauge
    cache_config_info: Gauge
    prefix_cache_queries: Counter
    prefix_cache_hits: Counter
    num_preemptions: Counter
    prompt_tokens: Counter
    generation_tokens: Counter
    # Label finished_reason: stop, length, abort, error, repetition.
    request_success: Counter
    time_to_first_token_seconds: Histogram
    inter_token_latency_seconds: Histogram
    e2e_request_latency_seconds: Histogram
    request_queue_time_seconds: Histogram
    request_prefill_time_seconds: Histogram
    request_decode_time_seconds: Histogram

    def all(self) -> tuple[Metric, ...]:
        return tuple(getattr(self, name) for name in self.__dataclass_fields__)


MODEL_NAME_LABEL = "model_name"
FINISHED_REASON_LABEL = "finished_reason"
FINISHED_REASON_ERROR = "error"

_V0_33 = VllmMetrics(
    num_requests_running=Gauge("vllm:num_requests_running"),
    num_requests_waiting=Gauge("vllm:num_requests_waiting"),
    kv_cache_usage_perc=Gauge("vllm:kv_cache_usage_perc"),
    cache_config_info=Gauge("vllm:cache_config_info"),
    prefix_cache_queries=Counter("vllm:prefix_cache_queries"),
    prefix_cache_hits=Counter("vllm:prefix_cache_hits"),
    num_preemptions=Counter("vllm:num_preemptions"),
    prompt_tokens=Counter("vllm:prompt_tokens"),
    generation_tokens=Counter("vllm:generation_tokens"),
    request_success=Counter("vllm:request_success"),
    time_to_first_token_seconds=Histogram("vllm:time_to_first_token_seconds"),
    inter_token_latency_seconds=Histogram("vllm:inter_token_latency_seconds"),
    e2e_request_latency_seconds=Histogram("vllm:e2e_request_latency_seconds"),
    request_queue_time_seconds=Histogram("vllm:request_queue_time_seconds"),
    request_prefill_time_seconds=Histogram("vllm:request_prefill_time_seconds"),
    request_decode_time_seconds=Histogram("vllm:request_decode_time_seconds"),
)

_BY_VERSION = {"0.33.0": _V0_33}

# Renamed or removed before 0.33.0; none is emitted by it (../shared/vllm-0.33.0/README.md (b)).
REMOVED = (
    "vllm:gpu_cache_usage_perc",
    "vllm:gpu_prefix_cache_queries",
    "vllm:gpu_prefix_cache_hits",
    "vllm:time_per_output_token_seconds",
    "vllm:num_requests_swapped",
    "vllm:cpu_cache_usage_perc",
    "vllm:cpu_prefix_cache_hit_rate",
    "vllm:gpu_prefix_cache_hit_rate",
    "vllm:time_in_queue_requests",
    "vllm:model_forward_time_milliseconds",
    "vllm:model_execute_time_milliseconds",
    "vllm:avg_prompt_throughput_toks_per_s",
    "vllm:avg_generation_throughput_toks_per_s",
    "vllm:spec_decode_draft_acceptance_rate",
    "vllm:spec_decode_efficiency",
    "vllm:spec_decode_num_emitted_tokens",
    "vllm:request_params_best_of",
    "vllm:max_num_generation_tokens",
    "vllm:tokens_total",
)


def for_version(version: str = VLLM_VERSION) -> VllmMetrics:
    """The metric names of one vLLM version; an unknown version is refused rather than guessed."""
    try:
        return _BY_VERSION[version]
    except KeyError:
        known = ", ".join(sorted(_BY_VERSION))
        raise UserError(
            f"no metric names recorded for vLLM {version}; known: {known} "
            "(add an entry to infra/vllm/metrics.py checked against ../shared/vllm-<version>/metrics.tsv)",
            key="VLLM_VERSION",
        ) from None


METRICS = for_version()
