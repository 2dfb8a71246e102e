"""The event loop of ranged GETs (range_gets.py) against a real HTTP/1.1 server on 127.0.0.1.

The server serves one blob with Range support and keep-alive, like S3, and misbehaves on request: an
error status, a body cut off, a silent connection, `Connection: close`, a wrong Content-Length.
"""

from __future__ import annotations

import ctypes
import datetime
import ipaddress
import itertools
import mmap
import os
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from infra.modelcache import range_gets
from infra.modelcache.range_gets import RangeFailedError, fetch_ranges

BLOB = os.urandom(3 * 1024 * 1024 + 123)


@dataclass
class Served:
    url: str
    connections: list[int] = field(default_factory=list)  # one entry per accepted connection
    mode: dict[str, str] = field(default_factory=dict)  # path -> misbehaviour
    client_tls: ssl.SSLContext | None = None  # trusts the server's certificate, for https


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made here (S3 speaks TLS; the loop must too)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


@pytest.fixture(params=["http", "https"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Served]:
    served = Served(url="")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            served.connections.append(1)

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            mode = served.mode.get(self.path.split("?")[0], "")
            first, last = (int(x) for x in self.headers["Range"].removeprefix("bytes=").split("-"))
            body = BLOB[first : last + 1]
            if mode == "503":
                error = b"<Error><Code>SlowDown</Code></Error>"
                self.send_response(503)
                self.send_header("Content-Length", str(len(error)))
                self.end_headers()
                self.wfile.write(error)
                return
            if mode == "silent":
                threading.Event().wait(5)
                return
            self.send_response(206)
            length = len(body) + (1 if mode == "long" else 0)
            self.send_header("Content-Length", str(length))
            if mode == "close":
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            if mode == "trickle":  # a slow server: the client drains each piece before the next is sent
                for start in range(0, len(body), 16 * 1024):
                    self.wfile.write(body[start : start + 16 * 1024])
                    self.wfile.flush()
                    time.sleep(0.002)
                return
            if mode == "cut":
                self.wfile.write(body[: len(body) // 2])
                self.close_connection = True
                return
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    if request.param == "https":
        cert, key = _self_signed(tmp_path)
        server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_tls.load_cert_chain(cert, key)
        httpd.socket = server_tls.wrap_socket(httpd.socket, server_side=True)
        served.client_tls = ssl.create_default_context(cafile=cert)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    served.url = f"{request.param}://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield served
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


@dataclass
class Task:
    url: str
    first: int
    last: int
    received: bytearray = field(default_factory=bytearray)

    def write(self, piece: memoryview, offset: int) -> None:
        assert offset == self.first + len(self.received), "pieces arrive in order"
        self.received += piece


def _run(
    tasks: list[Task],
    *,
    connections: int = 3,
    read_timeout_s: float = 10.0,
    tls: ssl.SSLContext | None = None,
) -> tuple[list[Task], list[tuple[Task, BaseException]]]:
    pending = iter(tasks)
    done: list[Task] = []
    failed: list[tuple[Task, BaseException]] = []
    fetch_ranges(
        lambda: next(pending, None),
        done.append,
        lambda task, error: failed.append((task, error)),
        connections=connections,
        piece_bytes=64 * 1024,
        connect_timeout_s=5,
        read_timeout_s=read_timeout_s,
        stop=threading.Event(),
        ssl_context=tls,
    )
    return done, failed


def _ranges(url: str, size: int = 256 * 1024) -> list[Task]:
    return [Task(url, first, min(len(BLOB), first + size) - 1) for first in range(0, len(BLOB), size)]


def test_every_range_arrives_whole_over_reused_connections(server: Served) -> None:
    tasks = _ranges(f"{server.url}/blob?X-Amz-Signature=abc")
    done, failed = _run(tasks, connections=3, tls=server.client_tls)
    assert not failed and len(done) == len(tasks) > 10
    assert b"".join(bytes(t.received) for t in sorted(done, key=lambda t: t.first)) == BLOB
    assert len(server.connections) <= 3, "keep-alive: one connection per slot, not one per range"


@pytest.mark.parametrize(
    ("mode", "cause"),
    [
        ("503", "HTTP 503"),
        ("cut", "connection closed after"),
        ("long", "Content-Length"),
        ("silent", "read timeout"),
    ],
)
def test_a_range_that_goes_wrong_is_handed_back_and_the_rest_complete(
    server: Served, mode: str, cause: str
) -> None:
    server.mode["/bad"] = mode
    good = _ranges(f"{server.url}/good")
    bad = Task(f"{server.url}/bad", 0, 1000)
    done, failed = _run([*good[:3], bad, *good[3:]], connections=2, read_timeout_s=1.5, tls=server.client_tls)
    assert [task for task, _ in failed] == [bad]
    error = failed[0][1]
    assert isinstance(error, RangeFailedError) and cause in str(error), error
    assert sorted(t.first for t in done) == [t.first for t in good]
    assert all(bytes(t.received) == BLOB[t.first : t.last + 1] for t in done)


def test_pieces_are_read_into_a_page_aligned_buffer(server: Served) -> None:
    """The kernel copies socket bytes into the piece buffer several times faster when the buffer is
    aligned (range_gets.fetch_ranges); a bytearray's would sit 16 bytes past a page boundary."""
    addresses: list[int] = []

    class Recording(Task):
        def write(self, piece: memoryview, offset: int) -> None:
            if offset > self.first:  # the first piece may be the body bytes that came with the head
                addresses.append(ctypes.addressof(ctypes.c_char.from_buffer(piece)))
            super().write(piece, offset)

    tasks: list[Task] = [Recording(t.url, t.first, t.last) for t in _ranges(f"{server.url}/blob")[:4]]
    done, failed = _run(tasks, tls=server.client_tls)
    assert not failed and len(done) == 4 and addresses
    offsets = [address % mmap.PAGESIZE for address in addresses]
    assert offsets == [0] * len(offsets), offsets


@pytest.mark.parametrize("server", ["http"], indirect=True)
def test_a_short_read_waits_for_the_poller_instead_of_reading_again(
    server: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read that returns less than it asked for emptied the socket; reading again at once would only
    fail with EAGAIN (half of all reads in a pull did), so the loop goes back to epoll."""
    reads: dict[int, list[str]] = {}  # socket -> its reads in order: "short", "full" or "EAGAIN"

    class Recording(socket.socket):
        def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
            log = reads.setdefault(id(self), [])
            try:
                n = super().recv_into(buffer, nbytes, flags)
            except BlockingIOError:
                log.append("EAGAIN")
                raise
            log.append("short" if n < len(buffer) else "full")
            return n

    connect = range_gets._connect

    def recording_connect(*args: Any) -> socket.socket:
        return Recording(fileno=connect(*args).detach())

    monkeypatch.setattr(range_gets, "_connect", recording_connect)
    server.mode["/slow"] = "trickle"
    done, failed = _run(_ranges(f"{server.url}/slow")[:4], connections=2)
    assert not failed and len(done) == 4
    assert all(bytes(t.received) == BLOB[t.first : t.last + 1] for t in done)
    pairs = [pair for log in reads.values() for pair in itertools.pairwise(log)]
    assert ("short", "EAGAIN") not in pairs and any(first == "short" for first, _ in pairs), reads


def test_connection_close_opens_a_new_connection(server: Served) -> None:
    server.mode["/closing"] = "close"
    tasks = _ranges(f"{server.url}/closing", size=1024 * 1024)
    done, failed = _run(tasks, connections=1, tls=server.client_tls)
    assert not failed and len(done) == len(tasks) == 4
    assert len(server.connections) == 4


def test_an_error_in_write_stops_everything_and_propagates(server: Served) -> None:
    class FullDisk(Task):
        def write(self, piece: memoryview, offset: int) -> None:
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        _run([FullDisk(f"{server.url}/x", 0, 99), *_ranges(f"{server.url}/y")], tls=server.client_tls)


@pytest.mark.parametrize("server", ["https"], indirect=True)
def test_a_certificate_that_is_not_trusted_fails_the_range(server: Served) -> None:
    done, failed = _run(_ranges(f"{server.url}/blob")[:2], tls=ssl.create_default_context())
    assert not done and len(failed) == 2
    assert all("CERTIFICATE_VERIFY_FAILED" in str(error) for _, error in failed), failed


def test_unreachable_endpoint_fails_every_range_and_drops_none() -> None:
    tasks = [Task("http://127.0.0.1:9/blob", first, first + 9) for first in range(0, 100, 10)]
    done, failed = _run(tasks, connections=2)
    assert not done and [task for task, _ in failed] == tasks
    assert all(isinstance(error, RangeFailedError) for _, error in failed)
