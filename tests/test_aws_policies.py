"""IAM and resource policies: narrow, well-formed, and pointing at the right ARNs."""

from __future__ import annotations

import fnmatch
import json

import pytest

from infra import aws_policies
from infra.modelcache.compile_cache import MANIFEST_NAME, compile_cache_key
from infra.modelcache.layout import CacheEntry, S3Location, ref_key


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


def _resources(statement: dict) -> list[str]:
    resource = statement["Resource"]
    return [resource] if isinstance(resource, str) else resource


def test_reader_cannot_write_and_writer_cannot_touch_other_buckets() -> None:
    reader = statements(aws_policies.model_cache_read_policy("arn:aws:s3:::b"))
    writer = statements(aws_policies.model_cache_write_policy("arn:aws:s3:::b"))
    read_actions = {a for s in reader for a in s["Action"]}
    assert read_actions == {"s3:ListBucket", "s3:GetObject"}
    assert {r for s in reader + writer for r in _resources(s)} == {
        "arn:aws:s3:::b",
        "arn:aws:s3:::b/*",
        "arn:aws:s3:::b/models/*",
        "arn:aws:s3:::b/compile-cache/*",
    }
    assert "s3:PutObject" in {a for s in writer for a in s["Action"]}


def test_the_writer_deletes_nothing_and_writes_only_where_push_does() -> None:
    """A versioned bucket keeps what a PUT overwrites; a delete the writer cannot make at all. Every key the
    fill Job's push and a compile-cache push write is under the writer's PUT resources, and nothing else."""
    arn = "arn:aws:s3:::b"
    writer = statements(aws_policies.model_cache_write_policy(arn))
    actions = {a for s in writer for a in s["Action"]}
    assert not any("Delete" in a for a in actions)
    assert actions == {"s3:ListBucket", "s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"}
    (write,) = [s for s in writer if "s3:PutObject" in s["Action"]]
    root = S3Location("b", "")
    entry = CacheEntry(root, "Qwen/Qwen3-8B", "0" * 40)
    compile_key = compile_cache_key("0.33.0", "Qwen/Qwen3-8B", 1, "NVIDIA L4")
    pushed = [
        entry.file_key("model-00001-of-00002.safetensors"),
        entry.manifest_key,
        entry.marker_key,
        ref_key(root, "Qwen/Qwen3-8B", "main"),
        root.key(compile_key, MANIFEST_NAME),
        root.key(compile_key, f"torch_compile_cache-{'a' * 64}.tar"),
    ]
    for key in pushed:
        assert any(fnmatch.fnmatchcase(f"{arn}/{key}", pattern) for pattern in _resources(write)), key
    assert not any(fnmatch.fnmatchcase(f"{arn}/other/x", pattern) for pattern in _resources(write))


def test_a_customer_managed_key_is_granted_only_when_set_and_only_through_s3() -> None:
    key = "arn:aws:kms:eu-west-1:123456789012:key/abc"
    for policy_for in (aws_policies.model_cache_read_policy, aws_policies.model_cache_write_policy):
        assert not any(
            a.startswith("kms:") for s in statements(policy_for("arn:aws:s3:::b")) for a in s["Action"]
        )
    (read_key,) = [s for s in statements(aws_policies.model_cache_read_policy("arn:aws:s3:::b", key, "eu-west-1"))
                   if s["Resource"] == key]  # fmt: skip
    (write_key,) = [s for s in statements(aws_policies.model_cache_write_policy("arn:aws:s3:::b", key, "eu-west-1"))
                    if s["Resource"] == key]  # fmt: skip
    assert read_key["Action"] == ["kms:Decrypt"]
    assert set(write_key["Action"]) == {"kms:GenerateDataKey", "kms:Decrypt"}
    for statement in (read_key, write_key):
        assert statement["Condition"] == {"StringEquals": {"kms:ViaService": "s3.eu-west-1.amazonaws.com"}}


def test_pod_identity_trust_is_for_this_accounts_cluster_only() -> None:
    arn = aws_policies.eks_cluster_arn("eu-west-1", "123456789012", "eks-a")
    assert arn == "arn:aws:eks:eu-west-1:123456789012:cluster/eks-a"
    assert aws_policies.eks_cluster_arn("cn-north-1", "1", "c").startswith("arn:aws-cn:eks:cn-north-1:1:")
    (trust,) = statements(aws_policies.pod_identity_trust_policy("123456789012", arn))
    assert trust["Principal"] == {"Service": "pods.eks.amazonaws.com"}
    assert set(trust["Action"]) == {"sts:AssumeRole", "sts:TagSession"}
    assert trust["Condition"] == {
        "StringEquals": {"aws:SourceAccount": "123456789012"},
        "ArnEquals": {"aws:SourceArn": arn},
    }


def test_the_cluster_role_may_use_only_the_secrets_key() -> None:
    (statement,) = statements(aws_policies.secrets_key_policy_for_cluster("arn:aws:kms:eu-west-1:1:key/k"))
    assert statement["Resource"] == "arn:aws:kms:eu-west-1:1:key/k"
    assert "kms:*" not in statement["Action"] and "kms:Encrypt" in statement["Action"]


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


def test_the_writer_reads_only_the_adapter_folders_it_copies() -> None:
    """`push s3://BUCKET/PREFIX` lists the folder and gets its objects; the grant is exactly that, per
    folder (ListBucket only below each prefix, GetObject only under it), in the region's partition."""
    folders = ["s3://team-adapters/qwen3/sql", "s3://team-adapters/qwen3/de/", "s3://other-bucket/a/b"]
    policy = aws_policies.source_folders_read_policy(folders, "cn-north-1")
    by_sid = {s["Sid"]: s for s in statements(policy)}
    assert {a for s in by_sid.values() for a in s["Action"]} == {"s3:ListBucket", "s3:GetObject"}
    assert by_sid["ListSource0"]["Resource"] == "arn:aws-cn:s3:::other-bucket"
    assert by_sid["ListSource0"]["Condition"] == {"StringLike": {"s3:prefix": ["a/b/*"]}}
    assert by_sid["ListSource1"]["Resource"] == "arn:aws-cn:s3:::team-adapters"
    assert by_sid["ListSource1"]["Condition"] == {"StringLike": {"s3:prefix": ["qwen3/de/*", "qwen3/sql/*"]}}
    get = by_sid["ReadSources"]["Resource"]
    assert get == [
        "arn:aws-cn:s3:::other-bucket/a/b/*",
        "arn:aws-cn:s3:::team-adapters/qwen3/de/*",
        "arn:aws-cn:s3:::team-adapters/qwen3/sql/*",
    ]
    # what push reads matches; a sibling folder that shares the name's start does not
    assert fnmatch.fnmatchcase("arn:aws-cn:s3:::team-adapters/qwen3/sql/adapter_config.json", get[2])
    assert not any(fnmatch.fnmatchcase("arn:aws-cn:s3:::team-adapters/qwen3/sql-v2/x", g) for g in get)
    assert fnmatch.fnmatchcase("qwen3/sql/", by_sid["ListSource1"]["Condition"]["StringLike"]["s3:prefix"][1])
    assert aws_policies.source_folders_read_policy(folders[:1])["Statement"][0]["Resource"].startswith(
        "arn:aws:s3:::"
    )
    for bad in ([], ["s3://team-adapters"]):
        with pytest.raises(ValueError):
            aws_policies.source_folders_read_policy(bad)
