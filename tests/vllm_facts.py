"""vLLM's /metrics exposition as the tests replay it, from the real vLLM in .venv-vllm.

`metrics_exposition()` is, in order: what `make vllm-metrics` (or an earlier test run) generated into
.schemas/vllm-<version>/ (ignored by git); else generated there now by tests/vllm_metrics_dump.py in
.venv-vllm (vLLM's own metrics logger and prometheus_client registry); else ../shared's copy, where a
machine has one but no .venv-vllm. Nothing of it is committed.

    python -m tests.vllm_facts   # what `make vllm-metrics` runs
"""

from __future__ import annotations

import functools
import os
import subprocess
import tempfile
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from infra.versions import VLLM_VERSION
from tests.conftest import FETCHED, REPO_ROOT, SHARED
from tests.vllm_real_parser import VLLM_PYTHON

EXPOSITION = "metrics-default.prom"
GENERATOR = REPO_ROOT / "tests" / "vllm_metrics_dump.py"
GENERATE_TIMEOUT_S = 600  # importing vLLM on a busy 2-core machine takes one to two minutes


def generated_path(version: str = VLLM_VERSION) -> Path:
    return FETCHED / f"vllm-{version}" / EXPOSITION


def generate_exposition(version: str = VLLM_VERSION) -> Path:
    """Run vLLM's metrics logger in .venv-vllm and write its exposition atomically; the path."""
    target = generated_path(version)
    result = subprocess.run(
        [str(VLLM_PYTHON), str(GENERATOR)],
        capture_output=True,
        text=True,
        timeout=GENERATE_TIMEOUT_S,
        env={**os.environ, "VLLM_TARGET_DEVICE": "cpu"},
        check=False,
    )
    if result.returncode != 0 or "# TYPE vllm:" not in result.stdout:
        raise RuntimeError(f"{GENERATOR.name} failed: {result.stderr[-2000:]}")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=target.parent, delete=False, suffix=".tmp") as handle:
        handle.write(result.stdout)
    os.chmod(handle.name, 0o644)
    Path(handle.name).replace(target)
    return target


def vllm_families(text: str) -> dict[str, str]:
    """vllm:* metric family -> type in an exposition, as metrics.tsv names them (counters without _total).
    The `_created` series prometheus_client adds beside each counter and histogram are not families."""
    parsed = {f.name: f.type for f in text_string_to_metric_families(text) if f.name.startswith("vllm:")}
    return {
        name: kind
        for name, kind in parsed.items()
        if not (name.endswith("_created") and name.removesuffix("_created") in parsed)
    }


@functools.cache
def metrics_exposition(version: str = VLLM_VERSION) -> Path:
    """vLLM's default /metrics exposition (see the module doc); skips the calling test, naming the make
    targets, when neither .venv-vllm nor ../shared can give it."""
    generated = generated_path(version)
    if generated.exists():
        return generated
    if version == VLLM_VERSION and VLLM_PYTHON.exists():
        return generate_exposition(version)
    shared = SHARED / f"vllm-{version}" / EXPOSITION
    if shared.exists():
        return shared
    pytest.skip(f"needs vLLM {version}'s /metrics exposition: run `make vllm-parser vllm-metrics`")


if __name__ == "__main__":
    if not VLLM_PYTHON.exists():
        raise SystemExit(f"{VLLM_PYTHON} is missing: run `make vllm-parser` first")
    print(f"wrote {generate_exposition().relative_to(REPO_ROOT)}")
