"""Fixtures for the model-cache integration tests: a fake Hub, a fault proxy, one pushed model in moto."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest

from tests.conftest import free_port, run_infra, stop_process, wait_for_port
from tests.modelcache.fake_hub import generate_model

HERE = Path(__file__).resolve().parent
BUCKET = "model-cache-test"
REPO = "test-org/tiny-llm"
COMMIT = hashlib.sha1(b"tiny-llm-commit").hexdigest()
HF_TOKEN = "hf_fake_token_never_logged_0123456789"
SHARDS, SHARD_BYTES = 4, 60 * 1024 * 1024  # ~240 MiB, several files


def fake_aws_env(endpoint: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HF_"))}
    env.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE="/nonexistent/aws-config",
        AWS_SHARED_CREDENTIALS_FILE="/nonexistent/aws-credentials",
        PYTHONUNBUFFERED="1",
    )
    if endpoint:
        env["AWS_ENDPOINT_URL_S3"] = endpoint
    return env


def run_cache(
    *args: str, endpoint: str | None, extra_env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`python -m infra cache ARGS` in a fresh process, as a user runs it."""
    env = {**fake_aws_env(endpoint), **(extra_env or {})}
    return run_infra("cache", *args, env=env, timeout=timeout)


def s3_client(endpoint: str):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )


@dataclass(frozen=True)
class Server:
    url: str
    process: subprocess.Popen


def start_script(script: str, *args: str, env: dict[str, str] | None = None) -> Server:
    """Start one of the helper servers here on 127.0.0.1; the caller stops it with stop_process."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(HERE / script), "--port", str(port), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        wait_for_port(port, process)
    except BaseException:
        stop_process(process)
        raise
    return Server(f"http://127.0.0.1:{port}", process)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hub-model")
    generate_model(root, shards=SHARDS, shard_bytes=SHARD_BYTES)
    return root


@pytest.fixture(scope="session")
def fake_hub(model_dir: Path) -> Iterator[str]:
    server = start_script(
        "fake_hub.py",
        "--root",
        str(model_dir),
        "--repo",
        REPO,
        "--commit",
        COMMIT,
        "--max-seconds",
        "600",
        env={**os.environ, "FAKE_HUB_TOKEN": HF_TOKEN},
    )
    try:
        yield server.url
    finally:
        stop_process(server.process)


@pytest.fixture(scope="session")
def bucket(moto_endpoint: str) -> str:
    s3_client(moto_endpoint).create_bucket(Bucket=BUCKET)
    return BUCKET


@dataclass(frozen=True)
class PushedModel:
    root_uri: str
    entry_uri: str
    push_output: str
    source: Path


@pytest.fixture(scope="session")
def pushed_model(
    moto_endpoint: str, bucket: str, fake_hub: str, model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> PushedModel:
    """The generated model pushed once from the fake Hub into moto, as `cache push` does it."""
    scratch = tmp_path_factory.mktemp("push-scratch")
    root_uri = f"s3://{bucket}/cache"
    result = run_cache(
        "push",
        REPO,
        "--revision",
        "main",
        "--to",
        root_uri,
        "--scratch",
        str(scratch),
        "--chunk-size-mib",
        "16",  # 60 MiB shards go up in 4 parts: the multipart path
        endpoint=moto_endpoint,
        extra_env={
            "HF_ENDPOINT": fake_hub,
            "HF_TOKEN": HF_TOKEN,
            "HF_HOME": str(scratch / "hf-home"),
            "HF_HUB_DISABLE_TELEMETRY": "1",
        },
        timeout=240,
    )
    assert result.returncode == 0, result.stderr
    return PushedModel(root_uri, result.stdout.strip(), result.stdout + result.stderr, model_dir)


@pytest.fixture
def small_model(tmp_path: Path) -> Path:
    """A few-MiB model for the failure-path tests, so each can spoil its own entry."""
    root = tmp_path / "small-model"
    generate_model(root, shards=2, shard_bytes=3 * 1024 * 1024)
    return root


@pytest.fixture
def push_small(moto_endpoint: str, bucket: str, small_model: Path) -> Callable[[str], str]:
    """Push `small_model` under its own prefix; returns the entry URI."""

    def push(prefix: str) -> str:
        result = run_cache(
            "push",
            "test-org/small",
            "--revision",
            "v1",
            "--from",
            str(small_model),
            "--to",
            f"s3://{bucket}/{prefix}",
            endpoint=moto_endpoint,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    return push


def tree_digest(root: Path, ignore_prefix: str = ".modelcache") -> dict[str, str]:
    """relative path -> sha256 of every file, ignoring the cache's own bookkeeping files."""
    found = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root).as_posix()
        if relative.startswith(ignore_prefix) or "/.cache/" in f"/{relative}":
            continue
        found[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found
