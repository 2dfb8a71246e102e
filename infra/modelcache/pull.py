"""pull: S3 -> local disk with many parallel ranged GETs, verified, atomic per file, resumable.

Every file is written to a temporary name beside its final name, preallocated, and filled by ranged
GETs, each streamed through a 4 MiB buffer: written at its offset (through the page cache, where vLLM
will read it from; O_DIRECT with `direct_io`) and checksummed (CRC-64/NVME) as it arrives. When a
file's last range lands, the ranges' CRCs are combined and compared with the manifest (sha256, read
back, for entries without a CRC or on a mismatch), and only then is the file renamed to its final name.
A file already present under its final name with the manifest's size was put there by that rename, so
a rerun skips it; temporary files of a killed run are deleted and fetched again.

Without `fsync` (the default) a pull never waits for the disk. A renamed file is whole for as long as
the kernel that wrote it runs; only a crash or reboot can lose what its page cache held. So a pull
that renames without fsync first records the boot id, and a later pull on another boot checks every
file again (CRC read back) before it trusts one; with `fsync` no such check is ever needed.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import mmap
import os
import shutil
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from awscrt.checksums import combine_crc64nvme, crc64nvme
from botocore.exceptions import ClientError

from infra.errors import UserError
from infra.modelcache.layout import (
    CacheEntry,
    LocalLayout,
    S3Location,
    is_commit_hash,
    local_manifest_path,
    local_model_dir,
    local_ref_path,
    plan_ranges,
    ref_key,
    split_entry_uri,
    validate_revision,
)
from infra.modelcache.manifest import (
    Manifest,
    ManifestError,
    ManifestFile,
    check_marker,
    crc64nvme_text,
    parse_manifest,
)
from infra.modelcache.progress import ProgressReporter
from infra.modelcache.range_gets import fetch_ranges
from infra.modelcache.s3_reads import proxied, ssl_context
from infra.modelcache.transfer import (
    RETRYABLE_STREAM_ERRORS,
    MiB,
    TransferSettings,
    backoff_seconds,
    error_code,
    is_not_found,
    is_retryable_client_error,
)

TEMP_SUFFIX = ".modelcache-part"
BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")
FREE_SPACE_MARGIN = 64 * MiB
# Bytes per socket read and checksum update (and per write with O_DIRECT). Each piece costs a few
# interpreter-lock round trips, so larger pieces mean less GIL contention: with O_DIRECT 4 MiB beat 1 MiB
# (142 against 123 MiB/s, 1.89 against 2.03 CPU s/GiB). Writing through the page cache, 256 KiB, 1 and
# 2 MiB were all within the noise of 4 MiB (docs/benchmarks.md).
_PIECE = 4 * 1024 * 1024
# Bytes per write into the page cache. The kernel sizes a file's page-cache folios by the write, and
# 32 KiB (order 3) is the largest size it serves from its per-CPU free lists; larger folios come from the
# buddy allocator's big blocks, likely the ones this benchmark VM's balloon has handed back to the host
# (a host page fault per 4 KiB touched). Pulls in 32 KiB writes took 1.04-1.37 client CPU s/GiB against
# 1.52-1.93 in 256 KiB and 1.82-1.88 in 64 KiB writes, whichever ran first (s5cmd writes 32 KiB too);
# `benchmarks/page_cache_writes.py` shows it without the network (docs/benchmarks.md). On a node whose
# memory is its own the sizes cost about the same in the kernel; 32 KiB adds ~0.1 s/GiB of interpreter
# time for its extra calls.
_PAGE_CACHE_WRITE = 32 * 1024
# Bytes per socket read on the event loop (range_gets.py); see above.
_LOOP_PIECE = 1024 * 1024
_PRESIGN_SECONDS = 3600
_DIRECT_ALIGN = 4096  # O_DIRECT writes need block-aligned offsets and lengths (and buffers: mmap's are)


class CorruptObjectError(UserError):
    """An object whose bytes do not match the manifest. Nothing was written under its final name."""

    def __init__(self, message: str) -> None:
        super().__init__(message, key="integrity")


@dataclass(frozen=True)
class PullResult:
    model_dir: Path
    manifest: Manifest
    downloaded_files: int
    skipped_files: int
    downloaded_bytes: int
    seconds: float
    retries: int


def check_free_space(required: int, free: int, where: str) -> None:
    """Refuse to start a pull that cannot fit, before a byte is written."""
    if required + FREE_SPACE_MARGIN > free:
        raise UserError(
            f"not enough free space in {where}: the pull needs {required / 2**30:.2f} GiB (plus "
            f"{FREE_SPACE_MARGIN // MiB} MiB margin), {free / 2**30:.2f} GiB are free",
            key="--to",
        )


def check_revision(manifest: Manifest, wanted: str | None) -> None:
    """`--revision` given with an entry URI must name that entry's commit or the revision it was pushed as."""
    if wanted is not None and wanted not in (manifest.commit, manifest.revision):
        raise UserError(
            f"wrong revision: the entry holds {manifest.model} at commit {manifest.commit} "
            f"(pushed as {manifest.revision!r}), not {wanted!r}",
            key="--revision",
        )


def resolve_entry(client: Any, location: S3Location, model: str | None, revision: str | None) -> CacheEntry:
    """An entry URI as is, or `root` + model + revision (a branch or tag resolved through `refs/`)."""
    named = split_entry_uri(location)
    if named is not None:
        root, entry_model, commit = named
        if model is not None and model != entry_model:
            raise UserError(f"the URI names model {entry_model}, not {model}", key="--model")
        return CacheEntry(root, entry_model, commit)
    if model is None or revision is None:
        raise UserError(
            f"{location.uri} is a cache root, not an entry: pass --model and --revision, or the entry URI "
            "(s3://BUCKET/PREFIX/models/ORG--NAME/COMMIT, see `cache ls`)",
            key="--from",
        )
    validate_revision(revision)
    if is_commit_hash(revision):
        return CacheEntry(location, model, revision)
    try:
        commit = client.get_object(Bucket=location.bucket, Key=ref_key(location, model, revision))[
            "Body"
        ].read()
        return CacheEntry(location, model, commit.decode().strip())
    except ClientError as error:
        if not is_not_found(error):
            raise
    # Not a known branch or tag: it may be the literal key of a `push --from DIR` entry.
    return CacheEntry(location, model, revision)


def read_entry(client: Any, entry: CacheEntry) -> tuple[Manifest, bytes]:
    """Marker first: an entry without its completion marker is refused before anything is read from it."""
    try:
        marker = client.get_object(Bucket=entry.root.bucket, Key=entry.marker_key)["Body"].read()
    except ClientError as error:
        if not is_not_found(error):
            raise
        raise UserError(
            f"{entry.uri} has no completion marker ({entry.marker_key}): the push never finished or is still "
            f"running, or this model/revision was never pushed; refusing to pull it",
            key="--from",
        ) from None
    try:
        manifest_bytes = client.get_object(Bucket=entry.root.bucket, Key=entry.manifest_key)["Body"].read()
    except ClientError as error:
        if not is_not_found(error):
            raise
        raise ManifestError(f"{entry.uri} has a completion marker but no manifest") from None
    check_marker(marker, manifest_bytes)
    manifest = parse_manifest(manifest_bytes)
    if (manifest.model, manifest.commit) != (entry.model, entry.commit):
        raise ManifestError(
            f"{entry.manifest_key} describes {manifest.model}@{manifest.commit}, "
            f"not {entry.model}@{entry.commit}"
        )
    return manifest, manifest_bytes


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Two pulls into one directory (two pods, one hostPath) take turns; the second then skips."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_stale_temps(model_dir: Path) -> None:
    for temp in model_dir.rglob(f"*{TEMP_SUFFIX}"):
        temp.unlink(missing_ok=True)


def _is_complete(path: Path, size: int) -> bool:
    try:
        return path.is_file() and not path.is_symlink() and path.stat().st_size == size
    except OSError:
        return False


def _names_commit(record: Path, commit: str) -> bool:
    """Whether a local record (complete or pending) is a manifest of `commit`."""
    try:
        return parse_manifest(record.read_bytes()).commit == commit
    except (OSError, UserError):
        return False


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(8 * MiB):
            digest.update(block)
    return digest.hexdigest()


def _matches(path: Path, spec: ManifestFile) -> bool:
    """Re-check a file under its final name: its CRC-64/NVME where the manifest has one (what the download
    checked, at a sixth of sha256's CPU), else its sha256."""
    if spec.crc64nvme is None:
        return _sha256_of(path) == spec.sha256
    crc = 0
    with open(path, "rb") as handle:
        while block := handle.read(8 * MiB):
            crc = crc64nvme(block, crc)
    return crc64nvme_text(crc) == spec.crc64nvme


def _boot_id() -> str | None:
    """This boot of the kernel, or None where the system does not say (not Linux)."""
    try:
        return BOOT_ID_PATH.read_text().strip() or None
    except OSError:
        return None


def _unflushed_since(unflushed: Path) -> str | None:
    """The boot on which a pull last renamed files here without fsync, or None if none did."""
    try:
        return unflushed.read_text().strip()
    except FileNotFoundError:
        return None


def _write_atomically(path: Path, data: bytes, *, durable: bool = False) -> None:
    """Write `data` under `path` by a rename, so a reader sees all or nothing; `durable` also flushes the
    file and its directory before returning."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f"{path.name}.{os.getpid()}{TEMP_SUFFIX}")
    with open(temp, "wb") as handle:
        handle.write(data)
        if durable:
            handle.flush()
            os.fsync(handle.fileno())
    os.replace(temp, path)
    if durable:
        _fsync_dirs({path.parent})


@dataclass
class _FileJob:
    spec: ManifestFile
    final: Path
    temp: Path
    ranges: list[tuple[int, int]]
    fd: int = -1
    direct_fd: int = -1  # the same file opened with O_DIRECT, where the filesystem allows it
    crcs: dict[int, int] = field(default_factory=dict)  # range index -> crc64nvme of its bytes
    url: str = ""  # presigned GET of the object, made at `url_made` (monotonic seconds)
    url_made: float = 0.0
    finished: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Downloader:
    """One pull's worker state: ranged GETs over all files, in file order, on a thread pool or spread
    over forked worker processes (processes.py).

    Each range streams from the socket through a per-thread buffer: each piece written at its offset
    and checksummed as it arrives, in any order. A file is verified when its
    last range lands: the ranges' CRC-64/NVME values combined in order against the manifest's
    `crc64nvme`, or, for an entry whose manifest has none, its sha256 read back from the page cache.
    """

    def __init__(
        self, client: Any, entry: CacheEntry, settings: TransferSettings, progress: ProgressReporter
    ) -> None:
        self.client = client
        self.entry = entry
        self.settings = settings
        self.progress = progress
        self.stop = threading.Event()
        self.retries = 0
        self._retries_lock = threading.Lock()
        self._buffers = threading.local()

    def run(self, jobs: list[_FileJob]) -> None:
        tasks = [(job, index) for job in jobs for index in range(len(job.ranges))]
        try:
            on_event_loops = self._on_event_loops(jobs)
            if self._in_processes(jobs, len(tasks)):
                self._run_in_processes(jobs, tasks, on_event_loops)
            elif on_event_loops:
                self._run_loop(tasks)
            else:
                self._run_in_threads(tasks)
            if unfinished := [job.spec.path for job in jobs if not job.finished]:
                raise UserError(  # a bug, not a user's mistake: say so rather than record a partial pull
                    f"the pull ended with {len(unfinished)} files not fetched ({unfinished[0]}, ...), a bug "
                    "in the pull; nothing was recorded as complete, run it again",
                    key="--to",
                )
        finally:
            for job in jobs:
                _close(job)
                if not job.finished:
                    job.temp.unlink(missing_ok=True)

    def _on_event_loops(self, jobs: list[_FileJob]) -> bool:
        """Presigned ranged GETs on one event-loop thread per process (range_gets.py), where they can go
        straight to the endpoint: not through an HTTP proxy, and not with O_DIRECT, whose block-aligned
        4 MiB writes need the thread path's whole buffers."""
        if not jobs or self.settings.direct_io:
            return False
        url = self._url(jobs[0])
        return urllib.parse.urlsplit(url).scheme in ("http", "https") and not proxied(url)

    def _in_processes(self, jobs: list[_FileJob], tasks: int) -> bool:
        """Fan out over processes where fork works and every file carries a CRC (the ranges' CRCs travel
        to the parent, which combines them); an entry pushed before CRCs is read back here, in threads.
        The parent opens every file before the fork, two descriptors each: there must be room for them."""
        if self.settings.processes <= 1 or tasks <= 1:
            return False
        # Imported here: multiprocessing adds ~20 ms to every pull's start-up, and one process needs none of it.
        from infra.modelcache.processes import forking_supported, room_for_open_files

        return (
            forking_supported()
            and all(job.spec.crc64nvme is not None for job in jobs)
            and room_for_open_files(2 * len(jobs))
        )

    def _run_in_threads(self, tasks: list[tuple[_FileJob, int]]) -> None:
        with ThreadPoolExecutor(self.settings.concurrency, thread_name_prefix="pull") as pool:
            futures: list[Future[None]] = [pool.submit(self._fetch_chunk, job, index) for job, index in tasks]
            finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = [f for f in finished if f.exception() is not None]
            if failed:
                self.stop.set()
                for future in futures:
                    future.cancel()
                error = failed[0].exception()
                assert error is not None
                raise error

    def _run_in_processes(
        self, jobs: list[_FileJob], tasks: list[tuple[_FileJob, int]], on_event_loops: bool
    ) -> None:
        """Ranges fetched in `processes` forked workers, `concurrency` connections in all, each worker on
        one event loop (or on threads); each writes and CRCs the bytes it fetched, and the parent
        combines a file's CRCs and renames it."""
        from infra.modelcache.processes import run_drives_in_processes, run_in_processes

        for job in jobs:
            self._open(job)  # created and preallocated before the fork: the workers inherit the descriptors
            if on_event_loops:
                # Signed here: a worker signs only when a URL ages, and then with botocore (s3_reads.py).
                self._url(job)
        self.client.close()  # no pooled connection may be shared across the fork: each worker opens its own
        processes = self.settings.processes
        per_worker = -(-self.settings.concurrency // processes)

        def landed(n: int, result: tuple[int, int]) -> None:  # in the parent
            self._landed(tasks[n], result)

        if on_event_loops:

            def drive(take: Any, deliver: Any, fail: Any) -> None:  # in a worker
                self._drive_loop(tasks, per_worker, take, deliver, fail)

            run_drives_in_processes(len(tasks), drive, landed, processes=processes)
        else:

            def fetch(n: int) -> tuple[int, int]:  # in a worker
                return self._fetch_range(*tasks[n])

            run_in_processes(len(tasks), fetch, landed, processes=processes, threads=per_worker)

    def _run_loop(self, tasks: list[tuple[_FileJob, int]]) -> None:
        """The event loop in this process: for one CPU, or an entry whose files carry no CRC."""
        pending = iter(range(len(tasks)))
        errors: list[BaseException] = []

        def fail(error: BaseException) -> None:
            errors.append(error)
            self.stop.set()

        def deliver(n: int, result: tuple[int, int]) -> None:
            self._landed(tasks[n], result)

        self._drive_loop(tasks, self.settings.concurrency, lambda: next(pending, None), deliver, fail)
        if errors:
            raise errors[0]

    def _drive_loop(
        self,
        tasks: list[tuple[_FileJob, int]],
        connections: int,
        take: Callable[[], int | None],
        deliver: Callable[[int, tuple[int, int]], None],
        fail: Callable[[BaseException], None],
    ) -> None:
        """Fetch the tasks `take()` hands out on `connections` sockets of one event loop; a range that
        fails there is retried on the botocore path (which maps S3's errors and backs off) on a thread."""
        retrying: list[Future[None]] = []
        retry_pool: ThreadPoolExecutor | None = None

        def next_task() -> _LoopRange | None:
            n = take()
            if n is None:
                return None
            job, index = tasks[n]
            self._open(job)
            first, last = job.ranges[index]
            return _LoopRange(self._url(job), first, last, n, job, index, job.spec.crc64nvme is not None)

        def stop_all(error: BaseException) -> None:
            self.stop.set()
            fail(error)

        def retry(task: _LoopRange, error: BaseException) -> None:
            crc, retries = self._fetch_range(task.job, task.index, failed_once=error)
            if not self.stop.is_set():
                deliver(task.n, (crc, retries + 1))

        def retried(future: Future[None]) -> None:
            error = future.exception()
            if error is not None:
                stop_all(error)

        def failed(task: _LoopRange, error: BaseException) -> None:
            nonlocal retry_pool
            if retry_pool is None:
                retry_pool = ThreadPoolExecutor(connections, thread_name_prefix="pull-retry")
            future = retry_pool.submit(retry, task, error)
            future.add_done_callback(retried)
            retrying.append(future)

        https = bool(tasks) and self._url(tasks[0][0]).startswith("https:")
        try:
            fetch_ranges(
                next_task,
                lambda task: deliver(task.n, (task.crc, 0)),
                failed,
                connections=connections,
                piece_bytes=_LOOP_PIECE,
                connect_timeout_s=self.settings.connect_timeout_s,
                read_timeout_s=self.settings.read_timeout_s,
                stop=self.stop,
                ssl_context=ssl_context() if https else None,
            )
            wait(retrying)
        except BaseException:
            self.stop.set()  # retries in flight end at their next attempt; nothing more is recorded
            raise
        finally:
            if retry_pool is not None:
                retry_pool.shutdown(wait=not self.stop.is_set(), cancel_futures=True)

    def _url(self, job: _FileJob) -> str:
        """A presigned GET of `job`'s object, made again after a quarter of its hour: credentials that
        rotate (IRSA, pod identity) sign the new one."""
        now = time.monotonic()
        if not job.url or now - job.url_made > _PRESIGN_SECONDS / 4:
            job.url = self.client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.entry.root.bucket, "Key": self.entry.file_key(job.spec.path)},
                ExpiresIn=_PRESIGN_SECONDS,
            )
            job.url_made = now
        return job.url

    def _buffer(self) -> memoryview:
        """This thread's piece buffer, reused: a pull faults in a few MiB per thread, not GiBs."""
        buffer = getattr(self._buffers, "piece", None)
        if buffer is None:
            buffer = memoryview(mmap.mmap(-1, _PIECE))  # page-aligned, as O_DIRECT requires
            self._buffers.piece = buffer
        return buffer

    def _count_retry(self, n: int = 1) -> None:
        with self._retries_lock:
            self.retries += n

    def _open(self, job: _FileJob) -> None:
        with job.lock:
            if job.fd >= 0:
                return
            job.final.parent.mkdir(parents=True, exist_ok=True)
            job.fd = os.open(job.temp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            if self.settings.direct_io:
                try:
                    job.direct_fd = os.open(job.temp, os.O_WRONLY | os.O_DIRECT)
                except OSError:
                    job.direct_fd = (
                        -1
                    )  # e.g. EINVAL: this filesystem has no O_DIRECT; write through the cache
            try:
                # Reserve the space up front: a full disk fails here, not 40 GB later.
                os.posix_fallocate(job.fd, 0, job.spec.size)
            except OSError as error:
                if error.errno not in (95, 22):  # EOPNOTSUPP / EINVAL: the filesystem cannot; fine.
                    raise

    def _fetch_chunk(self, job: _FileJob, index: int) -> None:
        if self.stop.is_set():
            return
        crc, retries = self._fetch_range(job, index)
        self._count_retry(retries)
        if not self.stop.is_set():
            self._record(job, index, crc)

    def _landed(self, task: tuple[_FileJob, int], result: tuple[int, int]) -> None:
        """A range fetched (here or in a worker) with (its crc64nvme, the retries it took)."""
        crc, retries = result
        self._count_retry(retries)
        self._record(*task, crc)

    def _record(self, job: _FileJob, index: int, crc: int) -> None:
        """One range landed: count it, and verify and rename its file if it was the last one."""
        first, last = job.ranges[index]
        self.progress.advance(last - first + 1)
        with job.lock:
            job.crcs[index] = crc
            complete = len(job.crcs) == len(job.ranges)
        if complete:
            self._finish(job)

    def _fetch_range(
        self, job: _FileJob, index: int, failed_once: BaseException | None = None
    ) -> tuple[int, int]:
        """GET one range into its file, retrying a broken body; returns (its crc64nvme, retries).
        `failed_once`: the first attempt was made elsewhere (the event loop) and failed so."""
        self._open(job)
        first, last = job.ranges[index]
        key = self.entry.file_key(job.spec.path)
        attempts = self.settings.max_attempts
        retries = 0
        if failed_once is not None:
            if attempts == 1:
                raise _gave_up(job.spec.path, first, last, attempts, failed_once)
            time.sleep(backoff_seconds(1))
        for attempt in range(2 if failed_once is not None else 1, attempts + 1):
            if self.stop.is_set():
                break
            try:
                crc, botocore_retries = self._get_range(key, first, last, job)
                return crc, retries + botocore_retries
            except RETRYABLE_STREAM_ERRORS as error:
                if attempt == attempts:
                    raise _gave_up(job.spec.path, first, last, attempts, error) from None
            except ClientError as error:
                if error_code(error) == "InvalidRange":
                    raise CorruptObjectError(
                        f"{job.spec.path}: the object is shorter than the manifest's {job.spec.size} bytes; "
                        "the entry is corrupt, push it again with --force"
                    ) from None
                if not is_retryable_client_error(error):
                    raise
                if attempt == attempts:
                    raise _gave_up(job.spec.path, first, last, attempts, error) from None
            retries += 1
            time.sleep(backoff_seconds(attempt))
        return 0, retries  # stopped: another range failed, nothing is recorded

    def _get_range(self, key: str, first: int, last: int, job: _FileJob) -> tuple[int, int]:
        """GET bytes first..last into the file at their offset; returns their crc64nvme (0 if unused) and
        the retries botocore made."""
        response = self.client.get_object(
            Bucket=self.entry.root.bucket, Key=key, Range=f"bytes={first}-{last}"
        )
        retries = response.get("ResponseMetadata", {}).get("RetryAttempts", 0)
        body = response["Body"]
        try:
            length = last - first + 1
            if response.get("ContentLength") != length:
                raise CorruptObjectError(
                    f"{job.spec.path}: S3 returned {response.get('ContentLength')} bytes for range "
                    f"{first}-{last}; the object's size does not match the manifest ({job.spec.size} bytes); "
                    "the entry is corrupt, push it again with --force"
                )
            return self._stream(body, first, length, job), retries
        finally:
            body.close()

    def _stream(self, body: Any, offset: int, length: int, job: _FileJob) -> int:
        """Socket -> piece buffer -> file, checksumming each piece as it arrives.

        botocore -> urllib3 -> http.client copies every byte through fresh `bytes` objects; with a
        plain (not content-encoded) body we read through the underlying http.client response's
        `readinto` instead, as a bare HTTP client would, then hand the connection back to urllib3's pool.
        """
        raw: Any = getattr(body, "_raw_stream", None)
        fp: Any = getattr(raw, "_fp", None)
        direct = (
            hasattr(fp, "readinto")
            and hasattr(raw, "release_conn")
            and not raw.headers.get("Content-Encoding")
        )
        readinto = fp.readinto if direct else body.readinto
        buffer = self._buffer()
        checksum = job.spec.crc64nvme is not None
        crc, got = 0, 0
        while got < length:
            n = readinto(buffer[: min(len(buffer), length - got)])
            if not n:
                raise ConnectionError(f"connection closed after {got} of {length} bytes")
            piece = buffer[:n]
            _write_at(job, piece, offset + got)
            if checksum:
                crc = crc64nvme(piece, crc)  # pyright: ignore[reportArgumentType]  (any buffer works)
            got += n
        if direct and fp.isclosed():
            raw.release_conn()  # http.client read the whole body: the connection is clean for reuse
        return crc

    def _finish(self, job: _FileJob) -> None:
        """Verify the whole file, then flush and give it its final name."""
        spec = job.spec
        crc_ok = False
        if spec.crc64nvme is not None:
            combined = 0
            for index, (first, last) in enumerate(job.ranges):
                combined = combine_crc64nvme(combined, job.crcs[index], last - first + 1)
            crc_ok = crc64nvme_text(combined) == spec.crc64nvme
        # sha256 stays the authority: an entry without a crc64nvme, or one whose crc does not match,
        # is judged by the manifest's sha256 (read back from the page cache).
        if not crc_ok:
            digest = self._sha256_of_temp(job)
            if digest != spec.sha256:
                raise CorruptObjectError(
                    f"{spec.path}: sha256 of the downloaded object is {digest}, the manifest says "
                    f"{spec.sha256}; the object in S3 is corrupt or was replaced. Nothing was written under "
                    "its name; push the entry again with --force"
                )
        if self.settings.fsync:
            os.fsync(job.fd)
        _close(job)
        os.replace(job.temp, job.final)
        job.finished = True

    def _sha256_of_temp(self, job: _FileJob) -> str:
        digest = hashlib.sha256()
        buffer = self._buffer()
        done = 0
        while done < job.spec.size:
            n = os.preadv(job.fd, [buffer[: min(len(buffer), job.spec.size - done)]], done)
            if not n:
                raise OSError(f"{job.temp}: short read at {done}")
            digest.update(buffer[:n])
            done += n
        return digest.hexdigest()


@dataclass
class _LoopRange:
    """One range on an event loop (range_gets.RangeTask): its bytes go to the file and into its CRC."""

    url: str
    first: int
    last: int
    n: int  # its task number
    job: _FileJob
    index: int  # its range number within the file
    checksum: bool
    crc: int = 0

    def write(self, piece: memoryview, offset: int) -> None:
        _write_at(self.job, piece, offset)
        if self.checksum:
            self.crc = crc64nvme(piece, self.crc)  # pyright: ignore[reportArgumentType]  (any buffer works)


def _write_at(job: _FileJob, piece: memoryview, offset: int) -> None:
    """Write `piece` at `offset`: with `direct_io`, straight to the disk where block-aligned; else
    through the page cache, in `_PAGE_CACHE_WRITE` slices."""
    written, n = 0, len(piece)
    if job.direct_fd >= 0 and offset % _DIRECT_ALIGN == 0 and n % _DIRECT_ALIGN == 0:
        try:
            while written < n:
                written += os.pwrite(job.direct_fd, piece[written:], offset + written)
            return
        except OSError as error:
            if error.errno != errno.EINVAL:
                raise
            job.direct_fd = -1  # opened, but refused on write (some filesystems): use the cache from now on
    while written < n:
        written += os.pwrite(job.fd, piece[written : written + _PAGE_CACHE_WRITE], offset + written)


def _close(job: _FileJob) -> None:
    for fd in (job.fd, job.direct_fd):
        if fd >= 0:
            os.close(fd)
    job.fd = job.direct_fd = -1


def _gave_up(path: str, first: int, last: int, attempts: int, error: BaseException) -> UserError:
    """Retries exhausted on one range: one line naming the object and the last cause, not a traceback."""
    cause = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return UserError(
        f"{path}: bytes {first}-{last} failed {attempts} times, giving up ({cause}); check the network "
        "path to S3, or raise --max-attempts",
        key="--from",
    )


def _temp_name(final: Path) -> Path:
    return final.with_name(f"{final.name}.{os.getpid()}{TEMP_SUFFIX}")


def _finish_empty_file(spec: ManifestFile, final: Path) -> None:
    if hashlib.sha256(b"").hexdigest() != spec.sha256:
        raise CorruptObjectError(f"{spec.path}: the manifest lists it as empty but with a non-empty hash")
    final.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(final, b"")


def _fsync_dirs(paths: set[Path]) -> None:
    for directory in paths:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def pull(
    client: Any,
    entry: CacheEntry,
    dest: Path,
    *,
    layout: LocalLayout = LocalLayout.PLAIN,
    revision: str | None = None,
    settings: TransferSettings | None = None,
    log: TextIO | None = None,
) -> PullResult:
    """Pull one complete entry into `dest`; returns where vLLM should look and what was transferred."""
    settings = settings or TransferSettings()
    started = time.monotonic()
    manifest, manifest_bytes = read_entry(client, entry)
    check_revision(manifest, revision)
    model_dir = Path(local_model_dir(str(dest), layout, manifest.model, manifest.commit))
    record = Path(local_manifest_path(str(dest), layout, manifest.model, manifest.commit))
    model_dir.mkdir(parents=True, exist_ok=True)
    pending = record.with_name(record.name + ".pending")
    # Present while files renamed here without fsync may not be on the disk yet; holds the boot id.
    unflushed = record.with_name(record.name + ".unflushed")
    boot = _boot_id()
    with _exclusive(record.with_name(record.name + ".lock")):
        _remove_stale_temps(model_dir)
        # Files under their final names were verified before their rename, by a pull of *some* commit.
        # Trust them by size only if that was this commit and they are whole (flushed, or written on
        # this boot: only a crash loses what the page cache holds); otherwise (a moved branch in a
        # reused directory, a directory we did not fill, a reboot since an unflushed pull) check them
        # again, and keep only those that match.
        unflushed_on = _unflushed_since(unflushed)
        whole = unflushed_on is None or (boot is not None and unflushed_on == boot)
        trusted = whole and (
            _names_commit(record, manifest.commit) or _names_commit(pending, manifest.commit)
        )
        record.unlink(missing_ok=True)
        _write_atomically(pending, manifest_bytes)
        todo = [
            f
            for f in manifest.files
            if not _is_complete(model_dir / f.path, f.size)
            or (not trusted and not _matches(model_dir / f.path, f))
        ]
        if settings.fsync and not whole:
            unflushed.unlink(missing_ok=True)  # a reboot since: what is kept was just read from the disk
        elif not settings.fsync and todo and (boot is None or unflushed_on != boot):
            # Before the first rename without fsync: after a crash from here on, the next pull checks again.
            _write_atomically(unflushed, (boot or "unknown").encode(), durable=True)
        check_free_space(sum(f.size for f in todo), shutil.disk_usage(model_dir).free, str(model_dir))
        for spec in (f for f in todo if f.size == 0):
            _finish_empty_file(spec, model_dir / spec.path)
        jobs = [
            _FileJob(
                spec=spec,
                final=model_dir / spec.path,
                temp=_temp_name(model_dir / spec.path),
                ranges=plan_ranges(spec.size, settings.chunk_size),
            )
            for spec in todo
            if spec.size > 0
        ]
        total = sum(job.spec.size for job in jobs)
        downloader = None
        with ProgressReporter("pull", total, stream=log) as progress:
            downloader = _Downloader(client, entry, settings, progress)
            downloader.run(jobs)
        if settings.fsync:
            _fsync_dirs({job.final.parent for job in jobs})
        if layout is LocalLayout.HF_CACHE:
            # refs/<name> -> commit lets `--revision <name>` resolve offline; a 40-hex commit needs none.
            for name in {manifest.revision, revision or manifest.revision}:
                if not is_commit_hash(name):
                    _write_atomically(
                        Path(local_ref_path(str(dest), manifest.model, name)), manifest.commit.encode()
                    )
        # Written last: the local record that this directory holds the whole entry.
        _write_atomically(record, manifest_bytes)
        pending.unlink(missing_ok=True)
    return PullResult(
        model_dir=model_dir,
        manifest=manifest,
        downloaded_files=len(todo),
        skipped_files=len(manifest.files) - len(todo),
        downloaded_bytes=total,
        seconds=time.monotonic() - started,
        retries=downloader.retries,
    )
