"""Shared fixtures: paths to ../shared, and real local servers on loopback, each stopped by its PID."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED = REPO_ROOT.parent / "shared"
FETCHED = REPO_ROOT / ".schemas"  # what `make schemas` fetches (tests/upstream_files.py)


def shared_path(*parts: str) -> Path:
    """An upstream file (k8s-schemas/...): from `.schemas/` (`make schemas` fetches it, sha256-checked), else
    from ../shared (CI and machines without internet); skip the calling test, naming `make schemas`, when
    neither has it."""
    for root in (FETCHED, SHARED):
        path = root.joinpath(*parts)
        if path.exists():
            return path
    pytest.skip(f"needs {'/'.join(parts)}: run `make schemas` to fetch it into .schemas/")


def run_infra(
    *args: str, env: Mapping[str, str], timeout: float = 120, cwd: Path = REPO_ROOT
) -> subprocess.CompletedProcess[str]:
    """`python -m infra ARGS` in a fresh process (from the repository root unless `cwd`), as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "infra", *args],
        cwd=cwd,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early with status {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listened on 127.0.0.1:{port} within {timeout_s} s")


def stop_process(process: subprocess.Popen) -> None:
    """Stop a server by its PID: TERM, then KILL if it does not exit within 5 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@pytest.fixture(autouse=True)
def _no_real_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may reach real AWS with a developer's credentials: fake ones, and no profile or IMDS."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A real moto_server on 127.0.0.1 for the whole session; yields its endpoint URL."""
    moto_server = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
    if not Path(moto_server).exists():
        pytest.skip("moto_server is not installed (pip install -r requirements-dev.txt)")
    port = free_port()
    env = {**os.environ, "MOTO_IAM_LOAD_MANAGED_POLICIES": "true"}
    process = subprocess.Popen(
        [moto_server, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        wait_for_port(port, process)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(process)
