"""What `pulumi up` would deploy, for every stack in stacks/, checked for the security properties that must
hold by default (issue 8): the real program under recording mocks (infra.render.run_program)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from infra.render import Rendered, redact, run_program

REPO = Path(__file__).resolve().parent.parent
STACKS = sorted(
    p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in (REPO / "stacks").glob("Pulumi.*.yaml")
)


@pytest.fixture(scope="module", params=STACKS)
def rendered(request: pytest.FixtureRequest) -> Rendered:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
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
    reader_account = rendered.outputs["modelCacheReaderServiceAccount"]
    writer_account = rendered.outputs["modelCacheWriterServiceAccount"]
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
