"""vLLM's torch.compile cache in S3, so a second pod of the same shape skips the compile step.

vLLM writes compiled graphs under `$VLLM_CACHE_ROOT/torch_compile_cache/<config hash>/rank_<i>_<j>/`.
The inner hash covers vLLM's whole config; our S3 key is the coarser outer shape that decides whether
those artifacts can be reused at all: vLLM version, model, tensor-parallel size and GPU type.

Compiled artifacts are code every later pod of the shape runs, so serving pods only read them: the cache's
writer identity publishes (`compile-cache push`, see the README), never a serving pod. An entry is a tar
named by its own sha256 (thousands of small files make poor S3 objects), then a manifest written last,
which is the completion marker and carries the tar's size and sha256 and the shape it belongs to. A pull
refuses a tar that does not match before extracting anything, and extracts with tarfile's `data` filter.
The manifest guards against torn, corrupted or mismatched uploads; who may write it is IAM's job (only the
writer role may put objects in the bucket). A republish (`--force`) uploads a new tar under its new name
before it switches the manifest, so a concurrent pull reads either the old entry or the new one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from boto3.s3.transfer import S3Transfer
from botocore.exceptions import ClientError

from infra.errors import UserError

# The key layout is pure (layout.py), so the pod-spec builders use it without loading boto3; re-exported here.
from infra.modelcache.layout import S3Location
from infra.modelcache.layout import compile_cache_key as compile_cache_key
from infra.modelcache.layout import gpu_slug as gpu_slug
from infra.modelcache.manifest import ManifestError
from infra.modelcache.transfer import is_not_found

MANIFEST_NAME = "torch_compile_cache.manifest.json"
MANIFEST_SCHEMA = "llm-serving/compile-cache-manifest"
MANIFEST_VERSION = 1
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_HASH_BLOCK = 8 * 1024 * 1024


@dataclass(frozen=True)
class CompileCacheManifest:
    """What a pull trusts: the shape key the tar was published for, and the tar's size and sha256."""

    key: str
    size: int
    sha256: str

    @property
    def archive_name(self) -> str:
        """Named by content, so a republish never rewrites an archive a concurrent pull is reading."""
        return f"torch_compile_cache-{self.sha256}.tar"

    def to_json(self) -> str:
        body = {
            "schema": MANIFEST_SCHEMA,
            "version": MANIFEST_VERSION,
            "key": self.key,
            "size": self.size,
            "sha256": self.sha256,
        }
        return json.dumps(body, indent=1) + "\n"


def parse_compile_manifest(text: bytes | str, expected_key: str) -> CompileCacheManifest:
    """A validated manifest for `expected_key`; raises ManifestError saying what is wrong."""
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as error:
        raise ManifestError(f"compile-cache manifest is not valid JSON: {error}") from None
    if not isinstance(data, dict) or data.get("schema") != MANIFEST_SCHEMA:
        raise ManifestError("not a compile-cache manifest (wrong or missing schema)")
    if data.get("version") != MANIFEST_VERSION:
        raise ManifestError(
            f"compile-cache manifest version {data.get('version')!r} is not supported "
            f"(this tool reads version {MANIFEST_VERSION})"
        )
    key, size, sha256 = data.get("key"), data.get("size"), data.get("sha256")
    if key != expected_key:
        raise ManifestError(f"compile-cache manifest is for {key!r}, not {expected_key!r}")
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise ManifestError(f"compile-cache manifest size {size!r} is not a positive integer")
    if not isinstance(sha256, str) or not _SHA256.match(sha256):
        raise ManifestError(f"compile-cache manifest sha256 {sha256!r} is not 64 lowercase hex digits")
    return CompileCacheManifest(key=expected_key, size=size, sha256=sha256)


def _sha256_and_size(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as handle:
        while block := handle.read(_HASH_BLOCK):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def _read_manifest(client: Any, bucket: str, key: str) -> bytes | None:
    try:
        return client.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as error:
        if is_not_found(error):
            return None
        raise


def push_compile_cache(client: Any, root: S3Location, key: str, source: Path, *, force: bool = False) -> bool:
    """Publish `source` for this shape, unless it has a cache already (`force` replaces it). Returns whether
    it uploaded. Run as the cache's writer identity: serving pods cannot write here."""
    bucket = root.bucket
    manifest_key = root.key(key, MANIFEST_NAME)
    if not force and _read_manifest(client, bucket, manifest_key) is not None:
        return False
    if not source.is_dir() or not any(source.iterdir()):
        raise UserError(f"{source} is empty or missing: nothing was compiled yet", key="--dir")
    with tempfile.TemporaryDirectory() as scratch:
        archive = Path(scratch) / "torch_compile_cache.tar"
        with tarfile.open(archive, "w") as tar:
            tar.add(source, arcname=".")
        sha256, size = _sha256_and_size(archive)
        manifest = CompileCacheManifest(key=key, size=size, sha256=sha256)
        S3Transfer(client).upload_file(str(archive), bucket, root.key(key, manifest.archive_name))
    client.put_object(
        Bucket=bucket, Key=manifest_key, Body=manifest.to_json().encode(), ContentType="application/json"
    )
    return True


def pull_compile_cache(client: Any, root: S3Location, key: str, dest: Path) -> bool:
    """Fill `dest` from S3 if it is empty and a published cache exists. Returns whether it did.

    Not finding a cache is normal (the first pod of a shape compiles), so that is not an error; a tar
    that does not match its manifest is, and nothing of it is extracted.
    """
    bucket = root.bucket
    if dest.is_dir() and any(dest.iterdir()):
        return False
    text = _read_manifest(client, bucket, root.key(key, MANIFEST_NAME))
    if text is None:
        return False
    manifest = parse_compile_manifest(text, key)
    archive_key = root.key(key, manifest.archive_name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".compile-cache-", dir=dest.parent))
    try:
        archive = staging / manifest.archive_name
        S3Transfer(client).download_file(bucket, archive_key, str(archive))
        sha256, size = _sha256_and_size(archive)
        if (sha256, size) != (manifest.sha256, manifest.size):
            raise UserError(
                f"s3://{bucket}/{archive_key}: {size} bytes with sha256 {sha256}, the manifest says "
                f"{manifest.size} bytes with sha256 {manifest.sha256}; refusing to extract it (publish the "
                "cache again as the writer with `compile-cache push --force`)",
                key="integrity",
            )
        unpacked = staging / "unpacked"
        with tarfile.open(archive) as tar:
            tar.extractall(unpacked, filter="data")  # refuses absolute paths, '..' and device files
        if dest.is_dir():
            dest.rmdir()  # empty, checked above
        os.replace(unpacked, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return True
