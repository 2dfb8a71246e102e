"""The GitHub workflows: actionlint and zizmor pass on every one (and fail on a broken copy), every action is
pinned by commit, every job states its permissions, the preview matrix is every stack file, and deploys
run dev, staging, prod behind their environments, one update per stack at a time."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
WORKFLOWS = REPO / ".github" / "workflows"
FILES = sorted(WORKFLOWS.glob("*.yml"))
BIN = Path(sys.executable).parent
STACKS = sorted(
    p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in (REPO / "stacks").glob("Pulumi.*.yaml")
)
PINNED = re.compile(r"^(?P<action>[\w.-]+/[\w./-]+)@(?P<sha>[0-9a-f]{40}) # (?P<tag>v\d+\.\d+\.\d+)$")


def tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.skip(f"needs {name}: .venv/bin/pip install -r requirements-dev.txt")
    return str(path)


def load(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text())
    document["on"] = document.pop(True, document.get("on"))  # YAML 1.1 reads the key `on` as True
    return document


def steps(document: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(job, step) for job, spec in document["jobs"].items() for step in spec.get("steps", ())]


def test_there_are_preview_and_deploy_workflows() -> None:
    assert {p.name for p in FILES} == {"preview.yml", "deploy.yml", "deploy-stack.yml"}


def test_actionlint_passes_every_workflow() -> None:
    result = subprocess.run([tool("actionlint"), *map(str, FILES)], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr


def test_zizmor_passes_every_workflow() -> None:
    result = subprocess.run(
        [tool("zizmor"), "--offline", "--no-progress", str(WORKFLOWS)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No findings to report" in result.stdout


def test_both_checkers_fail_a_broken_workflow(tmp_path: Path) -> None:
    """An unpinned action, a pull-request title expanded into a script, and a typo'd key: each checker
    must object, or a passing run above proves nothing."""
    broken = (WORKFLOWS / "preview.yml").read_text()
    broken = re.sub(r"actions/checkout@[0-9a-f]{40} # v[\d.]+", "actions/checkout@v7", broken, count=1)
    broken = broken.replace(
        "      - run: make test",
        '      - run: echo "${{ github.event.pull_request.title }}"\n        timeout-minute: 5',
    )
    workflows = tmp_path / ".github" / "workflows"
    workflows.mkdir(parents=True)
    (workflows / "preview.yml").write_text(broken)
    lint = subprocess.run([tool("actionlint"), "preview.yml"], capture_output=True, text=True, cwd=workflows)
    assert lint.returncode == 1 and "timeout-minute" in lint.stdout
    audit = subprocess.run(
        [tool("zizmor"), "--offline", "--no-progress", str(workflows)], capture_output=True, text=True
    )
    assert audit.returncode != 0
    assert "unpinned-uses" in audit.stdout and "template-injection" in audit.stdout


def test_every_action_is_pinned_by_commit_with_its_tag_noted() -> None:
    pins: dict[str, set[str]] = {}
    for path in FILES:
        for line in path.read_text().splitlines():
            match = re.match(r"^\s*(?:- )?uses: (.+)$", line)
            if not match or match.group(1).startswith("./"):
                continue
            pinned = PINNED.match(match.group(1))
            assert pinned, (
                f"{path.name}: {match.group(1)} is not pinned by a full commit sha with its tag noted"
            )
            pins.setdefault(pinned["action"], set()).add(f"{pinned['sha']} {pinned['tag']}")
    assert {action: len(versions) for action, versions in pins.items()} == dict.fromkeys(pins, 1)
    assert set(pins) == {
        "actions/checkout",
        "actions/setup-python",
        "actions/upload-artifact",
        "actions/download-artifact",
        "aws-actions/configure-aws-credentials",
        "pulumi/actions",
    }


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_job_states_least_privilege_permissions(path: Path) -> None:
    document = load(path)
    assert document["permissions"] == {}, "the workflow grants nothing by default"
    for name, job in document["jobs"].items():
        permissions = job.get("permissions")
        assert isinstance(permissions, dict) and permissions, f"{path.name}: job {name} states no permissions"
        assert set(permissions.values()) <= {"read", "write"} and permissions.get("contents") == "read"
        writes = {scope for scope, level in permissions.items() if level == "write"}
        assert writes <= {"id-token", "pull-requests"}, f"{path.name}: job {name} writes {writes}"
        uses_aws = any("configure-aws-credentials" in str(step.get("uses")) for step in job.get("steps", ()))
        assert ("id-token" in writes) == (uses_aws or "deploy-stack.yml" in str(job.get("uses"))), name


def test_checkouts_keep_no_credentials() -> None:
    for path in FILES:
        for job, step in steps(load(path)):
            if "actions/checkout" in str(step.get("uses")):
                assert step["with"]["persist-credentials"] is False, f"{path.name}: {job}"


def run_step_script(script: str, cwd: Path) -> dict[str, str]:
    """Run a step's `run:` script with bash as a runner would, and read what it wrote to GITHUB_OUTPUT."""
    output = cwd / "github-output"
    output.write_text("")
    env = {"GITHUB_OUTPUT": str(output), "PATH": "/usr/bin:/bin"}
    subprocess.run(["bash", "-e", "-c", script], cwd=cwd, env=env, check=True)
    return dict(line.split("=", 1) for line in output.read_text().splitlines())


def _step(document: dict[str, Any], job: str, step_id: str) -> dict[str, Any]:
    (step,) = [step for step in document["jobs"][job]["steps"] if step.get("id") == step_id]
    return step


def test_the_preview_matrix_is_every_stack_file(tmp_path: Path) -> None:
    preview = load(WORKFLOWS / "preview.yml")
    script = _step(preview, "stacks", "list")["run"]
    shutil.copytree(REPO / "stacks", tmp_path / "stacks")
    assert json.loads(run_step_script(script, tmp_path)["stacks"]) == STACKS
    (tmp_path / "stacks" / "Pulumi.qa.yaml").write_text("config: {}\n")
    (tmp_path / "stacks" / "README.md").write_text("not a stack\n")
    assert json.loads(run_step_script(script, tmp_path)["stacks"]) == sorted([*STACKS, "qa"])
    for job in ("offline", "preview"):
        assert preview["jobs"][job]["strategy"]["matrix"] == {
            "stack": "${{ fromJSON(needs.stacks.outputs.stacks) }}"
        }
        assert "stacks" in preview["jobs"][job]["needs"]


def test_preview_runs_the_diff_then_the_policy_pack_and_edits_one_comment_per_stack() -> None:
    preview = load(WORKFLOWS / "preview.yml")
    assert preview["on"] == {"pull_request": None}, (
        "never pull_request_target: fork code must not see secrets"
    )
    offline = "\n".join(step.get("run", "") for _, step in steps({"jobs": {"o": preview["jobs"]["offline"]}}))
    assert '-m infra diff --base HEAD^1 --head HEAD --stack "$STACK" --format markdown' in offline
    job = preview["jobs"]["preview"]
    assert "github.event.pull_request.head.repo.full_name == github.repository" in job["if"]
    assert (
        job["concurrency"]["group"] == "preview-${{ matrix.stack }}-${{ github.event.pull_request.number }}"
    )
    pulumi = _step(preview, "preview", "preview")
    assert pulumi["with"]["command"] == "preview" and pulumi["with"]["policyPacks"] == "policy/"
    comment = next(step["run"] for _, step in steps({"jobs": {"p": job}}) if "gh api" in step.get("run", ""))
    assert 'marker="<!-- llm-serving-preview:${STACK} -->"' in comment
    assert "--method PATCH" in comment and "--method POST" in comment


def test_the_pulumi_cli_is_the_sdk_version(tmp_path: Path) -> None:
    pinned = re.search(r"^pulumi==(\S+)$", (REPO / "requirements.txt").read_text(), re.MULTILINE)
    assert pinned
    shutil.copy(REPO / "requirements.txt", tmp_path / "requirements.txt")
    for name, job in (("preview.yml", "preview"), ("deploy-stack.yml", "up")):
        document = load(WORKFLOWS / name)
        assert run_step_script(_step(document, job, "pulumi")["run"], tmp_path) == {"version": pinned[1]}


def test_deploys_go_dev_staging_prod_each_in_its_environment_and_concurrency_group() -> None:
    deploy = load(WORKFLOWS / "deploy.yml")
    assert deploy["on"] == {"push": {"branches": ["main"]}}
    order, needs = [], "test"
    while True:
        (next_job,) = [name for name, job in deploy["jobs"].items() if job.get("needs") == needs] or [None]
        if next_job is None:
            break
        order.append(deploy["jobs"][next_job]["with"]["stack"])
        assert deploy["jobs"][next_job]["uses"] == "./.github/workflows/deploy-stack.yml"
        needs = next_job
    assert order == ["dev", "staging", "prod"] and sorted(order) == STACKS, (
        "every stack is deployed, in order"
    )
    stack = load(WORKFLOWS / "deploy-stack.yml")
    (up,) = stack["jobs"].values()
    assert up["environment"] == "${{ inputs.stack }}"
    assert up["concurrency"] == {"group": "deploy-${{ inputs.stack }}", "cancel-in-progress": False}
    uses = [step for step in up["steps"] if "pulumi/actions" in str(step.get("uses"))]
    assert [(s["with"]["command"], s["with"]["policyPacks"]) for s in uses] == [("up", "policy/")]
    assert up["steps"][-1]["run"] == '.venv/bin/python -m infra smoke --stack "$STACK"'
