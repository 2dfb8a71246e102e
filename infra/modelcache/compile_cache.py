"""vLLM's torch.compile cache in S3, so a second pod of the same shape skips the compile step.

vLLM writes compiled graphs under `$VLLM_CACHE_ROOT/torch_compile_cache/<config hash>/rank_<i>_<j>/`.
The inner hash covers vLLM's whole config; our S3 key is the coarser outer shape that decides whether
those artifacts can be reused at all: vLLM version, model, tensor-parallel size and GPU type. The
directory travels as one tar (thousands of small files make poor S3 objects), with a marker written
after it. The first pod of a shape to finish compiling uploads; later pods download before starting.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from boto3.s3.transfer import S3Transfer
from botocore.exceptions import ClientError

from infra.errors import UserError

# The key layout is pure (layout.py), so the pod-spec builders use it without loading boto3; re-exported here.
from infra.modelcache.layout import S3Location
from infra.modelcache.layout import compile_cache_key as compile_cache_key
from infra.modelcache.layout import gpu_slug as gpu_slug
from infra.modelcache.transfer import is_not_found

ARCHIVE_NAME = "torch_compile_cache.tar"
MARKER_NAME = "torch_compile_cache.complete"


def _exists(client: Any, bucket: str, key: str) -> bool:
    try:
        client.head_object(Bucket=bucket, Key=key)
        return True
    except ClientError as error:
        if is_not_found(error):
            return False
        raise


def push_compile_cache(client: Any, root: S3Location, key: str, source: Path) -> bool:
    """Upload `source` if this shape has no cache yet. Returns False when one was already there."""
    bucket = root.bucket
    marker = root.key(key, MARKER_NAME)
    if _exists(client, bucket, marker):
        return False
    if not source.is_dir() or not any(source.iterdir()):
        raise UserError(f"{source} is empty or missing: nothing was compiled yet", key="--dir")
    with tempfile.TemporaryDirectory() as scratch:
        archive = Path(scratch) / ARCHIVE_NAME
        with tarfile.open(archive, "w") as tar:
            tar.add(source, arcname=".")
        S3Transfer(client).upload_file(str(archive), bucket, root.key(key, ARCHIVE_NAME))
    client.put_object(Bucket=bucket, Key=marker, Body=b"complete\n")
    return True


def pull_compile_cache(client: Any, root: S3Location, key: str, dest: Path) -> bool:
    """Fill `dest` from S3 if it is empty and a complete cache exists. Returns whether it did.

    Not finding a cache is normal (the first pod of a shape compiles), so that is not an error.
    """
    bucket = root.bucket
    if dest.is_dir() and any(dest.iterdir()):
        return False
    if not _exists(client, bucket, root.key(key, MARKER_NAME)):
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".compile-cache-", dir=dest.parent))
    try:
        archive = staging / ARCHIVE_NAME
        S3Transfer(client).download_file(bucket, root.key(key, ARCHIVE_NAME), str(archive))
        unpacked = staging / "unpacked"
        with tarfile.open(archive) as tar:
            tar.extractall(unpacked, filter="data")  # refuses absolute paths, '..' and device files
        if dest.is_dir():
            dest.rmdir()  # empty, checked above
        os.replace(unpacked, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return True
