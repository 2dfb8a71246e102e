"""Helm values for the monitoring and autoscaling charts (versions in infra/versions.py): the
kube-prometheus-stack (Prometheus, Grafana, kube-state-metrics), NVIDIA's DCGM exporter and KEDA.
Tests check every key against the pinned chart's default values."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from infra.errors import UserError
from infra.kubernetes.nodepools import GPU_PRESENT_LABEL, gpu_toleration
from infra.observability.manifests import DASHBOARD_LABEL, REVISION_POD_LABEL

GRAFANA_ADMIN_USER_KEY = "admin-user"
GRAFANA_ADMIN_PASSWORD_KEY = "admin-password"
# Share of the volume Prometheus may fill before it drops the oldest blocks (the WAL and compaction need
# the rest).
RETENTION_SIZE_SHARE = 0.8


@dataclass(frozen=True)
class PrometheusStorage:
    retention: str = "15d"
    storage_gib: int = 50
    # None: the cluster's default StorageClass.
    storage_class: str | None = None
    scrape_interval: str = "15s"
    # Amazon Managed Service for Prometheus: the workspace's remote-write URL (signed with SigV4).
    remote_write_url: str | None = None
    region: str | None = None

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[0-9]+(ms|s|m|h|d|w|y)", self.retention):
            raise UserError(
                f"must be a Prometheus duration such as 15d, got {self.retention!r}", key="retention"
            )
        if not re.fullmatch(r"[0-9]+(ms|s|m|h)", self.scrape_interval):
            raise UserError(
                f"must be a Prometheus duration such as 15s, got {self.scrape_interval!r}",
                key="scrapeInterval",
            )
        if self.storage_class is not None and not re.fullmatch(
            r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?", self.storage_class
        ):
            raise UserError(
                f"must be a StorageClass name (lower-case letters, digits, '-' and '.'), got "
                f"{self.storage_class!r}",
                key="storageClass",
            )
        if self.storage_gib < 1:
            raise UserError(f"must be at least 1 GiB, got {self.storage_gib}", key="storageGiB")
        if self.remote_write_url and not self.region:
            raise UserError("remote write to Amazon Managed Prometheus needs the AWS region", key="region")


def kube_prometheus_stack_values(storage: PrometheusStorage, *, grafana_admin_secret: str) -> dict[str, Any]:
    volume_spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": f"{storage.storage_gib}Gi"}},
    }
    if storage.storage_class:
        volume_spec["storageClassName"] = storage.storage_class
    prometheus_spec: dict[str, Any] = {
        "retention": storage.retention,
        "retentionSize": f"{int(storage.storage_gib * RETENTION_SIZE_SHARE)}GiB",
        "scrapeInterval": storage.scrape_interval,
        "evaluationInterval": storage.scrape_interval,
        # Select our PodMonitors and PrometheusRule without the chart's `release` label on them.
        "podMonitorSelectorNilUsesHelmValues": False,
        "serviceMonitorSelectorNilUsesHelmValues": False,
        "ruleSelectorNilUsesHelmValues": False,
        "storageSpec": {"volumeClaimTemplate": {"spec": volume_spec}},
    }
    if storage.remote_write_url:
        prometheus_spec["remoteWrite"] = [
            {"url": storage.remote_write_url, "sigv4": {"region": storage.region}}
        ]
    label, label_value = DASHBOARD_LABEL
    return {
        "prometheus": {"prometheusSpec": prometheus_spec},
        "grafana": {
            "admin": {
                "existingSecret": grafana_admin_secret,
                "userKey": GRAFANA_ADMIN_USER_KEY,
                "passwordKey": GRAFANA_ADMIN_PASSWORD_KEY,
            },
            "sidecar": {
                "dashboards": {
                    "enabled": True,
                    "label": label,
                    "labelValue": label_value,
                    "searchNamespace": "ALL",
                }
            },
        },
        # kube-state-metrics sub-chart: expose the serving pods' revision label on kube_pod_labels, which the
        # cold-start and not-ready rules join on.
        "kube-state-metrics": {"metricLabelsAllowlist": [f"pods=[{REVISION_POD_LABEL}]"]},
    }


# Keys of sub-charts whose values files are not in ../shared (kube-prometheus-stack's own values.yaml does
# not list them); everything else is checked against the pinned values.
SUBCHART_KEYS = {("kube-state-metrics", "metricLabelsAllowlist")}


def dcgm_exporter_values(*, scrape_interval: str = "15s") -> dict[str, Any]:
    return {
        # Only GPU nodes have GPUs to export; they carry the nvidia.com/gpu taint.
        "nodeSelector": {GPU_PRESENT_LABEL: "true"},
        "tolerations": [gpu_toleration()],
        "serviceMonitor": {
            "enabled": True,
            "interval": scrape_interval,
            # Keep the exporter's pod/namespace/container labels: they name the pod using the GPU, which the
            # optional GPU-utilization autoscaling trigger selects on.
            "honorLabels": True,
        },
    }


def keda_values() -> dict[str, Any]:
    # Chart defaults (operator, metrics server, admission webhooks); stated so a values key that moved
    # fails the key check.
    return {"webhooks": {"enabled": True}}


def http_add_on_values() -> dict[str, Any]:
    """The KEDA HTTP add-on, for revisions that scale from zero (infra/kubernetes/wake.py): two interceptors
    at least (they are in the request path, so a rollout or a lost node must not cut it), and one scaler (its
    external scaler is not used; the ScaledObjects read the interceptors' metrics from Prometheus)."""
    return {"interceptor": {"replicas": {"min": 2, "max": 10}}, "scaler": {"replicas": 1}}
