"""Pure tests: S3 key layout, local layouts, URI parsing, id validation, range planning, compile-cache keys."""

from __future__ import annotations

import pytest

from infra.errors import UserError
from infra.modelcache.layout import (
    CacheEntry,
    LocalLayout,
    S3Location,
    compile_cache_key,
    gpu_slug,
    local_manifest_path,
    local_model_dir,
    local_ref_path,
    model_from_slug,
    model_slug,
    parse_s3_uri,
    plan_ranges,
    ref_key,
    split_entry_uri,
    validate_model_id,
    validate_relative_path,
    validate_revision,
)

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize(
    ("uri", "bucket", "prefix"),
    [
        ("s3://my-bucket", "my-bucket", ""),
        ("s3://my-bucket/", "my-bucket", ""),
        ("s3://my-bucket/cache", "my-bucket", "cache"),
        ("s3://my-bucket/a/b/", "my-bucket", "a/b"),
    ],
)
def test_parse_s3_uri(uri: str, bucket: str, prefix: str) -> None:
    assert parse_s3_uri(uri) == S3Location(bucket, prefix)


@pytest.mark.parametrize(
    "uri", ["my-bucket/cache", "s3:/my-bucket", "s3://UPPER/x", "s3://ab", "s3://b..x/y", "s3://bucket/a//b"]
)
def test_parse_s3_uri_rejects(uri: str) -> None:
    with pytest.raises(UserError):
        parse_s3_uri(uri)


def test_entry_keys_follow_the_documented_layout() -> None:
    entry = CacheEntry(S3Location("bkt", "stacks/dev"), "Qwen/Qwen3-8B", COMMIT)
    base = f"stacks/dev/models/Qwen--Qwen3-8B/{COMMIT}"
    assert entry.files_prefix == base + "/"
    assert entry.file_key("model-00001-of-00002.safetensors") == base + "/model-00001-of-00002.safetensors"
    assert entry.file_key("original/params.json") == base + "/original/params.json"
    assert entry.manifest_key == base + ".manifest.json"
    assert entry.marker_key == base + ".complete"
    assert entry.files_uri == f"s3://bkt/{base}/"
    assert ref_key(S3Location("bkt", ""), "Qwen/Qwen3-8B", "main") == "models/Qwen--Qwen3-8B/refs/main"


def test_marker_and_manifest_are_outside_the_model_directory() -> None:
    """vLLM's runai_streamer is pointed at files_uri; our bookkeeping must not appear inside it."""
    entry = CacheEntry(S3Location("bkt", "c"), "org/m", COMMIT)
    assert not entry.manifest_key.startswith(entry.files_prefix)
    assert not entry.marker_key.startswith(entry.files_prefix)


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        (f"cache/models/org--m/{COMMIT}", (S3Location("b-1", "cache"), "org/m", COMMIT)),
        (f"models/gpt2/{COMMIT}", (S3Location("b-1", ""), "gpt2", COMMIT)),
        (f"c/models/modelscope--org--m/{COMMIT}", (S3Location("b-1", "c"), "modelscope://org/m", COMMIT)),
        ("cache", None),
        ("cache/models/org--m", None),
        ("cache/models/org--m/refs", None),
    ],
)
def test_split_entry_uri(prefix: str, expected: tuple[S3Location, str, str] | None) -> None:
    assert split_entry_uri(S3Location("b-1", prefix)) == expected


@pytest.mark.parametrize(
    ("model", "ok"),
    [
        ("Qwen/Qwen3-8B", True),
        ("gpt2", True),
        ("meta-llama/Llama-3.1-70B-Instruct", True),
        ("org/name/extra", False),
        ("org--x/name", False),
        ("../etc", False),
        ("org/..", False),
        ("", False),
        ("org/na me", False),
        ("modelscope://Qwen/Qwen3-8B", True),
        ("modelscope://gpt2", False),  # ModelScope ids always have an owner
        ("modelscope://org--x/name", False),
        ("modelscope:/org/name", False),
    ],
)
def test_validate_model_id(model: str, ok: bool) -> None:
    if ok:
        assert validate_model_id(model) == model
    else:
        with pytest.raises(UserError):
            validate_model_id(model)


@pytest.mark.parametrize(
    ("revision", "ok"),
    [
        ("main", True),
        ("v1.0", True),
        ("refs/pr/1", True),
        (COMMIT, True),
        ("../x", False),
        ("a//b", False),
        ("", False),
    ],
)
def test_validate_revision(revision: str, ok: bool) -> None:
    if ok:
        assert validate_revision(revision) == revision
    else:
        with pytest.raises(UserError):
            validate_revision(revision)


@pytest.mark.parametrize(
    ("path", "ok"),
    [
        ("config.json", True),
        ("original/params.json", True),
        (".gitattributes", True),
        ("/etc/passwd", False),
        ("../escape", False),
        ("a/../../b", False),
        ("a//b", False),
        ("./a", False),
        ("a\\b", False),
        ("", False),
    ],
)
def test_validate_relative_path(path: str, ok: bool) -> None:
    if ok:
        assert validate_relative_path(path) == path
    else:
        with pytest.raises(UserError):
            validate_relative_path(path)


@pytest.mark.parametrize(
    ("layout", "model_dir", "record"),
    [
        (LocalLayout.PLAIN, "/models/x", "/models/x/.modelcache-manifest.json"),
        (
            LocalLayout.HF_CACHE,
            f"/models/x/models--org--m/snapshots/{COMMIT}",
            f"/models/x/models--org--m/.modelcache-{COMMIT}.json",
        ),
    ],
)
def test_local_layouts(layout: LocalLayout, model_dir: str, record: str) -> None:
    assert str(local_model_dir("/models/x", layout, "org/m", COMMIT)) == model_dir
    assert str(local_manifest_path("/models/x", layout, "org/m", COMMIT)) == record


def test_hf_cache_ref_path_matches_huggingface_hub() -> None:
    assert str(local_ref_path("/hf", "org/m", "main")) == "/hf/models--org--m/refs/main"


@pytest.mark.parametrize(
    ("size", "chunk", "ranges"),
    [
        (0, 4, []),
        (1, 4, [(0, 0)]),
        (4, 4, [(0, 3)]),
        (5, 4, [(0, 3), (4, 4)]),
        (12, 4, [(0, 3), (4, 7), (8, 11)]),
    ],
)
def test_plan_ranges(size: int, chunk: int, ranges: list[tuple[int, int]]) -> None:
    assert plan_ranges(size, chunk) == ranges


@pytest.mark.parametrize(
    ("model", "slug"),
    [
        ("Qwen/Qwen3-8B", "Qwen--Qwen3-8B"),
        ("gpt2", "gpt2"),
        # A Hub org may be called "modelscope": its slugs have two parts, ModelScope's always three.
        ("modelscope/Qwen3-8B", "modelscope--Qwen3-8B"),
        ("modelscope://Qwen/Qwen3-8B", "modelscope--Qwen--Qwen3-8B"),
    ],
)
def test_model_slug_round_trips(model: str, slug: str) -> None:
    assert model_slug(model) == slug
    assert model_from_slug(slug) == model


@pytest.mark.parametrize(
    ("gpu", "slug"),
    [("NVIDIA A10G", "nvidia-a10g"), ("NVIDIA H100 80GB HBM3", "nvidia-h100-80gb-hbm3"), ("L40S", "l40s")],
)
def test_gpu_slug(gpu: str, slug: str) -> None:
    assert gpu_slug(gpu) == slug


def test_compile_cache_key_separates_every_shape_dimension() -> None:
    base = compile_cache_key("0.33.0", "Qwen/Qwen3-8B", 1, "NVIDIA L40S")
    assert base == "compile-cache/vllm-0.33.0/Qwen--Qwen3-8B/tp1/nvidia-l40s"
    variants = {
        compile_cache_key("0.34.0", "Qwen/Qwen3-8B", 1, "NVIDIA L40S"),
        compile_cache_key("0.33.0", "Qwen/Qwen3-14B", 1, "NVIDIA L40S"),
        compile_cache_key("0.33.0", "Qwen/Qwen3-8B", 2, "NVIDIA L40S"),
        compile_cache_key("0.33.0", "Qwen/Qwen3-8B", 1, "NVIDIA A10G"),
    }
    assert base not in variants and len(variants) == 4


@pytest.mark.parametrize(
    ("tp", "gpu", "version"), [(0, "L4", "0.33.0"), (1, "  ", "0.33.0"), (1, "L4", "0.33/../x")]
)
def test_compile_cache_key_rejects(tp: int, gpu: str, version: str) -> None:
    with pytest.raises(UserError):
        compile_cache_key(version, "org/m", tp, gpu)
