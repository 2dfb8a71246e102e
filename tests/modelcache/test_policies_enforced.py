"""The cache's IAM policies, enforced: a moto_server on 127.0.0.1 that checks every request against the
policy of the user making it (INITIAL_NO_AUTH_ACTION_COUNT), with one user per identity holding exactly
the policy the ModelCache component gives its role (infra/aws_policies.py).

The writer's policy is enough for everything the fill Job's `push` does (multipart uploads included) and
for publishing a compile cache, and for nothing else: no delete, no key outside the cache's prefixes. The
reader (serving pods) can pull but cannot publish a compile cache.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

from infra import aws_policies
from tests.conftest import free_port, stop_process, wait_for_port
from tests.modelcache.conftest import run_cache
from tests.modelcache.fake_hub import generate_model
from tests.modelcache.test_compile_cache import SHAPE

pytestmark = pytest.mark.integration

BUCKET = "enforced-cache"
ARN = f"arn:aws:s3:::{BUCKET}"
# Requests moto serves before it enforces IAM: the set-up below makes exactly this many.
SETUP_REQUESTS = 12
# A LoRA adapter in another bucket that the writer copies (`push s3://...`), and a neighbour it may not read.
SOURCE_BUCKET = "team-adapters"
ADAPTER = f"s3://{SOURCE_BUCKET}/qwen3/sql"
ADAPTER_FILES = {
    "adapter_config.json": b'{"peft_type": "LORA", "r": 8}',
    "adapter_model.safetensors": b"w" * 4096,
}


@dataclass(frozen=True)
class Enforced:
    url: str
    keys: dict[str, dict[str, str]]  # identity -> AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY

    def client(self, identity: str):
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=self.keys[identity]["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.keys[identity]["AWS_SECRET_ACCESS_KEY"],
        )


@pytest.fixture(scope="module")
def enforced() -> Iterator[Enforced]:
    moto_server = Path(sys.executable).parent / "moto_server"
    if not moto_server.exists():
        pytest.skip("moto_server is not installed (pip install -r requirements-dev.txt)")
    port = free_port()
    process = subprocess.Popen(
        [str(moto_server), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(SETUP_REQUESTS)},
    )
    try:
        wait_for_port(port, process)
        url = f"http://127.0.0.1:{port}"
        admin = {"endpoint_url": url, "region_name": "us-east-1"}
        admin |= {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
        s3 = boto3.client("s3", **admin)
        s3.create_bucket(Bucket=BUCKET)
        s3.create_bucket(Bucket=SOURCE_BUCKET)
        for name, body in ADAPTER_FILES.items():
            s3.put_object(Bucket=SOURCE_BUCKET, Key=f"qwen3/sql/{name}", Body=body)
        s3.put_object(Bucket=SOURCE_BUCKET, Key="qwen3/other/adapter_config.json", Body=b"{}")
        iam = boto3.client("iam", **admin)
        keys = {}
        for identity, policy in (
            ("writer", aws_policies.model_cache_write_policy(ARN)),
            ("reader", aws_policies.model_cache_read_policy(ARN)),
        ):
            iam.create_user(UserName=identity)
            iam.put_user_policy(UserName=identity, PolicyName="cache", PolicyDocument=json.dumps(policy))
            if identity == "writer":
                sources = aws_policies.source_folders_read_policy([ADAPTER], "us-east-1")
                iam.put_user_policy(
                    UserName=identity, PolicyName="sources", PolicyDocument=json.dumps(sources)
                )
            key = iam.create_access_key(UserName=identity)["AccessKey"]
            keys[identity] = {
                "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
                "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
            }
        yield Enforced(url, keys)
    finally:
        stop_process(process)


def test_setup_is_enforced(enforced: Enforced) -> None:
    """Guards the other tests: past the set-up, moto refuses what a policy does not allow."""
    with pytest.raises(ClientError, match="AccessDenied"):
        enforced.client("reader").put_object(Bucket=BUCKET, Key="models/x", Body=b"x")


def test_the_writer_can_push_and_the_reader_can_pull(enforced: Enforced, tmp_path: Path) -> None:
    model = tmp_path / "model"
    generate_model(model, shards=2, shard_bytes=3 * 1024 * 1024)
    pushed = run_cache(
        "push", "test-org/small", "--revision", "v1", "--from", str(model), "--to", f"s3://{BUCKET}",
        "--chunk-size-mib", "1",  # the shards go up as multipart uploads
        endpoint=enforced.url, extra_env=enforced.keys["writer"],
    )  # fmt: skip
    assert pushed.returncode == 0, pushed.stderr
    again = run_cache(
        "push", "test-org/small", "--revision", "v1", "--from", str(model), "--to", f"s3://{BUCKET}",
        endpoint=enforced.url, extra_env=enforced.keys["writer"],
    )  # fmt: skip
    assert again.returncode == 0 and "already complete" in again.stderr, again.stderr
    pulled = run_cache(
        "pull", "--from", f"s3://{BUCKET}", "--model", "test-org/small", "--revision", "v1",
        "--to", str(tmp_path / "pulled"), endpoint=enforced.url, extra_env=enforced.keys["reader"],
    )  # fmt: skip
    assert pulled.returncode == 0, pulled.stderr


def test_only_the_writer_publishes_a_compile_cache(enforced: Enforced, tmp_path: Path) -> None:
    source = tmp_path / "torch_compile_cache"
    (source / "abc").mkdir(parents=True)
    (source / "abc" / "artifact.bin").write_bytes(b"compiled")
    push = ("compile-cache", "push", "--to", f"s3://{BUCKET}", "--dir", str(source), *SHAPE)
    refused = run_cache(*push, endpoint=enforced.url, extra_env=enforced.keys["reader"])
    assert refused.returncode != 0 and "AccessDenied" in refused.stderr, refused.stderr
    published = run_cache(*push, endpoint=enforced.url, extra_env=enforced.keys["writer"])
    assert published.returncode == 0 and "uploaded" in published.stderr, published.stderr
    restored = run_cache(
        "compile-cache", "pull", "--from", f"s3://{BUCKET}", "--dir", str(tmp_path / "restored"), *SHAPE,
        endpoint=enforced.url, extra_env=enforced.keys["reader"],
    )  # fmt: skip
    assert restored.returncode == 0 and "restored" in restored.stderr, restored.stderr


@pytest.mark.parametrize(
    ("identity", "action"),
    [
        ("writer", lambda c: c.delete_object(Bucket=BUCKET, Key="models/x")),
        ("writer", lambda c: c.put_object(Bucket=BUCKET, Key="elsewhere/x", Body=b"x")),
        ("reader", lambda c: c.put_object(Bucket=BUCKET, Key="compile-cache/x", Body=b"x")),
        ("reader", lambda c: c.delete_object(Bucket=BUCKET, Key="models/x")),
    ],
)
def test_what_neither_identity_may_do(enforced: Enforced, identity: str, action) -> None:
    with pytest.raises(ClientError, match="AccessDenied"):
        action(enforced.client(identity))


def test_the_writer_copies_an_s3_adapter_folder_and_reads_nothing_beside_it(
    enforced: Enforced, tmp_path: Path
) -> None:
    """With the cache's write policy and its source policy (ModelCache's two RolePolicies of the writer):
    `push s3://...` succeeds and the reader pulls the same bytes; a neighbouring folder stays unreadable."""
    from infra.modelcache.s3_source import parse_s3_source, source_model_id

    pushed = run_cache(
        "push", ADAPTER, "--revision", "v1", "--to", f"s3://{BUCKET}", "--scratch", str(tmp_path / "scratch"),
        endpoint=enforced.url, extra_env=enforced.keys["writer"],
    )  # fmt: skip
    assert pushed.returncode == 0, pushed.stderr
    pulled = run_cache(
        "pull", "--from", f"s3://{BUCKET}", "--model", source_model_id(parse_s3_source(ADAPTER, key="k")),
        "--revision", "v1", "--to", str(tmp_path / "pulled"), endpoint=enforced.url,
        extra_env=enforced.keys["reader"],
    )  # fmt: skip
    assert pulled.returncode == 0, pulled.stderr
    assert {name: (tmp_path / "pulled" / name).read_bytes() for name in ADAPTER_FILES} == ADAPTER_FILES
    writer = enforced.client("writer")
    with pytest.raises(ClientError, match="AccessDenied"):
        writer.get_object(Bucket=SOURCE_BUCKET, Key="qwen3/other/adapter_config.json")
    with pytest.raises(ClientError, match="AccessDenied"):
        writer.put_object(Bucket=SOURCE_BUCKET, Key="qwen3/sql/x", Body=b"x")
    # (moto ignores the s3:prefix condition on ListBucket; tests/test_aws_policies.py checks that one)
    refused = run_cache(
        "push",
        ADAPTER,
        "--to",
        f"s3://{BUCKET}/by-reader",
        endpoint=enforced.url,
        extra_env=enforced.keys["reader"],
    )
    assert refused.returncode == 2 and "access denied" in refused.stderr, refused.stderr
