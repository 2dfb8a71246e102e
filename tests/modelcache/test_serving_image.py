"""The serving image: hadolint-clean, pinned to versions.py's vLLM, and the cache tool it copies runs on
its own (the copied files only, no Pulumi, no other infra module). No Docker daemon needed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from infra.versions import VLLM_IMAGE
from tests.conftest import REPO_ROOT

IMAGE_DIR = REPO_ROOT / "images" / "serving"
DOCKERFILE = IMAGE_DIR / "Dockerfile"


def test_hadolint_has_no_findings() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    if not hadolint.exists():
        pytest.skip("hadolint is not installed (pip install -r requirements-dev.txt)")
    result = subprocess.run([str(hadolint), str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_base_image_is_the_pinned_vllm() -> None:
    (base,) = re.findall(r"^FROM\s+(\S+)", DOCKERFILE.read_text(), flags=re.MULTILINE)
    assert base == VLLM_IMAGE


def test_tool_dependencies_come_from_requirements_txt_and_exclude_pulumi() -> None:
    (pattern,) = re.findall(r"grep -E '(\^\([^']+\)==)'", DOCKERFILE.read_text())
    lines = (REPO_ROOT / "requirements.txt").read_text().splitlines()
    picked = [line for line in lines if re.match(pattern, line)]
    assert {line.split("==")[0] for line in picked} == {
        "boto3", "botocore", "awscrt", "s3transfer", "huggingface_hub", "modelscope-hub", "typer", "rich",
    }  # fmt: skip
    assert not any("pulumi" in line for line in picked)


def _copied_sources() -> list[tuple[list[str], str]]:
    """(sources, destination) of every COPY of this repository's infra/ code."""
    copies = []
    for line in DOCKERFILE.read_text().splitlines():
        parts = line.split()
        if parts[:1] == ["COPY"] and parts[1].startswith("infra/"):
            copies.append((parts[1:-1], parts[-1]))
    assert copies
    return copies


def test_copied_tool_runs_alone(tmp_path: Path) -> None:
    """Lay out /opt/modelcache/lib as the Dockerfile does; import and run the tool from there only."""
    root = tmp_path / "image"
    for sources, destination in _copied_sources():
        target = root / destination.lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        for source in sources:
            path = REPO_ROOT / source
            if path.is_dir():
                shutil.copytree(
                    path, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__")
                )
            else:
                shutil.copy(path, target / path.name)
    lib = root / "opt" / "modelcache" / "lib"
    probe = (
        "import sys, runpy\n"
        "import infra.modelcache.cli as cli\n"
        "forbidden = [m for m in sys.modules if m.startswith(('pulumi', 'infra.sizing', 'infra.components'))]\n"
        "assert not forbidden, forbidden\n"
        "print(cli.__file__)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(lib)}
    result = subprocess.run(
        [sys.executable, "-P", "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith(str(lib))
    help_text = subprocess.run(
        [sys.executable, "-P", "-m", "infra.modelcache", "--help"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert help_text.returncode == 0 and "pull" in help_text.stdout


def test_entrypoint_execs_vllm_serve_with_the_arguments(tmp_path: Path) -> None:
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "vllm").write_text('#!/usr/bin/env bash\necho "vllm $*"\n')
    (fake_bin / "vllm").chmod(0o755)
    env = {"PATH": f"{fake_bin}:/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run(
        ["bash", str(IMAGE_DIR / "entrypoint.sh"), "--model", "/models/x", "--port", "8000"],
        env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "vllm serve --model /models/x --port 8000"


@pytest.mark.parametrize("script", ["entrypoint.sh", "modelcache.sh"])
def test_shell_scripts_parse(script: str) -> None:
    result = subprocess.run(
        ["bash", "-n", str(IMAGE_DIR / script)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
