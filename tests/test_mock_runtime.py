"""What infra/mock_runtime.py takes from Pulumi's private runtime API still exists and still behaves as used.

A Pulumi upgrade that breaks one of these fails here by name, instead of as a render that silently
loses secrets, computed outputs or exports.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pulumi
import pulumi_aws as aws
import pytest
from pulumi.runtime import rpc

from infra import mock_runtime
from infra.mock_runtime import (
    SECRET_SIG,
    SECRET_VALUE,
    UNKNOWN,
    install_mocks,
    missing_private_api,
    root_resource,
    run_pulumi_func,
    sync_await,
)
from infra.render import redact
from tests.conftest import REPO_ROOT


def test_every_private_name_used_exists() -> None:
    assert missing_private_api() == []


def test_a_missing_name_is_reported_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(rpc, "_RESOURCE_MODULES")
    assert missing_private_api() == ["pulumi.runtime.rpc._RESOURCE_MODULES"]


def test_importing_against_a_pulumi_without_it_fails_loudly() -> None:
    code = "from pulumi.runtime import rpc\ndel rpc._special_sig_key\nimport infra.mock_runtime\n"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120
    )
    assert result.returncode != 0
    assert "ImportError: this Pulumi SDK lacks pulumi.runtime.rpc._special_sig_key" in result.stderr


def test_sync_await_runs_a_coroutine_to_completion() -> None:
    assert sync_await(asyncio.sleep(0, result=42)) == 42


def test_secrets_travel_with_the_wire_markers_render_redacts() -> None:
    recorder = install_mocks(project="p", stack="s")

    def program() -> None:
        aws.ssm.Parameter("p", type="SecureString", value=pulumi.Output.secret("x"))

    sync_await(run_pulumi_func(program))
    (parameter,) = [r for r in recorder.registrations if r.type == "aws:ssm/parameter:Parameter"]
    assert parameter.inputs["value"] == {SECRET_SIG: SECRET_VALUE, "value": "x"}
    assert redact(parameter.inputs)["value"] == "[secret]"


def test_unknowns_and_provider_modules_are_what_the_mocks_read() -> None:
    assert isinstance(UNKNOWN, str) and redact(UNKNOWN) == "<known after deploy: a value>"
    assert "aws:ecr/repository" in rpc._RESOURCE_MODULES  # filled when pulumi_aws was imported
    assert "repositoryUrl" in mock_runtime._string_outputs("aws:ecr/repository:Repository")


def test_the_root_resource_holds_the_exports_of_the_last_run() -> None:
    install_mocks(project="p", stack="s")
    sync_await(run_pulumi_func(lambda: pulumi.export("answer", 42)))
    assert sync_await(pulumi.Output.from_input(root_resource().outputs["answer"]).future()) == 42
