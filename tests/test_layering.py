"""The README's layering, measured from the imports: pure sizing and builders load neither boto3 nor Pulumi.

Each check runs in a fresh interpreter, since this test process has long since imported everything.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import pytest

import infra.kubernetes
import infra.sizing
from tests.conftest import REPO_ROOT

# Modules of infra/sizing that talk to AWS on purpose (`gpus refresh`): botocore is theirs, Pulumi is not.
AWS_READERS = {"infra.sizing.gpu_refresh", "infra.sizing.gpus_cli"}
BUILDERS = ["infra.aws_policies", "infra.images", "infra.aws_regions"] + [
    f"infra.kubernetes.{info.name}" for info in pkgutil.iter_modules(infra.kubernetes.__path__)
]
SIZING = [f"infra.sizing.{info.name}" for info in pkgutil.iter_modules(infra.sizing.__path__)]


def loaded_after_import(modules: list[str]) -> set[str]:
    """Top-level packages loaded by importing `modules` in a fresh interpreter."""
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120, check=True
    )
    return set(json.loads(result.stdout))


def test_the_module_lists_are_not_empty() -> None:
    assert "infra.kubernetes.model_cache" in BUILDERS and "infra.sizing.planner" in SIZING


@pytest.mark.parametrize(
    ("modules", "forbidden"),
    [
        (BUILDERS, {"boto3", "botocore", "pulumi", "pulumi_aws", "pulumi_kubernetes", "huggingface_hub"}),
        (
            [name for name in SIZING if name not in AWS_READERS],
            {"boto3", "botocore", "pulumi", "pulumi_aws", "pulumi_kubernetes"},
        ),
        (SIZING, {"boto3", "pulumi", "pulumi_aws", "pulumi_kubernetes"}),
    ],
    ids=["builders", "pure-sizing", "all-sizing"],
)
def test_pure_layers_load_neither_boto3_nor_pulumi(modules: list[str], forbidden: set[str]) -> None:
    assert loaded_after_import(modules) & forbidden == set()
