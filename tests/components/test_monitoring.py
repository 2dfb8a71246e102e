"""Monitoring under recording mocks: the charts at their pinned versions with our values, a generated Grafana
password kept secret, the dashboards as sidecar ConfigMaps, and per revision a PodMonitor and a
ScaledObject that validate against their CRDs and wait for the charts that bring those CRDs."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pulumi.runtime.sync_await import _sync_await

from infra.components.monitoring import MonitoredRevision, Monitoring, MonitoringArgs
from infra.errors import UserError
from infra.kubernetes.wake import WakeRoute
from infra.observability import charts, dashboards, manifests
from infra.render import REDACTED
from infra.versions import (
    DCGM_EXPORTER_VERSION,
    KEDA_HTTP_ADD_ON_VERSION,
    KEDA_VERSION,
    KUBE_PROMETHEUS_STACK_VERSION,
)
from tests.components.support import Recorded, run
from tests.conftest import shared_path
from tests.kubernetes.crd_schemas import validate_custom_resource

TAGS = {"project": "llm-serving", "stack": "test"}
COMPONENT = "llm-serving:index:Monitoring"
RELEASE = "kubernetes:helm.sh/v3:Release"
CONFIG_MAP = "kubernetes:core/v1:ConfigMap"
SECRET = "kubernetes:core/v1:Secret"
PODMONITOR = "kubernetes:monitoring.coreos.com/v1:PodMonitor"
SCALEDOBJECT = "kubernetes:keda.sh/v1alpha1:ScaledObject"
RULE = "kubernetes:monitoring.coreos.com/v1:PrometheusRule"
ROUTE = "kubernetes:http.keda.sh/v1beta1:InterceptorRoute"
SERVICE = "kubernetes:core/v1:Service"
WAKE = WakeRoute(
    revision="dev",
    namespace="llm",
    readiness_timeout_s=900,
    response_header_timeout_s=600,
    concurrency_per_replica=8,
)


def revision(name: str, min_replicas: int = 1, max_replicas: int = 3, **extra: Any) -> MonitoredRevision:
    return MonitoredRevision(
        revision=name,
        namespace="llm",
        scale_target=manifests.ScaleTarget("apps/v1", "Deployment", f"vllm-{name}"),
        autoscaling=manifests.Autoscaling(min_replicas, max_replicas),
        plan=dashboards.CapacityPlan(name, 432_000, 52.7),
        **extra,
    )


def build(*revisions: MonitoredRevision, holder: dict | None = None) -> Recorded:
    def create() -> Monitoring:
        monitoring = Monitoring("mon", MonitoringArgs(revisions=list(revisions), tags=TAGS))
        if holder is not None:
            holder["m"] = monitoring
        return monitoring

    return run(create)


@pytest.fixture(scope="module")
def recorded() -> Recorded:
    return build(revision("qwen3-8b-a"), revision("dev", 0, 1, wake=WAKE))


def manifest(recorded: Recorded, type_: str, name: str) -> dict[str, Any]:
    """A recorded custom resource as the API server would get it."""
    inputs = recorded.inputs(type_, name)
    return {key: inputs[key] for key in ("apiVersion", "kind", "metadata", "spec")}


def test_children(recorded: Recorded) -> None:
    names = set(recorded.names())
    assert {
        (RELEASE, "mon-stack"),
        (RELEASE, "mon-dcgm-exporter"),
        (RELEASE, "mon-keda"),
        (SECRET, "mon-grafana-admin"),
        (RULE, "mon-rules"),
        (PODMONITOR, "mon-qwen3-8b-a-podmonitor"),
        (SCALEDOBJECT, "mon-qwen3-8b-a-scaledobject"),
        (PODMONITOR, "mon-dev-podmonitor"),
        (SCALEDOBJECT, "mon-dev-scaledobject"),
        (CONFIG_MAP, "mon-dashboard-vllm-capacity"),
    } <= names
    component = recorded.one(COMPONENT, "mon")
    assert all(r.parent == component.urn for r in recorded.registrations if r.type != COMPONENT)
    assert len(names) == len(recorded.registrations)  # names are unique


def test_charts_are_pinned_with_our_values(recorded: Recorded) -> None:
    stack = recorded.inputs(RELEASE, "mon-stack")
    assert (stack["chart"], stack["version"], stack["name"]) == (
        "kube-prometheus-stack",
        KUBE_PROMETHEUS_STACK_VERSION,
        "kube-prometheus-stack",
    )
    assert stack["values"] == charts.kube_prometheus_stack_values(
        charts.PrometheusStorage(), grafana_admin_secret="grafana-admin"
    )
    assert recorded.inputs(RELEASE, "mon-dcgm-exporter")["version"] == DCGM_EXPORTER_VERSION
    assert recorded.inputs(RELEASE, "mon-keda")["version"] == KEDA_VERSION


def test_grafana_password_is_generated_and_secret(recorded: Recorded) -> None:
    secret = recorded.inputs(SECRET, "mon-grafana-admin")
    assert secret["metadata"]["name"] == "grafana-admin"
    # One secret value makes the whole map secret on the wire; its keys stay visible.
    assert secret["stringData"] == {"admin-user": REDACTED, "admin-password": REDACTED}
    holder: dict = {}
    build(revision("a"), holder=holder)
    assert _sync_await(holder["m"].grafana_admin_password.is_secret())
    assert "port-forward svc/kube-prometheus-stack-grafana" in _sync_await(
        holder["m"].grafana_port_forward.future()
    )
    assert _sync_await(holder["m"].grafana_admin_user.future()) == "admin"
    assert (RELEASE, "mon-http-add-on") not in set(build(revision("b")).names())  # nothing at zero


@pytest.mark.parametrize(
    ("type_", "name"),
    [
        (RULE, "mon-rules"),
        (PODMONITOR, "mon-qwen3-8b-a-podmonitor"),
        (SCALEDOBJECT, "mon-qwen3-8b-a-scaledobject"),
        (SCALEDOBJECT, "mon-dev-scaledobject"),
    ],
)
def test_custom_resources_validate_and_wait_for_their_crds(recorded: Recorded, type_: str, name: str) -> None:
    validate_custom_resource(manifest(recorded, type_, name))
    needs = {"mon-stack"} if type_ != SCALEDOBJECT else {"mon-stack", "mon-keda"}
    waits_for = {r.name for r in recorded.registrations if r.urn in recorded.one(type_, name).dependencies}
    assert needs <= waits_for


def test_scaled_objects_scale_each_revision_on_the_stacks_prometheus(recorded: Recorded) -> None:
    spec = manifest(recorded, SCALEDOBJECT, "mon-qwen3-8b-a-scaledobject")["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "vllm-qwen3-8b-a",
    }
    addresses = {t["metadata"]["serverAddress"] for t in spec["triggers"]}
    assert addresses == {"http://kube-prometheus-stack-prometheus.monitoring.svc:9090"}
    assert "wake-on-request" not in {t["name"] for t in spec["triggers"]}
    dev = manifest(recorded, SCALEDOBJECT, "mon-dev-scaledobject")["spec"]
    (wake,) = [t for t in dev["triggers"] if t["name"] == "wake-on-request"]
    assert dev["minReplicaCount"] == 0
    assert wake["metadata"]["activationThreshold"] == "0" and wake["metadata"]["ignoreNullValues"] == "true"
    assert 'route_name="vllm-dev"' in wake["metadata"]["query"]


def test_a_revision_at_zero_gets_the_http_add_on_route_and_a_scraped_interceptor(recorded: Recorded) -> None:
    add_on = recorded.inputs(RELEASE, "mon-http-add-on")
    assert (add_on["chart"], add_on["version"], add_on["namespace"]) == (
        "keda-add-ons-http",
        KEDA_HTTP_ADD_ON_VERSION,
        "llm",  # the workload's namespace: the Ingress names the interceptor's Service there
    )
    assert add_on["values"] == charts.http_add_on_values()
    route = manifest(recorded, ROUTE, "mon-dev-route")
    assert route["spec"]["target"] == {"service": "vllm-dev", "port": 8000}
    assert recorded.inputs(SERVICE, "mon-dev-wake")["metadata"]["name"] == WAKE.service
    monitor = manifest(recorded, PODMONITOR, "mon-interceptor-podmonitor")
    validate_custom_resource(monitor)
    assert monitor["spec"]["podMetricsEndpoints"][0]["portNumber"] == 2223

    def waits_for(type_: str, name: str) -> set[str]:
        dependencies = recorded.one(type_, name).dependencies
        return {r.name for r in recorded.registrations if r.urn in dependencies}

    assert "mon-keda" in waits_for(RELEASE, "mon-http-add-on")  # its chart makes a ScaledObject
    assert "mon-http-add-on" in waits_for(ROUTE, "mon-dev-route")  # which brings the CRD
    # only the revision at zero is routed through the interceptor
    assert (ROUTE, "mon-qwen3-8b-a-route") not in set(recorded.names())
    shared_path("k8s-schemas", "http.keda.sh_interceptorroutes.yaml")  # skips, naming `make schemas`
    validate_custom_resource(route)


def test_dashboards_reach_grafanas_sidecar(recorded: Recorded) -> None:
    config_map = recorded.inputs(CONFIG_MAP, "mon-dashboard-vllm-serving")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["labels"]["llm-serving/stack"] == "test"
    assert json.loads(config_map["data"]["vllm-serving.json"])["uid"] == "llm-serving-vllm"


def test_a_repeated_revision_is_refused_by_name() -> None:
    with pytest.raises(UserError, match=r"^revisions: each revision may appear once; repeated: a$"):
        MonitoringArgs(revisions=[revision("a"), revision("a")])


def test_max_replicas_beyond_the_gpu_pool_is_refused_by_name() -> None:
    with pytest.raises(
        UserError, match=r"^autoscaling\.maxReplicas: 3 replicas need more than the GPU pool's 1"
    ):
        revision(
            "a",
            1,
            3,
            pool=manifests.PoolShape(max_nodes=1, gpus_per_node=1, gpus_per_replica=1, nodes_per_replica=1),
        )
    revision(
        "a",
        1,
        3,
        pool=manifests.PoolShape(max_nodes=3, gpus_per_node=1, gpus_per_replica=1, nodes_per_replica=1),
    )
