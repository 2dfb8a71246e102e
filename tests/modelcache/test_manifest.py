"""Pure tests: manifest schema round trip and validation, completion marker, pull's pure checks."""

from __future__ import annotations

import hashlib
import io
import json

import pytest
from botocore.exceptions import ClientError

from infra.errors import UserError
from infra.modelcache.manifest import (
    MANIFEST_VERSION,
    ManifestError,
    ManifestFile,
    build_manifest,
    check_marker,
    crc64nvme_text,
    marker_body,
    parse_manifest,
)
from infra.modelcache.progress import ProgressReporter, format_progress_line
from infra.modelcache.pull import check_free_space, check_revision
from infra.modelcache.transfer import TransferSettings, backoff_seconds, is_retryable_client_error

COMMIT = "0123456789abcdef0123456789abcdef01234567"
SHA_A = hashlib.sha256(b"a").hexdigest()
SHA_EMPTY = hashlib.sha256(b"").hexdigest()


def _manifest():
    return build_manifest(
        "org/m",
        "main",
        COMMIT,
        [ManifestFile("z.safetensors", 1, SHA_A), ManifestFile("config.json", 0, SHA_EMPTY)],
    )


def test_manifest_round_trips_and_sorts_files() -> None:
    manifest = _manifest()
    assert [f.path for f in manifest.files] == ["config.json", "z.safetensors"]
    assert parse_manifest(manifest.to_json()) == manifest
    data = json.loads(manifest.to_json())
    assert data["version"] == MANIFEST_VERSION
    assert data["total_size"] == 1
    assert data["files"][1] == {"path": "z.safetensors", "size": 1, "sha256": SHA_A}


def _mutated(**changes: object) -> str:
    data = json.loads(_manifest().to_json())
    data.update(changes)
    return json.dumps(data)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "not valid JSON"),
        ("[]", "not a JSON object"),
        (_mutated(schema="other"), "not a model-cache manifest"),
        (_mutated(version=2), "version 2 is not supported"),
        (_mutated(files=[]), "lists no files"),
        (_mutated(total_size=5), "total_size"),
        (_mutated(files=[{"path": "../x", "size": 1, "sha256": SHA_A}]), "safe relative"),
        (_mutated(files=[{"path": "a", "size": -1, "sha256": SHA_A}], total_size=-1), "non-negative"),
        (_mutated(files=[{"path": "a", "size": 1, "sha256": "abc"}]), "64 lowercase hex"),
        (_mutated(files=[{"path": "a", "size": 1}]), "missing a field"),
        (
            _mutated(files=[{"path": "a", "size": 1, "sha256": SHA_A, "crc64nvme": "abc"}]),
            "8 bytes in base64",
        ),
        (_mutated(files=[{"path": "a", "size": 1, "sha256": SHA_A, "crc64nvme": 7}]), "8 bytes in base64"),
        (
            _mutated(
                files=[{"path": "a", "size": 1, "sha256": SHA_A}, {"path": "a", "size": 1, "sha256": SHA_A}],
                total_size=2,
            ),
            "twice",
        ),
        (
            _mutated(
                files=[
                    {"path": "a", "size": 1, "sha256": SHA_A},
                    {"path": "a/b", "size": 1, "sha256": SHA_A},
                ],
                total_size=2,
            ),
            "both a file and a directory",
        ),
        (_mutated(model="../x"), "model id"),
    ],
)
def test_parse_manifest_rejects(text: str, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        parse_manifest(text)


def test_crc64nvme_is_optional_and_in_s3s_notation() -> None:
    """Manifests written before crc64nvme still parse; new ones carry it as S3 writes the checksum."""
    from awscrt.checksums import crc64nvme

    # The catalogued check value of CRC-64/NVME, 0xAE8B14860A799888, as base64 of its big-endian bytes.
    assert crc64nvme(b"123456789") == 0xAE8B14860A799888
    assert crc64nvme_text(0xAE8B14860A799888) == "rosUhgp5mIg="
    with_crc = build_manifest(
        "org/m", "main", COMMIT, [ManifestFile("z.safetensors", 1, SHA_A, crc64nvme_text(crc64nvme(b"a")))]
    )
    assert json.loads(with_crc.to_json())["files"][0]["crc64nvme"] == crc64nvme_text(crc64nvme(b"a"))
    assert parse_manifest(with_crc.to_json()) == with_crc
    assert all(f.crc64nvme is None for f in parse_manifest(_manifest().to_json()).files)


def test_marker_names_exactly_its_manifest() -> None:
    manifest = _manifest()
    check_marker(marker_body(manifest), manifest.to_json())
    other = build_manifest("org/m", "main", COMMIT, [ManifestFile("x", 1, SHA_A)])
    with pytest.raises(ManifestError, match="does not match the completion marker"):
        check_marker(marker_body(manifest), other.to_json())
    with pytest.raises(ManifestError, match="not a model-cache completion marker"):
        check_marker('{"schema": "x"}', manifest.to_json())


@pytest.mark.parametrize(
    ("wanted", "ok"), [(None, True), ("main", True), (COMMIT, True), ("v2", False), ("f" * 40, False)]
)
def test_check_revision(wanted: str | None, ok: bool) -> None:
    if ok:
        check_revision(_manifest(), wanted)
    else:
        with pytest.raises(UserError, match="wrong revision"):
            check_revision(_manifest(), wanted)


@pytest.mark.parametrize(
    ("required", "free", "ok"),
    [
        (0, 64 * 2**20, True),
        (2**30, 2**30 + 64 * 2**20, True),
        (2**30, 2**30, False),
        (10 * 2**30, 2**30, False),
    ],
)
def test_check_free_space(required: int, free: int, ok: bool) -> None:
    if ok:
        check_free_space(required, free, "/x")
    else:
        with pytest.raises(UserError, match="not enough free space"):
            check_free_space(required, free, "/x")


def _client_error(status: int, code: str) -> ClientError:
    return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")


@pytest.mark.parametrize(
    ("status", "code", "retry"),
    [
        (503, "SlowDown", True),
        (500, "InternalError", True),
        (400, "RequestTimeout", True),
        (403, "AccessDenied", False),
        (404, "NoSuchKey", False),
        (416, "InvalidRange", False),
    ],
)
def test_retryable_client_errors(status: int, code: str, retry: bool) -> None:
    assert is_retryable_client_error(_client_error(status, code)) is retry


@pytest.mark.parametrize("attempt", [1, 2, 5, 20])
def test_backoff_is_bounded_and_grows(attempt: int) -> None:
    values = [backoff_seconds(attempt, base_s=0.2, cap_s=20) for _ in range(200)]
    assert all(0 <= v <= min(20, 0.2 * 2 ** (attempt - 1)) for v in values)


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"concurrency": 0}, "--concurrency"),
        ({"chunk_size": 1}, "--chunk-size-mib"),
        ({"max_attempts": 0}, "--max-attempts"),
    ],
)
def test_transfer_settings_reject(settings: dict, key: str) -> None:
    with pytest.raises(UserError, match=key):
        TransferSettings(**settings)


def test_progress_line_is_plain_text() -> None:
    line = format_progress_line("pull", 2**30, 4 * 2**30, 2.0)
    assert line == "pull: 1.00/4.00 GiB (25%) 512 MiB/s"


def test_progress_reporter_logs_plain_lines_when_not_a_terminal() -> None:
    stream = io.StringIO()
    with ProgressReporter("pull", 100, stream=stream, interval_s=3600) as progress:
        progress.advance(40)
        progress.advance(60)
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("pull: ") and lines[-1].startswith("pull: 0.00/0.00 GiB (100%)")
    assert "\x1b" not in stream.getvalue() and "\r" not in stream.getvalue()
