"""`ServingEndpoint`: the stack's one OpenAI-compatible endpoint. The AWS Load Balancer Controller (its IAM
role bound by Pod Identity, its Helm chart pinned), an ALB Ingress splitting `/v1/*` between the revisions
by weight, and the NetworkPolicy that admits only the load balancer and the metrics scraper to vLLM.

The manifests and the chart values are built by `infra.kubernetes.endpoint`; why an Ingress and not a
Gateway API route is explained there.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from infra import aws_policies
from infra.components import kubernetes_labels, pod_identity_trust
from infra.kubernetes import endpoint
from infra.kubernetes.endpoint import Backend, EndpointSpec
from infra.versions import AWS_LOAD_BALANCER_CONTROLLER_REPO, AWS_LOAD_BALANCER_CONTROLLER_VERSION


@dataclass(frozen=True)
class ServingEndpointArgs:
    cluster_name: pulumi.Input[str]
    vpc_id: pulumi.Input[str]
    region: str
    namespace: pulumi.Input[str]
    backends: tuple[Backend, ...]
    load_balancer_cidrs: pulumi.Input[Sequence[str]]  # the subnets the ALB's nodes live in
    scheme: Literal["internal", "internet-facing"] = "internal"
    certificate_arn: str | None = None
    allowed_cidrs: tuple[str, ...] = ()
    install_controller: bool = True  # False when the cluster already runs it
    idle_timeout_s: int = endpoint.IDLE_TIMEOUT_S
    wakes_from_zero: bool = False  # some backend is the HTTP add-on's interceptor (infra/kubernetes/wake.py)
    tags: Mapping[str, str] = field(default_factory=dict)
    depends_on: Sequence[pulumi.Resource] = ()  # the revisions' Services, the cluster's add-ons

    def __post_init__(self) -> None:
        self.spec(namespace="ns", load_balancer_cidrs=())  # weights and TLS are checked at construction

    def spec(self, *, namespace: str, load_balancer_cidrs: Sequence[str]) -> EndpointSpec:
        return EndpointSpec(
            name="vllm",
            namespace=namespace,
            backends=self.backends,
            scheme=self.scheme,
            certificate_arn=self.certificate_arn,
            allowed_cidrs=self.allowed_cidrs,
            load_balancer_cidrs=tuple(load_balancer_cidrs),
            labels=kubernetes_labels(self.tags),
            idle_timeout_s=self.idle_timeout_s,
            wakes_from_zero=self.wakes_from_zero,
        )


class ServingEndpoint(pulumi.ComponentResource):
    url: pulumi.Output[str | None]  # None until the controller has made the ALB
    ingress_name: pulumi.Output[str]

    def __init__(
        self, name: str, args: ServingEndpointArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("llm-serving:index:ServingEndpoint", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        controller: list[pulumi.Resource] = []
        if args.install_controller:
            controller = [self._controller(name, args)]

        manifests = pulumi.Output.all(args.namespace, args.load_balancer_cidrs).apply(
            lambda v: args.spec(namespace=v[0], load_balancer_cidrs=v[1])
        )
        ingress_manifest = manifests.apply(endpoint.ingress)
        ingress = k8s.networking.v1.Ingress(
            f"{name}-ingress",
            metadata=ingress_manifest.apply(lambda m: m["metadata"]),
            spec=ingress_manifest.apply(lambda m: m["spec"]),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*controller, *args.depends_on]),
        )
        policy = manifests.apply(endpoint.network_policy)
        k8s.networking.v1.NetworkPolicy(
            f"{name}-network-policy",
            metadata=policy.apply(lambda m: m["metadata"]),
            spec=policy.apply(lambda m: m["spec"]),
            opts=child,
        )
        protocol = "https" if args.scheme == "internet-facing" else "http"
        self.url = ingress.status.apply(lambda status: _url(status, protocol))
        self.ingress_name = ingress.metadata.apply(lambda m: m.name or "vllm")
        self.register_outputs({"url": self.url, "ingressName": self.ingress_name})

    def _controller(self, name: str, args: ServingEndpointArgs) -> k8s.helm.v3.Release:
        """The AWS Load Balancer Controller: a role with its policy, bound to its service account."""
        tags = dict(args.tags)
        child = pulumi.ResourceOptions(parent=self)
        role = aws.iam.Role(
            f"{name}-lb-controller-role",
            assume_role_policy=pod_identity_trust(self, cluster_name=args.cluster_name, region=args.region),
            tags={**tags, "Name": f"{name}-lb-controller-role"},
            opts=child,
        )
        policy = aws.iam.RolePolicy(
            f"{name}-lb-controller-policy",
            role=role.id,
            policy=json.dumps(aws_policies.load_balancer_controller_policy()),
            opts=child,
        )
        identity = aws.eks.PodIdentityAssociation(
            f"{name}-lb-controller-pod-identity",
            cluster_name=args.cluster_name,
            namespace=endpoint.LOAD_BALANCER_CONTROLLER_NAMESPACE,
            service_account=endpoint.LOAD_BALANCER_CONTROLLER_SERVICE_ACCOUNT,
            role_arn=role.arn,
            tags={**tags, "Name": f"{name}-lb-controller-pod-identity"},
            opts=child,
        )
        values = pulumi.Output.all(args.cluster_name, args.vpc_id).apply(
            lambda v: endpoint.load_balancer_controller_values(
                cluster_name=v[0], region=args.region, vpc_id=v[1]
            )
        )
        return k8s.helm.v3.Release(
            f"{name}-lb-controller",
            name="aws-load-balancer-controller",
            chart="aws-load-balancer-controller",
            version=AWS_LOAD_BALANCER_CONTROLLER_VERSION,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=AWS_LOAD_BALANCER_CONTROLLER_REPO),
            namespace=endpoint.LOAD_BALANCER_CONTROLLER_NAMESPACE,
            values=values,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[policy, identity]),
        )


def _url(status: object, protocol: str) -> str | None:
    """`http(s)://<ALB DNS name>` once the controller has reported the load balancer."""
    balancer = getattr(status, "load_balancer", None)
    entries = getattr(balancer, "ingress", None) or []
    hostname = getattr(entries[0], "hostname", None) if entries else None
    return f"{protocol}://{hostname}" if hostname else None
