"""`python -m infra bench` against stand-ins for the Pulumi CLI (the dev stack's real plan as its outputs)
and kubectl (which keeps the Job it is given and answers with a recorded real `vllm bench serve` log)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from infra.bench.cli import target_revision
from infra.errors import UserError
from infra.versions import KUBERNETES_VERSIONS
from tests.bench.test_bench import RECORDED
from tests.conftest import run_infra
from tests.policy.support import recorded

FAKE_PULUMI = """#!/bin/bash
[ "$*" = "stack output --json --show-secrets --stack dev" ] || { echo "error: no stack named '$6'" >&2; exit 255; }
cat "$FAKE/outputs.json"
"""
FAKE_KUBECTL = """#!/bin/bash
echo "$*" >> "$FAKE/kubectl.log"
stat -c '%a' "$2" >> "$FAKE/kubeconfig-modes"
case "$3" in
  apply) cat > "$FAKE/applied.yaml" ;;
  get) echo '{"status": {"succeeded": 1}}' ;;
  logs) cat "$FAKE/bench.log" ;;
esac
"""


@pytest.fixture
def fake(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, script in (("pulumi", FAKE_PULUMI), ("kubectl", FAKE_KUBECTL)):
        (bin_dir / name).write_text(script)
        (bin_dir / name).chmod(0o755)
    _, plan = recorded("dev")
    outputs = {
        "plan": plan,
        "services": {"primary": "vllm-primary"},
        "namespace": "llm-serving",
        "servingImage": "123456789012.dkr.ecr.us-east-1.amazonaws.com/serving@sha256:" + "b" * 64,
        "apiKeySecretName": "llm-dev-secrets-api-key",
        "hfTokenSecretName": None,
        "kubeconfig": {"apiVersion": "v1", "kind": "Config", "clusters": []},
    }
    (tmp_path / "outputs.json").write_text(json.dumps(outputs))
    (tmp_path / "bench.log").write_text(RECORDED.read_text())
    return tmp_path


def bench(fake: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FAKE": str(fake), "PATH": f"{fake / 'bin'}:{os.environ['PATH']}"}
    return run_infra("bench", *args, env=env)


def test_bench_runs_the_job_and_prints_the_result_next_to_the_plan(fake: Path) -> None:
    result = bench(fake, "--stack", "dev", "--rate", "3")
    assert result.returncode == 0, result.stderr
    plan = recorded("dev")[1]["revisions"]["primary"]
    text = result.stdout
    assert text.startswith(
        f"### benchmark of dev revision primary ({plan['model']}, Service vllm-primary): "
        "sharegpt at 3 req/s, 200 prompts"
    )
    assert "| requests | 6 succeeded, 0 failed at 20 req/s |" in text  # what the recorded run measured
    assert "| TTFT p50 / p90 / p99 (ms) | 22.8 / 40.2 / 40.4 |" in text
    per_million = plan["cost_per_hour_usd"] / (63.68 * 3600) * 1e6
    assert (
        f"| $ per million output tokens | {per_million:.2f} | ${plan['cost_per_hour_usd']:.2f}/h per replica"
        in text
    )
    assert f"{plan['kv_cache_tokens']} tokens" in text
    job = yaml.safe_load((fake / "applied.yaml").read_text())
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(job, version, strict=True)
    assert "--base-url" in (args := job["spec"]["template"]["spec"]["containers"][0]["args"])
    assert args[args.index("--base-url") + 1] == "http://vllm-primary.llm-serving.svc.cluster.local:8000"
    assert args[args.index("--request-rate") + 1] == "3"
    calls = (fake / "kubectl.log").read_text().splitlines()
    assert [call.split()[2] for call in calls] == ["apply", "get", "logs"]
    assert set((fake / "kubeconfig-modes").read_text().split()) == {"600"}, "the kubeconfig is private"
    kubeconfig = Path(calls[0].split()[1])
    assert not kubeconfig.exists(), "and removed afterwards"


def test_dry_run_prints_the_job_and_touches_no_cluster(fake: Path) -> None:
    result = bench(fake, "--stack", "dev", "--service", "vllm-main", "--dataset", "random", "--dry-run")
    assert result.returncode == 0, result.stderr
    job = yaml.safe_load(result.stdout)
    assert (
        job["kind"] == "Job"
        and "--random-input-len" in job["spec"]["template"]["spec"]["containers"][0]["args"]
    )
    assert not (fake / "kubectl.log").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--stack", "dev", "--revision", "canary"],
            "error: --revision: no revision 'canary'; the stack serves primary",
        ),
        (
            ["--stack", "qa", "--service", "s"],
            "error: --stack: cannot read the outputs of stack 'qa': error: no stack named 'qa'",
        ),
        (
            ["--stack", "dev", "--service", "s", "--rate", "0"],
            "error: --rate: 0 is not a request rate; use a positive number",
        ),
    ],
)
def test_mistakes_are_one_line(fake: Path, args: list[str], message: str) -> None:
    result = bench(fake, *args)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [message]


def _revision(weight: int) -> dict[str, Any]:
    return {"model": "Qwen/Qwen3-8B", "weight": weight}


@pytest.mark.parametrize(
    ("weights", "services", "revision", "service", "expected"),
    [
        ({"a": 10, "b": 90}, {"a": "vllm-a", "b": "vllm-b"}, None, None, ("b", "vllm-b")),
        ({"a": 50, "b": 50}, {"a": "vllm-a", "b": "vllm-b"}, None, None, ("a", "vllm-a")),
        ({"a": 10, "b": 90}, {"a": "vllm-a", "b": "vllm-b"}, "a", None, ("a", "vllm-a")),
        ({"a": 10, "b": 90}, {"a": "vllm-a", "b": "vllm-b"}, None, "mine", ("b", "mine")),
    ],
)
def test_the_heaviest_revision_is_measured_unless_one_is_named(
    weights: dict[str, int],
    services: dict[str, str],
    revision: str | None,
    service: str | None,
    expected: tuple[str, str],
) -> None:
    plan = {"revisions": {name: _revision(weight) for name, weight in weights.items()}}
    chosen, revision_plan, target = target_revision(plan, services, revision, service)
    assert (chosen, target) == expected and revision_plan == plan["revisions"][chosen]


def test_a_revision_without_a_service_names_the_option() -> None:
    with pytest.raises(UserError, match="no Service for revision 'a'") as error:
        target_revision({"revisions": {"a": _revision(100)}}, {}, None, None)
    assert error.value.key == "--service"
