"""Monitoring and autoscaling objects validate strictly: PodMonitor, PrometheusRule and ScaledObject against
the pinned CRDs, the dashboard ConfigMaps against Kubernetes 1.31-1.33; and the scaling rules they encode."""

from __future__ import annotations

import json

import jsonschema
import kubernetes_validate
import pytest

from infra.errors import UserError
from infra.kubernetes import nodepools
from infra.observability import autoscaling, dashboards, manifests, rules
from infra.versions import KUBERNETES_VERSIONS
from tests.kubernetes.crd_schemas import validate_custom_resource

PROMETHEUS = "http://kube-prometheus-stack-prometheus.monitoring.svc:9090"
DEPLOYMENT = manifests.ScaleTarget("apps/v1", "Deployment", "vllm-r1")
LWS = manifests.ScaleTarget("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet", "vllm-big")
WAKE = {
    "type": "cron",
    "metadata": {"timezone": "UTC", "start": "0 8 * * 1-5", "end": "0 18 * * 1-5", "desiredReplicas": "1"},
}
K8S_VERSIONS = KUBERNETES_VERSIONS


def scaled(min_replicas: int = 1, max_replicas: int = 4, **kwargs) -> dict:
    return manifests.scaled_object(
        namespace="llm",
        revision="r1",
        target=kwargs.pop("target", DEPLOYMENT),
        autoscaling=manifests.Autoscaling(min_replicas, max_replicas, **kwargs),
        prometheus_url=PROMETHEUS,
        pod_regex="vllm-r1-.*",
        extra_triggers=[WAKE] if min_replicas == 0 else [],
    )


@pytest.mark.parametrize(
    "manifest",
    [
        manifests.pod_monitor(namespace="llm", revision="r1", port="http"),
        manifests.prometheus_rule(namespace="monitoring"),
        manifests.prometheus_rule(
            namespace="monitoring", thresholds=rules.AlertThresholds(ttft_p95_slo_seconds=0.5)
        ),
        scaled(),
        scaled(0, 2),
        scaled(2, 8, target=LWS, cold_start_seconds=1500),
        scaled(1, 3, thresholds=autoscaling.ScalingThresholds(gpu_utilization=True)),
    ],
    ids=["podmonitor", "rule", "rule-slo", "scaled", "scaled-to-zero", "scaled-lws", "scaled-gpu"],
)
def test_custom_resources_validate_against_their_crds(manifest: dict) -> None:
    validate_custom_resource(manifest)


def test_a_misspelt_field_fails_the_crd_check() -> None:
    manifest = scaled()
    manifest["spec"]["minReplicas"] = 1
    with pytest.raises(jsonschema.ValidationError):
        validate_custom_resource(manifest)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_dashboard_config_maps_validate(version: str) -> None:
    maps = manifests.dashboard_config_maps(
        namespace="monitoring", dashboards=dashboards.all_dashboards([dashboards.CapacityPlan("r1", 1000, 2)])
    )
    assert len(maps) == 4
    for config_map in maps:
        kubernetes_validate.validate(config_map, version, strict=True)
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        (file_name, text) = next(iter(config_map["data"].items()))
        assert json.loads(text)["panels"], file_name
        assert len(text.encode()) < 1024 * 1024  # a ConfigMap's limit


def test_pod_monitor_relabels_the_pod_label_to_revision() -> None:
    (endpoint,) = manifests.pod_monitor(namespace="llm", revision="r1", port="http")["spec"][
        "podMetricsEndpoints"
    ]
    assert endpoint["relabelings"] == [
        {
            "action": "replace",
            "sourceLabels": ["__meta_kubernetes_pod_label_llm_serving_revision"],
            "targetLabel": "revision",
        }
    ]


def test_scaled_object_triggers_and_fallback() -> None:
    spec = scaled(1, 4)["spec"]
    triggers = {t["name"]: t for t in spec["triggers"]}
    assert set(triggers) == {"vllm-waiting", "vllm-kv-cache"}
    assert triggers["vllm-waiting"]["metadata"]["query"] == (
        'sum(revision:vllm_num_requests_waiting:sum{namespace="llm", revision="r1"})'
    )
    assert triggers["vllm-waiting"]["metadata"]["threshold"] == "5"
    # An empty result is an error with pods running: a broken query cannot silently hold replicas at min.
    assert {t["metadata"]["ignoreNullValues"] for t in triggers.values()} == {"false"}
    assert {t["metricType"] for t in triggers.values()} == {"AverageValue"}  # fallback needs AverageValue
    assert spec["fallback"]["behavior"] == "currentReplicasIfHigher"
    assert spec["minReplicaCount"] == 1 and spec["maxReplicaCount"] == 4


def test_scale_to_zero_ignores_vanished_metrics_and_needs_a_wake_trigger() -> None:
    spec = scaled(0, 2)["spec"]
    assert "fallback" not in spec
    vllm = [t for t in spec["triggers"] if t.get("type") == "prometheus"]
    assert {t["metadata"]["ignoreNullValues"] for t in vllm} == {"true"}
    assert WAKE in spec["triggers"]
    with pytest.raises(UserError, match=r"autoscaling\.minReplicas: minReplicas 0 needs a wake-up trigger"):
        manifests.scaled_object(
            namespace="llm",
            revision="r1",
            target=DEPLOYMENT,
            autoscaling=manifests.Autoscaling(0, 2),
            prometheus_url=PROMETHEUS,
            pod_regex="vllm-r1-.*",
        )


@pytest.mark.parametrize(
    ("cold_start", "up_period", "down_window", "down_period"),
    [(120, 120, 240, 300), (600, 600, 1200, 600), (1500, 1500, 3000, 1500), (3000, 1800, 3600, 1800)],
)
def test_scaling_is_paced_by_the_cold_start_within_hpa_limits(
    cold_start, up_period, down_window, down_period
) -> None:
    behavior = manifests.hpa_behavior(cold_start)
    assert behavior["scaleUp"]["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": up_period}]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == down_window
    assert behavior["scaleDown"]["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": down_period}]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((-1, 2), "autoscaling.minReplicas: must be 0 or more"),
        ((3, 2), r"autoscaling.maxReplicas: must be at least 1 and at least minReplicas \(3\), got 2"),
        ((0, 0), "autoscaling.maxReplicas: must be at least 1"),
    ],
)
def test_bad_replica_bounds_are_refused_by_name(args: tuple[int, int], message: str) -> None:
    with pytest.raises(UserError, match=message):
        manifests.Autoscaling(*args)


def test_gpu_trigger_is_optional_and_per_replica() -> None:
    assert [t.name for t in autoscaling.trigger_queries("llm", "r1", "vllm-r1-.*")] == [
        "vllm-waiting",
        "vllm-kv-cache",
    ]
    gpu = autoscaling.trigger_queries(
        "llm", "r1", "vllm-r1-.*", autoscaling.ScalingThresholds(gpu_utilization=True)
    )
    assert gpu[-1].query == 'sum(avg by (pod) (DCGM_FI_DEV_GPU_UTIL{namespace="llm", pod=~"vllm-r1-.*"}))'
    assert gpu[-1].threshold == 60


@pytest.mark.parametrize(
    ("max_replicas", "gpus_per_replica", "nodes_per_replica", "fits"),
    [
        (4, 1, 1, True),  # 8-GPU nodes, one GPU per replica: 8 per node
        (4, 4, 1, True),  # two TP=4 replicas per node, two nodes
        (5, 4, 1, False),
        (1, 8, 2, True),  # a replica spanning two nodes
        (2, 8, 2, False),
    ],
)
def test_max_replicas_must_fit_the_gpu_pool(max_replicas, gpus_per_replica, nodes_per_replica, fits) -> None:
    """The pool is sized by infra.kubernetes.nodepools.max_nodes for its own max replicas; KEDA's max must fit."""
    pool = manifests.PoolShape(2, 8, gpus_per_replica, nodes_per_replica)
    autoscaling_ = manifests.Autoscaling(1, max_replicas)
    if fits:
        manifests.check_pool_capacity(autoscaling_, pool)
    else:
        with pytest.raises(UserError, match=r"^autoscaling\.maxReplicas: .* GPU pool's 2 node\(s\)"):
            manifests.check_pool_capacity(autoscaling_, pool)


@pytest.mark.parametrize("max_replicas", [1, 2, 3, 5, 8])
@pytest.mark.parametrize(
    ("gpus_per_node", "gpus_per_replica", "nodes_per_replica"), [(1, 1, 1), (8, 4, 1), (8, 8, 2), (4, 1, 1)]
)
def test_a_pool_sized_by_nodepools_always_fits_its_max(
    max_replicas, gpus_per_node, gpus_per_replica, nodes_per_replica
) -> None:
    max_nodes = nodepools.max_nodes(
        gpus_per_node=gpus_per_node,
        gpus_per_replica=gpus_per_replica,
        nodes_per_replica=nodes_per_replica,
        max_replicas=max_replicas,
    )
    pool = manifests.PoolShape(max_nodes, gpus_per_node, gpus_per_replica, nodes_per_replica)
    manifests.check_pool_capacity(manifests.Autoscaling(0, max_replicas), pool)
