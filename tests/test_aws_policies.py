"""IAM and resource policies: narrow, well-formed, and pointing at the right ARNs."""

from __future__ import annotations

import json

import pytest

from infra import aws_policies


def statements(document: dict) -> list[dict]:
    json.dumps(document)  # serialisable as the components send it
    assert document["Version"] == "2012-10-17"
    for statement in document["Statement"]:
        assert statement["Effect"] in ("Allow", "Deny")
        assert statement["Action"] and ("Resource" in statement or "Principal" in statement)
    return document["Statement"]


@pytest.mark.parametrize(
    ("region", "partition"), [("us-east-1", "aws"), ("cn-north-1", "aws-cn"), ("us-gov-west-1", "aws-us-gov")]
)
def test_partition(region: str, partition: str) -> None:
    assert aws_policies.partition(region) == partition
    assert aws_policies.managed_policy_arn(region, "X").startswith(f"arn:{partition}:iam::aws:policy/")


def test_tls_only_bucket_policy_denies_plain_http_everywhere() -> None:
    (deny,) = statements(aws_policies.tls_only_bucket_policy("arn:aws:s3:::b"))
    assert deny["Effect"] == "Deny" and deny["Principal"] == "*" and deny["Action"] == "s3:*"
    assert deny["Resource"] == ["arn:aws:s3:::b", "arn:aws:s3:::b/*"]
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_reader_cannot_write_and_writer_cannot_touch_other_buckets() -> None:
    reader = statements(aws_policies.model_cache_read_policy("arn:aws:s3:::b"))
    writer = statements(aws_policies.model_cache_write_policy("arn:aws:s3:::b"))
    read_actions = {a for s in reader for a in s["Action"]}
    assert not any(a.startswith(("s3:Put", "s3:Delete", "s3:Abort")) for a in read_actions)
    assert {r for s in reader + writer for r in [s["Resource"]]} == {"arn:aws:s3:::b", "arn:aws:s3:::b/*"}
    assert "s3:PutObject" in {a for s in writer for a in s["Action"]}


def test_pod_identity_trust() -> None:
    (trust,) = statements(aws_policies.pod_identity_trust_policy())
    assert trust["Principal"] == {"Service": "pods.eks.amazonaws.com"}
    assert set(trust["Action"]) == {"sts:AssumeRole", "sts:TagSession"}


def test_karpenter_policies_are_scoped_to_cluster_region_role_and_queue() -> None:
    policies = aws_policies.karpenter_controller_policies(
        cluster_name="eks-a",
        cluster_arn="arn:aws:eks:eu-west-1:123456789012:cluster/eks-a",
        region="eu-west-1",
        node_role_arn="arn:aws:iam::123456789012:role/nodes",
        queue_arn="arn:aws:sqs:eu-west-1:123456789012:q",
    )
    # IAM allows 10,240 characters of inline policy per role, whitespace excluded
    assert sum(len(json.dumps(p, separators=(",", ":"))) for p in policies.values()) < 10_240
    by_sid = {s["Sid"]: s for policy in policies.values() for s in statements(policy)}
    assert by_sid["AllowPassingInstanceRole"]["Resource"] == "arn:aws:iam::123456789012:role/nodes"
    assert by_sid["AllowInterruptionQueueActions"]["Resource"] == "arn:aws:sqs:eu-west-1:123456789012:q"
    assert (
        by_sid["AllowAPIServerEndpointDiscovery"]["Resource"]
        == "arn:aws:eks:eu-west-1:123456789012:cluster/eks-a"
    )
    assert by_sid["AllowScopedEC2InstanceActionsWithTags"]["Condition"]["StringEquals"] == {
        "aws:RequestTag/kubernetes.io/cluster/eks-a": "owned",
        "aws:RequestTag/eks:eks-cluster-name": "eks-a",
    }
    # v1 tags instance profiles by EC2NodeClass; the account comes from the cluster ARN
    creation = by_sid["AllowScopedInstanceProfileCreationActions"]
    assert creation["Resource"] == "arn:aws:iam::123456789012:instance-profile/*"
    assert creation["Condition"]["StringLike"] == {"aws:RequestTag/karpenter.k8s.aws/ec2nodeclass": "*"}
    assert by_sid["AllowUnscopedInstanceProfileListAction"]["Action"] == "iam:ListInstanceProfiles"
    assert by_sid["AllowRegionalReadActions"]["Condition"] == {
        "StringEquals": {"aws:RequestedRegion": "eu-west-1"}
    }
    ec2_arns = [
        r
        for s in by_sid.values()
        for r in ([s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"])
        if r.startswith("arn:aws:ec2")
    ]
    assert ec2_arns and all(r.startswith("arn:aws:ec2:eu-west-1:") for r in ec2_arns)


def test_karpenter_policies_wildcard_the_account_until_the_cluster_arn_is_known() -> None:
    policies = aws_policies.karpenter_controller_policies(
        cluster_name="c",
        cluster_arn="<known after deploy: c.arn>",
        region="us-east-1",
        node_role_arn="r",
        queue_arn="q",
    )
    (read,) = [
        s
        for s in policies["resource-discovery"]["Statement"]
        if s["Sid"] == "AllowInstanceProfileReadActions"
    ]
    assert read["Resource"] == "arn:aws:iam::*:instance-profile/*"


def test_interruption_events_cover_spot_warnings() -> None:
    patterns = aws_policies.INTERRUPTION_EVENTS
    assert patterns["spot-interruption"]["detail-type"] == ["EC2 Spot Instance Interruption Warning"]
    assert len(patterns) == 5
    (allow, deny) = statements(aws_policies.interruption_queue_policy("arn:q"))
    assert allow["Action"] == "sqs:SendMessage" and deny["Effect"] == "Deny"


def test_ecr_lifecycle_keeps_the_newest_images() -> None:
    policy = aws_policies.ecr_keep_last_images_policy(5)
    json.dumps(policy)
    (rule,) = policy["rules"]
    assert rule["selection"] == {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 5}
    assert rule["action"] == {"type": "expire"}
    with pytest.raises(ValueError):
        aws_policies.ecr_keep_last_images_policy(0)
