"""The pull's S3 reads, without botocore's start-up where the environment leaves nothing to resolve.

A botocore client costs ~0.5 s before a pull's first byte (import 0.3-0.5 s, the service model and
endpoint rules 0.1-0.2 s, the first presign 0.05 s): on the benchmark, most of the start-up gap to
s5cmd, whose data flows after 0.25 s (docs/benchmarks.md). awscrt, loaded anyway for the CRC, resolves
credentials and presigns in ~0.03 s. So where the credentials, region and endpoint botocore would use
follow from environment variables alone (`fast_path`), the pull presigns with awscrt and reads the
marker and manifest with one plain GET each; botocore is created only when something needs it: an
error to explain (any answer but 200 is asked again through botocore), a range to retry, a forked worker.
Anything else (a profile or shared config file, no region, FIPS or dual-stack, a bucket S3 cannot
address by host name) uses botocore from the start.
"""

from __future__ import annotations

import functools
import http.client
import os
import re
import ssl
import sys
import threading
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from io import BytesIO
from typing import Any

from infra.modelcache.transfer import endpoint_url_from_env, region_from_env

# Regions of the `aws` partition (not gov, cn or iso, whose endpoints differ).
_STANDARD_REGION = re.compile(r"(us|eu|ap|sa|ca|me|af|il|mx)-[a-z]+-\d+")
_HOSTABLE_BUCKET = re.compile(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")  # no dots: the wildcard certificate
_CREDENTIALS_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class FastPath:
    """What a presigned GET needs, as botocore would resolve it from this environment."""

    bucket: str
    base_url: str  # the bucket's URL; an object's is base_url + "/" + its quoted key
    region: str
    static_keys: bool  # credentials from AWS_ACCESS_KEY_ID/...; else web identity or container credentials


def _is_true(value: str | None) -> bool:
    return (value or "").strip().lower() == "true"


def fast_path(
    env: Mapping[str, str], endpoint_url: str | None, bucket: str, exists: Callable[[str], bool]
) -> FastPath | None:
    """The fast path's settings, or None where botocore could resolve anything differently.

    Credentials: botocore and awscrt both take static keys from the environment first. Without them,
    and with no profile or shared file (a pod's case), both try web identity, then container
    credentials (EKS Pod Identity), in that order. IMDS-only hosts are left to botocore, which honours
    AWS_EC2_METADATA_DISABLED and its own IMDS settings.
    """
    home = env.get("HOME") or os.path.expanduser("~")
    shared_files = (
        env.get("AWS_CONFIG_FILE") or f"{home}/.aws/config",
        env.get("AWS_SHARED_CREDENTIALS_FILE") or f"{home}/.aws/credentials",
    )
    if env.get("AWS_PROFILE") or env.get("AWS_DEFAULT_PROFILE") or any(exists(p) for p in shared_files):
        return None
    static_keys = bool(env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"))
    provided = bool(
        env.get("AWS_WEB_IDENTITY_TOKEN_FILE")
        or env.get("AWS_CONTAINER_CREDENTIALS_FULL_URI")
        or env.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
    )
    if not static_keys and (env.get("AWS_ACCESS_KEY_ID") or env.get("AWS_SECRET_ACCESS_KEY") or not provided):
        return None  # half a key pair (botocore's error to give), or nothing awscrt should look for
    region = region_from_env(env)
    if not region:
        return None
    endpoint_url = endpoint_url or endpoint_url_from_env(env)
    if endpoint_url:  # the client is path-style on an explicit endpoint (transfer.make_s3_client)
        parts = urllib.parse.urlsplit(endpoint_url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            return None
        base_url = f"{endpoint_url.rstrip('/')}/{urllib.parse.quote(bucket, safe='')}"
        return FastPath(bucket, base_url, region, static_keys)
    if (
        not _STANDARD_REGION.fullmatch(region)
        or _is_true(env.get("AWS_USE_FIPS_ENDPOINT"))
        or _is_true(env.get("AWS_USE_DUALSTACK_ENDPOINT"))
        or not _HOSTABLE_BUCKET.fullmatch(bucket)
        or "--" in bucket  # S3 Express, access-point and object-lambda aliases
        or bucket.startswith(("xn--", "sthree-"))
        or bucket.endswith("-s3alias")
    ):
        return None
    return FastPath(bucket, f"https://{bucket}.s3.{region}.amazonaws.com", region, static_keys)


class CrtPresigner:
    """Query-string SigV4 with awscrt, exactly as botocore's presigned GET (tests/modelcache/test_s3_reads.py
    compares the two). awscrt's credential providers run on its own threads, which a fork does not copy,
    so a forked worker never signs here: `presign` returns None in any process but the one that made it."""

    def __init__(self, path: FastPath) -> None:
        from awscrt.auth import AwsCredentialsProvider

        self.path = path
        self._pid = os.getpid()
        if path.static_keys:
            self.provider = AwsCredentialsProvider.new_environment()
        else:
            self.provider = AwsCredentialsProvider.new_default_chain()

    def credentials_resolve(self) -> bool:
        """Whether awscrt finds credentials at all; if not, botocore explains why."""
        try:
            self.provider.get_credentials().result(_CREDENTIALS_TIMEOUT_S)
        except Exception:  # awscrt raises its AwsCrtError, or a timeout: either way, botocore's turn
            return False
        return True

    def presign(self, key: str, expires_s: int, now: datetime | None = None) -> str | None:
        from awscrt.auth import (
            AwsSignatureType,
            AwsSignedBodyHeaderType,
            AwsSignedBodyValue,
            AwsSigningAlgorithm,
            AwsSigningConfig,
            aws_sign_request,
        )
        from awscrt.http import HttpHeaders, HttpRequest

        if os.getpid() != self._pid:
            return None
        url = urllib.parse.urlsplit(f"{self.path.base_url}/{urllib.parse.quote(key, safe='/~')}")
        request = HttpRequest("GET", url.path, HttpHeaders([("host", url.netloc)]))
        config = AwsSigningConfig(
            algorithm=AwsSigningAlgorithm.V4,
            signature_type=AwsSignatureType.HTTP_REQUEST_QUERY_PARAMS,
            credentials_provider=self.provider,
            region=self.path.region,
            service="s3",
            date=now,
            use_double_uri_encode=False,  # S3's rules: the path is encoded once and not normalized
            should_normalize_uri_path=False,
            signed_body_value=AwsSignedBodyValue.UNSIGNED_PAYLOAD,
            signed_body_header_type=AwsSignedBodyHeaderType.NONE,
            expiration_in_seconds=expires_s,
        )
        try:
            signed = aws_sign_request(request, config).result(_CREDENTIALS_TIMEOUT_S)
        except Exception:  # credentials that expired and did not refresh, a timeout: botocore's turn
            return None
        return f"{url.scheme}://{url.netloc}{signed.path}"


def ssl_context() -> ssl.SSLContext:
    """Verified TLS with the CA bundle botocore would use (AWS_CA_BUNDLE, else its default), loaded once
    per bundle: the marker, the manifest and each event loop would otherwise each parse it again."""
    from botocore.httpsession import where

    return _ssl_context_for(os.environ.get("AWS_CA_BUNDLE") or where())


@functools.cache
def _ssl_context_for(cafile: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=cafile)


def get_small_object(url: str, timeout_s: float) -> bytes | None:
    """One GET of a presigned URL: the body of a 200 of exactly its Content-Length, else None."""
    parts = urllib.parse.urlsplit(url)
    target = f"{parts.path}?{parts.query}"
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        connection = http.client.HTTPSConnection(parts.netloc, timeout=timeout_s, context=ssl_context())
    else:
        connection = http.client.HTTPConnection(parts.netloc, timeout=timeout_s)
    try:
        connection.request("GET", target, headers={"Accept-Encoding": "identity"})
        response = connection.getresponse()
        body = response.read()
        length = response.getheader("Content-Length")
        if response.status != 200 or length is None or int(length) != len(body):
            return None
        return body
    except (OSError, http.client.HTTPException, ValueError):
        return None
    finally:
        connection.close()


def proxied(url: str) -> bool:
    """Whether the environment sends `url` through an HTTP proxy (botocore's only source of proxies
    here: the clients' Config sets none)."""
    # On Linux urllib's proxies are the `*_proxy` variables and nothing else (`no_proxy` only exempts
    # hosts): without one, skip importing urllib.request, 6 ms of every pull's start-up.
    if sys.platform == "linux" and not any(
        name.lower().endswith("_proxy") and name.lower() != "no_proxy" and value
        for name, value in os.environ.items()
    ):
        return False
    from urllib.request import getproxies, proxy_bypass

    parts = urllib.parse.urlsplit(url)
    return parts.scheme in getproxies() and not proxy_bypass(parts.hostname or "")


class PullReads:
    """What a pull asks of S3, as a botocore client's methods: GETs and presigned GETs through awscrt
    where `fast_path` allows, and everything else through a botocore client made on first use."""

    def __init__(
        self, make_client: Callable[[], Any], presigner: CrtPresigner | None, timeout_s: float
    ) -> None:
        self._make_client = make_client
        self._client: Any = None
        self._lock = threading.Lock()
        self.presigner = presigner
        self._timeout_s = timeout_s

    @classmethod
    def for_bucket(
        cls, make_client: Callable[[], Any], endpoint_url: str | None, bucket: str, timeout_s: float
    ) -> PullReads:
        path = fast_path(os.environ, endpoint_url, bucket, os.path.exists)
        presigner = None
        if path is not None and not proxied(path.base_url):
            presigner = CrtPresigner(path)
            if not presigner.credentials_resolve():
                presigner = None
        return cls(make_client, presigner, timeout_s)

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def _presigner_for(self, params: Mapping[str, Any]) -> CrtPresigner | None:
        """The awscrt presigner, for a plain GET of an object in its bucket (no Range, no version)."""
        presigner = self.presigner
        if presigner is None or set(params) != {"Bucket", "Key"} or params["Bucket"] != presigner.path.bucket:
            return None
        return presigner

    def generate_presigned_url(self, operation: str, Params: dict[str, str], ExpiresIn: int) -> str:
        presigner = self._presigner_for(Params) if operation == "get_object" else None
        url = presigner.presign(Params["Key"], ExpiresIn) if presigner is not None else None
        if url is not None:
            return url
        return self.client.generate_presigned_url(operation, Params=Params, ExpiresIn=ExpiresIn)

    def get_object(self, **params: Any) -> dict[str, Any]:
        """A whole small object straight from a presigned URL; any other GET, or any answer but a 200
        (a 404 to map, a 403 to explain, a redirect to another region), through botocore."""
        presigner = self._presigner_for(params)
        url = presigner.presign(params["Key"], 60) if presigner is not None else None
        body = get_small_object(url, self._timeout_s) if url is not None else None
        if body is not None:
            return {"Body": BytesIO(body), "ContentLength": len(body)}
        return self.client.get_object(**params)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
