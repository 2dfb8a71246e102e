"""The stack's one endpoint, as plain manifests: an ALB Ingress that splits `/v1/*` between the revisions'
Services by weight, and the NetworkPolicy that lets only the load balancer and the metrics scraper reach
vLLM's port. A revision that scales from zero is reached through the KEDA HTTP add-on's interceptor instead
(ALB -> interceptor -> the revision's Service; infra/kubernetes/wake.py), which the policy then admits.

Why an Ingress with weighted target groups and not a Gateway API HTTPRoute: the AWS Load Balancer
Controller has forwarded to weighted target groups from Ingress annotations for years (its
`WeightedTargetGroups` gate is on by default), it needs no extra CRDs, and every cluster that runs the
controller supports it; its Gateway API support is off by default through v3.1 and no release calls it
generally available yet. The split is the ALB's own (a request lands on one revision by weight), and
promotion is a weight change that the controller applies in place.

Only `/v1/*` (the OpenAI API, which vLLM guards with the API key) goes through the load balancer: vLLM
answers `/metrics`, `/health`, `/tokenize` and `/invocations` without a key, so those stay inside the
cluster.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from infra.kubernetes.model_cache import Manifest
from infra.kubernetes.vllm_workload import APP, PRESTOP_PAUSE_S, SHUTDOWN_TIMEOUT_S
from infra.kubernetes.wake import INTERCEPTOR_LABELS
from infra.vllm.args import MULTI_NODE_PORT, SERVE_PORT

INGRESS_CLASS = "alb"  # the IngressClass the controller's chart creates
ACTION = "vllm-revisions"  # the weighted forward action's name (alb.ingress.kubernetes.io/actions.<name>)
ALB = "alb.ingress.kubernetes.io"
# Long generations stream for minutes; the ALB's default idle timeout (60 s) would cut a slow
# non-streamed completion.
IDLE_TIMEOUT_S = 600
# The ALB keeps a draining pod's connections this long: the preStop pause plus vLLM's own drain.
DEREGISTRATION_DELAY_S = PRESTOP_PAUSE_S + SHUTDOWN_TIMEOUT_S
TLS_POLICY = "ELBSecurityPolicy-TLS13-1-2-2021-06"
MONITORING_NAMESPACE = "monitoring"  # where the stack's Prometheus runs and scrapes from
PROMETHEUS_POD_LABELS = {"app.kubernetes.io/name": "prometheus"}


@dataclass(frozen=True)
class Backend:
    """One revision behind the endpoint: its Service and its share of the traffic."""

    service: str
    weight: int
    port: int = SERVE_PORT  # vLLM's; the interceptor's proxy port for a revision that scales from zero


@dataclass(frozen=True)
class EndpointSpec:
    name: str
    namespace: str
    backends: tuple[Backend, ...]
    scheme: Literal["internal", "internet-facing"] = "internal"
    certificate_arn: str | None = None
    allowed_cidrs: tuple[str, ...] = ()
    # Source addresses of the load balancer's nodes (its subnets), which the NetworkPolicy admits.
    load_balancer_cidrs: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    # Longer for a stack with a revision at zero: the interceptor holds its first request through a cold start
    # and the load balancer must not cut that silent connection.
    idle_timeout_s: int = IDLE_TIMEOUT_S
    wakes_from_zero: bool = False  # some backend is the HTTP add-on's interceptor (infra/kubernetes/wake.py)

    def __post_init__(self) -> None:
        if not self.backends:
            raise ValueError("an endpoint needs at least one backend")
        if sum(b.weight for b in self.backends) != 100 or any(b.weight < 0 for b in self.backends):
            raise ValueError("backend weights must be 0 or more and sum to 100")
        if self.scheme == "internet-facing" and not (self.certificate_arn and self.allowed_cidrs):
            raise ValueError("an internet-facing endpoint needs a certificate and allowed CIDRs")


def forward_action(backends: Sequence[Backend]) -> dict[str, Any]:
    """The ALB forward action that splits traffic by weight (a weight of 0 keeps a revision registered and
    healthy-checked, without traffic)."""
    return {
        "type": "forward",
        "forwardConfig": {
            "targetGroups": [
                {"serviceName": b.service, "servicePort": str(b.port), "weight": b.weight} for b in backends
            ]
        },
    }


def ingress(spec: EndpointSpec) -> Manifest:
    annotations = {
        f"{ALB}/scheme": spec.scheme,
        f"{ALB}/target-type": "ip",  # straight to pod IPs: every replica is its own target
        f"{ALB}/healthcheck-path": "/health",
        f"{ALB}/success-codes": "200",
        f"{ALB}/load-balancer-attributes": f"idle_timeout.timeout_seconds={spec.idle_timeout_s}",
        f"{ALB}/target-group-attributes": f"deregistration_delay.timeout_seconds={DEREGISTRATION_DELAY_S}",
        f"{ALB}/actions.{ACTION}": json.dumps(forward_action(spec.backends), separators=(",", ":")),
    }
    if spec.scheme == "internet-facing":
        annotations |= {
            f"{ALB}/listen-ports": json.dumps([{"HTTPS": 443}]),
            f"{ALB}/certificate-arn": str(spec.certificate_arn),
            f"{ALB}/ssl-policy": TLS_POLICY,
            f"{ALB}/inbound-cidrs": ",".join(spec.allowed_cidrs),
        }
    else:
        annotations[f"{ALB}/listen-ports"] = json.dumps([{"HTTP": 80}])
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            "name": spec.name,
            "namespace": spec.namespace,
            "labels": dict(spec.labels),
            "annotations": annotations,
        },
        "spec": {
            "ingressClassName": INGRESS_CLASS,
            "rules": [
                {
                    "http": {
                        "paths": [
                            {
                                "path": "/v1",
                                "pathType": "Prefix",
                                "backend": {"service": {"name": ACTION, "port": {"name": "use-annotation"}}},
                            }
                        ]
                    }
                }
            ],
        },
    }


def network_policy(spec: EndpointSpec) -> Manifest:
    """Ingress to the vLLM pods: port 8000 from the load balancer's subnets and from Prometheus; the
    multi-node port only between pods of the same revision. Everything else is dropped (egress stays
    open: pods read S3 and resolve DNS)."""
    vllm = {"app.kubernetes.io/name": APP}
    serving_sources: list[dict[str, Any]] = [{"ipBlock": {"cidr": cidr}} for cidr in spec.load_balancer_cidrs]
    if spec.wakes_from_zero:  # the interceptor forwards a waking revision's traffic from its own pods
        serving_sources.append({"podSelector": {"matchLabels": dict(INTERCEPTOR_LABELS)}})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": f"{spec.name}-vllm", "namespace": spec.namespace, "labels": dict(spec.labels)},
        "spec": {
            "podSelector": {"matchLabels": vllm},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": serving_sources,
                    "ports": [{"port": SERVE_PORT, "protocol": "TCP"}],
                },
                {
                    "from": [
                        {
                            "namespaceSelector": {
                                "matchLabels": {"kubernetes.io/metadata.name": MONITORING_NAMESPACE}
                            },
                            "podSelector": {"matchLabels": dict(PROMETHEUS_POD_LABELS)},
                        }
                    ],
                    "ports": [{"port": SERVE_PORT, "protocol": "TCP"}],
                },
                {
                    # nodes of one multi-node replica: the leader's master port and NCCL's own ports
                    "from": [{"podSelector": {"matchLabels": vllm}}],
                    "ports": [{"port": MULTI_NODE_PORT, "endPort": 65535, "protocol": "TCP"}],
                },
            ],
        },
    }


LOAD_BALANCER_CONTROLLER_NAMESPACE = "kube-system"
LOAD_BALANCER_CONTROLLER_SERVICE_ACCOUNT = "aws-load-balancer-controller"


def load_balancer_controller_values(*, cluster_name: str, region: str, vpc_id: str) -> dict[str, Any]:
    """aws-load-balancer-controller chart values: the cluster, region and VPC it manages (given, so it need
    not ask IMDS, which the nodes' hop limit of 1 keeps from pods), its Pod Identity service account, and
    the `alb` IngressClass the endpoint names. Its Service webhook is off: the program makes no Service of
    type LoadBalancer, and the webhook would refuse every Service while the controller is not running."""
    return {
        "clusterName": cluster_name,
        "region": region,
        "vpcId": vpc_id,
        "replicaCount": 2,
        "serviceAccount": {"create": True, "name": LOAD_BALANCER_CONTROLLER_SERVICE_ACCOUNT},
        "createIngressClassResource": True,
        "ingressClass": INGRESS_CLASS,
        "controllerConfig": {"featureGates": {"WeightedTargetGroups": True}},
        "enableServiceMutatorWebhook": False,
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
    }
