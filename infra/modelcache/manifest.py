"""The manifest of a cache entry and its completion marker. Pure: JSON in, validated values out.

The manifest lists every file (path, size, sha256, and since 2026-11 crc64nvme); pull trusts nothing else.
`crc64nvme` is the CRC-64/NVME of the whole file in S3's own notation (base64 of the 8 big-endian bytes,
as in `x-amz-checksum-crc64nvme`). It is optional, so manifests written before it still parse and older
readers ignore it: pull checks it per range as bytes arrive (a CRC of two ranges combines from theirs,
in any order, at ~0.13 CPU s/GiB against sha256's ~0.75), and falls back to the sha256 when it is
absent or does not match. The marker is written
after every object and the manifest are in place, and carries the manifest's own sha256, so a pull can
tell "push finished" from "push in progress" and a manifest replaced after completion.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from infra.errors import UserError
from infra.modelcache.layout import (
    validate_commit,
    validate_model_id,
    validate_relative_path,
    validate_revision,
)

MANIFEST_SCHEMA = "llm-serving/modelcache-manifest"
MANIFEST_VERSION = 1
MARKER_SCHEMA = "llm-serving/modelcache-complete"

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def crc64nvme_text(value: int) -> str:
    """A CRC-64/NVME value as S3 writes it: base64 of its 8 big-endian bytes."""
    return base64.b64encode(value.to_bytes(8, "big")).decode()


def _is_crc64nvme_text(text: object) -> bool:
    if not isinstance(text, str) or len(text) != 12:
        return False
    try:
        return len(base64.b64decode(text, validate=True)) == 8
    except binascii.Error:
        return False


class ManifestError(UserError):
    """A manifest or marker that cannot be trusted: unreadable, wrong schema, or inconsistent."""

    def __init__(self, message: str) -> None:
        super().__init__(message, key="manifest")


@dataclass(frozen=True)
class ManifestFile:
    path: str
    size: int
    sha256: str
    crc64nvme: str | None = None


@dataclass(frozen=True)
class Manifest:
    model: str
    revision: str
    commit: str
    files: tuple[ManifestFile, ...]

    @property
    def total_size(self) -> int:
        return sum(file.size for file in self.files)

    def to_json(self) -> str:
        body = {
            "schema": MANIFEST_SCHEMA,
            "version": MANIFEST_VERSION,
            "model": self.model,
            "revision": self.revision,
            "commit": self.commit,
            "total_size": self.total_size,
            "files": [_file_json(f) for f in self.files],
        }
        return json.dumps(body, indent=1, sort_keys=False) + "\n"

    def sha256(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()


def _file_json(file: ManifestFile) -> dict[str, Any]:
    body: dict[str, Any] = {"path": file.path, "size": file.size, "sha256": file.sha256}
    if file.crc64nvme is not None:
        body["crc64nvme"] = file.crc64nvme
    return body


def build_manifest(model: str, revision: str, commit: str, files: Iterable[ManifestFile]) -> Manifest:
    """A validated manifest, files sorted by path so the same snapshot always gives the same bytes."""
    manifest = Manifest(
        model=model, revision=revision, commit=commit, files=tuple(sorted(files, key=lambda f: f.path))
    )
    _validate(manifest)
    return manifest


def parse_manifest(text: str | bytes) -> Manifest:
    """Parse and validate a manifest; raises ManifestError saying what is wrong."""
    data = _load_object(text, "manifest")
    if data.get("schema") != MANIFEST_SCHEMA:
        raise ManifestError(f"not a model-cache manifest (schema {data.get('schema')!r})")
    if data.get("version") != MANIFEST_VERSION:
        raise ManifestError(
            f"manifest version {data.get('version')!r} is not supported by this tool "
            f"(it reads version {MANIFEST_VERSION}); use the tool version that wrote it"
        )
    try:
        files = tuple(
            ManifestFile(
                path=str(item["path"]),
                size=item["size"],
                sha256=str(item["sha256"]),
                crc64nvme=item.get("crc64nvme"),
            )
            for item in data["files"]
        )
        manifest = Manifest(
            model=str(data["model"]), revision=str(data["revision"]), commit=str(data["commit"]), files=files
        )
    except (KeyError, TypeError) as error:
        raise ManifestError(f"manifest is missing a field: {error}") from None
    _validate(manifest)
    if data.get("total_size") != manifest.total_size:
        raise ManifestError("manifest total_size does not match the sum of its file sizes")
    return manifest


def _validate(manifest: Manifest) -> None:
    try:
        validate_model_id(manifest.model)
        validate_revision(manifest.revision)
        validate_commit(manifest.commit)
        for file in manifest.files:
            validate_relative_path(file.path)
    except UserError as error:
        raise ManifestError(str(error)) from None
    if not manifest.files:
        raise ManifestError("manifest lists no files")
    paths = [f.path for f in manifest.files]
    if len(set(paths)) != len(paths):
        raise ManifestError("manifest lists a file twice")
    # A file and a directory of the same name cannot both exist on disk.
    as_dirs = {p + "/" for p in paths}
    if any(p.startswith(d) for p in paths for d in as_dirs):
        raise ManifestError("manifest lists a path that is both a file and a directory")
    for file in manifest.files:
        if not isinstance(file.size, int) or isinstance(file.size, bool) or file.size < 0:
            raise ManifestError(f"{file.path}: size {file.size!r} is not a non-negative integer")
        if not _SHA256.match(file.sha256):
            raise ManifestError(f"{file.path}: sha256 {file.sha256!r} is not 64 lowercase hex digits")
        if file.crc64nvme is not None and not _is_crc64nvme_text(file.crc64nvme):
            raise ManifestError(f"{file.path}: crc64nvme {file.crc64nvme!r} is not 8 bytes in base64")


def marker_body(manifest: Manifest) -> str:
    return json.dumps({"schema": MARKER_SCHEMA, "manifest_sha256": manifest.sha256()}) + "\n"


def check_marker(marker_text: str | bytes, manifest_text: str | bytes) -> None:
    """The marker must name exactly the manifest we read, or the entry changed under us."""
    data = _load_object(marker_text, "completion marker")
    if data.get("schema") != MARKER_SCHEMA:
        raise ManifestError(f"not a model-cache completion marker (schema {data.get('schema')!r})")
    raw = manifest_text if isinstance(manifest_text, bytes) else manifest_text.encode()
    if data.get("manifest_sha256") != hashlib.sha256(raw).hexdigest():
        raise ManifestError(
            "the manifest does not match the completion marker (the entry was rewritten after it was "
            "completed); push it again"
        )


def _load_object(text: str | bytes, what: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as error:
        raise ManifestError(f"{what} is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{what} is not a JSON object")
    return data
