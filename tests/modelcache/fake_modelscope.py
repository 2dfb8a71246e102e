"""A fake ModelScope hub for tests: the legacy `/api/v1` routes `modelscope_hub` reads a model through.

Run as a process (tests start it on 127.0.0.1 and stop it by PID):
    python tests/modelcache/fake_modelscope.py --root DIR --repo org/name --port P [--log FILE]

- GET      /api/v1/models/{repo}                                    -> repository metadata
- GET      /api/v1/models/{repo}/repo/files?Revision=R&Recursive=.. -> {"Data": {"Files": [...]}}: path, size,
                                                                       sha256 of every file
- GET/HEAD /api/v1/models/{repo}/repo?Revision=R&FilePath=P         -> the file, with Range support
- GET      /api/v1/repos/internalAccelerationInfo                   -> no cloud-internal download route
Revision "master" (ModelScope's default branch) and "v1" exist; any other repo or revision is a 404 in
ModelScope's error shape. With --log, every request line is appended to FILE, so a test can show which
routes the client used. The process exits by itself after --max-seconds.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

REVISIONS = ("master", "v1")


@functools.cache
def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _files(root: Path) -> list[dict]:
    return [
        {
            "Name": path.name,
            "Path": path.relative_to(root).as_posix(),
            "Type": "blob",
            "Size": path.stat().st_size,
            "Sha256": _sha256(path),
            "IsLFS": path.suffix == ".safetensors",
        }
        for path in sorted(p for p in root.rglob("*") if p.is_file())
    ]


def make_handler(root: Path, repo: str, log: Path | None) -> type[BaseHTTPRequestHandler]:
    base = f"/api/v1/models/{repo}"
    log_lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # quiet; never logs headers
            pass

        def _json(self, status: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def _not_found(self, what: str) -> None:
            self._json(404, {"Code": 10010205001, "Message": f"{what} not found", "Success": False})

        def do_HEAD(self) -> None:
            self.do_GET()

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            path, query = unquote(url.path), parse_qs(url.query)
            if log is not None:
                with log_lock, log.open("a") as handle:
                    handle.write(f"{self.command} {path}\n")
            revision = query.get("Revision", ["master"])[0]
            if path == "/api/v1/repos/internalAccelerationInfo":
                self._json(200, {"Code": 200, "Success": True, "Data": {}})  # not inside a cloud region
            elif path == base:
                self._json(
                    200, {"Code": 200, "Success": True, "Data": {"Path": repo.split("/")[0], "Name": repo}}
                )
            elif path == f"{base}/repo/files":
                if revision not in REVISIONS:
                    self._not_found(f"revision {revision}")
                    return
                self._json(200, {"Code": 200, "Success": True, "Data": {"Files": _files(root)}})
            elif path == f"{base}/repo":
                self._file(revision, query.get("FilePath", [""])[0])
            else:
                self._not_found("model")

        def _file(self, revision: str, relative: str) -> None:
            file = (root / relative).resolve()
            if revision not in REVISIONS or root.resolve() not in file.parents or not file.is_file():
                self._not_found(f"file {relative}")
                return
            size = file.stat().st_size
            start, end = 0, size - 1
            range_header = self.headers.get("Range", "")
            if range_header.startswith("bytes="):
                first, _, last = range_header[len("bytes=") :].partition("-")
                start = int(first or 0)
                end = min(int(last), size - 1) if last else size - 1
            partial = bool(range_header)
            self.send_response(206 if partial else 200)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(end - start + 1 if size else 0))
            if partial:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            if self.command == "GET" and size:
                with open(file, "rb") as handle:
                    self.wfile.flush()
                    self.connection.sendfile(handle, offset=start, count=end - start + 1)

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--repo", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", type=Path)
    parser.add_argument("--max-seconds", type=float, default=600)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(args.root, args.repo, args.log))
    server.daemon_threads = True
    threading.Timer(args.max_seconds, server.shutdown).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
