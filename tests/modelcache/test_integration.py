"""Integration: `python -m infra cache ...` against a real moto_server and a fake Hub, both on 127.0.0.1.

One ~240 MiB model is pushed once from the fake Hub (session fixture); the failure-path tests each push
their own few-MiB model under their own prefix and spoil it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from infra.errors import UserError
from infra.modelcache.layout import S3Location, split_entry_uri
from infra.modelcache.pull import TEMP_SUFFIX, pull
from infra.modelcache.transfer import TransferSettings, make_s3_client
from tests.conftest import REPO_ROOT, stop_process
from tests.modelcache.conftest import (
    BUCKET,
    COMMIT,
    HF_TOKEN,
    REPO,
    PushedModel,
    fake_aws_env,
    run_cache,
    s3_client,
    start_script,
    tree_digest,
)

pytestmark = pytest.mark.integration


def _entry_key(entry_uri: str, suffix: str) -> str:
    return entry_uri.removeprefix(f"s3://{BUCKET}/") + suffix


def _no_temp_files(root: Path) -> bool:
    return not any(p.name.endswith(TEMP_SUFFIX) for p in root.rglob("*"))


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state first), or None if there is no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def _children_of(pid: int) -> list[int]:
    return [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and (stat := _proc_stat(int(entry.name))) and int(stat[1]) == pid
    ]


def _is_running(pid: int) -> bool:
    stat = _proc_stat(pid)
    return stat is not None and stat[0] != "Z"  # a zombie has exited and waits to be reaped


def test_push_from_hub_keys_the_entry_by_resolved_commit(
    pushed_model: PushedModel, moto_endpoint: str
) -> None:
    assert pushed_model.entry_uri == f"{pushed_model.root_uri}/models/test-org--tiny-llm/{COMMIT}"
    assert HF_TOKEN not in pushed_model.push_output
    client = s3_client(moto_endpoint)
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix="cache/")["Contents"]}
    base = f"cache/models/test-org--tiny-llm/{COMMIT}"
    assert {f"{base}.manifest.json", f"{base}.complete", "cache/models/test-org--tiny-llm/refs/main"} <= keys
    assert f"{base}/model-00001-of-00004.safetensors" in keys
    shard = client.head_object(Bucket=BUCKET, Key=f"{base}/model-00001-of-00004.safetensors")
    assert shard["ETag"].strip('"').endswith("-4"), "shards are uploaded in multipart parts"
    manifest = json.loads(client.get_object(Bucket=BUCKET, Key=f"{base}.manifest.json")["Body"].read())
    assert {f["path"] for f in manifest["files"]} == set(tree_digest(pushed_model.source))


def test_push_again_is_skipped(
    pushed_model: PushedModel, moto_endpoint: str, fake_hub: str, tmp_path: Path
) -> None:
    result = run_cache(
        "push",
        REPO,
        "--revision",
        "main",
        "--to",
        pushed_model.root_uri,
        "--scratch",
        str(tmp_path),
        endpoint=moto_endpoint,
        extra_env={"HF_ENDPOINT": fake_hub, "HF_TOKEN": HF_TOKEN, "HF_HOME": str(tmp_path / "hf")},
    )
    assert result.returncode == 0, result.stderr
    assert "already complete" in result.stderr
    assert not (tmp_path / "test-org--tiny-llm").exists()  # nothing was downloaded from the Hub


def test_push_without_token_is_refused_with_one_line(
    moto_endpoint: str, bucket: str, fake_hub: str, tmp_path: Path
) -> None:
    result = run_cache(
        "push",
        REPO,
        "--to",
        f"s3://{bucket}/no-token",
        "--scratch",
        str(tmp_path),
        endpoint=moto_endpoint,
        extra_env={"HF_ENDPOINT": fake_hub, "HF_HOME": str(tmp_path / "hf")},
    )
    assert result.returncode == 2
    assert "HF_TOKEN" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("processes", ["1", "3"])  # the event loop in this process, or in 3 forked workers
def test_pull_is_byte_for_byte_equal(
    pushed_model: PushedModel, moto_endpoint: str, tmp_path: Path, processes: str
) -> None:
    dest = tmp_path / "model"
    result = run_cache(
        "pull", "--from", pushed_model.root_uri, "--model", REPO, "--revision", "main", "--to", str(dest),
        "--processes", processes, endpoint=moto_endpoint,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(dest)
    assert tree_digest(dest) == tree_digest(pushed_model.source)
    assert _no_temp_files(dest)
    # Non-TTY progress: plain lines, no terminal control characters.
    assert "pull: " in result.stderr and "\x1b[" not in result.stderr

    again = run_cache("pull", "--from", pushed_model.entry_uri, "--to", str(dest), endpoint=moto_endpoint)
    assert again.returncode == 0, again.stderr
    assert "downloaded 0 files" in again.stderr and "skipped 11" in again.stderr

    verify = run_cache("verify", "--local", str(dest), endpoint=moto_endpoint)
    assert verify.returncode == 0 and "OK" in verify.stdout


def test_hf_cache_layout_loads_offline(pushed_model: PushedModel, moto_endpoint: str, tmp_path: Path) -> None:
    """What vLLM does with HF_HUB_OFFLINE=1: resolve `main` and read files through huggingface_hub."""
    hub_cache = tmp_path / "hub"
    result = run_cache(
        "pull", "--from", pushed_model.entry_uri, "--revision", "main", "--layout", "hf-cache", "--to", str(hub_cache),
        endpoint=moto_endpoint,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    probe = (
        "from huggingface_hub import snapshot_download, hf_hub_download\n"
        f"print(snapshot_download({REPO!r}, revision='main'))\n"
        f"print(hf_hub_download({REPO!r}, 'config.json'))\n"
    )
    env = {**fake_aws_env(None), "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hub_cache)}
    loaded = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60
    )
    assert loaded.returncode == 0, loaded.stderr
    snapshot = Path(loaded.stdout.splitlines()[0])
    assert snapshot == Path(result.stdout.strip())
    assert tree_digest(snapshot) == tree_digest(pushed_model.source)


def test_interrupted_pull_resumes_without_refetching_finished_files(
    pushed_model: PushedModel, moto_endpoint: str, tmp_path: Path
) -> None:
    """SIGKILL the pull after the first file landed; the rerun completes and keeps finished files as they are.

    The proxy never answers the last shard's ranges, so however slowly a loaded machine runs this test,
    the kill lands mid-transfer; the pull's worker processes die with it."""
    shards = sorted(p.name for p in pushed_model.source.glob("*.safetensors"))
    proxy = start_script(
        "fault_proxy.py", "--upstream", moto_endpoint, "--hold-path", shards[-1], "--max-seconds", "300"
    )
    dest = tmp_path / "model"
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "infra", "cache", "pull", "--from", pushed_model.entry_uri, "--to", str(dest),
             "--concurrency", "2", "--chunk-size-mib", "4", "--processes", "2"],
            cwd=REPO_ROOT, env=fake_aws_env(proxy.url), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 180
            while not (dest / shards[0]).exists():
                assert process.poll() is None, "pull ended before it could be interrupted"
                assert time.monotonic() < deadline, "no file landed within 180 s"
                time.sleep(0.02)
            workers = _children_of(process.pid)
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        finally:
            stop_process(process)
    finally:
        stop_process(proxy.process)
    deadline = time.monotonic() + 30
    while alive := [pid for pid in workers if _is_running(pid)]:
        assert time.monotonic() < deadline, f"pull workers {alive} outlived the killed pull"
        time.sleep(0.05)

    finished = {p.name: p.stat() for p in dest.glob("*.safetensors")}
    complete_before = [
        p
        for p in dest.rglob("*")
        if p.is_file() and not p.name.endswith(TEMP_SUFFIX) and ".modelcache" not in p.name
    ]
    assert shards[0] in finished and len(finished) < len(shards), "the kill must land mid-transfer"
    assert not (dest / ".modelcache-manifest.json").exists()
    assert any(p.name.endswith(TEMP_SUFFIX) for p in dest.iterdir()), "a partial file should be left behind"

    result = run_cache("pull", "--from", pushed_model.entry_uri, "--to", str(dest), endpoint=moto_endpoint)
    assert result.returncode == 0, result.stderr
    assert f"skipped {len(complete_before)} already complete" in result.stderr
    assert tree_digest(dest) == tree_digest(pushed_model.source)
    assert _no_temp_files(dest)
    for name, before in finished.items():
        after = (dest / name).stat()
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns), (
            f"{name} was fetched again"
        )


def test_throttling_and_dropped_connections_are_retried(
    pushed_model: PushedModel, moto_endpoint: str, tmp_path: Path
) -> None:
    proxy = start_script(
        "fault_proxy.py", "--upstream", moto_endpoint, "--slowdown-first", "6", "--drop-first", "3",
        "--max-seconds", "120",
    )  # fmt: skip
    try:
        dest = tmp_path / "model"
        result = run_cache(
            "pull", "--from", pushed_model.entry_uri, "--to", str(dest), "--chunk-size-mib", "8",
            endpoint=proxy.url,
        )  # fmt: skip
        with urllib.request.urlopen(f"{proxy.url}/__fault_stats", timeout=10) as response:
            stats = json.load(response)
    finally:
        stop_process(proxy.process)
    assert result.returncode == 0, result.stderr
    assert stats["slowdowns"] == 6 and stats["drops"] == 3
    retries = int(result.stderr.split(" retries")[0].rsplit(" ", 1)[-1])
    assert retries >= 9, result.stderr
    assert tree_digest(dest) == tree_digest(pushed_model.source)


def test_corrupt_object_is_detected_and_never_lands(
    moto_endpoint: str, push_small: Callable[[str], str], small_model: Path, tmp_path: Path
) -> None:
    entry_uri = push_small("corrupt")
    shard = "model-00002-of-00002.safetensors"
    original = (small_model / shard).read_bytes()
    spoiled = original[:1000] + bytes([original[1000] ^ 0xFF]) + original[1001:]
    s3_client(moto_endpoint).put_object(Bucket=BUCKET, Key=_entry_key(entry_uri, f"/{shard}"), Body=spoiled)

    dest = tmp_path / "model"
    result = run_cache("pull", "--from", entry_uri, "--to", str(dest), endpoint=moto_endpoint)
    assert result.returncode == 2
    assert f"{shard}: sha256" in result.stderr and "Traceback" not in result.stderr
    assert not (dest / shard).exists()
    assert not (dest / ".modelcache-manifest.json").exists()
    assert _no_temp_files(dest)

    verify = run_cache("verify", "--from", entry_uri, "--deep", endpoint=moto_endpoint)
    assert verify.returncode == 2 and shard in verify.stderr

    # A truncated object is a size mismatch, caught before any hashing.
    s3_client(moto_endpoint).put_object(
        Bucket=BUCKET, Key=_entry_key(entry_uri, f"/{shard}"), Body=original[:-10]
    )
    result = run_cache("pull", "--from", entry_uri, "--to", str(dest), endpoint=moto_endpoint)
    assert result.returncode == 2 and shard in result.stderr and not (dest / shard).exists()


def test_entry_without_marker_is_refused(
    moto_endpoint: str, push_small: Callable[[str], str], tmp_path: Path
) -> None:
    entry_uri = push_small("no-marker")
    s3_client(moto_endpoint).delete_object(Bucket=BUCKET, Key=_entry_key(entry_uri, ".complete"))
    dest = tmp_path / "model"
    result = run_cache("pull", "--from", entry_uri, "--to", str(dest), endpoint=moto_endpoint)
    assert result.returncode == 2
    assert "no completion marker" in result.stderr and "Traceback" not in result.stderr
    assert not dest.exists() or not any(dest.iterdir())
    listing = run_cache("ls", f"s3://{BUCKET}/no-marker", endpoint=moto_endpoint)
    assert "INCOMPLETE" in listing.stdout


def test_interrupted_push_resumes(
    moto_endpoint: str, push_small: Callable[[str], str], small_model: Path
) -> None:
    """Simulate a push that died after some uploads: the rerun uploads only what is missing."""
    entry_uri = push_small("resume-push")
    client = s3_client(moto_endpoint)
    for suffix in (".complete", ".manifest.json", "/model-00001-of-00002.safetensors"):
        client.delete_object(Bucket=BUCKET, Key=_entry_key(entry_uri, suffix))
    result = run_cache(
        "push", "test-org/small", "--revision", "v1", "--from", str(small_model), "--to", f"s3://{BUCKET}/resume-push",
        endpoint=moto_endpoint,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "uploaded 1 files" in result.stderr and "reused 8" in result.stderr


def test_wrong_revision_and_unknown_revision(
    moto_endpoint: str, push_small: Callable[[str], str], tmp_path: Path
) -> None:
    entry_uri = push_small("revisions")
    wrong = run_cache(
        "pull", "--from", entry_uri, "--revision", "v2", "--to", str(tmp_path), endpoint=moto_endpoint
    )
    assert wrong.returncode == 2 and "wrong revision" in wrong.stderr
    root = f"s3://{BUCKET}/revisions"
    unknown = run_cache(
        "pull", "--from", root, "--model", "test-org/small", "--revision", "v9", "--to", str(tmp_path),
        endpoint=moto_endpoint,
    )  # fmt: skip
    assert unknown.returncode == 2 and "no completion marker" in unknown.stderr
    ok = run_cache(
        "pull", "--from", root, "--model", "test-org/small", "--revision", "v1", "--to", str(tmp_path / "ok"),
        endpoint=moto_endpoint,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr


def test_missing_credentials_is_one_clear_line(moto_endpoint: str, push_small: Callable[[str], str]) -> None:
    entry_uri = push_small("creds")
    env = fake_aws_env(moto_endpoint)
    env.pop("AWS_ACCESS_KEY_ID")
    env.pop("AWS_SECRET_ACCESS_KEY")
    result = subprocess.run(
        [sys.executable, "-m", "infra", "cache", "pull", "--from", entry_uri, "--to", "/tmp/never-written"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: credentials: no AWS credentials")
    assert "Traceback" not in result.stderr
    assert not Path("/tmp/never-written").exists()


def test_full_disk_is_refused_before_writing(
    moto_endpoint: str, push_small: Callable[[str], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry_uri = push_small("full-disk")
    location = split_entry_uri(S3Location(BUCKET, entry_uri.removeprefix(f"s3://{BUCKET}/")))
    assert location is not None
    root, model, commit = location
    from infra.modelcache import pull as pull_module
    from infra.modelcache.layout import CacheEntry

    class Usage:
        free = 1024 * 1024

    monkeypatch.setattr(pull_module.shutil, "disk_usage", lambda _: Usage())
    client = make_s3_client(TransferSettings(), moto_endpoint)
    dest = tmp_path / "model"
    with pytest.raises(UserError, match="not enough free space"):
        pull(client, CacheEntry(root, model, commit), dest)
    assert [p for p in dest.rglob("*") if p.is_file() and not p.name.startswith(".modelcache")] == []


def test_reused_directory_with_another_commit_is_rehashed_not_trusted(
    moto_endpoint: str, bucket: str, push_small: Callable[[str], str], small_model: Path, tmp_path: Path
) -> None:
    """A hostPath reused after the branch moved: same-size files of the old commit must not be kept blindly."""
    push_small("moved")
    dest = tmp_path / "model"
    first = run_cache("pull", "--from", f"s3://{bucket}/moved", "--model", "test-org/small", "--revision", "v1",
                      "--to", str(dest), endpoint=moto_endpoint)  # fmt: skip
    assert first.returncode == 0, first.stderr
    changed, kept = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
    data = bytearray((small_model / changed).read_bytes())
    data[-1] ^= 0xFF  # same size, different bytes
    (small_model / changed).write_bytes(bytes(data))
    pushed = run_cache("push", "test-org/small", "--revision", "v2", "--from", str(small_model),
                       "--to", f"s3://{bucket}/moved", endpoint=moto_endpoint)  # fmt: skip
    assert pushed.returncode == 0, pushed.stderr
    kept_before = (dest / kept).stat()

    second = run_cache("pull", "--from", f"s3://{bucket}/moved", "--model", "test-org/small", "--revision", "v2",
                       "--to", str(dest), endpoint=moto_endpoint)  # fmt: skip
    assert second.returncode == 0, second.stderr
    assert "downloaded 1 files" in second.stderr
    assert tree_digest(dest) == tree_digest(small_model)
    assert (dest / kept).stat().st_ino == kept_before.st_ino


def test_pull_reuses_connections(
    moto_endpoint: str, push_small: Callable[[str], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The socket-level read path hands each connection back to the pool: one TLS handshake per worker
    on real S3, not one per chunk."""
    import urllib3.connection

    entry_uri = push_small("connections")
    location = split_entry_uri(S3Location(BUCKET, entry_uri.removeprefix(f"s3://{BUCKET}/")))
    assert location is not None
    connects = []
    original = urllib3.connection.HTTPConnection.connect

    def counting_connect(self: urllib3.connection.HTTPConnection) -> None:
        connects.append(1)
        original(self)

    monkeypatch.setattr(urllib3.connection.HTTPConnection, "connect", counting_connect)
    # One process, so the counting above sees every connection (worker processes read the same way).
    # With O_DIRECT the ranges go through botocore's pool (the thread path, also taken behind a proxy);
    # the event loop's reuse of its own sockets is tested in test_range_gets.py.
    settings = TransferSettings(
        concurrency=2, chunk_size=1024 * 1024, fsync=False, processes=1, direct_io=True
    )
    from infra.modelcache.layout import CacheEntry

    # moto's server closes every connection (HTTP/1.0); the proxy speaks HTTP/1.1 keep-alive like S3.
    proxy = start_script("fault_proxy.py", "--upstream", moto_endpoint, "--max-seconds", "60")
    try:
        client = make_s3_client(settings, proxy.url)
        result = pull(client, CacheEntry(*location), tmp_path / "m", settings=settings)
    finally:
        stop_process(proxy.process)
    chunks = sum(-(-f.size // settings.chunk_size) for f in result.manifest.files)
    assert chunks >= 6 and len(connects) <= settings.concurrency + 1, (chunks, len(connects))


def test_unreachable_hub_is_one_clear_line(tmp_path: Path) -> None:
    result = run_cache(
        "push", REPO, "--to", f"s3://{BUCKET}/x", "--scratch", str(tmp_path),
        endpoint="http://127.0.0.1:9", extra_env={"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path)},
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: HF_ENDPOINT: {REPO}@main: cannot reach the Hugging Face Hub at http://127.0.0.1:9 "
        "([Errno 111] Connection refused)"
    )


def test_entry_without_crc64nvme_is_verified_by_sha256_read_back(
    moto_endpoint: str, push_small: Callable[[str], str], small_model: Path, tmp_path: Path
) -> None:
    """The fallback path: a manifest written before crc64nvme existed; every file is hashed from the page
    cache (sha256) before its rename, and corruption is still caught."""
    from infra.modelcache.layout import CacheEntry
    from infra.modelcache.manifest import build_manifest, marker_body, parse_manifest

    entry_uri = push_small("readback")
    client = s3_client(moto_endpoint)
    pushed = parse_manifest(
        client.get_object(Bucket=BUCKET, Key=_entry_key(entry_uri, ".manifest.json"))["Body"].read()
    )
    assert all(f.crc64nvme for f in pushed.files)
    old = build_manifest(
        pushed.model, pushed.revision, pushed.commit, [replace(f, crc64nvme=None) for f in pushed.files]
    )
    assert "crc64nvme" not in old.to_json()
    client.put_object(Bucket=BUCKET, Key=_entry_key(entry_uri, ".manifest.json"), Body=old.to_json().encode())
    client.put_object(Bucket=BUCKET, Key=_entry_key(entry_uri, ".complete"), Body=marker_body(old).encode())
    location = split_entry_uri(S3Location(BUCKET, entry_uri.removeprefix(f"s3://{BUCKET}/")))
    assert location is not None
    # Through the page cache this time (no O_DIRECT), the path of filesystems that refuse it.
    settings = TransferSettings(concurrency=4, chunk_size=1024 * 1024, fsync=False, direct_io=False)
    dest = tmp_path / "m"
    pull(make_s3_client(settings, moto_endpoint), CacheEntry(*location), dest, settings=settings)
    assert tree_digest(dest) == tree_digest(small_model)

    shard = "model-00001-of-00002.safetensors"
    spoiled = bytearray((small_model / shard).read_bytes())
    spoiled[-1] ^= 0xFF
    client.put_object(Bucket=BUCKET, Key=_entry_key(entry_uri, f"/{shard}"), Body=bytes(spoiled))
    with pytest.raises(UserError, match=f"{shard}: sha256 of the downloaded object"):
        pull(
            make_s3_client(settings, moto_endpoint),
            CacheEntry(*location),
            tmp_path / "again",
            settings=settings,
        )
    assert not (tmp_path / "again" / shard).exists() and _no_temp_files(tmp_path / "again")


def test_disk_filling_up_mid_pull_is_one_clear_error_and_leaves_nothing(
    moto_endpoint: str, push_small: Callable[[str], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from infra.modelcache import pull as pull_module
    from infra.modelcache.layout import CacheEntry
    from infra.modelcache.transfer import s3_errors

    entry_uri = push_small("enospc")
    location = split_entry_uri(S3Location(BUCKET, entry_uri.removeprefix(f"s3://{BUCKET}/")))
    assert location is not None
    written = []
    real_pwrite = os.pwrite

    def pwrite_until_full(fd: int, data: memoryview, offset: int) -> int:
        if sum(written) > 2 * 1024 * 1024:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(len(data))
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(pull_module.os, "pwrite", pwrite_until_full)
    # One process: the fake disk above lives in this process's memory (test_processes.py covers errors
    # raised in worker processes).
    settings = TransferSettings(concurrency=2, chunk_size=1024 * 1024, fsync=False, processes=1)
    dest = tmp_path / "m"
    with pytest.raises(UserError, match="the disk is full"), s3_errors("pull"):
        pull(make_s3_client(settings, moto_endpoint), CacheEntry(*location), dest, settings=settings)
    assert _no_temp_files(dest)
    assert not list(dest.glob("*.safetensors"))
    assert not (dest / ".modelcache-manifest.json").exists()


@pytest.mark.parametrize("fault", ["--drop-first", "--slowdown-first"])
def test_ranges_that_keep_failing_end_in_one_line_naming_the_object(
    moto_endpoint: str, push_small: Callable[[str], str], small_model: Path, tmp_path: Path, fault: str
) -> None:
    """Every ranged GET cut off (or throttled) until the attempts run out: one line, the file, the cause."""
    entry_uri = push_small(f"gives-up{fault}")
    proxy = start_script(
        "fault_proxy.py", "--upstream", moto_endpoint, fault, "100000", "--max-seconds", "120"
    )
    dest = tmp_path / "model"
    try:
        result = run_cache(
            "pull", "--from", entry_uri, "--to", str(dest), "--max-attempts", "2", "--concurrency", "1",
            endpoint=proxy.url, timeout=60,
        )  # fmt: skip
    finally:
        stop_process(proxy.process)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    named = re.match(r"error: --from: (\S+): bytes \d+-\d+ failed 2 times, giving up \((.+)\)", last)
    assert named is not None, last
    assert (small_model / named.group(1)).is_file(), last
    assert ("ConnectionError" if fault == "--drop-first" else "SlowDown") in named.group(2), last
    assert _no_temp_files(dest) and not list(dest.glob("*.safetensors"))


def test_pull_writes_aligned_pieces_with_o_direct(
    moto_endpoint: str, push_small: Callable[[str], str], small_model: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Whole blocks go to the disk with O_DIRECT (no page-cache copy); files are still byte-identical."""
    from infra.modelcache import pull as pull_module
    from infra.modelcache.layout import CacheEntry

    direct_fds: set[int] = set()
    direct_bytes: list[int] = []
    real_open, real_pwrite, real_close = os.open, os.pwrite, os.close

    def recording_open(path: str, flags: int, *args: int) -> int:
        fd = real_open(path, flags, *args)
        if flags & os.O_DIRECT:
            direct_fds.add(fd)
        return fd

    def recording_close(fd: int) -> None:
        direct_fds.discard(fd)  # its number may be reused by a plain open
        real_close(fd)

    def recording_pwrite(fd: int, data: memoryview, offset: int) -> int:
        if fd in direct_fds:
            direct_bytes.append(len(data))
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(pull_module.os, "open", recording_open)
    monkeypatch.setattr(pull_module.os, "pwrite", recording_pwrite)
    monkeypatch.setattr(pull_module.os, "close", recording_close)
    entry_uri = push_small("direct")
    location = split_entry_uri(S3Location(BUCKET, entry_uri.removeprefix(f"s3://{BUCKET}/")))
    assert location is not None
    # One process, so the recording above sees the writes (worker processes run the same _write_at).
    settings = TransferSettings(concurrency=2, chunk_size=1024 * 1024, processes=1, direct_io=True)
    dest = tmp_path / "m"
    pull(make_s3_client(settings, moto_endpoint), CacheEntry(*location), dest, settings=settings)
    assert tree_digest(dest) == tree_digest(small_model)
    if not direct_bytes:
        pytest.skip(f"{tmp_path} does not support O_DIRECT")
    shard_bytes = sum(p.stat().st_size for p in small_model.glob("*.safetensors"))
    assert sum(direct_bytes) >= shard_bytes - 2 * 4096 and all(n % 4096 == 0 for n in direct_bytes)
