"""policy/rules.py on what the recording mocks record for every stack: each rule passes the stacks as they
are and fails a deliberately broken copy (recorded inputs mutated, objects added, or the stack's limits
tightened)."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from policy import rules
from tests.policy.support import deployment, limits, mutated, recorded, with_object
from tests.stacks import STACKS

BUCKET = "aws:s3/bucket:Bucket"
BLOCK = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
ENCRYPTION = "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
BUCKET_POLICY = "aws:s3/bucketPolicy:BucketPolicy"
JOB = "kubernetes:batch/v1:Job"
EKS = "aws:eks/cluster:Cluster"


def names(violations: list[rules.Violation]) -> list[str]:
    return [v.message for v in violations]


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("rule", list(rules.RULES))
def test_every_rule_passes_every_stack_as_it_is(stack: str, rule: str) -> None:
    resources, _ = recorded(stack)
    assert rules.RULES[rule](list(resources), limits(stack)) == []


def _fill_job(props: dict[str, Any]) -> dict[str, Any]:
    return props["spec"]["template"]["spec"]["containers"][0]


# (rule, how to break the dev stack's recorded resources, words the violation must contain)
BROKEN = [
    (
        "s3-buckets-private-encrypted-tls-only",
        (BLOCK, lambda p: p.update(blockPublicPolicy=False)),
        "public access block",
    ),
    ("s3-buckets-private-encrypted-tls-only", (BUCKET, lambda p: p.update(acl="public-read")), "public-read"),
    ("s3-buckets-private-encrypted-tls-only", (ENCRYPTION, lambda p: p.update(rules=[])), "encryption"),
    (
        "s3-buckets-private-encrypted-tls-only",
        (BUCKET_POLICY, lambda p: p.update(policy=json.dumps({"Version": "2012-10-17", "Statement": []}))),
        "aws:SecureTransport",
    ),
    (
        "no-floating-image-tags",
        (JOB, lambda p: _fill_job(p).update(image="vllm/vllm-openai:latest")),
        "'latest'",
    ),
    ("no-floating-image-tags", (JOB, lambda p: _fill_job(p).update(image="vllm/vllm-openai")), "no tag"),
    (
        "no-floating-image-tags",
        (JOB, lambda p: _fill_job(p).update(image="python:3.11-slim")),
        "partial version",
    ),
    (
        "api-key-and-hf-token-only-as-secrets",
        (JOB, lambda p: _fill_job(p)["env"].append({"name": "HF_TOKEN", "value": "hf_abc"})),
        "env HF_TOKEN is a literal",
    ),
    (
        "api-key-and-hf-token-only-as-secrets",
        (JOB, lambda p: _fill_job(p)["args"].append("--api-key=sk-123")),
        "--api-key on the command line",
    ),
    (
        "resource-requests-on-every-container",
        (JOB, lambda p: _fill_job(p)["resources"]["requests"].pop("cpu")),
        "no cpu request",
    ),
    (
        "resource-requests-on-every-container",
        (JOB, lambda p: _fill_job(p).pop("resources")),
        "no cpu or memory",
    ),
    (
        "cost-ceiling-respected",
        (
            "kubernetes:karpenter.sh/v1:NodePool",
            lambda p: p["spec"]["limits"].update({"nodes": "40", "nvidia.com/gpu": "40"}),
        ),
        "above stack dev's maxCostPerHour",  # the pool grows past the plan
    ),
    (
        "cost-ceiling-respected",
        ("kubernetes:karpenter.sh/v1:NodePool", lambda p: p["spec"].pop("limits")),
        "cost is unbounded",
    ),
    (
        "eks-endpoint-not-open-to-the-world",
        (
            EKS,
            lambda p: p["vpcConfig"].update(
                endpointPublicAccess=True, publicAccessCidrs=["10.0.0.0/8", "0.0.0.0/0"]
            ),
        ),
        "open to the world (10.0.0.0/8, 0.0.0.0/0)",
    ),
]


@pytest.mark.parametrize(("rule", "breakage", "expected"), BROKEN)
def test_each_rule_fails_its_broken_stack(rule: str, breakage: tuple, expected: str) -> None:
    resources, _ = recorded("dev")
    type_, change = breakage
    broken = mutated(resources, type_, change)
    messages = names(rules.RULES[rule](broken, limits("dev")))
    assert len(messages) == 1 and expected in messages[0], messages
    assert not any(expected in m for m in names(rules.RULES[rule](list(resources), limits("dev"))))


def test_a_configmap_holding_a_token_fails() -> None:
    resources, _ = recorded("dev")
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "settings"},
        "data": {"hf-token": "hf_abc", "log-level": "info"},
    }
    messages = names(rules.secrets_only_as_secrets(with_object(resources, "dev", config_map), limits("dev")))
    assert messages == ["ConfigMap settings holds hf-token; credentials belong in a Secret"]
    config_map["data"] = {"log-level": "info"}
    assert rules.secrets_only_as_secrets(with_object(resources, "dev", config_map), limits("dev")) == []


@pytest.mark.parametrize(
    ("image", "problem"),
    [
        ("vllm/vllm-openai:v0.33.0", None),
        ("123.dkr.ecr.us-east-1.amazonaws.com/serving:vllm-0.33.0-1df8d3af33229974", None),
        ("registry:5000/vllm@sha256:" + "a" * 64, None),
        ("vllm/vllm-openai:latest", "uses the floating tag 'latest'"),
        ("registry:5000/vllm", "has no tag (Docker reads it as latest)"),
        ("vllm/vllm-openai:v0", "uses 'v0', a partial version that moves with new releases"),
        ("python:3.11", "uses '3.11', a partial version that moves with new releases"),
        ("ubuntu:24.04", "uses '24.04', a partial version that moves with new releases"),
        ("nginx:1.27.3-alpine", None),
    ],
)
def test_image_references(image: str, problem: str | None) -> None:
    assert rules.image_problem(image) == problem


def _serving_pod(props: dict[str, Any]) -> dict[str, Any]:
    return props["spec"]["template"]["spec"]


def _vllm(props: dict[str, Any]) -> dict[str, Any]:
    (container,) = [c for c in _serving_pod(props)["containers"] if c["name"] == "vllm"]
    return container


def _set_gpus(count: int) -> Callable[[dict[str, Any]], None]:
    def change(props: dict[str, Any]) -> None:
        resources = _vllm(props)["resources"]
        resources["requests"][rules.GPU_RESOURCE] = resources["limits"][rules.GPU_RESOURCE] = str(count)

    return change


@pytest.mark.parametrize("stack", STACKS)
def test_gpu_pods_must_fit_their_pool(stack: str) -> None:
    """The rendered serving workload against its pool (nodeSelector llm-serving/pool -> NodePool ->
    instance type -> GPUs per node from the catalog): as rendered it fits; more GPUs than a node has,
    an init container asking for more, a request unlike its limit, or no pool selected, each fail."""
    resources, plan = recorded(stack)
    (revision,) = plan["revisions"].values()
    workload = [r for r in resources if r.props.get("kind") in ("Deployment", "LeaderWorkerSet")]
    assert [w.props["metadata"]["name"] for w in workload] == ["vllm-primary"]
    type_ = workload[0].type
    check = functools.partial(rules.gpu_requests_match_node_pool, limits=limits(stack))
    assert check(list(resources)) == []
    per_node = revision["gpu"]["count"]
    too_many = names(check(mutated(resources, type_, _set_gpus(per_node + 1))))
    assert too_many == [
        f"{workload[0].props['kind']} {workload[0].name} requests {per_node + 1} GPU(s); "
        f"NodePool llm-{stack}-gpu-primary-nodepool's {revision['instance_type']} has {per_node}"
    ]

    def greedy_init(props: dict[str, Any]) -> None:
        _serving_pod(props)["initContainers"][0]["resources"]["limits"][rules.GPU_RESOURCE] = per_node + 1

    assert len(check(mutated(resources, type_, greedy_init))) == 1

    def uneven(props: dict[str, Any]) -> None:
        _vllm(props)["resources"]["requests"][rules.GPU_RESOURCE] = "0"

    assert "differs from its limit" in names(check(mutated(resources, type_, uneven)))[0]
    unpinned = names(check(mutated(resources, type_, lambda p: _serving_pod(p).pop("nodeSelector"))))
    assert len(unpinned) == 1 and "selects no GPU NodePool" in unpinned[0]


def test_gpu_requests_that_strand_gpus_fail() -> None:
    """3 GPUs on a 4-GPU node leave one no replica can use."""
    resources, _ = recorded("prod")
    pool_types = {r.type: r for r in resources}[rules.NODEPOOL_TYPE]
    (instance,) = pool_types.props["spec"]["template"]["spec"]["requirements"][0]["values"]
    per_node = limits("prod").catalog.by_name(instance).gpu_count  # type: ignore[union-attr]
    assert per_node in (4, 8)
    pod = deployment(resources={"requests": {"cpu": "4", "memory": "16Gi"}, "limits": {"nvidia.com/gpu": 3}})
    pod["spec"]["template"]["spec"]["nodeSelector"] = {
        "karpenter.sh/nodepool": pool_types.props["metadata"]["name"]
    }
    messages = names(rules.gpu_requests_match_node_pool(with_object(resources, "prod", pod), limits("prod")))
    assert messages == [
        f"Deployment vllm requests 3 GPU(s); NodePool {pool_types.name}'s {instance} has {per_node}"
    ]


def test_spot_only_where_the_stack_allows() -> None:
    dev, _ = recorded("dev")
    assert limits("dev").allow_spot and rules.spot_only_where_allowed(list(dev), limits("dev")) == []
    on_demand_only = replace(limits("dev"), allow_spot=False)
    messages = names(rules.spot_only_where_allowed(list(dev), on_demand_only))
    assert len(messages) == 1 and "allows ['spot'] but stack dev sets capacityType on-demand" in messages[0]
    prod, _ = recorded("prod")
    spot_prod = mutated(
        prod,
        rules.NODEPOOL_TYPE,
        lambda p: p["spec"]["template"]["spec"]["requirements"][1].update(values=["on-demand", "spot"]),
    )
    assert len(rules.spot_only_where_allowed(spot_prod, limits("prod"))) == 1
    spot_system = mutated(prod, "aws:eks/nodeGroup:NodeGroup", lambda p: p.update(capacityType="SPOT"))
    assert "node group" in names(rules.spot_only_where_allowed(spot_system, limits("prod")))[0]


@pytest.mark.parametrize("stack", STACKS)
def test_a_ceiling_below_the_plan_fails_and_no_ceiling_passes(stack: str) -> None:
    """The pools at their limits less the rollout surge cost what the plan says at max replicas."""
    resources, plan = recorded(stack)
    cost = plan["cost_per_hour_usd_at_max_replicas"]
    at_plan = replace(limits(stack), max_cost_per_hour=cost)
    assert rules.cost_ceiling_respected(list(resources), at_plan) == []
    below = replace(limits(stack), max_cost_per_hour=round(cost - 0.01, 2))
    (message,) = names(rules.cost_ceiling_respected(list(resources), below))
    assert f"the GPU pools can cost ${cost:.2f}/h at their limits" in message
    assert rules.cost_ceiling_respected(list(resources), replace(limits(stack), max_cost_per_hour=None)) == []


@pytest.mark.parametrize(
    ("vpc_config", "open_"),
    [
        ({"endpointPublicAccess": True}, True),
        ({}, True),  # EKS turns the public endpoint on by default
        ({"endpointPublicAccess": True, "publicAccessCidrs": ["::/0"]}, True),
        ({"endpointPublicAccess": True, "publicAccessCidrs": ["203.0.113.0/24"]}, False),
        ({"endpointPublicAccess": False, "endpointPrivateAccess": True}, False),
    ],
)
def test_eks_endpoint_cases(vpc_config: dict[str, Any], open_: bool) -> None:
    resources, _ = recorded("dev")
    changed = mutated(resources, EKS, lambda p: p.update(vpcConfig={"subnetIds": [], **vpc_config}))
    assert bool(rules.eks_endpoint_not_open_to_the_world(changed, limits("dev"))) is open_


def test_stack_limits_come_from_the_stack_file_with_the_schema_defaults(tmp_path: Path) -> None:
    assert (limits("dev").allow_spot, limits("dev").max_cost_per_hour) == (True, 1.5)
    assert (limits("prod").allow_spot, limits("prod").max_cost_per_hour) == (False, 120.0)
    (tmp_path / "stacks").mkdir()
    (tmp_path / "Pulumi.yaml").write_text(
        "config:\n  capacityType: {default: on-demand}\n  maxCostPerHour: {default: 0}\n"
    )
    (tmp_path / "stacks" / "Pulumi.qa.yaml").write_text("config:\n  llm-serving:model: Qwen/Qwen3-8B\n")
    qa = rules.stack_limits("qa", tmp_path)
    assert (qa.allow_spot, qa.max_cost_per_hour) == (False, None)


def test_stack_names_come_from_urns() -> None:
    assert rules.stack_of("urn:pulumi:staging::llm-serving::aws:s3/bucket:Bucket::cache") == "staging"
