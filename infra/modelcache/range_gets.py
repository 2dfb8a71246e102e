"""Ranged GETs of presigned URLs on non-blocking keep-alive sockets, all driven by one thread.

Why not a thread per connection: on the 2-vCPU benchmark machine the pull's threads spent more time
handing the interpreter lock to each other (a futex call and a context switch per socket read or
write, ~170,000 per 2 GiB) than moving bytes, and one process with one thread per connection drained
its sockets at ~0.9x of s5cmd (Go, one netpoller). One thread waiting in epoll on all its sockets
never contends for the lock and wakes once per batch of readable sockets (docs/benchmarks.md).

Each request is a presigned URL (it carries its own SigV4 signature, made by botocore) plus a `Range`
header, which S3 accepts unsigned. Only the plain success is handled here: a `206` (or `200` for a
whole object) with a `Content-Length` of exactly the range. Anything else (an S3 error, throttling, a
reset, a timeout, a short body) is reported through `failed`, and the caller retries that range on
its botocore path, which maps S3's errors and retries as it always did.
"""

from __future__ import annotations

import contextlib
import mmap
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar
from urllib.parse import SplitResult, urlsplit


class RangeTask(Protocol):
    """One ranged GET: where to fetch it, and where its bytes go."""

    url: str  # presigned
    first: int  # first and last byte of the range, inclusive
    last: int

    def write(self, piece: memoryview, offset: int) -> None:
        """Take the bytes at `offset` of the object (called in order, piece after piece)."""


T = TypeVar("T", bound=RangeTask)


class RangeFailedError(ConnectionError):
    """A range this path does not complete: a non-success response, a broken or silent connection."""


@dataclass
class _Connection:
    sock: socket.socket
    task: Any = None  # the RangeTask in flight
    head: bytearray | None = None  # the response head while it is being read, then None
    got: int = 0  # body bytes of the current range received so far
    keep_alive: bool = True
    last_activity: float = 0.0


def fetch_ranges(
    next_task: Callable[[], T | None],
    done: Callable[[T], None],
    failed: Callable[[T, BaseException], None],
    *,
    connections: int,
    piece_bytes: int,
    connect_timeout_s: float,
    read_timeout_s: float,
    stop: threading.Event,
    ssl_context: ssl.SSLContext | None = None,
) -> None:
    """Run tasks from `next_task()` until it returns None, `connections` at a time, on this thread.

    `done(task)` follows a range's last byte; `failed(task, error)` a range this path gave up on (the
    caller retries it another way). An exception from `write`, `done` or `failed` (a full disk) stops
    everything and propagates. Returns once every started range ended, or soon after `stop` is set.
    """
    # Page-aligned (an anonymous mmap), not a bytearray: malloc puts a large block 16 bytes past a page
    # boundary, and the kernel's copy from the socket into a destination that is not cache-line
    # aligned cost ~4x as much per byte on the benchmark's AMD EPYC (perf: 0.58 vs 0.12 CPU s/GiB).
    buffer = memoryview(mmap.mmap(-1, piece_bytes))
    poller = select.epoll()
    active: dict[int, _Connection] = {}

    def close(conn: _Connection) -> None:
        active.pop(conn.sock.fileno(), None)
        with contextlib.suppress(KeyError, ValueError, OSError):
            poller.unregister(conn.sock)
        conn.sock.close()

    def give_up(conn: _Connection, error: BaseException) -> None:
        task = conn.task
        close(conn)
        if task is not None:
            failed(task, error)

    def start(conn: _Connection | None, task: T) -> bool:
        """Send `task`'s request on `conn`, or on a new connection if None; False if it could not be
        sent (a reused connection the server had closed is replaced once first)."""
        url = urlsplit(task.url)
        request = (
            f"GET {url.path}?{url.query} HTTP/1.1\r\nHost: {url.netloc}\r\n"
            f"Range: bytes={task.first}-{task.last}\r\nAccept-Encoding: identity\r\n\r\n"
        ).encode()
        for attempt in (conn, None) if conn is not None else (None,):
            fresh = attempt is None
            try:
                if attempt is None:
                    attempt = _Connection(_connect(url, connect_timeout_s, ssl_context))
                attempt.sock.settimeout(read_timeout_s)  # a one-packet request: send it blocking, then poll
                attempt.sock.sendall(request)
                attempt.sock.setblocking(False)
            except OSError as error:
                if attempt is not None:
                    close(attempt)
                if fresh:
                    failed(task, RangeFailedError(f"cannot send the request: {error}"))
                    return False
                continue
            attempt.task, attempt.head, attempt.got = task, bytearray(), 0
            attempt.last_activity = time.monotonic()
            if attempt.sock.fileno() not in active:
                poller.register(attempt.sock, select.EPOLLIN)
                active[attempt.sock.fileno()] = attempt
            return True
        return False

    def next_for(conn: _Connection | None) -> bool:
        """Start the next task on `conn` (kept alive) or a new connection; False when none is left.
        A task whose request cannot be sent goes to `failed`, and the next one is tried."""
        if conn is not None and not conn.keep_alive:
            close(conn)
            conn = None
        while (task := None if stop.is_set() else next_task()) is not None:
            if start(conn, task):
                return True
            conn = None
        if conn is not None:
            close(conn)
        return False

    try:
        for _ in range(connections):
            if not next_for(None):
                break
        while active and not stop.is_set():
            for fileno, _events in poller.poll(1.0):
                conn = active.get(fileno)
                if conn is not None:
                    _drain(conn, buffer, done, give_up, next_for)
            now = time.monotonic()
            for conn in [c for c in active.values() if now - c.last_activity > read_timeout_s]:
                give_up(conn, RangeFailedError(f"no data for {read_timeout_s:.0f} s (read timeout)"))
                next_for(None)
    finally:
        for conn in list(active.values()):
            conn.sock.close()
        poller.close()


def _drain(
    conn: _Connection,
    buffer: memoryview,
    done: Callable[[Any], None],
    give_up: Callable[[_Connection, BaseException], None],
    next_for: Callable[[_Connection | None], bool],
) -> None:
    """Read what `conn` has until the socket is empty; start its next range when one ends."""
    while conn.task is not None:
        task = conn.task
        emptied = False  # a short read of plain TCP: the socket held no more
        try:  # only the socket's errors mean a failed range; the caller's (a full disk) propagate
            if conn.head is not None:
                chunk = conn.sock.recv(65536)
                if not chunk:
                    raise RangeFailedError("the connection closed before the response head")
                conn.head += chunk
                body = _parse_head(conn, task)
                if body is None:
                    continue
                piece = memoryview(body)
            else:
                asked = min(len(buffer), task.last - task.first + 1 - conn.got)
                n = conn.sock.recv_into(buffer[:asked])
                if not n:
                    raise RangeFailedError(
                        f"connection closed after {conn.got} of {task.last - task.first + 1} bytes"
                    )
                piece = buffer[:n]
                # TLS returns one record (16 KiB) per read, so a short read there says nothing
                emptied = n < asked and not isinstance(conn.sock, ssl.SSLSocket)
            if conn.got + len(piece) > task.last - task.first + 1:
                raise RangeFailedError(
                    f"more than the {task.last - task.first + 1} bytes of the range arrived"
                )
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return
        except (OSError, ValueError) as error:  # reset, TLS error, a malformed response
            give_up(conn, error if isinstance(error, RangeFailedError) else RangeFailedError(str(error)))
            next_for(None)
            return
        if piece:
            task.write(piece, task.first + conn.got)
            conn.got += len(piece)
        conn.last_activity = time.monotonic()
        if conn.head is None and conn.got == task.last - task.first + 1:
            conn.task = None
            done(task)
            next_for(conn)
            return  # a new range, maybe on a new socket: the poller reports it when it has bytes
        if emptied:
            # The poller reports the socket again when bytes arrive; a read now would only fail with
            # EAGAIN (half of all reads in a pull did: each a syscall and a raised exception).
            return


def _parse_head(conn: _Connection, task: RangeTask) -> bytes | None:
    """The body bytes that came with the head once it is complete (None until then); raises for a
    response this path does not take (the caller's retry path sees S3's error itself)."""
    assert conn.head is not None
    end = conn.head.find(b"\r\n\r\n")
    if end < 0:
        if len(conn.head) > 64 * 1024:
            raise RangeFailedError("response head over 64 KiB")
        return None
    lines = bytes(conn.head[:end]).decode("latin-1").split("\r\n")
    body = bytes(conn.head[end + 4 :])
    conn.head = None
    parts = lines[0].split(" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = task.last - task.first + 1
    if status not in (200, 206) or (status == 200 and task.first != 0):
        raise RangeFailedError(f"HTTP {status} {parts[2] if len(parts) > 2 else ''}".strip())
    if headers.get("content-length") != str(length) or headers.get("transfer-encoding"):
        raise RangeFailedError(
            f"HTTP {status} with Content-Length {headers.get('content-length')} for a {length}-byte range"
        )
    if headers.get("content-encoding", "identity") != "identity":
        raise RangeFailedError(f"an encoded body ({headers['content-encoding']})")
    conn.keep_alive = headers.get("connection", "").lower() != "close" and lines[0].startswith("HTTP/1.1")
    return body


def _connect(url: SplitResult, timeout_s: float, ssl_context: ssl.SSLContext | None) -> socket.socket:
    https = url.scheme == "https"
    host = url.hostname or ""
    sock = socket.create_connection((host, url.port or (443 if https else 80)), timeout=timeout_s)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if https:
        context = ssl_context or ssl.create_default_context()
        sock = context.wrap_socket(sock, server_hostname=host)  # handshake while still blocking
    return sock
