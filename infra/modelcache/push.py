"""push: Hugging Face Hub, ModelScope (`modelscope://org/name`), an S3 folder (`s3://BUCKET/PREFIX`, see
s3_source.py) or a local directory -> S3, once per (model, commit); a ModelScope revision's commit is the
digest of its listed content (infra/modelscope.py), an S3 folder's the digest of its listing.

Order matters for readers: every object first, then the manifest, then the completion marker. A pull
refuses an entry without the marker, so a reader never sees half a model. A complete entry is skipped;
an interrupted push resumes: the Hub download resumes in its scratch directory, and an object already
in S3 with the right size and sha256 (object metadata) is not uploaded again.
The Hub token is read by huggingface_hub from HF_TOKEN in the environment; it is never an argument.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from awscrt.checksums import crc64nvme
from boto3.s3.transfer import S3Transfer, TransferConfig
from botocore.exceptions import ClientError

from infra import modelscope
from infra.errors import UserError
from infra.hub import hub_errors
from infra.modelcache.layout import (
    CacheEntry,
    S3Location,
    is_commit_hash,
    model_slug,
    ref_key,
    validate_commit,
    validate_model_id,
    validate_revision,
)
from infra.modelcache.manifest import Manifest, ManifestFile, build_manifest, crc64nvme_text, marker_body
from infra.modelcache.progress import ProgressReporter
from infra.modelcache.s3_source import (
    SourceObject,
    download_source,
    is_s3_source,
    list_source,
    listing_commit,
    parse_s3_source,
    source_model_id,
)
from infra.modelcache.transfer import TransferSettings, is_not_found

SHA256_METADATA = "sha256"  # x-amz-meta-sha256 on every uploaded object: lets a resumed push skip it
_HASH_BLOCK = 8 * 1024 * 1024
# Written by huggingface_hub into a local_dir download; not part of the model.
_SKIPPED_DIRS = {".cache", ".git"}


@dataclass(frozen=True)
class PushResult:
    entry: CacheEntry
    skipped: bool  # the entry was already complete
    uploaded_files: int
    reused_files: int
    uploaded_bytes: int
    seconds: float


def digest_file(path: Path) -> tuple[str, str]:
    """(sha256 hex, crc64nvme as S3 writes it) of a file, in one read."""
    digest, crc = hashlib.sha256(), 0
    with open(path, "rb") as handle:
        while block := handle.read(_HASH_BLOCK):
            digest.update(block)
            crc = crc64nvme(block, crc)
    return digest.hexdigest(), crc64nvme_text(crc)


def list_model_files(root: Path) -> list[str]:
    """Every regular file under `root` (symlinks followed, as in an HF snapshot), as repo-relative paths."""
    found = []
    for directory, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = sorted(d for d in dirs if d not in _SKIPPED_DIRS)
        for name in files:
            full = Path(directory) / name
            if full.is_file():
                found.append(full.relative_to(root).as_posix())
    if not found:
        raise UserError(f"{root} holds no files to push", key="--from")
    return sorted(found)


def resolve_hub_commit(model: str, revision: str) -> str:
    """The commit a branch or tag points at now, so the entry is keyed by something that never moves."""
    from huggingface_hub import HfApi

    with hub_errors(model, revision):
        sha = HfApi().model_info(model, revision=revision).sha
    if not sha:
        raise UserError(f"the Hub returned no commit for {model}@{revision}", key="--revision")
    return sha


def download_snapshot(
    model: str,
    commit: str,
    scratch: Path,
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    workers: int = 8,
) -> Path:
    """Download one commit into `scratch/<org>--<name>/<commit>` (resumes what is already there)."""
    from huggingface_hub import snapshot_download

    target = scratch / model_slug(model) / commit
    with hub_errors(model, commit):
        snapshot_download(
            model,
            revision=commit,
            local_dir=target,
            allow_patterns=list(include) or None,
            ignore_patterns=list(exclude) or None,
            max_workers=workers,
        )
    return target


def _head(client: Any, bucket: str, key: str) -> dict[str, Any] | None:
    try:
        return client.head_object(Bucket=bucket, Key=key)
    except ClientError as error:
        if is_not_found(error):
            return None
        raise


def entry_is_complete(client: Any, entry: CacheEntry) -> bool:
    return _head(client, entry.root.bucket, entry.marker_key) is not None


def upload_entry(
    client: Any,
    entry: CacheEntry,
    source: Path,
    revision: str,
    settings: TransferSettings,
    log: TextIO | None = None,
) -> tuple[Manifest, int, int, int]:
    """Hash and upload every file, then the manifest, then the marker. Returns (manifest, uploaded, reused,
    uploaded bytes)."""
    paths = list_model_files(source)
    with ThreadPoolExecutor(min(4, os.cpu_count() or 1)) as pool:
        digests = list(pool.map(lambda p: digest_file(source / p), paths))
    files = [
        ManifestFile(path=p, size=(source / p).stat().st_size, sha256=sha, crc64nvme=crc)
        for p, (sha, crc) in zip(paths, digests, strict=True)
    ]
    manifest = build_manifest(entry.model, revision, entry.commit, files)
    config = TransferConfig(
        multipart_threshold=settings.chunk_size,
        multipart_chunksize=settings.chunk_size,
        max_concurrency=settings.concurrency,
        use_threads=True,
    )
    uploader = S3Transfer(client, config)
    uploaded = reused = uploaded_bytes = 0
    bucket = entry.root.bucket
    with ProgressReporter("push", manifest.total_size, stream=log) as progress:
        for file in manifest.files:
            key = entry.file_key(file.path)
            existing = _head(client, bucket, key)
            if (
                existing is not None
                and existing.get("ContentLength") == file.size
                and existing.get("Metadata", {}).get(SHA256_METADATA) == file.sha256
            ):
                reused += 1
                progress.advance(file.size)
                continue
            uploader.upload_file(
                str(source / file.path),
                bucket,
                key,
                extra_args={"Metadata": {SHA256_METADATA: file.sha256}},
                callback=progress.advance,
            )
            uploaded += 1
            uploaded_bytes += file.size
    client.put_object(
        Bucket=bucket,
        Key=entry.manifest_key,
        Body=manifest.to_json().encode(),
        ContentType="application/json",
    )
    client.put_object(
        Bucket=bucket,
        Key=entry.marker_key,
        Body=marker_body(manifest).encode(),
        ContentType="application/json",
    )
    return manifest, uploaded, reused, uploaded_bytes


def push(
    client: Any,
    root: S3Location,
    model: str,
    revision: str,
    *,
    source_dir: Path | None = None,
    scratch: Path | None = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    force: bool = False,
    settings: TransferSettings | None = None,
    log: TextIO | None = None,
) -> PushResult:
    """Fill the cache entry for `model` at `revision` (from the Hub or ModelScope, from an s3:// folder, or
    from `source_dir`)."""
    settings = settings or TransferSettings()
    started = time.monotonic()
    validate_revision(revision)
    listed: list[modelscope.RepoFile] = []
    folder = parse_s3_source(model, key="MODEL") if is_s3_source(model) else None
    if folder is None:
        validate_model_id(model)
    objects: list[SourceObject] = []
    if folder is not None:
        if source_dir is not None:
            raise UserError("push either an s3:// folder or a local directory, not both", key="--from")
        objects = list_source(client, folder, include, exclude)
        model, commit = source_model_id(folder), listing_commit(objects)
    elif source_dir is not None:
        if not source_dir.is_dir():
            raise UserError(f"{source_dir} is not a directory", key="--from")
        commit = validate_commit(revision.replace("/", "-"))
    elif modelscope.is_modelscope(model):
        listed = modelscope.list_files(model, revision)
        commit = modelscope.snapshot_id(listed)
    else:
        commit = revision if is_commit_hash(revision) else resolve_hub_commit(model, revision)
    entry = CacheEntry(root, model, commit)
    if not force and entry_is_complete(client, entry):
        _record_ref(client, root, model, revision, commit)
        return PushResult(entry, True, 0, 0, 0, time.monotonic() - started)
    if force:
        # Readers must stop trusting the old entry before any object of it changes.
        client.delete_object(Bucket=root.bucket, Key=entry.marker_key)
    scratch = scratch or Path.cwd() / ".modelcache-scratch"
    if folder is not None:
        source_dir = download_source(
            client,
            folder,
            objects,
            scratch / model_slug(model) / commit,
            concurrency=settings.concurrency,
            chunk_size=settings.chunk_size,
        )
    elif listed:
        target = scratch / model_slug(model) / commit
        source_dir = modelscope.download(model, revision, listed, target, include=include, exclude=exclude)
    elif source_dir is None:
        source_dir = download_snapshot(model, commit, scratch, include=include, exclude=exclude)
    _, uploaded, reused, uploaded_bytes = upload_entry(client, entry, source_dir, revision, settings, log)
    _record_ref(client, root, model, revision, commit)
    return PushResult(entry, False, uploaded, reused, uploaded_bytes, time.monotonic() - started)


def _record_ref(client: Any, root: S3Location, model: str, revision: str, commit: str) -> None:
    if revision != commit:
        client.put_object(Bucket=root.bucket, Key=ref_key(root, model, revision), Body=commit.encode())
