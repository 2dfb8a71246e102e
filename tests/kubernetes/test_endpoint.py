"""The endpoint's manifests: weights, TLS only when internet-facing, only /v1 exposed, the NetworkPolicy's
sources; the Load Balancer Controller's chart values exist in the pinned chart."""

from __future__ import annotations

import json

import kubernetes_validate
import pytest
import yaml

from infra.kubernetes import endpoint
from infra.kubernetes.endpoint import Backend, EndpointSpec
from infra.versions import AWS_LOAD_BALANCER_CONTROLLER_VERSION, KUBERNETES_VERSIONS
from tests.conftest import shared_path

PUBLIC = EndpointSpec(
    name="vllm",
    namespace="ns",
    backends=(Backend("vllm-a", 50), Backend("vllm-b", 50)),
    scheme="internet-facing",
    certificate_arn="arn:aws:acm:us-east-1:123456789012:certificate/abc",
    allowed_cidrs=("203.0.113.0/24",),
    load_balancer_cidrs=("10.0.240.0/24", "10.0.241.0/24"),
)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_validate(version: str) -> None:
    for manifest in (endpoint.ingress(PUBLIC), endpoint.network_policy(PUBLIC)):
        kubernetes_validate.validate(manifest, version, strict=True)


def test_an_internet_facing_endpoint_serves_https_to_the_allowed_networks() -> None:
    annotations = endpoint.ingress(PUBLIC)["metadata"]["annotations"]
    assert json.loads(annotations["alb.ingress.kubernetes.io/listen-ports"]) == [{"HTTPS": 443}]
    assert annotations["alb.ingress.kubernetes.io/certificate-arn"] == PUBLIC.certificate_arn
    assert annotations["alb.ingress.kubernetes.io/inbound-cidrs"] == "203.0.113.0/24"
    action = json.loads(annotations["alb.ingress.kubernetes.io/actions.vllm-revisions"])
    assert [(g["serviceName"], g["weight"]) for g in action["forwardConfig"]["targetGroups"]] == [
        ("vllm-a", 50),
        ("vllm-b", 50),
    ]


def test_an_internal_endpoint_has_no_certificate() -> None:
    internal = EndpointSpec(name="vllm", namespace="ns", backends=(Backend("vllm-a", 100),))
    annotations = endpoint.ingress(internal)["metadata"]["annotations"]
    assert annotations["alb.ingress.kubernetes.io/scheme"] == "internal"
    assert not any("certificate" in key for key in annotations)


@pytest.mark.parametrize("weights", [(60, 30), (-10, 110), ()])
def test_weights_that_do_not_sum_to_100_are_refused(weights: tuple[int, ...]) -> None:
    with pytest.raises(ValueError):
        EndpointSpec(
            name="v", namespace="n", backends=tuple(Backend(f"s{i}", w) for i, w in enumerate(weights))
        )


def test_only_the_load_balancer_and_prometheus_reach_vllm() -> None:
    rules = endpoint.network_policy(PUBLIC)["spec"]["ingress"]
    balancer, scraper, peers = rules
    assert [f["ipBlock"]["cidr"] for f in balancer["from"]] == list(PUBLIC.load_balancer_cidrs)
    assert scraper["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "monitoring"
    }
    assert peers["ports"][0]["port"] == 29501  # multi-node, between vLLM pods only


def test_controller_values_exist_in_the_pinned_chart() -> None:
    chart = yaml.safe_load(
        shared_path(
            "k8s-schemas",
            "charts",
            f"aws-load-balancer-controller-{AWS_LOAD_BALANCER_CONTROLLER_VERSION}-values.yaml",
        ).read_text()
    )
    values = endpoint.load_balancer_controller_values(cluster_name="c", region="us-east-1", vpc_id="vpc-1")
    for key, value in values.items():
        assert key in chart, key
        if isinstance(value, dict) and isinstance(chart[key], dict) and key != "resources":
            assert set(value) <= set(chart[key]) | {"featureGates"}, key
    assert chart["ingressClass"] == endpoint.INGRESS_CLASS


def test_a_revision_at_zero_is_reached_through_the_interceptor_which_may_reach_vllm() -> None:
    waking = EndpointSpec(
        name="vllm",
        namespace="ns",
        backends=(Backend("vllm-a-wake", 70, 8080), Backend("vllm-b", 30)),
        load_balancer_cidrs=("10.0.240.0/24",),
        idle_timeout_s=1500,
        wakes_from_zero=True,
    )
    ingress, policy = endpoint.ingress(waking), endpoint.network_policy(waking)
    for manifest in (ingress, policy):
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(manifest, version, strict=True)
    annotations = ingress["metadata"]["annotations"]
    action = json.loads(annotations["alb.ingress.kubernetes.io/actions.vllm-revisions"])
    assert [(g["serviceName"], g["servicePort"]) for g in action["forwardConfig"]["targetGroups"]] == [
        ("vllm-a-wake", "8080"),
        ("vllm-b", "8000"),
    ]
    assert (
        annotations["alb.ingress.kubernetes.io/load-balancer-attributes"]
        == "idle_timeout.timeout_seconds=1500"
    )
    balancer = policy["spec"]["ingress"][0]["from"]
    assert {
        "podSelector": {
            "matchLabels": {
                "app.kubernetes.io/component": "interceptor",
                "app.kubernetes.io/name": "http-add-on",
            }
        }
    } in balancer
    # without a revision at zero nothing but the load balancer's subnets serves through port 8000
    assert all(
        "ipBlock" in source for source in endpoint.network_policy(PUBLIC)["spec"]["ingress"][0]["from"]
    )
