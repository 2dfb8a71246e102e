"""A pull without fsync (the default) stays safe across crashes; page-cache writes stay small.

A pull that renames files without fsync records the boot it ran on; a pull on another boot (after a
crash, files may be torn under their final names) checks every file again before it trusts one. The
reboot is simulated by pointing the pull at another boot id; the torn file by same-size bytes that
differ from the manifest's.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from infra.modelcache import pull as pull_module
from infra.modelcache.layout import CacheEntry, S3Location, split_entry_uri
from infra.modelcache.pull import PullResult, pull
from infra.modelcache.transfer import TransferSettings, make_s3_client
from tests.modelcache.conftest import BUCKET, tree_digest

pytestmark = pytest.mark.integration

RECORD = ".modelcache-manifest.json"
UNFLUSHED = RECORD + ".unflushed"


def _entry(entry_uri: str) -> CacheEntry:
    location = split_entry_uri(S3Location(BUCKET, entry_uri.removeprefix(f"s3://{BUCKET}/")))
    assert location is not None
    return CacheEntry(*location)


def _boot(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, boot_id: str) -> None:
    path = tmp_path / f"boot-{boot_id}"
    path.write_text(boot_id + "\n")
    monkeypatch.setattr(pull_module, "BOOT_ID_PATH", path)


def _pull(endpoint: str, entry_uri: str, dest: Path, *, fsync: bool = False) -> PullResult:
    settings = TransferSettings(concurrency=2, chunk_size=1024 * 1024, fsync=fsync, processes=1)
    return pull(make_s3_client(settings, endpoint), _entry(entry_uri), dest, settings=settings)


def _tear(path: Path) -> None:
    """Same size, other bytes: what a file renamed before its data reached the disk can hold after a crash."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_pull_without_fsync_is_trusted_on_its_boot_and_checked_again_after_a_reboot(
    moto_endpoint: str, push_small: Callable[[str], str], small_model: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    entry_uri = push_small("reboot")
    dest = tmp_path / "m"
    torn, kept = sorted(p.name for p in small_model.glob("*.safetensors"))
    _boot(monkeypatch, tmp_path, "boot-a")
    first = _pull(moto_endpoint, entry_uri, dest)
    assert first.downloaded_files == len(first.manifest.files)
    assert (dest / UNFLUSHED).read_text() == "boot-a"

    _tear(dest / torn)
    same_boot = _pull(moto_endpoint, entry_uri, dest)
    # Same boot: the page cache is the file's truth, so size is enough (this "tear" cannot happen).
    assert same_boot.downloaded_files == 0

    kept_inode = (dest / kept).stat().st_ino
    _boot(monkeypatch, tmp_path, "boot-b")
    after_reboot = _pull(moto_endpoint, entry_uri, dest)
    assert after_reboot.downloaded_files == 1, "the torn file must be fetched again, and only it"
    assert tree_digest(dest) == tree_digest(small_model)
    assert (dest / kept).stat().st_ino == kept_inode, f"{kept} passed its check and must be kept"
    assert (dest / UNFLUSHED).read_text() == "boot-b"


def test_a_pull_with_fsync_after_a_reboot_checks_then_needs_no_check_again(
    moto_endpoint: str, push_small: Callable[[str], str], small_model: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    entry_uri = push_small("reboot-fsync")
    dest = tmp_path / "m"
    torn = sorted(p.name for p in small_model.glob("*.safetensors"))[0]
    _boot(monkeypatch, tmp_path, "boot-a")
    _pull(moto_endpoint, entry_uri, dest)
    _tear(dest / torn)

    _boot(monkeypatch, tmp_path, "boot-b")
    flushed = _pull(moto_endpoint, entry_uri, dest, fsync=True)
    assert flushed.downloaded_files == 1
    assert tree_digest(dest) == tree_digest(small_model)
    assert not (dest / UNFLUSHED).exists(), "every file is now on the disk: no later boot needs a check"

    checked: list[str] = []
    monkeypatch.setattr(pull_module, "_matches", lambda path, spec: checked.append(spec.path) or True)
    _boot(monkeypatch, tmp_path, "boot-c")
    again = _pull(moto_endpoint, entry_uri, dest, fsync=True)
    assert again.downloaded_files == 0 and checked == []


def test_without_a_boot_id_every_unflushed_file_is_checked_again(
    moto_endpoint: str, push_small: Callable[[str], str], small_model: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    entry_uri = push_small("no-boot-id")
    dest = tmp_path / "m"
    monkeypatch.setattr(pull_module, "BOOT_ID_PATH", tmp_path / "absent")
    _pull(moto_endpoint, entry_uri, dest)
    _tear(dest / sorted(p.name for p in small_model.glob("*.safetensors"))[0])
    again = _pull(moto_endpoint, entry_uri, dest)
    assert again.downloaded_files == 1
    assert tree_digest(dest) == tree_digest(small_model)


def test_page_cache_writes_are_small_slices_and_files_are_byte_identical(
    moto_endpoint: str, push_small: Callable[[str], str], small_model: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    sizes: list[int] = []
    real_pwrite = os.pwrite

    def recording_pwrite(fd: int, data: memoryview, offset: int) -> int:
        sizes.append(len(data))
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(pull_module.os, "pwrite", recording_pwrite)
    _pull(moto_endpoint, push_small("slices"), tmp_path / "m")
    assert tree_digest(tmp_path / "m") == tree_digest(small_model)
    shard_bytes = sum(p.stat().st_size for p in small_model.glob("*.safetensors"))
    assert sum(sizes) >= shard_bytes
    assert max(sizes) == pull_module._PAGE_CACHE_WRITE  # pyright: ignore[reportPrivateUsage]
