"""Model-cache wiring numbers and names: GPU names for the compile-cache key, disk sizes, the fill Job's
name and await timeout, and the serving-cache pod template."""

from __future__ import annotations

import re

import kubernetes_validate
import pytest

from infra.kubernetes import serving_cache
from infra.kubernetes.model_cache import LoadMode, SecretKeyRef
from infra.kubernetes.serving_cache import GIB
from infra.modelcache.transfer import MiB, TransferSettings
from infra.sizing.gpus import load_catalog
from infra.sizing.model_pull import pull_settings
from infra.versions import KUBERNETES_VERSIONS

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@pytest.mark.parametrize(
    ("catalog", "nvidia_smi"),
    [
        ("T4", "Tesla T4"),
        ("A10G", "NVIDIA A10G"),
        ("L4", "NVIDIA L4"),
        ("L40S", "NVIDIA L40S"),
        ("A100-40GB", "NVIDIA A100-SXM4-40GB"),
        ("A100-80GB", "NVIDIA A100-SXM4-80GB"),
        ("H100", "NVIDIA H100 80GB HBM3"),
        ("H200", "NVIDIA H200"),
        ("B300", "NVIDIA B300"),  # not in the table: the NVIDIA-prefixed catalog name
    ],
)
def test_nvidia_smi_names(catalog: str, nvidia_smi: str) -> None:
    assert serving_cache.nvidia_smi_name(catalog) == nvidia_smi


def test_every_catalog_gpu_has_a_distinct_name() -> None:
    names = [serving_cache.nvidia_smi_name(gpu.name) for gpu in load_catalog().gpu_models()]
    assert len(set(names)) == len(names)
    assert set(serving_cache.NVIDIA_SMI_NAMES) <= {gpu.name for gpu in load_catalog().gpu_models()}


def test_a_gpu_name_is_required() -> None:
    with pytest.raises(ValueError):
        serving_cache.nvidia_smi_name(" ")


@pytest.mark.parametrize(
    ("weights_gib", "fp8", "disk_gib"),
    [(16, False, 24), (16, True, 42), (140, False, 166), (1, False, 7)],
)
def test_disks_hold_the_checkpoint_with_headroom(weights_gib: int, fp8: bool, disk_gib: int) -> None:
    checkpoint = serving_cache.checkpoint_bytes(weights_gib * GIB, load_time_fp8=fp8)
    assert checkpoint == weights_gib * GIB * (2 if fp8 else 1)
    assert serving_cache.cache_disk_gib(checkpoint) == disk_gib
    assert disk_gib * GIB > checkpoint


def test_weights_must_be_positive() -> None:
    with pytest.raises(ValueError):
        serving_cache.checkpoint_bytes(0, load_time_fp8=False)


@pytest.mark.parametrize(("weights_gib", "disk_gib"), [(16, 90), (140, 230), (1, 70)])
def test_system_nodes_hold_the_serving_image_and_the_fill_scratch(weights_gib: int, disk_gib: int) -> None:
    disk = serving_cache.system_node_disk_gib(weights_gib * GIB)
    assert disk == disk_gib and disk % 10 == 0
    assert disk >= serving_cache.SYSTEM_NODE_BASE_DISK_GIB + serving_cache.cache_disk_gib(weights_gib * GIB)


def test_fill_timeout_grows_with_the_model_and_stops_at_the_jobs_deadline() -> None:
    small = serving_cache.fill_timeout_seconds(16 * GIB)
    large = serving_cache.fill_timeout_seconds(140 * GIB)
    assert 600 < small < large < serving_cache.FILL_MAX_SECONDS  # above Pulumi's 10-minute Job default
    assert large >= 2 * 140 * GIB / serving_cache.FILL_BYTES_PER_SECOND
    assert serving_cache.fill_timeout_seconds(5000 * GIB) == serving_cache.FILL_MAX_SECONDS


def test_fill_job_names_are_dns_labels_that_change_with_model_and_revision() -> None:
    names = {
        serving_cache.fill_job_name(model, revision)
        for model in ("Qwen/Qwen3-8B", "Qwen/Qwen3-14B", "org/" + "Very_Long.Name" * 10)
        for revision in ("main", "0123456789abcdef0123456789abcdef01234567")
    }
    assert len(names) == 6
    for name in names:
        assert len(name) <= 63 and DNS_LABEL.match(name), name
    assert serving_cache.fill_job_name("Qwen/Qwen3-8B", "main").startswith("model-cache-fill-qwen3-8b-")
    assert serving_cache.fill_job_name("Qwen/Qwen3-8B", "main") == serving_cache.fill_job_name(
        "Qwen/Qwen3-8B", "main"
    )


def _cache(**changes: object) -> serving_cache.RevisionCache:
    base = {
        "model": "Qwen/Qwen3-8B",
        "revision": "main",
        "checkpoint_bytes": 16 * GIB,
        "gpu_type": "NVIDIA L4",
        "region": "us-east-1",
    }
    return serving_cache.RevisionCache(**{**base, **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_a_revisions_fill_job_runs_as_the_writer_with_the_token_by_reference(version: str) -> None:
    cache = _cache()
    job = serving_cache.revision_fill_job(
        cache,
        bucket="b",
        namespace="ns",
        image="repo/serving:1",
        writer_service_account="writer",
        hf_token_secret=SecretKeyRef("hf", "token"),
        labels={"app.kubernetes.io/part-of": "llm-serving"},
    )
    kubernetes_validate.validate(job, version, strict=True)
    assert (
        job["metadata"]["name"] == cache.fill_job_name == serving_cache.fill_job_name("Qwen/Qwen3-8B", "main")
    )
    timeout = int(job["metadata"]["annotations"][serving_cache.TIMEOUT_ANNOTATION])
    assert timeout == serving_cache.fill_timeout_seconds(16 * GIB)
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "writer"
    (push,) = pod["containers"]
    token = [e for e in push["env"] if e["name"] == "HF_TOKEN"]
    assert token == [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}]
    assert "--exclude" in push["args"] and "original/*" in push["args"]


def test_a_revisions_cache_patch_reads_as_the_reader_and_sizes_the_disk_from_the_checkpoint() -> None:
    patch = serving_cache.revision_cache_patch(
        _cache(), bucket="b", image="repo/serving:1", reader_service_account="reader"
    )
    assert patch.service_account_name == "reader"
    (model_volume,) = [v for v in patch.volumes if v["name"] == "model-cache"]
    assert model_volume["emptyDir"]["sizeLimit"] == f"{serving_cache.cache_disk_gib(16 * GIB)}Gi"
    assert patch.model_args == ["--model", "/models/Qwen--Qwen3-8B/main"]
    assert {"name": "HF_HUB_OFFLINE", "value": "1"} in patch.env
    # the compile cache is restored; serving pods never upload what other pods would execute
    assert [c["name"] for c in patch.init_containers] == ["model-pull", "compile-cache-restore"]
    assert not any(e["name"].startswith("MODELCACHE_COMPILE_CACHE") for e in patch.env)


@pytest.mark.parametrize(("network_gbps", "vcpus"), [(20, 4), (100, 48), (800, 96)])
def test_a_sized_pull_passes_its_flags_and_the_cli_takes_them(network_gbps: float, vcpus: int) -> None:
    """The init container's flags are the sizing's, parse with the real `cache pull`, and make settings it
    accepts; its memory limit is the sizing's. Without sizing the tool keeps its own defaults."""
    from tests.test_readme_commands import parse

    sized = pull_settings(network_gbps, vcpus)
    patch = serving_cache.revision_cache_patch(
        _cache(pull=sized), bucket="b", image="i:1", reader_service_account="r"
    )
    pull = patch.init_containers[0]
    assert pull["name"] == "model-pull"
    params = parse(["cache", *pull["args"]]).params
    settings = TransferSettings(
        concurrency=params["concurrency"],
        chunk_size=params["chunk_size_mib"] * MiB,
        processes=params["processes"],
    )  # refuses what the tool would
    assert (settings.concurrency, settings.processes, settings.chunk_size) == (
        sized.connections, sized.processes, sized.range_mib * MiB,
    )  # fmt: skip
    assert pull["resources"]["limits"]["memory"] == f"{sized.memory_gib}Gi"
    default = serving_cache.revision_cache_patch(
        _cache(), bucket="b", image="i:1", reader_service_account="r"
    )
    assert not {"--concurrency", "--processes", "--chunk-size-mib"} & set(default.init_containers[0]["args"])


def test_a_streamed_revision_needs_a_pinned_commit() -> None:
    with pytest.raises(ValueError, match="not a 40-hex commit"):
        _cache(load_mode=LoadMode.RUNAI_STREAMER)
    streamed = _cache(load_mode=LoadMode.RUNAI_STREAMER, revision="a" * 40)
    patch = serving_cache.revision_cache_patch(streamed, bucket="b", image="i:1", reader_service_account="r")
    assert "runai_streamer" in patch.model_args


def test_adapters_are_pulled_onto_a_volume_even_when_the_model_streams() -> None:
    """runai_streamer leaves the model in S3, but adapters are read from disk: the patch then adds the model
    volume for them, sized for the adapters alone, and --lora-modules follows the streamed --model."""
    commit = "0" * 40
    adapters = (serving_cache.AdapterCache("sql", "org/sql-lora", "main", 3 * GIB),)
    cache = _cache(revision=commit, load_mode=LoadMode.RUNAI_STREAMER, compile_cache=False, adapters=adapters)
    patch = serving_cache.revision_cache_patch(cache, bucket="b", image="i:1", reader_service_account="vllm")
    assert [c["name"] for c in patch.init_containers] == ["model-check", "lora-pull-0"]
    (volume,) = [v for v in patch.volumes if v["name"] == "model-cache"]
    assert volume["emptyDir"]["sizeLimit"] == f"{serving_cache.cache_disk_gib(3 * GIB)}Gi"
    assert patch.model_args[patch.model_args.index("--load-format") + 1] == "runai_streamer"
    assert patch.model_args[-2:] == ["--lora-modules", "sql=/models/org--sql-lora/main"]
    plain = serving_cache.revision_cache_patch(
        _cache(revision=commit, load_mode=LoadMode.RUNAI_STREAMER, compile_cache=False),
        bucket="b",
        image="i:1",
        reader_service_account="vllm",
    )
    assert (
        not [v for v in plain.volumes if v["name"] == "model-cache"]
        and "--lora-modules" not in plain.model_args
    )


def test_a_plan_without_lora_slots_cannot_take_adapters() -> None:
    from tests.components.support import make_plan

    with pytest.raises(ValueError, match="without LoRA slots"):
        serving_cache.RevisionCache.from_plan(
            make_plan(),
            revision="main",
            load_mode=LoadMode.LOCAL,
            compile_cache=True,
            load_time_fp8=False,
            region=None,
            adapters=[("sql", "org/sql-lora", "main")],
        )
