"""`python -m infra diff` on commits of a temporary git repository: a copy of this working tree, committed,
then an unrelated change (a comment in a stack file and the README), then a model change for dev."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import run_infra

REPO = Path(__file__).resolve().parent.parent
GIT = ("git", "-c", "user.name=test", "-c", "user.email=test@llm-serving", "-c", "commit.gpgsign=false")


def _git(repo: Path, *args: str) -> str:
    return subprocess.run([*GIT, "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository whose commits are tagged `start`, `unrelated` and `model`."""
    repo = tmp_path_factory.mktemp("repo")
    files = _git(REPO, "ls-files", "--cached", "--others", "--exclude-standard", "-z").split("\0")
    for name in filter(None, files):
        source = REPO / name
        if source.is_file() and not source.is_symlink():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, repo / name)
    _git(repo, "init", "--quiet")
    _git(repo, "add", "-A")
    _git(repo, "commit", "--quiet", "-m", "start")
    _git(repo, "tag", "start")

    dev = repo / "stacks" / "Pulumi.dev.yaml"
    dev.write_text("# a reviewer's note, nothing the program reads\n" + dev.read_text())
    (repo / "README.md").write_text((repo / "README.md").read_text() + "\nA line of prose.\n")
    _git(repo, "commit", "--quiet", "-am", "unrelated")
    _git(repo, "tag", "unrelated")

    text = dev.read_text().replace("Qwen/Qwen3-8B", "Qwen/Qwen3-14B")
    text = re.sub(r"maxCostPerHour: .*", "maxCostPerHour: 4", text)
    assert "Qwen/Qwen3-14B" in text
    dev.write_text(text)
    _git(repo, "commit", "--quiet", "-am", "dev serves Qwen3-14B")
    _git(repo, "tag", "model")
    return repo


def run_diff(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_infra("diff", *args, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=900, cwd=repo)


def test_an_unrelated_change_is_no_change(history: Path) -> None:
    result = run_diff(history, "--base", "start", "--head", "unrelated", "--stack", "dev")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1].split() == ["dev", "no", "change"]
    assert _git(history, "worktree", "list").count("\n") == 1  # the temporary worktrees are gone


def test_a_model_change_shows_the_new_instance_and_the_cost_delta(history: Path) -> None:
    result = run_diff(
        history, "--base", "unrelated", "--head", "model", "--stack", "dev", "--format", "markdown"
    )
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert text.startswith(
        "### Plan difference for stack `dev`: changed: revision `primary`: model, instance type"
    )
    rows = {
        (cells[1].strip(), cells[2].strip()): [cell.strip() for cell in cells[3:6]]
        for cells in (line.split("|") for line in text.splitlines() if line.startswith("| "))
    }
    assert rows["primary", "instance type"] == ["g6.xlarge", "**g6.12xlarge**", "changed"]
    assert rows["primary", "model"] == ["Qwen/Qwen3-8B", "**Qwen/Qwen3-14B**", "changed"]
    assert rows["primary", "tensor / pipeline parallel"] == ["1 / 1", "**2 / 1**", "changed"]
    for scope in ("primary", "stack total"):
        base_cost, head_cost, delta = (cell.strip("*") for cell in rows[scope, "$/h at max replicas"])
        base_value, head_value = float(base_cost.removeprefix("$")), float(head_cost.removeprefix("$"))
        assert head_value > base_value
        assert delta == f"+${head_value - base_value:.2f}/h"
    assert re.search(r"^- changed: `Deployment llm-serving/vllm-primary`", text, re.MULTILINE)
    # the model cache fill Job is named per model: one removed, one added
    assert re.search(r"^- added: `Job llm-serving/model-cache-fill-qwen3-14b-", text, re.MULTILINE)
    assert re.search(r"^- removed: `Job llm-serving/model-cache-fill-qwen3-8b-", text, re.MULTILINE)


def test_unknown_refs_and_stacks_are_one_line_errors(history: Path) -> None:
    result = run_diff(history, "--base", "no-such-ref")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: --base: 'no-such-ref' is not a commit in {history}; use a branch, tag or sha"
    ]
    result = run_diff(history, "--base", "start", "--head", "start", "--stack", "qa")
    assert result.returncode == 2 and "--stack: no stack 'qa' at either ref" in result.stderr
    assert "Traceback" not in result.stderr
