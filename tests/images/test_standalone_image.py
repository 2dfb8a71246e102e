"""The single-container image (images/standalone): hadolint on every Dockerfile, the pins it shares with
infra/versions.py, `promtool check config` on its Prometheus config, and its entrypoint run with stand-in
`vllm` and `prometheus` programs: both start, signals reach both, vLLM's exit code is the container's."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from infra import versions
from tests.conftest import REPO_ROOT, stop_process
from tests.observability.support import prometheus_tool

IMAGE_DIR = REPO_ROOT / "images" / "standalone"
DOCKERFILE = IMAGE_DIR / "Dockerfile"
ENTRYPOINT = IMAGE_DIR / "entrypoint.sh"
TIMEOUT_S = 10

# A stand-in records its arguments and every signal it gets; TERM/INT end it with the code in
# <NAME>_EXIT_ON_TERM; <NAME>_EXIT_AFTER makes it exit by itself with <NAME>_EXIT_CODE.
STAND_IN = textwrap.dedent(
    """\
    #!{python}
    import os, signal, sys, time
    name = os.path.basename(sys.argv[0]).upper()
    out = os.environ["STAND_IN_DIR"] + "/" + name.lower()
    def record(text):
        with open(out + ".signals", "a") as f:
            f.write(text + "\\n")
    def on_signal(number, frame):
        record(signal.Signals(number).name)
        if number in (signal.SIGTERM, signal.SIGINT):
            sys.exit(int(os.environ.get(name + "_EXIT_ON_TERM", "0")))
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
        signal.signal(s, on_signal)
    with open(out + ".args.tmp", "w") as f:  # renamed into place: the test never reads a half-written file
        f.write("\\n".join(sys.argv[1:]))
    os.rename(out + ".args.tmp", out + ".args")
    deadline = time.monotonic() + float(os.environ.get(name + "_EXIT_AFTER", "30"))
    while time.monotonic() < deadline:
        time.sleep(0.05)
    sys.exit(int(os.environ.get(name + "_EXIT_CODE", "0")))
    """
)


def hadolint() -> Path:
    path = Path(sys.executable).parent / "hadolint"
    if not path.exists():
        pytest.skip("hadolint is not installed (pip install -r requirements-dev.txt)")
    return path


@pytest.mark.parametrize(
    "dockerfile", sorted((REPO_ROOT / "images").glob("*/Dockerfile")), ids=lambda p: p.parent.name
)
def test_hadolint_has_no_findings(dockerfile: Path) -> None:
    result = subprocess.run([str(hadolint()), str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_pins_match_versions_py() -> None:
    text = DOCKERFILE.read_text()
    assert re.findall(r"^FROM\s+(\S+)", text, flags=re.MULTILINE) == [versions.VLLM_IMAGE]
    args = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", text, flags=re.MULTILINE))
    assert args == {
        "PROMETHEUS_VERSION": versions.STANDALONE_PROMETHEUS_VERSION,
        "PROMETHEUS_SHA256": versions.STANDALONE_PROMETHEUS_SHA256,
    }
    assert re.fullmatch(r"[0-9a-f]{64}", versions.STANDALONE_PROMETHEUS_SHA256)
    assert "sha256sum --check --strict" in text and "${PROMETHEUS_SHA256}" in text


def test_every_copied_file_exists() -> None:
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("COPY "):
            source = line.split()[-2]
            assert (REPO_ROOT / source).is_file(), source


def test_promtool_checks_the_bundled_config() -> None:
    result = subprocess.run(
        [str(prometheus_tool("promtool")), "check", "config", str(IMAGE_DIR / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr
    assert '"127.0.0.1:8000"' in (IMAGE_DIR / "prometheus.yml").read_text()


@dataclass
class Container:
    process: subprocess.Popen[bytes]
    stand_ins: Path

    def recorded(self, name: str, kind: str) -> list[str]:
        path = self.stand_ins / f"{name}.{kind}"
        return path.read_text().splitlines() if path.exists() else []

    def wait_until(self, condition, what: str) -> None:
        deadline = time.monotonic() + TIMEOUT_S
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting until {what}"
            time.sleep(0.05)

    def wait_started(self) -> None:
        self.wait_until(
            lambda: (self.stand_ins / "vllm.args").exists() and (self.stand_ins / "prometheus.args").exists(),
            "both programs started",
        )

    def exit_code(self) -> int:
        return self.process.wait(timeout=TIMEOUT_S)


def _default_signal_handling() -> None:
    """A container's first process starts with every signal at its default. A test runner started under
    `nohup` ignores SIGHUP and would hand that down, and bash cannot trap a signal ignored when it started."""
    for number in (
        signal.SIGHUP,
        signal.SIGINT,
        signal.SIGQUIT,
        signal.SIGTERM,
        signal.SIGUSR1,
        signal.SIGUSR2,
    ):
        signal.signal(number, signal.SIG_DFL)


@pytest.fixture
def run_entrypoint(tmp_path: Path) -> Iterator:
    started: list[subprocess.Popen[bytes]] = []
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("vllm", "prometheus"):
        (bin_dir / name).write_text(STAND_IN.format(python=sys.executable))
        (bin_dir / name).chmod(0o755)

    def run(*args: str, **env: str) -> Container:
        process = subprocess.Popen(
            ["bash", str(ENTRYPOINT), *args],
            preexec_fn=_default_signal_handling,
            env={
                **os.environ,
                "PATH": f"{bin_dir}:{os.environ['PATH']}",
                "STAND_IN_DIR": str(tmp_path),
                "PROMETHEUS_DATA": str(tmp_path / "tsdb"),
                **env,
            },
        )
        started.append(process)
        return Container(process, tmp_path)

    yield run
    for process in started:
        stop_process(process)


def test_both_start_with_their_arguments(run_entrypoint) -> None:
    container = run_entrypoint("meta-llama/Llama-3.1-8B-Instruct", "--max-model-len", "8192")
    container.wait_started()
    assert container.recorded("vllm", "args") == [
        "serve",
        "meta-llama/Llama-3.1-8B-Instruct",
        "--max-model-len",
        "8192",
    ]
    prometheus_args = container.recorded("prometheus", "args")
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus_args
    assert "--web.listen-address=0.0.0.0:9090" in prometheus_args
    assert f"--storage.tsdb.path={container.stand_ins / 'tsdb'}" in prometheus_args
    container.process.send_signal(signal.SIGTERM)
    assert container.exit_code() == 0


def test_signals_reach_both_and_vllms_exit_code_is_the_containers(run_entrypoint) -> None:
    container = run_entrypoint("m", VLLM_EXIT_ON_TERM="7", PROMETHEUS_EXIT_ON_TERM="0")
    container.wait_started()
    # A signal that does not end vLLM is forwarded and the container keeps running.
    container.process.send_signal(signal.SIGHUP)
    container.wait_until(
        lambda: (
            container.recorded("vllm", "signals") == ["SIGHUP"]
            and container.recorded("prometheus", "signals") == ["SIGHUP"]
        ),
        "both got SIGHUP",
    )
    assert container.process.poll() is None
    container.process.send_signal(signal.SIGTERM)
    assert container.exit_code() == 7
    assert container.recorded("vllm", "signals") == ["SIGHUP", "SIGTERM"]
    assert container.recorded("prometheus", "signals") == ["SIGHUP", "SIGTERM"]


def test_when_vllm_exits_the_container_exits_with_its_code_and_stops_prometheus(run_entrypoint) -> None:
    container = run_entrypoint("m", VLLM_EXIT_AFTER="1", VLLM_EXIT_CODE="3")
    container.wait_started()
    assert container.exit_code() == 3
    assert container.recorded("prometheus", "signals") == ["SIGTERM"]
    assert container.recorded("vllm", "signals") == []


def test_prometheus_exiting_does_not_stop_serving(run_entrypoint) -> None:
    container = run_entrypoint(
        "m", PROMETHEUS_EXIT_AFTER="0.2", PROMETHEUS_EXIT_CODE="1", VLLM_EXIT_ON_TERM="0"
    )
    container.wait_started()
    time.sleep(1)
    assert container.process.poll() is None
    container.process.send_signal(signal.SIGINT)
    assert container.exit_code() == 0
    assert container.recorded("vllm", "signals") == ["SIGINT"]
