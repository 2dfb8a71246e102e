"""The pull's reads without a botocore client (s3_reads.py): when the environment allows it, that awscrt
signs exactly what botocore would, and that anything unusual goes to botocore.

No S3 server that runs here checks a presigned URL's SigV4 signature (s3rver skips V4, moto's IAM check
needs an Authorization header), so botocore's own signer is the reference: both sign the same request at
the same instant and must produce the same URL, signature included.
"""

from __future__ import annotations

import datetime
import json
import multiprocessing
import os
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import botocore.auth
import botocore.session
import pytest
from botocore.config import Config

from infra.modelcache.layout import parse_s3_uri
from infra.modelcache.pull import pull, read_entry, resolve_entry
from infra.modelcache.s3_reads import CrtPresigner, FastPath, PullReads, fast_path, proxied
from infra.modelcache.transfer import TransferSettings, make_s3_client
from tests.modelcache.conftest import tree_digest

SIGNED_AT = datetime.datetime(2026, 11, 30, 12, 34, 56, tzinfo=datetime.UTC)
KEYS = {
    "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
}
NO_FILES = {
    "AWS_CONFIG_FILE": "/nonexistent/config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/credentials",
}


def _nothing_exists(_: str) -> bool:
    return False


@pytest.mark.parametrize(
    ("env", "endpoint", "bucket", "expected"),
    [
        ({**KEYS, "AWS_REGION": "us-east-1"}, "http://127.0.0.1:9000", "cache", "http://127.0.0.1:9000/cache"),
        ({**KEYS, "AWS_REGION": "us-east-1"}, "http://minio:9000/", "cache", "http://minio:9000/cache"),
        ({**KEYS, "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL_S3": "http://10.0.0.5"}, None, "c-1",
         "http://10.0.0.5/c-1"),  # the endpoint from the environment, as make_s3_client takes it
        ({**KEYS, "AWS_REGION": "eu-west-1"}, None, "model-cache", "https://model-cache.s3.eu-west-1.amazonaws.com"),
        ({**KEYS, "AWS_REGION": "ap-southeast-2"}, None, "m-1", "https://m-1.s3.ap-southeast-2.amazonaws.com"),
        ({"AWS_REGION": "us-west-2", "AWS_WEB_IDENTITY_TOKEN_FILE": "/t", "AWS_ROLE_ARN": "arn:r"}, None, "cache",
         "https://cache.s3.us-west-2.amazonaws.com"),  # IRSA
        ({"AWS_REGION": "us-west-2", "AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://169.254.170.23/v1/credentials"},
         None, "cache", "https://cache.s3.us-west-2.amazonaws.com"),  # EKS Pod Identity
        ({**KEYS, "AWS_PROFILE": "dev", "AWS_REGION": "us-east-1"}, None, "cache", None),
        ({**KEYS}, None, "cache", None),  # no region: botocore's default is not ours to guess
        ({"AWS_ACCESS_KEY_ID": "AKID", "AWS_REGION": "us-east-1"}, None, "cache", None),  # half a key pair
        ({"AWS_REGION": "us-east-1"}, None, "cache", None),  # IMDS only
        ({**KEYS, "AWS_REGION": "us-east-1", "AWS_USE_FIPS_ENDPOINT": "true"}, None, "cache", None),
        ({**KEYS, "AWS_REGION": "us-east-1", "AWS_USE_DUALSTACK_ENDPOINT": "TRUE"}, None, "cache", None),
        ({**KEYS, "AWS_REGION": "us-gov-west-1"}, None, "cache", None),
        ({**KEYS, "AWS_REGION": "cn-north-1"}, None, "cache", None),
        ({**KEYS, "AWS_REGION": "us-east-1"}, None, "my.dotted.bucket", None),
        ({**KEYS, "AWS_REGION": "us-east-1"}, None, "cache--use1-az4--x-s3", None),  # S3 Express
        ({**KEYS, "AWS_REGION": "us-east-1"}, None, "ap-abc-123-s3alias", None),
        ({**KEYS, "AWS_REGION": "us-east-1"}, "ftp://host", "cache", None),
        ({**KEYS, "AWS_REGION": "us-east-1"}, "http://host/?x=1", "cache", None),
    ],
)  # fmt: skip
def test_fast_path_only_where_botocore_would_resolve_the_same(
    env: dict[str, str], endpoint: str | None, bucket: str, expected: str | None
) -> None:
    path = fast_path({**env, "HOME": "/nonexistent"}, endpoint, bucket, _nothing_exists)
    assert (path.base_url if path else None) == expected


@pytest.mark.parametrize(
    ("config_file", "existing"),
    [
        (None, "/home/u/.aws/config"),
        (None, "/home/u/.aws/credentials"),
        ("/etc/aws/config", "/etc/aws/config"),
    ],
)
def test_a_shared_config_or_credentials_file_leaves_it_to_botocore(
    config_file: str | None, existing: str
) -> None:
    env = {**KEYS, "HOME": "/home/u", "AWS_REGION": "us-east-1"}
    env |= {"AWS_CONFIG_FILE": config_file} if config_file else {}
    assert fast_path(env, None, "cache", {existing}.__contains__) is None
    assert fast_path(env, None, "cache", _nothing_exists) is not None


def _split(url: str) -> tuple[str, str, str, dict[str, list[str]]]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme, parts.netloc, parts.path, urllib.parse.parse_qs(parts.query, keep_blank_values=True)


def _botocore_presign(endpoint: str | None, bucket: str, key: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """botocore's presigned GET at SIGNED_AT, signed by its pure-Python SigV4 (with awscrt installed,
    botocore itself signs through awscrt, which would make the comparison circular). On an explicit
    endpoint, the pull's own client; on AWS, a client addressing the regional endpoint by virtual host,
    as the fast path does (the pull's client presigns for the global `BUCKET.s3.amazonaws.com`)."""
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: SIGNED_AT.replace(tzinfo=None))
    monkeypatch.setitem(botocore.auth.AUTH_TYPE_MAPS, "s3v4-query", botocore.auth.S3SigV4QueryAuth)
    if endpoint is None:
        region = os.environ["AWS_REGION"]
        config = Config(signature_version="s3v4", s3={"addressing_style": "virtual"})
        client = botocore.session.get_session().create_client(
            "s3", region_name=region, endpoint_url=f"https://s3.{region}.amazonaws.com", config=config
        )
    else:
        client = make_s3_client(TransferSettings(), endpoint)
    return client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=3600)


def _set_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for name in ("AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {**NO_FILES, **env}.items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize(
    ("endpoint", "bucket", "key"),
    [
        (
            "http://127.0.0.1:4568",
            "model-cache",
            "cache/models/org--m/0123abc/model-00001-of-00004.safetensors",
        ),
        ("https://minio.internal:9000", "b-1", "dir/a b+c~d=e&f;g,h@i$j'k(l)m!n*o.json"),
        ("http://s3.local", "cache", "unicode/modèle-é/权重.bin"),
        (None, "model-cache-prod", "k/with spaces/and+plus%25/x.bin"),
    ],
)
@pytest.mark.parametrize("session_token", [None, "IQoJb3JpZ2luX2VjE//token+with/slash="])
def test_crt_presign_equals_botocore(
    endpoint: str | None, bucket: str, key: str, session_token: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {**KEYS, "AWS_REGION": "eu-west-1"} | (
        {"AWS_SESSION_TOKEN": session_token} if session_token else {}
    )
    _set_env(monkeypatch, env)
    path = fast_path(env, endpoint, bucket, _nothing_exists)
    assert path is not None
    crt_url = CrtPresigner(path).presign(key, 3600, now=SIGNED_AT)
    assert crt_url is not None
    assert _split(crt_url) == _split(_botocore_presign(endpoint, bucket, key, monkeypatch))
    query = _split(crt_url)[3]
    assert query["X-Amz-Date"] == ["20261130T123456Z"]
    assert ("X-Amz-Security-Token" in query) == (session_token is not None)


class _ContainerCredentials(BaseHTTPRequestHandler):
    """EKS Pod Identity's agent: credentials for the pod that shows the token of its token file."""

    token = "pod-identity-token"
    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.seen.append(self.headers.get("Authorization", ""))
        if self.headers.get("Authorization") != self.token:
            self.send_response(401)
            self.end_headers()
            return
        body = json.dumps({
            "AccessKeyId": "ASIAPODIDENTITY",
            "SecretAccessKey": "pod/identity+secret",
            "Token": "pod-session-token",
            "Expiration": (datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=6)).strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            ),
        }).encode()  # fmt: skip
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def container_credentials(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A Pod Identity credentials endpoint on 127.0.0.1 and the env a pod gets (no static keys)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ContainerCredentials)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    token_file = tmp_path / "eks-pod-identity-token"
    token_file.write_text(_ContainerCredentials.token)
    _ContainerCredentials.seen.clear()
    try:
        yield {
            "AWS_CONTAINER_CREDENTIALS_FULL_URI": f"http://127.0.0.1:{server.server_port}/v1/credentials",
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": str(token_file),
            "AWS_REGION": "us-west-2",
        }
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_pod_identity_credentials_sign_as_botocore_would(
    container_credentials: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in KEYS:
        monkeypatch.delenv(name, raising=False)
    _set_env(monkeypatch, container_credentials)
    path = fast_path({**container_credentials, "HOME": "/nonexistent"}, None, "model-cache", _nothing_exists)
    assert path is not None
    assert path == FastPath(
        "model-cache", "https://model-cache.s3.us-west-2.amazonaws.com", "us-west-2", False
    )
    presigner = CrtPresigner(path)
    assert presigner.credentials_resolve()
    crt_url = presigner.presign("models/a/b/config.json", 3600, now=SIGNED_AT)
    assert crt_url is not None
    assert _ContainerCredentials.seen and set(_ContainerCredentials.seen) == {_ContainerCredentials.token}
    query = _split(crt_url)[3]
    assert query["X-Amz-Credential"][0].startswith("ASIAPODIDENTITY/20261130/us-west-2/s3/")
    assert query["X-Amz-Security-Token"] == ["pod-session-token"]
    assert _split(crt_url) == _split(
        _botocore_presign(None, "model-cache", "models/a/b/config.json", monkeypatch)
    )


def test_no_credentials_at_all_leaves_it_to_botocore(monkeypatch: pytest.MonkeyPatch) -> None:
    """A container endpoint that refuses: awscrt finds nothing, so botocore is asked (and says why)."""
    for name in KEYS:
        monkeypatch.delenv(name, raising=False)
    env = {"AWS_REGION": "us-east-1", "AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://127.0.0.1:9/refused"}
    _set_env(monkeypatch, env)
    made: list[bool] = []
    reads = PullReads.for_bucket(lambda: made.append(True), None, "cache", timeout_s=5)
    assert reads.presigner is None and not made


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"NO_PROXY": "*"},
        {"no_proxy": "example.com"},
        {"HTTPS_PROXY": "http://proxy:3128"},
        {"https_proxy": "http://proxy:3128", "no_proxy": "bucket.s3.us-east-1.amazonaws.com"},
        {"http_proxy": "http://proxy:3128"},
        {"HTTPS_PROXY": ""},
        {"ALL_PROXY": "socks5://proxy:1080"},
    ],
)
@pytest.mark.parametrize("url", ["https://bucket.s3.us-east-1.amazonaws.com/k", "http://127.0.0.1:9000/b/k"])
def test_proxied_answers_as_urllib_does(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], url: str
) -> None:
    """`proxied` skips importing urllib.request when no proxy variable is set; its answer must not change."""
    from urllib.request import getproxies, proxy_bypass

    for name in list(os.environ):
        if name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)
    _set_env(monkeypatch, env)
    parts = urllib.parse.urlsplit(url)
    assert proxied(url) == (parts.scheme in getproxies() and not proxy_bypass(parts.hostname or ""))


def _loopback_presigner(monkeypatch: pytest.MonkeyPatch) -> CrtPresigner:
    """A presigner from static keys for a bucket on 127.0.0.1:9, shown to sign in this process."""
    env = {**KEYS, "AWS_REGION": "us-east-1"}
    _set_env(monkeypatch, env)
    path = fast_path(env, "http://127.0.0.1:9", "cache", _nothing_exists)
    assert path is not None
    presigner = CrtPresigner(path)
    assert presigner.presign("k", 60) is not None
    return presigner


def _presign_in_child(presigner: CrtPresigner, results: multiprocessing.Queue) -> None:  # pyright: ignore[reportMissingTypeArgument]
    results.put(presigner.presign("k", 60))


def test_a_forked_worker_never_signs_with_the_parents_awscrt(monkeypatch: pytest.MonkeyPatch) -> None:
    presigner = _loopback_presigner(monkeypatch)
    results: multiprocessing.Queue = multiprocessing.get_context("fork").Queue()  # pyright: ignore[reportMissingTypeArgument]
    child = multiprocessing.get_context("fork").Process(target=_presign_in_child, args=(presigner, results))
    child.start()
    child.join(timeout=30)
    assert child.exitcode == 0
    assert results.get(timeout=5) is None


def _reads(endpoint: str, bucket: str) -> tuple[PullReads, list[bool]]:
    made: list[bool] = []

    def make() -> object:
        made.append(True)
        return make_s3_client(TransferSettings(), endpoint)

    return PullReads.for_bucket(make, endpoint, bucket, timeout_s=10), made


@pytest.mark.integration
def test_a_whole_pull_runs_without_a_botocore_client(
    moto_endpoint: str, bucket: str, push_small: Callable[[str], str], small_model: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    entry_uri = push_small("fast-path")
    _set_env(monkeypatch, {**KEYS, "AWS_DEFAULT_REGION": "us-east-1"})
    reads, made = _reads(moto_endpoint, bucket)
    assert reads.presigner is not None
    entry = resolve_entry(reads, parse_s3_uri(entry_uri, key="--from"), None, None)
    pull(reads, entry, tmp_path / "model", settings=TransferSettings(processes=1))
    assert tree_digest(tmp_path / "model") == tree_digest(small_model)
    assert made == []  # marker, manifest and every range came through awscrt's URLs


@pytest.mark.integration
def test_anything_but_a_200_is_asked_again_through_botocore(
    moto_endpoint: str, bucket: str, push_small: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    entry_uri = push_small("fast-path-missing")
    _set_env(monkeypatch, {**KEYS, "AWS_DEFAULT_REGION": "us-east-1"})
    reads, made = _reads(moto_endpoint, bucket)
    entry = resolve_entry(reads, parse_s3_uri(entry_uri, key="--from"), None, None)
    missing = type(entry)(entry.root, entry.model, "0" * 40)
    with pytest.raises(Exception, match="no completion marker"):
        read_entry(reads, missing)
    assert made == [True]  # the 404 was mapped by botocore, as before


def test_the_pull_client_presigns_sigv4_in_the_pods_region(monkeypatch: pytest.MonkeyPatch) -> None:
    """The serving pods set AWS_REGION, which botocore alone ignores; and botocore's default presigned
    GET is SigV2, which S3 refuses for buckets made since 2020: the event loop's every range would fail
    over to the botocore path on real S3."""
    _set_env(monkeypatch, {**KEYS, "AWS_REGION": "eu-central-1"})
    for endpoint in (None, "http://127.0.0.1:9"):
        url = make_s3_client(TransferSettings(), endpoint).generate_presigned_url(
            "get_object", Params={"Bucket": "model-cache", "Key": "k"}, ExpiresIn=60
        )
        query = _split(url)[3]
        assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
        assert query["X-Amz-Credential"][0].split("/")[2] == "eu-central-1"


def test_a_signature_awscrt_cannot_make_is_left_to_botocore(monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials that stop resolving mid-pull (here: the keys gone from the environment awscrt
    reads them from at every signature): botocore signs, and explains if it cannot either."""
    presigner = _loopback_presigner(monkeypatch)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    assert presigner.presign("k", 60) is None
    made: list[bool] = []

    def make() -> object:
        made.append(True)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEYS["AWS_ACCESS_KEY_ID"])  # botocore's chain has them
        return make_s3_client(TransferSettings(), "http://127.0.0.1:9")

    url = PullReads(make, presigner, 5).generate_presigned_url(
        "get_object", Params={"Bucket": "cache", "Key": "k"}, ExpiresIn=60
    )
    assert made == [True] and "X-Amz-Signature=" in url
