"""What `pulumi up` would deploy, for every stack in stacks/, checked for the security properties that must
hold by default (issue 8): the real program under recording mocks (infra.render.run_program)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from infra.components.model_cache import READER_SERVICE_ACCOUNT, WRITER_SERVICE_ACCOUNT
from infra.render import Rendered, redact, run_program
from tests.stacks import STACKS, as_deployed


@pytest.fixture(scope="module", params=STACKS)
def rendered(request: pytest.FixtureRequest) -> Rendered:
    with as_deployed():
        return run_program(request.param)


def _inputs(result: Rendered, type_: str) -> list[dict[str, Any]]:
    found = [redact(r.inputs) for r in result.of_type(type_)]
    assert found, f"the stack renders no {type_}"
    return found


def test_the_api_endpoint_is_not_open_to_the_internet(rendered: Rendered) -> None:
    for cluster in _inputs(rendered, "aws:eks/cluster:Cluster"):
        vpc_config = cluster["vpcConfig"]
        assert vpc_config["endpointPrivateAccess"] is True
        if vpc_config["endpointPublicAccess"]:
            assert "0.0.0.0/0" not in vpc_config["publicAccessCidrs"]
    assert any("Kubernetes API" in line and "is private" in line for line in rendered.logs)


def test_the_model_bucket_is_versioned_and_expires_old_versions(rendered: Rendered) -> None:
    (bucket,) = rendered.of_type("aws:s3/bucket:Bucket")
    (versioning,) = _inputs(rendered, "aws:s3/bucketVersioning:BucketVersioning")
    assert versioning["bucket"] == f"<known after deploy: {bucket.name}.id>"
    assert versioning["versioningConfiguration"]["status"] == "Enabled"
    (lifecycle,) = _inputs(rendered, "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration")
    assert any(
        rule["status"] == "Enabled" and rule["noncurrentVersionExpiration"]["noncurrentDays"] >= 1
        for rule in lifecycle["rules"]
        if "noncurrentVersionExpiration" in rule
    )


def _role_names(rendered: Rendered) -> dict[str, str]:
    """Role reference as policies and associations name it -> the role's resource name."""
    return {
        f"<known after deploy: {r.name}.{attribute}>": r.name
        for r in rendered.of_type("aws:iam/role:Role")
        for attribute in ("id", "arn", "name")
    }


def _statements(policy: dict[str, Any]) -> list[dict[str, Any]]:
    return json.loads(policy["policy"])["Statement"]


def _listed(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


def test_no_serving_identity_can_write_what_other_pods_execute(rendered: Rendered) -> None:
    """The serving pods' role (bound to the reader service account) has no write or delete action on any
    resource; the writer deletes nothing."""
    roles = _role_names(rendered)
    reader_account, writer_account = READER_SERVICE_ACCOUNT, WRITER_SERVICE_ACCOUNT
    bound = {
        a["serviceAccount"]: roles[a["roleArn"]]
        for a in _inputs(rendered, "aws:eks/podIdentityAssociation:PodIdentityAssociation")
    }
    policies = [
        (roles[p["role"]], _statements(p))
        for p in _inputs(rendered, "aws:iam/rolePolicy:RolePolicy")
        if p["role"] in roles
    ]
    reader_actions = [
        a for role, st in policies if role == bound[reader_account] for s in st for a in _listed(s["Action"])
    ]
    assert reader_actions and set(reader_actions) <= {"s3:GetObject", "s3:ListBucket", "kms:Decrypt"}
    attached = [
        a for a in _inputs(rendered, "aws:iam/rolePolicyAttachment:RolePolicyAttachment")
        if roles.get(a["role"]) == bound[reader_account]
    ]  # fmt: skip
    assert not attached
    writer_actions = [
        a for role, st in policies if role == bound[writer_account] for s in st for a in _listed(s["Action"])
    ]
    assert "s3:PutObject" in writer_actions and not any("Delete" in a for a in writer_actions)


def test_kubernetes_secrets_are_envelope_encrypted(rendered: Rendered) -> None:
    keys = {
        f"<known after deploy: {r.name}.arn>": redact(r.inputs) for r in rendered.of_type("aws:kms/key:Key")
    }
    for cluster in _inputs(rendered, "aws:eks/cluster:Cluster"):
        config = cluster["encryptionConfig"]
        assert config["resources"] == ["secrets"]
        assert keys[config["provider"]["keyArn"]]["enableKeyRotation"] is True


def test_every_node_group_requires_imdsv2_with_hop_limit_one(rendered: Rendered) -> None:
    templates = {
        f"<known after deploy: {r.name}.id>": redact(r.inputs)
        for r in rendered.of_type("aws:ec2/launchTemplate:LaunchTemplate")
    }
    for group in _inputs(rendered, "aws:eks/nodeGroup:NodeGroup"):
        options = templates[group["launchTemplate"]["id"]]["metadataOptions"]
        assert options["httpTokens"] == "required" and options["httpPutResponseHopLimit"] == 1
    for node_class in _inputs(rendered, "kubernetes:karpenter.k8s.aws/v1:EC2NodeClass"):
        options = node_class["spec"]["metadataOptions"]
        assert options["httpTokens"] == "required" and options["httpPutResponseHopLimit"] == 1


def test_pod_identity_roles_trust_only_this_accounts_cluster(rendered: Rendered) -> None:
    roles = {
        f"<known after deploy: {r.name}.arn>": redact(r.inputs) for r in rendered.of_type("aws:iam/role:Role")
    }
    for association in _inputs(rendered, "aws:eks/podIdentityAssociation:PodIdentityAssociation"):
        (statement,) = json.loads(roles[association["roleArn"]]["assumeRolePolicy"])["Statement"]
        assert statement["Principal"] == {"Service": "pods.eks.amazonaws.com"}
        condition = statement["Condition"]
        account = condition["StringEquals"]["aws:SourceAccount"]
        assert account and account != "*"
        # the cluster's ARN: its resource's output on a new cluster, or the ARN EKS gives it by name
        new_cluster = {
            f"<known after deploy: {c.name}.arn>"
            for c in rendered.of_type("aws:eks/cluster:Cluster")
            if c.inputs["name"] == association["clusterName"]
        }
        by_name = re.compile(
            rf"arn:aws[a-z-]*:eks:[a-z0-9-]+:{re.escape(account)}:cluster/{association['clusterName']}"
        )
        source_arn = condition["ArnEquals"]["aws:SourceArn"]
        assert source_arn in new_cluster or by_name.fullmatch(source_arn), source_arn


def test_service_accounts_mount_no_api_token(rendered: Rendered) -> None:
    for account in _inputs(rendered, "kubernetes:core/v1:ServiceAccount"):
        assert account["automountServiceAccountToken"] is False, account["metadata"]["name"]
