"""The S3 client, its retry policy and the error translation shared by push, pull, verify and ls.

botocore retries whole requests (503 SlowDown, 500, connection refused/reset before a response), with
backoff. It does not retry a body that breaks halfway through a ranged GET, so pull retries those
itself, per chunk, with `backoff_seconds`. Errors a user can fix (credentials, bucket, access, disk)
become `UserError` with one line saying what to do.
"""

from __future__ import annotations

import errno
import http.client
import os
import random
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
    ResponseStreamingError,
)

from infra.errors import UserError

if TYPE_CHECKING:
    from botocore.config import Config

MiB = 1024 * 1024

RetryMode = Literal["standard", "adaptive"]


def default_concurrency(cpus: int | None = None) -> int:
    """Parallel ranged GETs: 8 per CPU, at least 16, at most 64.

    Real S3 delivers ~90 MB/s per connection, so throughput comes from connections in flight; a
    connection waiting on the disk or the GIL costs nothing but a socket (ranges stream through a 4 MiB
    buffer). On the 2-vCPU benchmark machine 16 beat 8 and 4 (docs/benchmarks.md); 64 carry ~45 Gb/s.
    """
    return min(64, max(16, 8 * (cpus if cpus is not None else os.cpu_count() or 1)))


def default_processes(cpus: int | None = None) -> int:
    """Pull worker processes: one per 2 CPUs, at least 1, at most 16, each running one event loop over
    concurrency/processes connections. On the 2-vCPU benchmark machine, where the S3 server shares the
    CPUs, one process beat two (420 against 358 MiB/s). One loop thread moved ~0.55 GiB/s there (1.9
    CPU s/GiB), so a GPU node, whose S3 is remote, gets a loop per 2 cores; that scaling is an estimate
    (benchmarks/pull_estimates.py), not a measurement on such a node."""
    return min(16, max(1, (cpus if cpus is not None else os.cpu_count() or 1) // 2))


@dataclass(frozen=True)
class TransferSettings:
    """Knobs of the data path. Defaults were chosen with benchmarks/modelcache_pull.py (docs/benchmarks.md)."""

    concurrency: int = field(default_factory=default_concurrency)  # parallel ranged GETs / part uploads
    # Bytes per ranged GET and per multipart part. A pull streams each range through a small buffer, so
    # this costs no memory; larger ranges mean fewer requests (botocore spends ~1 ms of CPU on each).
    chunk_size: int = 32 * MiB
    max_attempts: int = 10  # botocore attempts per request; also chunk attempts on a broken body
    retry_mode: RetryMode = "standard"  # "adaptive" adds client-side rate limiting after throttling
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 60.0
    # Flush each file before its rename. Off, a pull does not wait for the disk at all: a file renamed
    # without it is whole as long as the kernel that wrote it runs, and the next pull after a crash or
    # reboot checks such files again before it trusts them (pull.py). On, no check is needed after one.
    fsync: bool = False
    # Write with O_DIRECT where the filesystem allows: no page-cache copy and no dirty pages charged to
    # the pod's memory, but every write waits for the disk (~400 MiB/s on the benchmark VM's disk) and
    # vLLM then loads from the disk instead of memory. Off by default: the page cache won on the benchmark.
    direct_io: bool = False
    # Pull: the connections are spread over this many forked worker processes, one event loop each (Linux).
    processes: int = field(default_factory=default_processes)

    def __post_init__(self) -> None:
        if not 1 <= self.concurrency <= 256:
            raise UserError("must be between 1 and 256", key="--concurrency")
        if not 1 * MiB <= self.chunk_size <= 512 * MiB:
            raise UserError("must be between 1 and 512 MiB", key="--chunk-size-mib")
        if not 1 <= self.max_attempts <= 50:
            raise UserError("must be between 1 and 50", key="--max-attempts")
        if not 1 <= self.processes <= 64:
            raise UserError("must be between 1 and 64", key="--processes")


def client_config(settings: TransferSettings, *, path_style: bool) -> Config:
    """botocore Config: retries with backoff, a connection per worker, no checksum trailers.

    Integrity is our own check per file against the manifest (CRC-64/NVME of the bytes as they arrive,
    sha256 where an entry has no CRC), before any file gets its final name; botocore's optional CRC
    trailers would add CPU per byte and are not understood by every S3 server.
    """
    from botocore.config import Config

    return Config(
        retries={"mode": settings.retry_mode, "max_attempts": settings.max_attempts},
        max_pool_connections=settings.concurrency + 4,
        connect_timeout=settings.connect_timeout_s,
        read_timeout=settings.read_timeout_s,
        tcp_keepalive=True,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        s3={"addressing_style": "path" if path_style else "auto"},
        signature_version="s3v4",
    )


def endpoint_url_from_env(env: Mapping[str, str] = os.environ) -> str | None:
    return env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None


def make_s3_client(settings: TransferSettings, endpoint_url: str | None = None) -> Any:
    """An S3 client from the default credential chain (IRSA / pod identity in a pod, a profile on a laptop)."""
    import botocore.session  # here, not at the top: a pull on the fast path never imports it (s3_reads.py)

    endpoint_url = endpoint_url or endpoint_url_from_env()
    # botocore's session, not boto3's: boto3 imports s3transfer (~0.3 CPU s), which only push needs.
    session = botocore.session.get_session()
    return session.create_client(
        "s3",
        region_name=region_from_env(),
        endpoint_url=endpoint_url,
        config=client_config(settings, path_style=endpoint_url is not None),
    )


def region_from_env(env: Mapping[str, str] = os.environ) -> str | None:
    """AWS_REGION, which the serving pods and most AWS SDKs set, then AWS_DEFAULT_REGION (botocore's own
    variable; botocore alone ignores AWS_REGION and would fall back to us-east-1's global endpoint)."""
    return env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None


def backoff_seconds(attempt: int, *, base_s: float = 0.2, cap_s: float = 20.0) -> float:
    """Full-jitter exponential backoff for attempt 1, 2, ... (the AWS-recommended shape)."""
    return random.uniform(0, min(cap_s, base_s * 2 ** (attempt - 1)))


# A body that broke mid-transfer: retry the chunk, not the whole pull.
RETRYABLE_STREAM_ERRORS: tuple[type[BaseException], ...] = (
    ResponseStreamingError,
    IncompleteReadError,
    ReadTimeoutError,
    ConnectionClosedError,
    EndpointConnectionError,
    ConnectionError,
    TimeoutError,
    http.client.HTTPException,  # IncompleteRead from the socket-level read path
)


def is_retryable_client_error(error: ClientError) -> bool:
    """Throttling and server errors that survived botocore's own retries are worth one more chunk attempt."""
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    code = error.response.get("Error", {}).get("Code", "")
    return status >= 500 or code in {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout"}


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def is_not_found(error: ClientError) -> bool:
    return error_code(error) in {"404", "NoSuchKey", "NotFound"}


@contextmanager
def s3_errors(what: str) -> Iterator[None]:
    """Turn the S3 and disk errors a user can fix into one-line UserErrors naming `what` failed."""
    try:
        yield
    except (NoCredentialsError, PartialCredentialsError):
        raise UserError(
            "no AWS credentials found: in a pod, check the service account's IAM role (IRSA / pod identity); "
            "on a laptop, set AWS_PROFILE or run `aws configure`",
            key="credentials",
        ) from None
    except ClientError as error:
        code = error_code(error)
        if code == "NoSuchBucket":
            raise UserError(f"{what}: the bucket does not exist", key="--to/--from") from None
        if code in {"AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"}:
            raise UserError(
                f"{what}: access denied ({code}); check the IAM role of this identity", key="credentials"
            ) from None
        raise UserError(f"{what}: S3 error {code}: {error}") from None
    except EndpointConnectionError as error:
        raise UserError(f"{what}: cannot reach S3 ({error})", key="endpoint") from None
    except BotoCoreError as error:
        raise UserError(f"{what}: {error}") from None
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise UserError(f"{what}: the disk is full ({error.strerror})", key="--to") from None
        if error.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
            raise UserError(
                f"{what}: cannot write ({error.strerror}: {error.filename})", key="--to"
            ) from None
        raise
