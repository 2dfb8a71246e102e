"""The Kubernetes objects of monitoring and autoscaling, as plain dicts: a PodMonitor and a ScaledObject per
vLLM revision, the PrometheusRule, and the dashboards as ConfigMaps for Grafana's sidecar. The Monitoring
component only hands these to Pulumi; tests validate them against the pinned CRDs and Kubernetes schemas.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from infra.errors import UserError
from infra.kubernetes import wake
from infra.observability import rules
from infra.observability.autoscaling import ScalingThresholds, trigger_queries

# Serving pods carry this label; the PodMonitor copies it to every series as `revision`.
REVISION_POD_LABEL = "llm-serving/revision"
# kube-prometheus-stack's Grafana sidecar loads every ConfigMap with this label (chart default).
DASHBOARD_LABEL = ("grafana_dashboard", "1")
MANAGED_BY = {"app.kubernetes.io/managed-by": "pulumi", "app.kubernetes.io/part-of": "llm-serving"}
# HPA limits (autoscaling/v2): stabilization windows and policy periods.
MAX_STABILIZATION_S = 3600
MAX_POLICY_PERIOD_S = 1800


def _meta_label_name(label: str) -> str:
    """Prometheus' service-discovery name of a pod label: every character outside [a-zA-Z0-9_] becomes `_`."""
    return "__meta_kubernetes_pod_label_" + "".join(c if c.isalnum() or c == "_" else "_" for c in label)


def pod_monitor(*, namespace: str, revision: str, port: str, interval: str = "15s") -> dict[str, Any]:
    """Scrape /metrics on the named container port of the revision's pods; label the series `revision`."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {"name": f"vllm-{revision}", "namespace": namespace, "labels": dict(MANAGED_BY)},
        "spec": {
            "selector": {"matchLabels": {REVISION_POD_LABEL: revision}},
            "namespaceSelector": {"matchNames": [namespace]},
            "podMetricsEndpoints": [
                {
                    "port": port,
                    "path": "/metrics",
                    "interval": interval,
                    "relabelings": [
                        {
                            "action": "replace",
                            "sourceLabels": [_meta_label_name(REVISION_POD_LABEL)],
                            "targetLabel": rules.REVISION_LABEL,
                        }
                    ],
                }
            ],
        },
    }


def interceptor_pod_monitor(*, namespace: str, interval: str = "15s") -> dict[str, Any]:
    """Scrape the HTTP add-on's interceptors (in the workload's namespace): their request concurrency per
    route wakes revisions at zero replicas. Their metrics port is not a declared container port, hence
    `portNumber`."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {"name": "http-add-on-interceptor", "namespace": namespace, "labels": dict(MANAGED_BY)},
        "spec": {
            "selector": {"matchLabels": dict(wake.INTERCEPTOR_LABELS)},
            "namespaceSelector": {"matchNames": [namespace]},
            "podMetricsEndpoints": [
                {"portNumber": wake.INTERCEPTOR_METRICS_PORT, "path": "/metrics", "interval": interval}
            ],
        },
    }


def prometheus_rule(
    *, namespace: str, thresholds: rules.AlertThresholds | None = None, name: str = "llm-serving"
) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(MANAGED_BY)},
        "spec": {"groups": rules.rule_groups(thresholds)},
    }


def dashboard_config_maps(*, namespace: str, dashboards: Mapping[str, Mapping[str, object]]) -> list[dict]:
    """One ConfigMap per dashboard (a ConfigMap holds at most 1 MiB), named after its file."""
    key, value = DASHBOARD_LABEL
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "dashboard-" + file_name.removesuffix(".json"),
                "namespace": namespace,
                "labels": {**MANAGED_BY, key: value},
            },
            "data": {file_name: json.dumps(model, sort_keys=True)},
        }
        for file_name, model in sorted(dashboards.items())
    ]


@dataclass(frozen=True)
class ScaleTarget:
    """What KEDA scales: the revision's Deployment, or its LeaderWorkerSet (which has a scale subresource)."""

    api_version: str
    kind: str
    name: str


@dataclass(frozen=True)
class Autoscaling:
    min_replicas: int
    max_replicas: int
    # Pod created to Ready, measured (the cold-start dashboard) or estimated; paces scaling.
    cold_start_seconds: int = 600
    thresholds: ScalingThresholds = field(default_factory=ScalingThresholds)
    polling_interval_seconds: int = 15

    def __post_init__(self) -> None:
        if self.min_replicas < 0:
            raise UserError(f"must be 0 or more, got {self.min_replicas}", key="autoscaling.minReplicas")
        if self.max_replicas < max(1, self.min_replicas):
            raise UserError(
                f"must be at least 1 and at least minReplicas ({self.min_replicas}), got {self.max_replicas}",
                key="autoscaling.maxReplicas",
            )
        if self.cold_start_seconds <= 0:
            raise UserError(
                f"must be positive, got {self.cold_start_seconds}", key="autoscaling.coldStartSeconds"
            )


@dataclass(frozen=True)
class PoolShape:
    """The GPU pool a revision runs on (GpuNodePoolArgs) and the replica's share of it (the plan)."""

    max_nodes: int
    gpus_per_node: int
    gpus_per_replica: int
    nodes_per_replica: int

    def replicas(self) -> int:
        if self.nodes_per_replica > 1:
            return self.max_nodes // self.nodes_per_replica
        return self.max_nodes * max(1, self.gpus_per_node // self.gpus_per_replica)


def check_pool_capacity(autoscaling: Autoscaling, pool: PoolShape) -> None:
    """Refuse a maxReplicas the GPU pool cannot schedule: the extra replicas would sit Pending, and KEDA would
    keep asking for them while the queue grows."""
    if autoscaling.max_replicas > pool.replicas():
        raise UserError(
            f"{autoscaling.max_replicas} replicas need more than the GPU pool's {pool.max_nodes} node(s), which "
            f"fit {pool.replicas()}; lower it or size the pool for it",
            key="autoscaling.maxReplicas",
        )


def hpa_behavior(cold_start_seconds: int) -> dict[str, Any]:
    """Scaling that respects a cold start measured in minutes.

    Up: one replica per cold start (at most HPA's 30-minute policy period). A replica added now serves only
    after it loads, so while it loads the queue still says "more" and an unpaced HPA would keep adding GPUs.
    Down: wait two cold starts (at most HPA's one hour) of lower load before removing one replica at a time,
    because a replica removed in a lull costs a full cold start when the load returns.
    """
    up_period = min(cold_start_seconds, MAX_POLICY_PERIOD_S)
    down_window = min(2 * cold_start_seconds, MAX_STABILIZATION_S)
    return {
        "scaleUp": {
            "stabilizationWindowSeconds": 60,
            "selectPolicy": "Max",
            "policies": [{"type": "Pods", "value": 1, "periodSeconds": up_period}],
        },
        "scaleDown": {
            "stabilizationWindowSeconds": down_window,
            "selectPolicy": "Min",
            "policies": [
                {
                    "type": "Pods",
                    "value": 1,
                    "periodSeconds": min(max(300, cold_start_seconds), MAX_POLICY_PERIOD_S),
                }
            ],
        },
    }


def scaled_object(
    *,
    namespace: str,
    revision: str,
    target: ScaleTarget,
    autoscaling: Autoscaling,
    prometheus_url: str,
    pod_regex: str,
    extra_triggers: Sequence[Mapping[str, object]] = (),
) -> dict[str, Any]:
    """KEDA ScaledObject of one revision on the stack's Prometheus.

    With minReplicas >= 1 an empty query result is an error, so a renamed metric or a missing recording
    rule shows in the ScaledObject's status and KEDA holds the current replicas (fallback) instead of
    quietly scaling on zero. With minReplicas 0 the vLLM series vanish with the last pod, so empty means 0
    there and waking the revision is the job of `extra_triggers` (a signal that exists while no pod runs).
    """
    scale_to_zero = autoscaling.min_replicas == 0
    if scale_to_zero and not extra_triggers:
        raise UserError(
            "minReplicas 0 needs a wake-up trigger that exists while no pod runs; vLLM's metrics vanish with "
            "the last pod",
            key="autoscaling.minReplicas",
        )
    triggers = [
        trigger.keda(prometheus_url, ignore_null_values=scale_to_zero)
        for trigger in trigger_queries(namespace, revision, pod_regex, autoscaling.thresholds)
    ]
    spec: dict[str, Any] = {
        "scaleTargetRef": {"apiVersion": target.api_version, "kind": target.kind, "name": target.name},
        "minReplicaCount": autoscaling.min_replicas,
        "maxReplicaCount": autoscaling.max_replicas,
        "pollingInterval": autoscaling.polling_interval_seconds,
        # Scale to zero only after this long without any trigger active.
        "cooldownPeriod": max(300, autoscaling.cold_start_seconds),
        # Give a new pod its cold start before KEDA may take it away again.
        "initialCooldownPeriod": autoscaling.cold_start_seconds,
        "advanced": {
            "horizontalPodAutoscalerConfig": {"behavior": hpa_behavior(autoscaling.cold_start_seconds)}
        },
        "triggers": [*triggers, *extra_triggers],
    }
    if not scale_to_zero:
        spec["fallback"] = {
            "failureThreshold": 3,
            "replicas": autoscaling.min_replicas,
            "behavior": "currentReplicasIfHigher",
        }
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": f"vllm-{revision}", "namespace": namespace, "labels": dict(MANAGED_BY)},
        "spec": spec,
    }
