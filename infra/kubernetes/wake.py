"""Scale from zero: what wakes a revision whose last pod is gone, as plain manifests.

vLLM's metrics vanish with its last pod, so KEDA's vLLM triggers read 0 at zero replicas and cannot wake
it. The signal must come from something that runs while no vLLM pod does and sees the requests: the KEDA
HTTP add-on's interceptor, a proxy put between the load balancer and the revision's Service. It holds each
request while the revision has no ready pod (up to the route's readiness timeout, sized here above a cold
start from zero), and counts it meanwhile in `interceptor_request_concurrency{route_name, route_namespace}`,
which Prometheus scrapes and the revision's ScaledObject reads (activation above 0: one held request wakes
it). The alternatives fail at zero: the ALB's CloudWatch RequestCount counts only responses from a target
(there is none), and production-stack's router answers 503 at once instead of holding the request.

The cost: the first request after an idle period waits a whole cold start (a GPU node, the image, the
weights, vLLM's load), and every request of the revision passes one more proxy. The add-on's proxy does
not flush streamed responses early (Go's ReverseProxy without FlushInterval), so `stream: true` answers
may arrive in larger chunks; the serving path of revisions that keep a replica is unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from infra.kubernetes.model_cache import Manifest
from infra.kubernetes.vllm_workload import workload_name
from infra.sizing.plan import ServingPlan
from infra.vllm.args import SERVE_PORT
from infra.vllm.probes import startup_budget_s

ROUTE_API = "http.keda.sh/v1beta1"
# The add-on's interceptor pods, as its chart labels them, and their ports (chart defaults).
INTERCEPTOR_LABELS = {"app.kubernetes.io/component": "interceptor", "app.kubernetes.io/name": "http-add-on"}
INTERCEPTOR_PROXY_PORT = 8080
INTERCEPTOR_ADMIN_PORT = 9090  # /readyz and /livez
INTERCEPTOR_METRICS_PORT = 2223  # OpenTelemetry's Prometheus exporter; the chart declares no port for it
CONCURRENCY_METRIC = "interceptor_request_concurrency"
# From zero, before vLLM's own startup: Karpenter launches a GPU node (a minute or two) and the node pulls
# the serving image (about 10 GB), then the init container pulls the weights.
NEW_NODE_AND_IMAGE_S = 300
WEIGHTS_PULL_MARGIN = 2.0
ALB_MAX_IDLE_TIMEOUT_S = 4000  # the largest idle timeout an ALB accepts


def wake_budget_s(plan: ServingPlan) -> int:
    """How long a request may wait for a revision at zero: a new node and its image, the weights (with a
    margin over the plan's estimate) and vLLM's whole startup budget (the startup probe's)."""
    weights_pull_s = max(0.0, plan.estimated_cold_start_s - plan.estimated_load_s)
    budget = NEW_NODE_AND_IMAGE_S + math.ceil(WEIGHTS_PULL_MARGIN * weights_pull_s) + startup_budget_s(plan)
    return min(budget, ALB_MAX_IDLE_TIMEOUT_S)


@dataclass(frozen=True)
class WakeRoute:
    """The interceptor's route to one revision at minReplicas 0."""

    revision: str
    namespace: str
    readiness_timeout_s: int  # wake_budget_s(plan): how long a request waits for the first ready pod
    response_header_timeout_s: int  # a long non-streamed completion answers only when it is done
    concurrency_per_replica: int  # requests a replica runs at once (the plan's max_num_seqs)
    # False for a revision without traffic (weight 0): no route through the interceptor, so its wake trigger
    # reads 0 and it stays at zero until a weight sends it requests.
    routed: bool = True

    def __post_init__(self) -> None:
        if self.readiness_timeout_s <= 0 or self.response_header_timeout_s <= 0:
            raise ValueError("the interceptor's timeouts must be positive")
        if self.concurrency_per_replica < 1:
            raise ValueError("concurrency_per_replica must be at least 1")

    @property
    def name(self) -> str:
        """The InterceptorRoute, named like the revision's workload (the metric's route_name)."""
        return workload_name(self.revision)

    @property
    def service(self) -> str:
        """The Service the load balancer sends the revision's traffic to: the interceptor's proxy."""
        return f"{workload_name(self.revision)}-wake"


def interceptor_route(route: WakeRoute, labels: Mapping[str, str]) -> Manifest:
    """Every `/v1` request that reaches the interceptor goes to the revision's Service (the load balancer
    sends the interceptor only this revision's share, so any host matches)."""
    return {
        "apiVersion": ROUTE_API,
        "kind": "InterceptorRoute",
        "metadata": {"name": route.name, "namespace": route.namespace, "labels": dict(labels)},
        "spec": {
            "target": {"service": workload_name(route.revision), "port": SERVE_PORT},
            "rules": [{"hosts": ["*"], "paths": [{"value": "/v1"}]}],
            # Required by the CRD; the add-on's own scaler is not used (the ScaledObject reads Prometheus).
            "scalingMetric": {"concurrency": {"targetValue": route.concurrency_per_replica}},
            "timeouts": {
                "readiness": f"{route.readiness_timeout_s}s",
                "responseHeader": f"{route.response_header_timeout_s}s",
            },
        },
    }


def wake_service(route: WakeRoute, labels: Mapping[str, str]) -> Manifest:
    """The interceptor's proxy under the revision's name, in the workload's namespace, where the Ingress can
    name it. The load balancer checks the interceptor's own readiness (its proxy port answers only routes)."""
    alb = "alb.ingress.kubernetes.io"
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": route.service,
            "namespace": route.namespace,
            "labels": dict(labels),
            "annotations": {
                f"{alb}/healthcheck-port": str(INTERCEPTOR_ADMIN_PORT),
                f"{alb}/healthcheck-path": "/readyz",
            },
        },
        "spec": {
            "selector": dict(INTERCEPTOR_LABELS),
            "ports": [
                {"name": "proxy", "port": INTERCEPTOR_PROXY_PORT, "targetPort": INTERCEPTOR_PROXY_PORT}
            ],
        },
    }
