"""A model folder in someone's S3 bucket (a PEFT LoRA adapter: adapter_config.json + safetensors) as a
push source, beside the Hub.

The cache keys entries by (model id, commit). An S3 folder has neither, so:
- its model id is `s3/<bucket-and-prefix slug>-<hash of the URI>` (`source_model_id`): readable in
  `cache ls`, unique per URI, and computed the same way by the fill Job's push and the serving pod's pull;
- its commit is a digest of the listing, every (path, size, ETag) (`listing_commit`): a push never mixes
  two versions of the folder, and a changed folder becomes a new entry. Every GET carries `If-Match` with
  the listed ETag, so an object replaced during the push fails it instead of entering the entry.
The `--revision` a push is given names the entry in `refs/`, as a Hub branch does.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.errors import UserError
from infra.modelcache.layout import S3Location, parse_s3_uri, validate_relative_path

SCHEME = "s3://"
MODEL_ORG = "s3"  # the model id's org part: `s3/...` names a cached S3 folder, never a Hub repo we push
_SLUG_ROOM = 80


def is_s3_source(source: str) -> bool:
    return source.startswith(SCHEME)


def parse_s3_source(uri: str, *, key: str) -> S3Location:
    """`s3://bucket/prefix`, the folder itself (not a bucket root: its reader's grant is the prefix)."""
    location = parse_s3_uri(uri, key=key)
    if not location.prefix:
        raise UserError(
            f"{uri!r} names a whole bucket; give the adapter's folder, s3://BUCKET/PREFIX", key=key
        )
    return location


def source_model_id(location: S3Location) -> str:
    """The cache's model id for an S3 folder: valid where a Hub id is (layout.validate_model_id)."""
    slug = re.sub(r"[^a-z0-9]+", "-", f"{location.bucket}/{location.prefix}".lower()).strip("-")
    digest = hashlib.sha256(location.uri.encode()).hexdigest()[:10]
    return f"{MODEL_ORG}/{slug[:_SLUG_ROOM].strip('-')}-{digest}"


def cache_model_id(source: str) -> str:
    """The model id a source is cached under: a Hub id as is, an S3 folder's `source_model_id`."""
    return source_model_id(parse_s3_source(source, key="source")) if is_s3_source(source) else source


@dataclass(frozen=True)
class SourceObject:
    path: str  # relative to the folder
    size: int
    etag: str  # as S3 lists it, quoted


def _matches(path: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatch(path, pattern) for pattern in patterns)


def list_source(
    client: Any, location: S3Location, include: Sequence[str] = (), exclude: Sequence[str] = ()
) -> list[SourceObject]:
    """Every object under the folder (include/exclude globs as a Hub push applies them), sorted by path."""
    folder = f"{location.prefix}/"
    found = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=location.bucket, Prefix=folder):
        for item in page.get("Contents", ()):
            path = item["Key"][len(folder) :]
            if not path or path.endswith("/"):  # the console's "folder" placeholders
                continue
            if (include and not _matches(path, include)) or _matches(path, exclude):
                continue
            found.append(SourceObject(validate_relative_path(path), item["Size"], item["ETag"]))
    if not found:
        raise UserError(f"{location.uri} holds no objects to push", key="MODEL")
    return sorted(found, key=lambda o: o.path)


def listing_commit(objects: Sequence[SourceObject]) -> str:
    """The entry's commit: changes whenever any object is added, removed or replaced."""
    listing = json.dumps([[o.path, o.size, o.etag] for o in objects], separators=(",", ":"))
    return "s3-" + hashlib.sha256(listing.encode()).hexdigest()[:40]


def download_source(
    client: Any,
    location: S3Location,
    objects: Sequence[SourceObject],
    target: Path,
    *,
    concurrency: int,
    chunk_size: int,
) -> Path:
    """Download the listed objects into `target` with s3transfer (parallel ranged GETs, each file written
    to a temporary name and renamed). A file already there at its listed size is kept: `target` is per
    commit, so it came from the same ETag, and an interrupted push resumes."""
    from s3transfer.exceptions import S3DownloadFailedError
    from s3transfer.manager import TransferConfig, TransferManager
    from s3transfer.subscribers import BaseSubscriber

    class Pinned(BaseSubscriber):
        """Gives s3transfer the listed size and ETag: no HEAD, and If-Match on every GET."""

        def __init__(self, item: SourceObject) -> None:
            self.item = item

        def on_queued(self, future: Any, **kwargs: Any) -> None:
            future.meta.provide_transfer_size(self.item.size)
            future.meta.provide_object_etag(self.item.etag)

    # Threshold 1: every object goes the ranged way, the one that sends If-Match whatever the client's
    # checksum settings (s3transfer's single-GET path does not).
    config = TransferConfig(
        multipart_threshold=1, multipart_chunksize=chunk_size, max_request_concurrency=concurrency
    )
    pending = []
    with TransferManager(client, config) as manager:
        for item in objects:
            path = target / item.path
            if path.is_file() and path.stat().st_size == item.size:
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            if item.size == 0:  # nothing to range over, nothing that could change unseen
                path.touch()
                continue
            key = location.key(item.path)
            future = manager.download(location.bucket, key, str(path), subscribers=[Pinned(item)])
            pending.append((item, future))
        for item, future in pending:
            try:
                future.result()
            except Exception as error:
                # s3transfer reports the 412 as S3DownloadFailedError ("did not match expected ETag")
                if isinstance(error, S3DownloadFailedError) or _error_code(error) == "PreconditionFailed":
                    raise UserError(
                        f"{location.uri}/{item.path} changed during the push; run it again (the new "
                        "listing becomes a new entry)",
                        key="MODEL",
                    ) from None
                raise
    return target


def _error_code(error: BaseException) -> str:
    response = getattr(error, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def read_source_file(client: Any, location: S3Location, name: str) -> bytes:
    """One object of the folder (adapter_config.json at plan time)."""
    return client.get_object(Bucket=location.bucket, Key=location.key(name))["Body"].read()


def source_client(region: str | None) -> Any:
    """An S3 client in `region` (the stack's) for plan-time reads; AWS_ENDPOINT_URL_S3 points it at a
    stand-in, as for the cache tool."""
    import botocore.session

    from infra.modelcache.transfer import TransferSettings, client_config, endpoint_url_from_env

    endpoint = endpoint_url_from_env()
    return botocore.session.get_session().create_client(
        "s3",
        region_name=region,
        endpoint_url=endpoint,
        config=client_config(TransferSettings(max_attempts=3), path_style=endpoint is not None),
    )


def read_source_json(source: str, name: str, *, region: str | None, key: str) -> bytes:
    """One file of an S3 folder, or a one-line UserError naming `key` (missing object, no credentials, no
    access, S3 unreachable)."""
    from botocore.exceptions import ClientError

    from infra.modelcache.transfer import is_not_found, s3_errors

    location = parse_s3_source(source, key=key)
    uri = f"{location.uri}/{name}"
    try:
        with s3_errors(f"reading {uri}"):
            try:
                return read_source_file(source_client(region), location, name)
            except ClientError as error:
                if is_not_found(error):
                    raise UserError(
                        f"{uri} does not exist: a LoRA adapter folder holds {name}", key=key
                    ) from None
                raise
    except UserError as error:
        if error.key == key:
            raise
        message = str(error).removeprefix(f"{error.key}: ") if error.key else str(error)
        raise UserError(message if uri in message else f"{uri}: {message}", key=key) from None
