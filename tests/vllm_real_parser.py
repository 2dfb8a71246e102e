"""vLLM 0.33.0's own `vllm serve` argument parser, run in .venv-vllm (`make vllm-parser`) through
tests/vllm_parser_check.py: the one source of truth for which flags and values vLLM accepts."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from tests.conftest import REPO_ROOT

VLLM_PYTHON = REPO_ROOT / ".venv-vllm" / "bin" / "python"


def parse_with_vllm(cases: Mapping[str, Sequence[str]]) -> dict[str, dict[str, Any]]:
    """{name: argv} -> {name: {"ok", "error", "values"}}, in one run of the real parser; skips the calling
    test, naming the make target, when .venv-vllm has not been built."""
    if not VLLM_PYTHON.exists():
        pytest.skip(
            f"needs vLLM's parser in {VLLM_PYTHON.parent.parent}: run `make vllm-parser` (make test does)"
        )
    result = subprocess.run(
        [str(VLLM_PYTHON), str(REPO_ROOT / "tests" / "vllm_parser_check.py")],
        input=json.dumps([{"name": name, "args": list(args)} for name, args in cases.items()]),
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "VLLM_TARGET_DEVICE": "cpu"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)
