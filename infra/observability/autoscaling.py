"""KEDA triggers per revision, on what saturates a vLLM server: its queue and its KV cache.

GPU utilization is only an optional extra trigger: vLLM batches continuously, so the GPU reads near 100%
at moderate load and says little about whether requests wait (llm-d's docs call it unreliable); queue depth
rises exactly when a replica is full. The queries read the shared recording rules, so the autoscaler sees
the numbers the dashboards and alerts show.
"""

from __future__ import annotations

from dataclasses import dataclass

from infra.errors import UserError
from infra.kubernetes.wake import CONCURRENCY_METRIC
from infra.observability import rules as r


@dataclass(frozen=True)
class ScalingThresholds:
    # vllm-project/production-stack scales on num_requests_waiting with threshold 5.
    waiting_per_replica: float = 5
    kv_cache_usage: float = 0.8
    gpu_utilization: bool = False
    gpu_utilization_percent: float = 60

    def __post_init__(self) -> None:
        if self.waiting_per_replica <= 0:
            raise UserError(f"must be positive, got {self.waiting_per_replica}", key="waiting_per_replica")
        if not 0 < self.kv_cache_usage <= 1:
            raise UserError(f"must be a fraction in (0, 1], got {self.kv_cache_usage}", key="kv_cache_usage")
        if not 0 < self.gpu_utilization_percent <= 100:
            raise UserError(
                f"must be a percentage in (0, 100], got {self.gpu_utilization_percent}",
                key="gpu_utilization_percent",
            )


@dataclass(frozen=True)
class Trigger:
    """One KEDA prometheus trigger. Every query is a sum over the revision's pods and the metric type is
    AverageValue, so the HPA asks for ceil(sum / threshold) replicas: queue per replica, KV-cache usage per
    replica, GPU utilization per replica. (KEDA's fallback, which keeps replicas when a query fails, is
    only allowed on AverageValue triggers.)"""

    name: str
    query: str
    threshold: float
    # KEDA wakes a ScaledObject at zero replicas when some trigger's value exceeds this (its default is 0).
    activation_threshold: float | None = None

    def keda(self, server_address: str, *, ignore_null_values: bool) -> dict[str, object]:
        metadata = {
            "serverAddress": server_address,
            "query": self.query,
            "threshold": f"{self.threshold:g}",
            # An empty result scales to 0 when ignored: that is how a renamed metric silently stops
            # autoscaling, so it is an error (KEDA's fallback then applies) unless the revision can
            # legitimately have no pods.
            "ignoreNullValues": "true" if ignore_null_values else "false",
        }
        if self.activation_threshold is not None:
            metadata["activationThreshold"] = f"{self.activation_threshold:g}"
        return {"type": "prometheus", "name": self.name, "metricType": "AverageValue", "metadata": metadata}


def trigger_queries(
    namespace: str, revision: str, pod_regex: str, thresholds: ScalingThresholds | None = None
) -> tuple[Trigger, ...]:
    """The triggers of one revision. `pod_regex` matches its pods' names, which DCGM's pod attribution
    carries (the GPU trigger only)."""
    t = thresholds or ScalingThresholds()
    selector = f'{{namespace="{namespace}", {r.REVISION_LABEL}="{revision}"}}'
    triggers = [
        Trigger("vllm-waiting", f"sum({r.WAITING}{selector})", t.waiting_per_replica),
        Trigger("vllm-kv-cache", f"sum({r.KV_CACHE_USAGE_SUM}{selector})", t.kv_cache_usage),
    ]
    if t.gpu_utilization:
        # A replica's utilization is the mean over its GPUs (tensor parallel ranks), summed over replicas.
        gpus = f'DCGM_FI_DEV_GPU_UTIL{{namespace="{namespace}", pod=~"{pod_regex}"}}'
        triggers.append(Trigger("gpu-utilization", f"sum(avg by (pod) ({gpus}))", t.gpu_utilization_percent))
    return tuple(triggers)


def wake_trigger(route_namespace: str, route_name: str, concurrency_per_replica: int) -> Trigger:
    """The trigger that wakes a revision at zero replicas: requests the HTTP add-on's interceptor holds or
    forwards for its route (infra/kubernetes/wake.py). Active from the first request (above 0); once pods
    run it also asks for a replica per `concurrency_per_replica` requests in flight, next to vLLM's own
    triggers. Its series exist before any request only once the interceptor has seen one, so an empty
    result is 0 (the ScaledObject of a revision at minReplicas 0 ignores empty results)."""
    selector = f'{{route_namespace="{route_namespace}", route_name="{route_name}"}}'
    return Trigger(
        "wake-on-request",
        f"sum({CONCURRENCY_METRIC}{selector})",
        concurrency_per_replica,
        activation_threshold=0,
    )
