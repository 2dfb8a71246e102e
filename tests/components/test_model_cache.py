"""ModelCache under recording mocks: every child, its parent, its key inputs and its tags. (Its fill Jobs and
serving patches are per revision and belong to VllmService: tests/components/test_vllm_service.py.)"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from infra.components.model_cache import BucketEncryption, ModelCache, ModelCacheArgs
from infra.render import redact
from tests.components.support import Recorded, resolve, run

TAGS = {"project": "llm-serving", "stack": "test", "team": "ml"}
COMPONENT = "llm-serving:index:ModelCache"
JOB = "kubernetes:batch/v1:Job"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/serving@sha256:" + "a" * 64
COMMIT = "0123456789abcdef0123456789abcdef01234567"
HF_TOKEN_LITERAL = "hf_literal_must_never_show"


def args(**changes: Any) -> ModelCacheArgs:
    base = ModelCacheArgs(cluster_name="cluster-a", namespace="serving", region="us-east-1", tags=TAGS)
    return replace(base, **changes)


def build(cache_args: ModelCacheArgs, holder: dict[str, ModelCache]) -> ModelCache:
    return holder.setdefault("mc", ModelCache("mc", cache_args))


@pytest.fixture(scope="module")
def built() -> tuple[Recorded, ModelCache]:
    holder: dict[str, ModelCache] = {}
    recorded = run(lambda: build(args(), holder))
    return recorded, holder["mc"]


@pytest.fixture(scope="module")
def recorded(built: tuple[Recorded, ModelCache]) -> Recorded:
    return built[0]


def test_children_are_exactly_the_cache_and_its_identities(recorded: Recorded) -> None:
    assert sorted(recorded.names()) == sorted(
        [
            (COMPONENT, "mc"),
            ("aws:s3/bucket:Bucket", "mc-bucket"),
            ("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", "mc-public-access"),
            (
                "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
                "mc-encryption",
            ),
            ("aws:s3/bucketVersioning:BucketVersioning", "mc-versioning"),
            ("aws:s3/bucketOwnershipControls:BucketOwnershipControls", "mc-ownership"),
            ("aws:s3/bucketPolicy:BucketPolicy", "mc-tls-only"),
            ("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration", "mc-lifecycle"),
            ("aws:iam/role:Role", "mc-reader"),
            ("aws:iam/rolePolicy:RolePolicy", "mc-reader-policy"),
            ("aws:eks/podIdentityAssociation:PodIdentityAssociation", "mc-reader-pod-identity"),
            ("kubernetes:core/v1:ServiceAccount", "mc-reader-service-account"),
            ("aws:iam/role:Role", "mc-writer"),
            ("aws:iam/rolePolicy:RolePolicy", "mc-writer-policy"),
            ("aws:eks/podIdentityAssociation:PodIdentityAssociation", "mc-writer-pod-identity"),
            ("kubernetes:core/v1:ServiceAccount", "mc-writer-service-account"),
        ]
    )
    component = recorded.one(COMPONENT, "mc")
    assert {r.name for r in recorded.children_of(component)} == {n for _, n in recorded.names()} - {"mc"}


def test_bucket_blocks_public_access_encrypts_and_disables_acls(recorded: Recorded) -> None:
    block = recorded.inputs("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", "mc-public-access")
    assert all(
        block[k] is True
        for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
    )
    sse = recorded.inputs(
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
        "mc-encryption",
    )
    assert sse["rules"][0]["applyServerSideEncryptionByDefault"]["sseAlgorithm"] == "AES256"
    ownership = recorded.inputs("aws:s3/bucketOwnershipControls:BucketOwnershipControls", "mc-ownership")
    assert ownership["rule"]["objectOwnership"] == "BucketOwnerEnforced"
    for name in ("mc-public-access", "mc-encryption", "mc-ownership", "mc-tls-only", "mc-lifecycle"):
        bucket_ref = next(r for r in recorded.registrations if r.name == name).inputs["bucket"]
        assert bucket_ref == "<known after deploy: mc-bucket.id>"


def test_overwrites_and_deletes_are_recoverable_for_the_noncurrent_days(recorded: Recorded) -> None:
    versioning = recorded.inputs("aws:s3/bucketVersioning:BucketVersioning", "mc-versioning")
    assert versioning["bucket"] == "<known after deploy: mc-bucket.id>"
    assert versioning["versioningConfiguration"] == {"status": "Enabled"}
    lifecycle = recorded.inputs(
        "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration", "mc-lifecycle"
    )
    rules = {rule["id"]: rule for rule in lifecycle["rules"]}
    noncurrent = rules["expire-noncurrent-versions"]
    assert noncurrent["status"] == "Enabled" and noncurrent["filter"] == {"prefix": ""}
    assert noncurrent["noncurrentVersionExpiration"] == {"noncurrentDays": 30}
    assert noncurrent["expiration"] == {"expiredObjectDeleteMarker": True}
    assert rules["abort-incomplete-uploads"]["abortIncompleteMultipartUpload"] == {"daysAfterInitiation": 3}
    (urn,) = [r.urn for r in recorded.registrations if r.name == "mc-versioning"]
    assert (
        urn
        in recorded.one(
            "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration", "mc-lifecycle"
        ).dependencies
    )


def test_noncurrent_days_are_configurable() -> None:
    recorded = run(lambda: build(args(noncurrent_version_days=7), {}))
    lifecycle = recorded.inputs(
        "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration", "mc-lifecycle"
    )
    (rule,) = [r for r in lifecycle["rules"] if r["id"] == "expire-noncurrent-versions"]
    assert rule["noncurrentVersionExpiration"] == {"noncurrentDays": 7}


def _policy(recorded: Recorded, name: str) -> dict[str, Any]:
    return json.loads(recorded.inputs("aws:iam/rolePolicy:RolePolicy", name)["policy"])


def test_sse_kms_creates_a_rotating_key_the_identities_may_use() -> None:
    recorded = run(lambda: build(args(encryption=BucketEncryption.KMS), {}))
    key = recorded.inputs("aws:kms/key:Key", "mc-key")
    assert key["enableKeyRotation"] is True and key["tags"]["stack"] == "test"
    sse = recorded.inputs(
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
        "mc-encryption",
    )
    (rule,) = sse["rules"]
    assert rule["applyServerSideEncryptionByDefault"] == {
        "sseAlgorithm": "aws:kms",
        "kmsMasterKeyId": "<known after deploy: mc-key.arn>",
    }
    assert rule["bucketKeyEnabled"] is True
    for role, actions in (
        ("mc-reader", ["kms:Decrypt"]),
        ("mc-writer", ["kms:GenerateDataKey", "kms:Decrypt"]),
    ):
        (statement,) = [
            s for s in _policy(recorded, f"{role}-policy")["Statement"] if s["Sid"] == "UseCacheKey"
        ]
        assert statement["Action"] == actions and statement["Resource"] == "<known after deploy: mc-key.arn>"


def test_sse_kms_with_a_given_key_creates_none() -> None:
    given = "arn:aws:kms:us-east-1:123456789012:key/given"
    recorded = run(lambda: build(args(encryption=BucketEncryption.KMS, kms_key_arn=given), {}))
    assert not [r for r in recorded.registrations if r.type == "aws:kms/key:Key"]
    (statement,) = [
        s for s in _policy(recorded, "mc-reader-policy")["Statement"] if s["Sid"] == "UseCacheKey"
    ]
    assert statement["Resource"] == given


def test_without_kms_no_identity_gets_a_key_grant(recorded: Recorded) -> None:
    for role in ("mc-reader", "mc-writer"):
        assert not any(
            a.startswith("kms:")
            for s in _policy(recorded, f"{role}-policy")["Statement"]
            for a in s["Action"]
        )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"kms_key_arn": "arn:aws:kms:us-east-1:1:key/k"}, "only to encryption KMS"),
        ({"noncurrent_version_days": 0}, "at least 1"),
    ],
)
def test_bucket_args_reject_contradictions(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        args(**changes)


def test_bucket_policy_denies_plain_http_on_bucket_and_objects(recorded: Recorded) -> None:
    policy = json.loads(recorded.inputs("aws:s3/bucketPolicy:BucketPolicy", "mc-tls-only")["policy"])
    (statement,) = policy["Statement"]
    arn = "<known after deploy: mc-bucket.arn>"
    assert statement["Effect"] == "Deny"
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert statement["Resource"] == [arn, f"{arn}/*"]


def test_reader_can_only_read_and_writer_can_write(recorded: Recorded) -> None:
    reader = json.loads(recorded.inputs("aws:iam/rolePolicy:RolePolicy", "mc-reader-policy")["policy"])
    writer = json.loads(recorded.inputs("aws:iam/rolePolicy:RolePolicy", "mc-writer-policy")["policy"])

    def actions(policy: dict) -> set[str]:
        return {a for s in policy["Statement"] for a in s["Action"]}

    assert actions(reader) == {"s3:ListBucket", "s3:GetObject"}
    assert "s3:PutObject" in actions(writer) and "s3:AbortMultipartUpload" in actions(writer)
    assert recorded.inputs("aws:iam/rolePolicy:RolePolicy", "mc-reader-policy")["role"] == (
        "<known after deploy: mc-reader.id>"
    )


def test_identities_are_bound_to_service_accounts_by_pod_identity(recorded: Recorded) -> None:
    for role, account in (("mc-reader", "vllm"), ("mc-writer", "model-cache-fill")):
        association = recorded.inputs(
            "aws:eks/podIdentityAssociation:PodIdentityAssociation", f"{role}-pod-identity"
        )
        assert association["clusterName"] == "cluster-a"
        assert association["namespace"] == "serving"
        assert association["serviceAccount"] == account
        assert association["roleArn"] == f"<known after deploy: {role}.arn>"
        trust = json.loads(recorded.inputs("aws:iam/role:Role", role)["assumeRolePolicy"])
        assert trust["Statement"][0]["Principal"] == {"Service": "pods.eks.amazonaws.com"}
        # only pods of this account's cluster-a, not an association in any cluster anywhere
        assert trust["Statement"][0]["Condition"] == {
            "StringEquals": {"aws:SourceAccount": "<known after deploy: AWS account id>"},
            "ArnEquals": {
                "aws:SourceArn": "arn:aws:eks:us-east-1:<known after deploy: AWS account id>:cluster/cluster-a"
            },
        }
        account_object = recorded.inputs("kubernetes:core/v1:ServiceAccount", f"{role}-service-account")
        assert account_object["metadata"]["name"] == account
        assert account_object["metadata"]["namespace"] == "serving"
        assert account_object["automountServiceAccountToken"] is False  # Pod Identity projects its own token


def test_a_given_cluster_arn_is_what_the_identities_trust() -> None:
    arn = "arn:aws:eks:us-east-1:123456789012:cluster/cluster-a"
    recorded = run(lambda: build(args(cluster_arn=arn), {}))
    trust = json.loads(recorded.inputs("aws:iam/role:Role", "mc-reader")["assumeRolePolicy"])
    assert trust["Statement"][0]["Condition"]["ArnEquals"] == {"aws:SourceArn": arn}


def test_the_trusted_cluster_must_be_known() -> None:
    with pytest.raises(ValueError, match="ARN or the region"):
        args(region=None)


def test_every_child_that_takes_tags_carries_them(recorded: Recorded) -> None:
    tagged = [
        r for r in recorded.registrations if r.custom and r.type.startswith("aws:") and "tags" in r.inputs
    ]
    assert {r.type for r in tagged} == {
        "aws:s3/bucket:Bucket",
        "aws:iam/role:Role",
        "aws:eks/podIdentityAssociation:PodIdentityAssociation",
    }
    for registration in tagged:
        assert TAGS.items() <= registration.inputs["tags"].items(), registration.name
    for account in ("mc-reader-service-account", "mc-writer-service-account"):
        labels = recorded.inputs("kubernetes:core/v1:ServiceAccount", account)["metadata"]["labels"]
        assert labels["llm-serving/stack"] == "test"


def test_service_accounts_can_be_left_to_the_workload() -> None:
    recorded = run(lambda: ModelCache("mc", args(create_service_accounts=False)))
    assert not recorded.of_type("kubernetes:core/v1:ServiceAccount")
    assert len(recorded.of_type("aws:eks/podIdentityAssociation:PodIdentityAssociation")) == 2


def test_pods_wait_for_their_identity(built: tuple[Recorded, ModelCache]) -> None:
    recorded, cache = built
    urns = {r.urn: r.name for r in recorded.registrations}
    assert {urns[resolve(r.urn)] for r in cache.writer_ready} == {
        "mc-writer-policy", "mc-writer-pod-identity", "mc-writer-service-account",
    }  # fmt: skip
    assert {urns[resolve(r.urn)] for r in cache.reader_ready} == {
        "mc-reader-policy", "mc-reader-pod-identity", "mc-reader-service-account",
    }  # fmt: skip


def test_no_serving_identity_may_write_the_compile_cache(recorded: Recorded) -> None:
    """Compiled artifacts are code every later pod of the shape runs: the reader gets no write action on
    any key, the compile cache included."""
    policies = [redact(r.inputs) for r in recorded.registrations if r.type == "aws:iam/rolePolicy:RolePolicy"]
    reader_policies = [p for p in policies if p["role"] == "<known after deploy: mc-reader.id>"]
    assert reader_policies
    for policy in reader_policies:
        actions = [a for s in json.loads(policy["policy"])["Statement"] for a in _listed(s["Action"])]
        assert set(actions) <= {"s3:GetObject", "s3:ListBucket"}, actions


def _listed(action: str | list[str]) -> list[str]:
    return [action] if isinstance(action, str) else action
