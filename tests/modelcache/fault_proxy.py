"""A fault-injecting HTTP proxy in front of an S3 server, for tests. Run as a process on 127.0.0.1:

    python tests/modelcache/fault_proxy.py --upstream http://127.0.0.1:MOTO --port P \
        [--slowdown-first N] [--drop-first M] [--delay-ms D] [--hold-path TEXT]

Only ranged GETs (a pull's chunk requests) are faulted: the first N get a real S3 `503 SlowDown` error,
the next M are cut off halfway through the body (a dropped connection), every one waits D ms first,
and those whose path contains TEXT never get an answer (a transfer that is still running, however
slowly the machine runs the test).
`GET /__fault_stats` returns the counts as JSON. Exits by itself after --max-seconds.
"""

from __future__ import annotations

import argparse
import http.client
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

SLOWDOWN_XML = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message>"
    b"<RequestId>FAKE0REQUEST0ID</RequestId><HostId>fake-host-id</HostId></Error>"
)
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
}


def make_handler(
    upstream: str, slowdown_first: int, drop_first: int, delay_s: float, hold_path: str | None = None
) -> type[BaseHTTPRequestHandler]:
    target = urlsplit(upstream)
    lock = threading.Lock()
    stats = {"requests": 0, "ranged_gets": 0, "slowdowns": 0, "drops": 0}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _fault(self) -> str | None:
            with lock:
                stats["requests"] += 1
                if self.command != "GET" or "Range" not in self.headers:
                    return None
                stats["ranged_gets"] += 1
                if stats["slowdowns"] < slowdown_first:
                    stats["slowdowns"] += 1
                    return "slowdown"
                if stats["drops"] < drop_first:
                    stats["drops"] += 1
                    return "drop"
                return None

        def _forward(self) -> None:
            if self.path == "/__fault_stats":
                with lock:
                    data = json.dumps(stats).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            fault = self._fault()
            if delay_s and "Range" in self.headers:
                time.sleep(delay_s)
            if hold_path and hold_path in self.path and "Range" in self.headers:
                threading.Event().wait()  # until the proxy is stopped
            if fault == "slowdown":
                self.send_response(503)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(SLOWDOWN_XML)))
                self.end_headers()
                self.wfile.write(SLOWDOWN_XML)
                return
            connection = http.client.HTTPConnection(target.hostname or "127.0.0.1", target.port, timeout=60)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                connection.request(self.command, self.path, body=body, headers=headers)
                response = connection.getresponse()
                data = response.read()
            finally:
                connection.close()
            self.send_response(response.status)
            for name, value in response.getheaders():
                if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            if fault == "drop":
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command == "HEAD":
                return
            if fault == "drop":
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--slowdown-first", type=int, default=0)
    parser.add_argument("--drop-first", type=int, default=0)
    parser.add_argument("--delay-ms", type=float, default=0)
    parser.add_argument("--hold-path", help="never answer ranged GETs of paths containing this")
    parser.add_argument("--max-seconds", type=float, default=300)
    args = parser.parse_args()
    handler = make_handler(
        args.upstream, args.slowdown_first, args.drop_first, args.delay_ms / 1000, args.hold_path
    )
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler)
    server.daemon_threads = True
    threading.Timer(args.max_seconds, server.shutdown).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
