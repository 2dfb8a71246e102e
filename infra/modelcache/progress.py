"""Progress: a bar on a terminal, a plain line every few seconds in a container log. Thread-safe."""

from __future__ import annotations

import sys
import threading
import time
from types import TracebackType
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

GiB = 1024**3


def format_progress_line(verb: str, done: int, total: int, elapsed_s: float) -> str:
    """`pull: 1.25/4.00 GiB (31%) 512 MiB/s`: one greppable line, no control characters."""
    percent = 100 * done / total if total else 100.0
    rate = done / elapsed_s / 2**20 if elapsed_s > 0 else 0.0
    return f"{verb}: {done / GiB:.2f}/{total / GiB:.2f} GiB ({percent:.0f}%) {rate:.0f} MiB/s"


class ProgressReporter:
    """Counts bytes from many threads; renders with rich on a TTY, else logs a line every `interval_s`."""

    def __init__(
        self, verb: str, total: int, *, stream: TextIO | None = None, interval_s: float = 5.0
    ) -> None:
        self.verb = verb
        self.total = total
        self.done = 0
        self._stream = stream or sys.stderr
        self._interval_s = interval_s
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._last_line = 0.0
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        if self._stream.isatty():
            # rich only for a terminal: importing it costs a container's pull ~0.2 CPU s for nothing.
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self._bar = Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                DownloadColumn(binary_units=True),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                transient=False,
            )

    def __enter__(self) -> ProgressReporter:
        self._started = time.monotonic()
        if self._bar is not None:
            self._bar.start()
            self._task = self._bar.add_task(self.verb, total=self.total)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.stop()
        elif exc_type is None:
            self._print_line()

    def advance(self, nbytes: int) -> None:
        with self._lock:
            self.done += nbytes
            due = time.monotonic() - self._last_line >= self._interval_s
            if due:
                self._last_line = time.monotonic()
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, advance=nbytes)
        elif due:
            self._print_line()

    def _print_line(self) -> None:
        line = format_progress_line(self.verb, self.done, self.total, time.monotonic() - self._started)
        print(line, file=self._stream, flush=True)
