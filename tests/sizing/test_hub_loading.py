"""A model that is not in the catalog is read from the Hub: here a fake Hub endpoint on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, free_port, stop_process, wait_for_port

pytestmark = pytest.mark.integration

REPO = "someorg/tiny-llama"
CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "max_position_embeddings": 131072,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
}


@contextmanager
def fake_hub(root: Path, *extra: str) -> Iterator[str]:
    (root / "config.json").write_text(json.dumps(CONFIG))
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "tests/modelcache/fake_hub.py"), "--root", str(root), "--repo", REPO,
         "--commit", "a" * 40, "--port", str(port), "--max-seconds", "120", *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port(port, process)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(process)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with fake_hub(tmp_path_factory.mktemp("hub-model")) as url:
        yield url


def run_plan(hub: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_ENDPOINT": hub, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0"}
    return subprocess.run(
        [sys.executable, "-m", "infra", "plan", *args],
        capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=120,
    )  # fmt: skip


def test_plan_reads_an_uncatalogued_model_from_the_hub(hub: str, tmp_path: Path) -> None:
    env = {**os.environ, "HF_ENDPOINT": hub, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0"}
    result = subprocess.run(
        [sys.executable, "-m", "infra", "plan", REPO, "--max-model-len", "8192", "--json"],
        capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    # Llama-3.2-1B's shapes: 1.236B parameters with tied embeddings.
    assert plan["model"] == REPO and plan["params_billion"] == pytest.approx(1.236, abs=0.001)
    assert plan["kv_bytes_per_token_per_gpu"] == 2 * 16 * 8 * 64 * 2


def test_a_repo_the_hub_does_not_have_is_a_clear_error(hub: str, tmp_path: Path) -> None:
    env = {**os.environ, "HF_ENDPOINT": hub, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0"}
    result = subprocess.run(
        [sys.executable, "-m", "infra", "plan", "someorg/missing-model"],
        capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert "someorg/missing-model" in result.stderr and "Traceback" not in result.stderr


def requests_for(repo: str, log: Path) -> list[str]:
    """The fake Hub's requests about `repo` (huggingface_hub also asks it unrelated things)."""
    return [line for line in log.read_text().splitlines() if repo in line]


def test_a_typo_fails_on_the_first_answer_and_suggests_the_catalog_model(tmp_path: Path) -> None:
    log = tmp_path / "requests.log"
    with fake_hub(tmp_path, "--log", str(log)) as url:
        result = run_plan(url, tmp_path, "Qwen/Qwen3-8Bx")
    assert result.returncode == 2
    assert result.stderr.startswith("error: model: Qwen/Qwen3-8Bx is not on the Hub")
    assert "did you mean Qwen/Qwen3-8B" in result.stderr and "Retrying" not in result.stderr
    assert len(requests_for("Qwen/Qwen3-8Bx", log)) == 1  # a 404 is final: no retries


def test_a_flaky_hub_is_retried_until_it_answers(tmp_path: Path) -> None:
    log = tmp_path / "requests.log"
    with fake_hub(tmp_path, "--fail-first", "2", "--log", str(log)) as url:
        result = run_plan(url, tmp_path, REPO, "--max-model-len", "8192", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["model"] == REPO
    config_heads = [
        line for line in requests_for(REPO, log) if line.startswith("HEAD") and "config.json" in line
    ]
    assert len(config_heads) == 3  # two 503s, each retried
