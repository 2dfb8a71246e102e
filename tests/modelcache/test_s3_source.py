"""Push from an S3 folder (a LoRA adapter in someone's bucket) into the cache, and pull it back, against a
real moto_server on 127.0.0.1: byte for byte, resumable, a changed folder a new entry, failures one line."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from infra.errors import UserError
from infra.modelcache.layout import S3Location, validate_model_id
from infra.modelcache.s3_source import (
    download_source,
    list_source,
    listing_commit,
    parse_s3_source,
    source_model_id,
)
from tests.modelcache.conftest import run_cache, s3_client, tree_digest

pytestmark = pytest.mark.integration

SOURCE_BUCKET = "adapter-source"


def _adapter_folder(root: Path, rank: int = 8) -> Path:
    root.mkdir(parents=True)
    (root / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": rank}))
    (root / "adapter_model.safetensors").write_bytes(os.urandom(5 * 1024 * 1024 + 17))
    (root / "extra").mkdir()
    (root / "extra" / "README.md").write_text("nested files keep their paths\n")
    return root


def _upload(endpoint: str, folder: Path, prefix: str) -> None:
    client = s3_client(endpoint)
    if SOURCE_BUCKET not in [b["Name"] for b in client.list_buckets()["Buckets"]]:
        client.create_bucket(Bucket=SOURCE_BUCKET)
    for path in folder.rglob("*"):
        if path.is_file():
            client.upload_file(str(path), SOURCE_BUCKET, f"{prefix}/{path.relative_to(folder).as_posix()}")


@pytest.mark.parametrize(
    "uri", ["s3://b-1/a/b/c", "s3://my--bucket/x..y/z", "s3://b.c.d/" + "p" * 300, "s3://b12/UPPER/Case"]
)
def test_every_s3_folder_gets_a_valid_distinct_model_id(uri: str) -> None:
    location = parse_s3_source(uri, key="k")
    model = source_model_id(location)
    assert validate_model_id(model) == model and model.startswith("s3/")
    assert source_model_id(parse_s3_source(uri + "x", key="k")) != model


def test_a_bucket_root_is_not_an_adapter_folder() -> None:
    with pytest.raises(UserError, match="whole bucket") as error:
        parse_s3_source("s3://bucket", key="loraAdapters[0].source")
    assert error.value.key == "loraAdapters[0].source"


def test_push_and_pull_round_trip_byte_for_byte(moto_endpoint: str, bucket: str, tmp_path: Path) -> None:
    folder = _adapter_folder(tmp_path / "adapter")
    _upload(moto_endpoint, folder, "team/sql-lora")
    source = f"s3://{SOURCE_BUCKET}/team/sql-lora"
    root = f"s3://{bucket}/s3-source"
    push = ("push", source, "--revision", "v1", "--to", root, "--scratch", str(tmp_path / "scratch"))
    pushed = run_cache(*push, "--chunk-size-mib", "1", endpoint=moto_endpoint)  # multipart both ways
    assert pushed.returncode == 0, pushed.stderr
    model = source_model_id(parse_s3_source(source, key="k"))
    assert f"/models/{model.replace('/', '--')}/s3-" in pushed.stdout

    again = run_cache(*push, endpoint=moto_endpoint)
    assert again.returncode == 0 and "already complete" in again.stderr, again.stderr

    pulled = run_cache(
        "pull", "--from", root, "--model", model, "--revision", "v1", "--to", str(tmp_path / "pulled"),
        endpoint=moto_endpoint,
    )  # fmt: skip
    assert pulled.returncode == 0, pulled.stderr
    assert tree_digest(tmp_path / "pulled") == tree_digest(folder)
    verified = run_cache("verify", "--from", pushed.stdout.strip(), "--deep", endpoint=moto_endpoint)
    assert verified.returncode == 0 and "OK (3 files" in verified.stdout, verified.stderr

    # the folder changes: the same revision now names a new entry, and a pull gets the new bytes
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 16}))
    _upload(moto_endpoint, folder, "team/sql-lora")
    changed = run_cache(*push, endpoint=moto_endpoint)
    assert changed.returncode == 0 and changed.stdout != pushed.stdout, changed.stderr
    repulled = run_cache(
        "pull", "--from", root, "--model", model, "--revision", "v1", "--to", str(tmp_path / "repulled"),
        endpoint=moto_endpoint,
    )  # fmt: skip
    assert repulled.returncode == 0, repulled.stderr
    assert tree_digest(tmp_path / "repulled") == tree_digest(folder)


def test_an_object_replaced_during_the_download_fails_the_push(moto_endpoint: str, tmp_path: Path) -> None:
    """The listing's ETag goes with every GET (If-Match): a replaced object cannot enter the entry."""
    folder = _adapter_folder(tmp_path / "adapter")
    _upload(moto_endpoint, folder, "race/lora")
    client = s3_client(moto_endpoint)
    location = S3Location(SOURCE_BUCKET, "race/lora")
    objects = list_source(client, location)
    client.put_object(Bucket=SOURCE_BUCKET, Key="race/lora/adapter_config.json", Body=b'{"r": 4}')
    assert listing_commit(list_source(client, location)) != listing_commit(objects)
    with pytest.raises(UserError, match=r"adapter_config\.json changed during the push"):
        download_source(client, location, objects, tmp_path / "out", concurrency=4, chunk_size=1024 * 1024)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (f"s3://{SOURCE_BUCKET}/no/such/folder", f"s3://{SOURCE_BUCKET}/no/such/folder holds no objects"),
        ("s3://no-such-source-bucket/x", "the bucket does not exist"),
        ("s3://some-bucket", "names a whole bucket"),
    ],
)
def test_a_missing_folder_is_one_line(moto_endpoint: str, bucket: str, source: str, expected: str) -> None:
    s3_client(moto_endpoint).create_bucket(Bucket=SOURCE_BUCKET)
    result = run_cache("push", source, "--to", f"s3://{bucket}/missing", endpoint=moto_endpoint)
    assert result.returncode == 2 and expected in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_an_empty_object_is_pushed_as_an_empty_file(moto_endpoint: str, tmp_path: Path) -> None:
    client = s3_client(moto_endpoint)
    client.create_bucket(Bucket=SOURCE_BUCKET)
    client.put_object(Bucket=SOURCE_BUCKET, Key="empty/lora/marker", Body=b"")
    client.put_object(Bucket=SOURCE_BUCKET, Key="empty/lora/adapter_config.json", Body=b"{}")
    location = S3Location(SOURCE_BUCKET, "empty/lora")
    out = download_source(
        client, location, list_source(client, location), tmp_path / "o", concurrency=2, chunk_size=2**20
    )
    assert (out / "marker").read_bytes() == b"" and (out / "adapter_config.json").read_bytes() == b"{}"
