"""Scale from zero: the HTTP add-on's route and the Service the load balancer sends a waking revision's
traffic to, validated strictly, with a wait above the cold start."""

from __future__ import annotations

import kubernetes_validate
import pytest

from infra.kubernetes import wake
from infra.versions import KUBERNETES_VERSIONS
from infra.vllm.probes import startup_budget_s
from tests.components.support import make_plan
from tests.conftest import shared_path
from tests.kubernetes.crd_schemas import validate_custom_resource

ROUTE = wake.WakeRoute(
    revision="dev",
    namespace="llm",
    readiness_timeout_s=1200,
    response_header_timeout_s=600,
    concurrency_per_replica=8,
)
LABELS = {"app.kubernetes.io/part-of": "llm-serving"}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_wake_service_validates_and_selects_the_interceptors(version: str) -> None:
    service = wake.wake_service(ROUTE, LABELS)
    kubernetes_validate.validate(service, version, strict=True)
    assert service["metadata"]["name"] == "vllm-dev-wake"
    assert service["spec"]["selector"] == wake.INTERCEPTOR_LABELS
    assert service["spec"]["ports"][0]["port"] == wake.INTERCEPTOR_PROXY_PORT
    # the ALB checks the interceptor's readiness on its admin port; its proxy port only answers routes
    annotations = service["metadata"]["annotations"]
    assert annotations["alb.ingress.kubernetes.io/healthcheck-port"] == "9090"
    assert annotations["alb.ingress.kubernetes.io/healthcheck-path"] == "/readyz"


def test_the_route_sends_the_openai_api_to_the_revisions_service_and_waits_for_it() -> None:
    route = wake.interceptor_route(ROUTE, LABELS)
    spec = route["spec"]
    assert route["metadata"]["name"] == "vllm-dev"  # the metric's route_name the wake trigger selects
    assert spec["target"] == {"service": "vllm-dev", "port": 8000}
    assert spec["rules"] == [{"hosts": ["*"], "paths": [{"value": "/v1"}]}]
    assert spec["timeouts"] == {"readiness": "1200s", "responseHeader": "600s"}
    shared_path("k8s-schemas", "http.keda.sh_interceptorroutes.yaml")  # skips, naming `make schemas`
    validate_custom_resource(route)
    # the CRD's CEL rules, which jsonschema does not evaluate
    assert ("port" in spec["target"]) != ("portName" in spec["target"])
    assert {"concurrency", "requestRate"} & set(spec["scalingMetric"])


def test_a_request_may_wait_for_a_new_node_the_weights_and_vllms_whole_startup_budget() -> None:
    plan = make_plan()
    weights_s = plan.estimated_cold_start_s - plan.estimated_load_s
    budget = wake.wake_budget_s(plan)
    assert budget >= wake.NEW_NODE_AND_IMAGE_S + 2 * weights_s + startup_budget_s(plan)
    huge = make_plan(estimated_cold_start_s=9000.0, estimated_load_s=3000.0)
    assert wake.wake_budget_s(huge) == wake.ALB_MAX_IDLE_TIMEOUT_S  # what an ALB can keep open


@pytest.mark.parametrize(
    "changes",
    [{"readiness_timeout_s": 0}, {"response_header_timeout_s": -1}, {"concurrency_per_replica": 0}],
)
def test_bad_routes_are_refused(changes: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        wake.WakeRoute(**{**ROUTE.__dict__, **changes})
