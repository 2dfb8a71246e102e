"""What `pulumi up` would deploy, for every stack in stacks/, checked for the security properties that must
hold by default (issue 8): the real program under recording mocks (infra.render.run_program)."""

from __future__ import annotations

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
