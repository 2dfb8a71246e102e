"""System time per GiB of writing a file through the page cache, by write size (no network, no S3).

    .venv/bin/python benchmarks/page_cache_writes.py --sizes-kib 32 48 64 256 --rounds 3

Writes --size-gib into a fresh, preallocated file under --work-dir in pwrite calls of each size, from one
page-aligned 1 MiB buffer, as `cache pull` writes what it reads from a socket; sizes interleaved in each
round, the previous file deleted and --settle-seconds waited before each write (as the pull benchmark
does: on a VM whose balloon reports free memory to the host, memory freed seconds ago costs more to touch
again). Prints one row per write and the median per size. It is why `_PAGE_CACHE_WRITE` in
infra/modelcache/pull.py is 32 KiB: the kernel sizes page-cache folios by the write.
"""

from __future__ import annotations

import argparse
import mmap
import os
import resource
import statistics
import time
from pathlib import Path

GiB = 1024**3
BUFFER_BYTES = 1024 * 1024


def write_file(path: Path, total: int, write_bytes: int, buffer: memoryview) -> tuple[float, float, float]:
    """(seconds, system CPU s, user CPU s) of writing `total` bytes into a fresh `path`."""
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.posix_fallocate(fd, 0, total)
        offset = 0
        while offset < total:
            piece = buffer[: min(len(buffer), total - offset)]
            written = 0
            while written < len(piece):
                written += os.pwrite(fd, piece[written : written + write_bytes], offset + written)
            offset += len(piece)
    finally:
        os.close(fd)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    return seconds, after.ru_stime - before.ru_stime, after.ru_utime - before.ru_utime


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes-kib", type=int, nargs="+", default=[32, 48, 64, 256])
    parser.add_argument("--size-gib", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--settle-seconds", type=float, default=6.0)
    parser.add_argument("--work-dir", type=Path, default=Path(__file__).resolve().parent / ".data")
    args = parser.parse_args()
    if any(size <= 0 or size * 1024 > BUFFER_BYTES for size in args.sizes_kib):
        parser.error(f"--sizes-kib: each size must be 1..{BUFFER_BYTES // 1024} KiB")
    if args.size_gib <= 0:
        parser.error("--size-gib must be positive")
    total = int(args.size_gib * GiB)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    path = args.work_dir / "page-cache-writes.bin"
    buffer = memoryview(mmap.mmap(-1, BUFFER_BYTES))  # page-aligned, as the pull's socket buffer is
    buffer[:] = os.urandom(BUFFER_BYTES)
    results: dict[int, list[tuple[float, float, float]]] = {}
    print(f"{total / GiB:.2f} GiB per write, {args.settle_seconds:.0f} s settle, work dir {args.work_dir}")
    try:
        for round_number in range(1, args.rounds + 1):
            for size_kib in args.sizes_kib:
                path.unlink(missing_ok=True)
                time.sleep(args.settle_seconds)
                seconds, system, user = write_file(path, total, size_kib * 1024, buffer)
                gib = total / GiB
                results.setdefault(size_kib, []).append((gib * 1024 / seconds, system / gib, user / gib))
                print(
                    f"round {round_number}: {size_kib:4d} KiB writes {gib * 1024 / seconds:6.0f} MiB/s, "
                    f"system {system / gib:.2f} s/GiB, user {user / gib:.2f} s/GiB",
                    flush=True,
                )
    finally:
        path.unlink(missing_ok=True)
    print("\n| write size | MiB/s | system CPU s/GiB [rounds] | user CPU s/GiB |")
    print("|---:|---:|---|---:|")
    for size_kib, rows in results.items():
        systems = ", ".join(f"{system:.2f}" for _, system, _ in rows)
        print(
            f"| {size_kib} KiB | {statistics.median(r[0] for r in rows):.0f} | "
            f"{statistics.median(r[1] for r in rows):.2f} [{systems}] | {statistics.median(r[2] for r in rows):.2f} |"
        )


if __name__ == "__main__":
    main()
