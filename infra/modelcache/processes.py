"""Run numbered tasks on threads in several forked processes, each with its own GIL; results come home.

A pull's threads spend their time in syscalls and C (socket reads, O_DIRECT writes, CRCs), but each
piece still takes the interpreter lock a few times, and a thread descheduled while holding it stalls
every other thread of its process. On a busy or a many-core node, a few processes with a few threads
each keep their sockets drained where one process with many threads cannot (docs/benchmarks.md).

Linux only (fork, and PR_SET_PDEATHSIG so a killed parent takes its workers with it). The children
are forked, not spawned: they inherit everything the parent set up (the S3 client, open files) and
start in milliseconds instead of re-importing botocore. The parent must not run other threads when it
forks, and must close pooled connections first (`client.close()`), so no socket is shared.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import resource
import signal
import sys
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any, TypeVar

from infra.errors import UserError

R = TypeVar("R")

_PR_SET_PDEATHSIG = 1


def forking_supported() -> bool:
    return sys.platform == "linux"


def room_for_open_files(needed: int) -> bool:
    """Whether this process may hold `needed` more descriptors, raising its soft limit up to the hard
    one if that is what it takes (1024 soft is common; a pull holds two per file it downloads)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = needed + 64  # stdio, sockets, pipes, the lock file
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return True
    if hard != resource.RLIM_INFINITY and hard < wanted:
        return False
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return True


class WorkerDiedError(UserError):
    """A worker process ended without reporting (killed by the OOM killer, a signal, a crash)."""

    def __init__(self, exitcode: int | None) -> None:
        cause = (
            f"killed by signal {-exitcode}" if exitcode is not None and exitcode < 0 else f"exit {exitcode}"
        )
        super().__init__(
            f"a pull worker process ended unexpectedly ({cause}; out of memory?); run the pull again "
            "(finished files are kept), or pass --processes 1",
            key="--processes",
        )


# A worker's body: it takes task indices until `take()` returns None, hands each result to `deliver`,
# and reports a failure to `fail` (which also stops every worker from taking more tasks).
Drive = Callable[
    [Callable[[], "int | None"], Callable[[int, Any], None], Callable[[BaseException], None]], None
]


def run_in_processes(
    count: int,
    work: Callable[[int], R],
    on_result: Callable[[int, R], None],
    *,
    processes: int,
    threads: int,
) -> None:
    """Run `work(i)` for i in 0..count-1, in order of i, on `threads` threads in each of `processes`
    forked children; call `on_result(i, result)` in the parent as results arrive.

    The first failure stops the rest: no task starts after it, the workers are killed, and the parent
    raises it (a UserError keeps its message and key; other exceptions travel pickled).
    """
    run_drives_in_processes(count, _on_threads(work, threads), on_result, processes=processes)


def run_drives_in_processes(
    count: int, drive: Drive, on_result: Callable[[int, Any], None], *, processes: int
) -> None:
    """Run `drive` in each of `processes` forked children, all taking from the same tasks 0..count-1 in
    order; call `on_result(i, result)` in the parent as results arrive. Failures as run_in_processes."""
    context = multiprocessing.get_context("fork")
    next_task = context.Value("q", 0)  # shared: the lowest task index nobody has taken yet
    workers: list[tuple[BaseProcess, Connection]] = []
    parent_pid = os.getpid()
    try:
        for _ in range(max(1, min(processes, count))):
            reader, writer = context.Pipe(duplex=False)
            process = context.Process(
                target=_worker, args=(parent_pid, count, drive, next_task, writer), daemon=True
            )
            process.start()
            writer.close()
            workers.append((process, reader))
        _collect(workers, on_result)
    finally:
        with next_task.get_lock():
            next_task.value = count
        for process, reader in workers:
            if process.is_alive():
                process.kill()
            process.join()
            reader.close()


def _on_threads(work: Callable[[int], Any], threads: int) -> Drive:
    """A drive that runs `work` on `threads` threads, each taking the next task as it finishes one."""

    def drive(
        take: Callable[[], int | None],
        deliver: Callable[[int, Any], None],
        fail: Callable[[BaseException], None],
    ) -> None:
        def loop() -> None:
            while (index := take()) is not None:
                try:
                    result = work(index)
                except BaseException as error:
                    fail(error)
                    return
                deliver(index, result)

        pool = [threading.Thread(target=loop, name=f"pull-{n}") for n in range(max(1, threads))]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()

    return drive


def _collect(
    workers: list[tuple[BaseProcess, Connection]],
    on_result: Callable[[int, Any], None],
) -> None:
    """Deliver results until every worker has said it is done; raise the first error or death."""
    open_pipes = {reader: process for process, reader in workers}
    while open_pipes:
        for ready in wait(list(open_pipes)):
            assert isinstance(ready, Connection)
            try:
                message = ready.recv()
            except EOFError:  # the pipe closed without a final "done": the process died
                process = open_pipes.pop(ready)
                process.join()
                raise WorkerDiedError(process.exitcode) from None
            kind = message[0]
            if kind == "result":
                on_result(message[1], message[2])
            elif kind == "error":
                raise _error_from(message[1])
            else:  # "done": this worker ran out of tasks
                del open_pipes[ready]


def _worker(parent_pid: int, count: int, drive: Drive, next_task: Any, pipe: Connection) -> None:
    # If the parent is killed (SIGKILL, OOM), this worker dies too instead of downloading on as an orphan.
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before the line above took effect
        os._exit(1)
    send_lock = threading.Lock()
    failed = threading.Event()

    def send(message: tuple[Any, ...]) -> None:
        with send_lock:
            pipe.send(message)

    def take() -> int | None:
        with next_task.get_lock():
            index = next_task.value
            if index >= count or failed.is_set():
                return None
            next_task.value = index + 1
            return index

    def fail(error: BaseException) -> None:
        failed.set()
        with next_task.get_lock():
            next_task.value = count  # nobody starts another task
        send(("error", _portable(error)))

    try:
        drive(take, lambda index, result: send(("result", index, result)), fail)
    except BaseException as error:
        fail(error)
    if not failed.is_set():
        send(("done",))
    pipe.close()


def _portable(error: BaseException) -> tuple[str, Any]:
    """An exception as something that survives pickling: a UserError's own pickling would lose its key."""
    if isinstance(error, UserError):
        text = str(error)
        if error.key and text.startswith(f"{error.key}: "):
            text = text[len(error.key) + 2 :]
        return ("user", (text, error.key))
    try:
        import pickle

        pickle.loads(pickle.dumps(error))
        return ("pickled", error)
    except Exception:
        return ("text", f"{type(error).__name__}: {error}")


def _error_from(portable: tuple[str, Any]) -> BaseException:
    kind, value = portable
    if kind == "user":
        return UserError(value[0], key=value[1])
    if kind == "pickled":
        return value
    return RuntimeError(value)
