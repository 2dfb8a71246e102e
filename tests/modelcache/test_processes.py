"""run_in_processes: every task once, results home, the first failure stops the rest, no orphans."""

from __future__ import annotations

import errno
import os
import resource
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from infra.errors import UserError
from infra.modelcache.processes import (
    WorkerDiedError,
    forking_supported,
    room_for_open_files,
    run_in_processes,
)
from tests.conftest import REPO_ROOT, stop_process

pytestmark = pytest.mark.skipif(not forking_supported(), reason="worker processes are Linux-only")


@pytest.mark.parametrize(("count", "processes", "threads"), [(1, 4, 2), (7, 2, 1), (40, 3, 4), (64, 8, 8)])
def test_every_task_runs_once_and_its_result_comes_home(count: int, processes: int, threads: int) -> None:
    results: dict[int, tuple[int, int]] = {}

    def square(n: int) -> tuple[int, int]:
        return n * n, os.getpid()

    def landed(n: int, result: tuple[int, int]) -> None:
        assert n not in results, f"task {n} delivered twice"
        results[n] = result

    run_in_processes(count, square, landed, processes=processes, threads=threads)
    assert {n: square for n, (square, _) in results.items()} == {n: n * n for n in range(count)}
    pids = {pid for _, pid in results.values()}
    assert os.getpid() not in pids, "tasks run in the workers, not the parent"
    assert len(pids) <= min(processes, count)


def test_results_come_from_several_processes() -> None:
    pids: set[int] = set()

    def slow(n: int) -> int:
        time.sleep(0.05)  # long enough that one worker cannot take every task first
        return os.getpid()

    run_in_processes(12, slow, lambda _, pid: pids.add(pid), processes=3, threads=1)
    assert len(pids) == 3


def test_a_user_error_keeps_its_message_and_key_and_stops_the_rest() -> None:
    done: list[int] = []

    def fail_at_three(n: int) -> int:
        if n == 3:
            raise UserError("the object is corrupt", key="integrity")
        time.sleep(0.02)
        return n

    with pytest.raises(UserError) as caught:
        run_in_processes(200, fail_at_three, lambda n, _: done.append(n), processes=2, threads=1)
    assert str(caught.value) == "integrity: the object is corrupt" and caught.value.key == "integrity"
    assert len(done) < 50, "tasks kept starting after the failure"


def test_an_os_error_keeps_its_errno() -> None:
    def disk_full(n: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError) as caught:
        run_in_processes(4, disk_full, lambda *_: None, processes=2, threads=2)
    assert caught.value.errno == errno.ENOSPC


def test_a_worker_that_dies_is_one_clear_error() -> None:
    def killed(n: int) -> None:
        os.kill(os.getpid(), signal.SIGKILL)  # what the OOM killer does

    died = r"--processes: a pull worker process ended unexpectedly \(killed by signal 9"
    with pytest.raises(WorkerDiedError, match=died):
        run_in_processes(4, killed, lambda *_: None, processes=2, threads=1)


def test_workers_die_with_a_killed_parent(tmp_path: Path) -> None:
    """A SIGKILLed pull (a deleted pod's init container, OOM) must not leave workers downloading on."""
    pids = tmp_path / "pids"
    script = textwrap.dedent(
        f"""
        import os, time
        from infra.modelcache.processes import run_in_processes

        def work(n):
            with open({str(pids)!r}, "a") as handle:
                handle.write(f"{{os.getpid()}}\\n")
            time.sleep(120)

        run_in_processes(2, work, lambda *_: None, processes=2, threads=1)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=REPO_ROOT)
    try:
        deadline = time.monotonic() + 60
        while not pids.exists() or len(pids.read_text().split()) < 2:
            assert parent.poll() is None and time.monotonic() < deadline, "the workers never started"
            time.sleep(0.05)
        parent.kill()
        parent.wait(timeout=10)
    finally:
        stop_process(parent)
    workers = [int(pid) for pid in pids.read_text().split()]
    deadline = time.monotonic() + 30
    while alive := [pid for pid in workers if _running(pid)]:
        assert time.monotonic() < deadline, f"workers {alive} outlived their killed parent"
        time.sleep(0.05)


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_room_for_open_files_raises_the_soft_limit_up_to_the_hard_one() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        if hard == resource.RLIM_INFINITY or hard < 300:
            pytest.skip(f"needs a finite hard limit on open files of at least 300, this one is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (200, hard))
        assert room_for_open_files(100)
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == 200, "enough already: left as it was"
        assert room_for_open_files(200)
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == 264
        assert not room_for_open_files(hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
