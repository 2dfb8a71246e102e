"""infra/versions.py is the one home of every version: the config accepts exactly its Kubernetes versions,
Pulumi.yaml's description and default agree with it, and no other file keeps a copy of the list."""

from __future__ import annotations

import re

import kubernetes_validate
import pytest

from infra.config import load_schema, settings_from_values
from infra.errors import UserError
from infra.versions import KUBERNETES_VERSIONS
from tests.conftest import REPO_ROOT


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_kubernetes_version_is_accepted_and_validatable(version: str) -> None:
    assert settings_from_values({"kubernetesVersion": version}, stack="t").kubernetes_version == version
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"a": "b"}}
    kubernetes_validate.validate(config_map, version, strict=True)  # the render tests' validator knows it


def test_a_version_outside_the_list_is_refused_naming_the_list() -> None:
    with pytest.raises(UserError) as raised:
        settings_from_values({"kubernetesVersion": "1.30"}, stack="t")
    listed = ", ".join(repr(v) for v in KUBERNETES_VERSIONS)
    assert str(raised.value) == f"kubernetesVersion: must be one of {listed}, got '1.30'"


def test_pulumi_yaml_names_the_same_kubernetes_versions() -> None:
    key = load_schema()["kubernetesVersion"]
    assert key.default in KUBERNETES_VERSIONS
    assert f"({', '.join(KUBERNETES_VERSIONS[:-1])} or {KUBERNETES_VERSIONS[-1]})" in key.description


def test_no_other_python_file_copies_the_kubernetes_versions() -> None:
    quoted = re.compile("|".join(rf"[\"']{re.escape(v)}[\"']" for v in KUBERNETES_VERSIONS))
    copies = [
        f"{path.relative_to(REPO_ROOT)}:{number}"
        for folder in ("infra", "tests", "policy", "benchmarks")
        for path in sorted((REPO_ROOT / folder).rglob("*.py"))
        if path != REPO_ROOT / "infra" / "versions.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if quoted.search(line)
    ]
    assert not copies, f"import KUBERNETES_VERSIONS from infra.versions instead: {copies}"
