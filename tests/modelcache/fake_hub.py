"""A fake Hugging Face Hub for tests: the three routes `snapshot_download` needs, over one model folder.

Run as a process (tests start it on 127.0.0.1 and stop it by PID):
    python tests/modelcache/fake_hub.py --root DIR --repo org/name --commit SHA --port P [--token T]

- GET  /api/models/{repo}/revision/{rev}            -> {"sha": commit, "siblings": [...]}
- GET  /api/models/{repo}/tree/{rev}?recursive=true -> file list with sizes and LFS sha256
- HEAD/GET /{repo}/resolve/{rev}/{path}             -> X-Repo-Commit, ETag, Range support
`rev` may be "main" or the commit. With --token, every request must carry `Authorization: Bearer T`.
--fail-first N answers 503 to the first N file downloads (a flaky Hub); --log FILE appends "METHOD PATH" per request.
The process exits by itself after --max-seconds, so a crashed test cannot leave it behind for long.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


def generate_model(root: Path, *, shards: int, shard_bytes: int, seed: bytes = b"") -> list[str]:
    """A model folder: safetensors shards (valid header, random payload), an index, config and tokenizer
    files, a nested file and an empty file. Returns the relative paths."""
    root.mkdir(parents=True, exist_ok=True)
    weight_map = {}
    names = []
    for index in range(1, shards + 1):
        name = f"model-{index:05d}-of-{shards:05d}.safetensors"
        tensor = f"layers.{index}.weight"
        header = json.dumps(
            {tensor: {"dtype": "U8", "shape": [shard_bytes], "data_offsets": [0, shard_bytes]}}
        )
        header_bytes = header.encode().ljust(len(header) + (-len(header) % 8))
        with open(root / name, "wb") as handle:
            handle.write(struct.pack("<Q", len(header_bytes)) + header_bytes)
            remaining = shard_bytes
            while remaining:
                block = min(remaining, 8 * 1024 * 1024)
                handle.write(os.urandom(block) if not seed else (seed * (block // len(seed) + 1))[:block])
                remaining -= block
        weight_map[tensor] = name
        names.append(name)
    small = {
        "model.safetensors.index.json": json.dumps({"metadata": {}, "weight_map": weight_map}),
        "config.json": json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama"}),
        "generation_config.json": json.dumps({"do_sample": False}),
        "tokenizer.json": json.dumps({"version": "1.0", "model": {"type": "BPE", "vocab": {"a": 0}}}),
        "tokenizer_config.json": json.dumps({"model_max_length": 4096}),
        "original/params.json": json.dumps({"dim": 64}),
        "empty.txt": "",
    }
    for name, text in small.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
        names.append(name)
    return sorted(names)


def _tree(root: Path) -> list[dict]:
    entries: list[dict] = []
    directories: set[str] = set()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root).as_posix()
        directories.update("/".join(relative.split("/")[:i]) for i in range(1, relative.count("/") + 1))
        data_sha = _sha256(path)
        entry = {"type": "file", "oid": data_sha[:40], "size": path.stat().st_size, "path": relative}
        if path.suffix == ".safetensors":
            entry["lfs"] = {"oid": data_sha, "size": path.stat().st_size, "pointerSize": 134}
        entries.append(entry)
    entries += [{"type": "directory", "oid": "0" * 40, "size": 0, "path": d} for d in sorted(directories)]
    return entries


_hashes: dict[Path, str] = {}
_hash_lock = threading.Lock()


def _sha256(path: Path) -> str:
    with _hash_lock:
        if path not in _hashes:
            digest = hashlib.sha256()
            with open(path, "rb") as handle:
                while block := handle.read(8 * 1024 * 1024):
                    digest.update(block)
            _hashes[path] = digest.hexdigest()
        return _hashes[path]


def make_handler(
    root: Path, repo: str, commit: str, token: str | None, *, fail_first: int = 0, log: Path | None = None
) -> type[BaseHTTPRequestHandler]:
    revisions = {"main", commit}
    failures_left = [fail_first]
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # quiet; never logs headers
            pass

        def _json(self, status: int, body: object, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def _authorized(self) -> bool:
            if token is None or self.headers.get("Authorization") == f"Bearer {token}":
                return True
            self._json(401, {"error": "Invalid credentials"}, {"X-Error-Code": "RepoNotFound"})
            return False

        def do_HEAD(self) -> None:
            self.do_GET()

        def do_GET(self) -> None:
            with lock:
                if log is not None:
                    with open(log, "a") as handle:
                        handle.write(f"{self.command} {self.path}\n")
                failing = failures_left[0] > 0 and self.path.startswith(f"/{repo}/resolve/")
                failures_left[0] -= failing
            if failing:
                self._json(503, {"error": "Service Unavailable"})
                return
            if not self._authorized():
                return
            path = unquote(urlsplit(self.path).path)
            api = f"/api/models/{repo}/"
            if path.startswith(api + "revision/"):
                rev = path[len(api + "revision/") :]
                if rev not in revisions:
                    self._json(404, {"error": "Revision not found"}, {"X-Error-Code": "RevisionNotFound"})
                    return
                siblings = [{"rfilename": e["path"]} for e in _tree(root) if e["type"] == "file"]
                self._json(
                    200, {"id": repo, "modelId": repo, "sha": commit, "private": False, "siblings": siblings}
                )
            elif path.startswith(api + "tree/"):
                self._json(200, _tree(root))
            elif path.startswith(f"/{repo}/resolve/"):
                rev, _, relative = path[len(f"/{repo}/resolve/") :].partition("/")
                self._resolve(rev, relative)
            else:
                self._json(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})

        def _resolve(self, rev: str, relative: str) -> None:
            file = (root / relative).resolve()
            if rev not in revisions:
                self._json(404, {"error": "Revision not found"}, {"X-Error-Code": "RevisionNotFound"})
                return
            if root.resolve() not in file.parents or not file.is_file():
                self._json(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"})
                return
            size = file.stat().st_size
            start = 0
            range_header = self.headers.get("Range", "")
            if range_header.startswith("bytes="):
                start = int(range_header[len("bytes=") :].split("-")[0] or 0)
            self.send_response(206 if start else 200)
            self.send_header("X-Repo-Commit", commit)
            self.send_header("ETag", f'"{_sha256(file)}"')
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(size - start))
            if start:
                self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
            self.end_headers()
            if self.command == "GET":
                with open(file, "rb") as handle:
                    handle.seek(start)
                    self.wfile.flush()
                    self.connection.sendfile(handle, offset=start)

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--repo", required=True)
    parser.add_argument("--commit", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-seconds", type=float, default=600)
    parser.add_argument("--fail-first", type=int, default=0)
    parser.add_argument("--log", type=Path)
    args = parser.parse_args()
    token = os.environ.get("FAKE_HUB_TOKEN")  # from the environment, like the real client's HF_TOKEN
    server = ThreadingHTTPServer(
        ("127.0.0.1", args.port),
        make_handler(args.root, args.repo, args.commit, token, fail_first=args.fail_first, log=args.log),
    )
    server.daemon_threads = True
    threading.Timer(args.max_seconds, server.shutdown).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
