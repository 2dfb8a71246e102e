"""verify and ls: what an operator runs to trust (or list) what is in the cache."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from infra.errors import UserError
from infra.modelcache.layout import (
    MANIFEST_SUFFIX,
    MARKER_SUFFIX,
    CacheEntry,
    LocalLayout,
    S3Location,
    local_model_dir,
    model_from_slug,
)
from infra.modelcache.manifest import Manifest, ManifestFile, parse_manifest
from infra.modelcache.pull import read_entry
from infra.modelcache.transfer import TransferSettings, is_not_found

_BLOCK = 8 * 1024 * 1024


@dataclass(frozen=True)
class Problem:
    path: str
    reason: str


def _check_remote_file(client: Any, entry: CacheEntry, file: ManifestFile, deep: bool) -> Problem | None:
    key = entry.file_key(file.path)
    try:
        if not deep:
            size = client.head_object(Bucket=entry.root.bucket, Key=key)["ContentLength"]
            return (
                None if size == file.size else Problem(file.path, f"size {size}, manifest says {file.size}")
            )
        body = client.get_object(Bucket=entry.root.bucket, Key=key)["Body"]
        digest, size = hashlib.sha256(), 0
        while block := body.read(_BLOCK):
            digest.update(block)
            size += len(block)
    except ClientError as error:
        if is_not_found(error):
            return Problem(file.path, "object is missing")
        raise
    if size != file.size:
        return Problem(file.path, f"size {size}, manifest says {file.size}")
    if digest.hexdigest() != file.sha256:
        return Problem(file.path, f"sha256 {digest.hexdigest()}, manifest says {file.sha256}")
    return None


def verify_remote(
    client: Any, entry: CacheEntry, *, deep: bool, settings: TransferSettings
) -> tuple[Manifest, list[Problem]]:
    """Marker + manifest + every object's size (HEAD); with `deep`, every object's sha256 too."""
    manifest, _ = read_entry(client, entry)
    with ThreadPoolExecutor(settings.concurrency) as pool:
        found = pool.map(lambda f: _check_remote_file(client, entry, f, deep), manifest.files)
        return manifest, [p for p in found if p is not None]


def _check_local_file(model_dir: Path, file: ManifestFile) -> Problem | None:
    path = model_dir / file.path
    if not path.is_file():
        return Problem(file.path, "missing")
    if path.stat().st_size != file.size:
        return Problem(file.path, f"size {path.stat().st_size}, manifest says {file.size}")
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
    if digest.hexdigest() != file.sha256:
        return Problem(file.path, f"sha256 {digest.hexdigest()}, manifest says {file.sha256}")
    return None


def find_local_record(dest: Path) -> tuple[LocalLayout, Path]:
    """The manifest a finished pull left in `dest` (either layout)."""
    plain = dest / ".modelcache-manifest.json"
    if plain.is_file():
        return LocalLayout.PLAIN, plain
    records = sorted(dest.glob("models--*/.modelcache-*.json"))
    if len(records) == 1:
        return LocalLayout.HF_CACHE, records[0]
    if len(records) > 1:
        raise UserError(f"{dest} holds several pulled models; pass the snapshot's parent", key="--local")
    raise UserError(f"{dest} holds no finished pull (no .modelcache manifest)", key="--local")


def verify_local(dest: Path) -> tuple[Manifest, list[Problem]]:
    """Re-hash every file of a finished pull against the manifest it was pulled with."""
    layout, record = find_local_record(dest)
    manifest = parse_manifest(record.read_bytes())
    model_dir = Path(local_model_dir(str(dest), layout, manifest.model, manifest.commit))
    with ThreadPoolExecutor(2) as pool:
        found = pool.map(lambda f: _check_local_file(model_dir, f), manifest.files)
        return manifest, [p for p in found if p is not None]


@dataclass(frozen=True)
class ListedEntry:
    model: str
    commit: str
    complete: bool
    total_size: int | None  # from the manifest, when there is one
    refs: tuple[str, ...]


def _common_prefixes(client: Any, bucket: str, prefix: str) -> tuple[list[str], list[str]]:
    """(sub-prefixes, object keys) directly under `prefix`."""
    prefixes: list[str] = []
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
        prefixes += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
        keys += [o["Key"] for o in page.get("Contents", [])]
    return prefixes, keys


def list_entries(client: Any, root: S3Location) -> list[ListedEntry]:
    """Every entry under `root`, complete or not, with its size and the branches/tags that point at it."""
    models_prefix = root.key("models") + "/"
    slugs, _ = _common_prefixes(client, root.bucket, models_prefix)
    entries = []
    for slug_prefix in slugs:
        slug = slug_prefix[len(models_prefix) : -1]
        try:
            model = model_from_slug(slug)
        except UserError:
            model = slug  # not written by push; listed as it is
        sub_prefixes, keys = _common_prefixes(client, root.bucket, slug_prefix)
        commits = {p[len(slug_prefix) : -1] for p in sub_prefixes} - {"refs"}
        commits |= {k[len(slug_prefix) : -len(MANIFEST_SUFFIX)] for k in keys if k.endswith(MANIFEST_SUFFIX)}
        markers = {k[len(slug_prefix) : -len(MARKER_SUFFIX)] for k in keys if k.endswith(MARKER_SUFFIX)}
        refs: dict[str, list[str]] = {}
        ref_prefix = slug_prefix + "refs/"
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=root.bucket, Prefix=ref_prefix):
            for obj in page.get("Contents", []):
                commit = client.get_object(Bucket=root.bucket, Key=obj["Key"])["Body"].read().decode().strip()
                refs.setdefault(commit, []).append(obj["Key"][len(ref_prefix) :])
        for commit in sorted(commits):
            total = None
            try:
                body = client.get_object(Bucket=root.bucket, Key=f"{slug_prefix}{commit}{MANIFEST_SUFFIX}")[
                    "Body"
                ]
                total = parse_manifest(body.read()).total_size
            except ClientError as error:
                if not is_not_found(error):
                    raise
            except UserError:
                total = None
            entries.append(
                ListedEntry(model, commit, commit in markers, total, tuple(sorted(refs.get(commit, []))))
            )
    return entries
