"""The model cache's Kubernetes objects: schema-valid (strict) on 1.31-1.33, identities by reference, no
static AWS keys, the HF token only through a Secret, vLLM flags that vLLM 0.33.0 knows."""

from __future__ import annotations

import json
import re
from typing import Any

import kubernetes_validate
import pytest

from infra.kubernetes.model_cache import (
    CompileCacheShape,
    FillJobArgs,
    LoadMode,
    ModelCacheRef,
    SecretKeyRef,
    ServingCacheArgs,
    VolumeKind,
    compile_cache_s3_key,
    fill_job,
    serving_pod_patch,
)
from infra.versions import KUBERNETES_VERSIONS
from tests.vllm_real_parser import parse_with_vllm

K8S_VERSIONS = KUBERNETES_VERSIONS
COMMIT = "0123456789abcdef0123456789abcdef01234567"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/llm-serving:0.33.0-1"
CACHE = ModelCacheRef(bucket="llm-serving-dev-cache", prefix="dev", model="Qwen/Qwen3-8B", revision=COMMIT)
SECRET_NAME = "hf-token"


def _fill(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "name": "model-cache-fill",
        "namespace": "llm",
        "image": IMAGE,
        "cache": CACHE,
        "service_account_name": "model-cache-fill",
        "scratch_size_gib": 40,
        "hf_token_secret": SecretKeyRef(SECRET_NAME),
        "region": "us-east-1",
        "exclude": ("original/*",),
    }
    return fill_job(FillJobArgs(**{**values, **overrides}))


def _serving(**overrides: Any) -> ServingCacheArgs:
    values: dict[str, Any] = {
        "image": IMAGE,
        "cache": CACHE,
        "service_account_name": "vllm",
        "region": "us-east-1",
        "compile_cache": CompileCacheShape(gpu_type="NVIDIA L40S", tensor_parallel_size=2),
    }
    return ServingCacheArgs(**{**values, **overrides})


def _serving_pod(args: ServingCacheArgs) -> dict[str, Any]:
    """A minimal serving pod around the patch, as the workload builder would assemble it."""
    patch = serving_pod_patch(args)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "vllm-0", "namespace": "llm"},
        "spec": {
            "serviceAccountName": patch.service_account_name,
            "initContainers": patch.init_containers,
            "volumes": patch.volumes,
            "containers": [
                {
                    "name": "vllm",
                    "image": IMAGE,
                    "args": ["--port", "8000", *patch.model_args],
                    "env": patch.env,
                    "volumeMounts": patch.volume_mounts,
                }
            ],
        },
    }


SERVING_VARIANTS = {
    "local-emptydir": {},
    "local-hostpath": {"volume": VolumeKind.HOST_PATH},
    "local-no-compile-cache": {"compile_cache": None},
    "runai": {"mode": LoadMode.RUNAI_STREAMER},
    "runai-compile": {
        "mode": LoadMode.RUNAI_STREAMER,
        "compile_cache": CompileCacheShape(gpu_type="NVIDIA H100 80GB HBM3"),
    },
}


def _all_manifests() -> dict[str, dict[str, Any]]:
    manifests = {"fill-job": _fill(), "fill-job-public-model": _fill(hf_token_secret=None, exclude=())}
    manifests |= {f"pod-{name}": _serving_pod(_serving(**o)) for name, o in SERVING_VARIANTS.items()}
    return manifests


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("name", sorted(_all_manifests()))
def test_manifest_is_schema_valid(name: str, version: str) -> None:
    kubernetes_validate.validate(_all_manifests()[name], version, strict=True)


def test_schema_validation_would_catch_a_typo() -> None:
    job = _fill()
    job["spec"]["template"]["spec"]["containers"][0]["envv"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, KUBERNETES_VERSIONS[-1], strict=True)


def _containers(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    spec = manifest["spec"]["template"]["spec"] if manifest["kind"] == "Job" else manifest["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


@pytest.mark.parametrize("name", sorted(_all_manifests()))
def test_no_static_aws_keys_and_no_inline_secrets(name: str) -> None:
    manifest = _all_manifests()[name]
    text = json.dumps(manifest)
    assert not re.search(r"AKIA[0-9A-Z]{16}|ASIA[0-9A-Z]{16}", text)
    for container in _containers(manifest):
        for env in container.get("env", []):
            assert env["name"] not in {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}
            if "TOKEN" in env["name"] or "SECRET" in env["name"] or "KEY" in env["name"].split("_"):
                assert "value" not in env and "secretKeyRef" in env["valueFrom"], env
        assert not any("token" in arg.lower() for arg in container.get("args", [])), container["args"]


def test_fill_job_identity_token_and_limits() -> None:
    job = _fill()
    spec = job["spec"]
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "model-cache-fill"
    assert "automountServiceAccountToken" not in pod  # Pod Identity needs the projected token
    (container,) = pod["containers"]
    token = next(e for e in container["env"] if e["name"] == "HF_TOKEN")
    assert token == {
        "name": "HF_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": SECRET_NAME, "key": "HF_TOKEN"}},
    }
    assert container["command"] == ["modelcache"]
    assert container["args"][:6] == [
        "push",
        "Qwen/Qwen3-8B",
        "--revision",
        COMMIT,
        "--to",
        "s3://llm-serving-dev-cache/dev",
    ]
    assert container["args"][-2:] == ["--exclude", "original/*"]
    assert (
        spec["backoffLimit"] >= 1
        and spec["activeDeadlineSeconds"] > 0
        and spec["ttlSecondsAfterFinished"] > 0
    )
    assert (
        container["securityContext"]["runAsNonRoot"]
        and container["securityContext"]["readOnlyRootFilesystem"]
    )
    assert {v["name"]: v for v in pod["volumes"]}["scratch"]["emptyDir"] == {"sizeLimit": "40Gi"}
    assert container["resources"]["requests"]["ephemeral-storage"] == "40Gi"
    assert all(
        e["name"] != "HF_TOKEN"
        for e in _fill(hf_token_secret=None)["spec"]["template"]["spec"]["containers"][0]["env"]
    )


def test_local_mode_pulls_then_loads_offline_from_the_pulled_directory() -> None:
    args = _serving()
    patch = serving_pod_patch(args)
    pull = patch.init_containers[0]
    assert pull["name"] == "model-pull"
    assert pull["args"][:9] == [
        "pull", "--from", "s3://llm-serving-dev-cache/dev", "--model", "Qwen/Qwen3-8B", "--revision", COMMIT,
        "--to", f"/models/Qwen--Qwen3-8B/{COMMIT}",
    ]  # fmt: skip
    assert pull["args"][-1] == "--no-fsync"  # emptyDir: nothing outlives a crash
    hostpath_pull = serving_pod_patch(_serving(volume=VolumeKind.HOST_PATH)).init_containers[0]
    assert "--no-fsync" not in hostpath_pull["args"]
    assert patch.model_args[:2] == ["--model", f"/models/Qwen--Qwen3-8B/{COMMIT}"]
    assert "--load-format" not in patch.model_args
    assert {"name": "HF_HUB_OFFLINE", "value": "1"} in patch.env
    assert {"name": "model-cache", "mountPath": "/models", "readOnly": True} in patch.volume_mounts
    assert patch.service_account_name == "vllm"


def test_runai_mode_streams_from_the_entry_and_only_checks_the_marker() -> None:
    patch = serving_pod_patch(_serving(mode=LoadMode.RUNAI_STREAMER, compile_cache=None))
    (check,) = patch.init_containers
    assert check["name"] == "model-check"
    assert check["args"] == [
        "verify",
        "--from",
        f"s3://llm-serving-dev-cache/dev/models/Qwen--Qwen3-8B/{COMMIT}",
    ]
    model_uri = f"s3://llm-serving-dev-cache/dev/models/Qwen--Qwen3-8B/{COMMIT}/"
    assert patch.model_args[:2] == ["--model", model_uri]
    assert patch.model_args[patch.model_args.index("--load-format") + 1] == "runai_streamer"
    assert json.loads(patch.model_args[patch.model_args.index("--model-loader-extra-config") + 1]) == {
        "concurrency": 16
    }
    assert not any(v["name"] == "model-cache" for v in patch.volumes)  # no local copy


def test_runai_mode_needs_a_pinned_commit() -> None:
    with pytest.raises(ValueError, match="pin the model revision"):
        _serving(mode=LoadMode.RUNAI_STREAMER, cache=ModelCacheRef("b-1", "org/m", "main"))
    _serving(cache=ModelCacheRef("b-1", "org/m", "main"))  # local mode resolves branches at pull time


def test_compile_cache_is_keyed_by_shape_and_restored_before_start() -> None:
    shape = CompileCacheShape(gpu_type="NVIDIA L40S", tensor_parallel_size=2)
    patch = serving_pod_patch(_serving(compile_cache=shape))
    restore = next(c for c in patch.init_containers if c["name"] == "compile-cache-restore")
    assert restore["args"][restore["args"].index("--gpu") :][:2] == ["--gpu", "NVIDIA L40S"]
    assert {"name": "VLLM_CACHE_ROOT", "value": "/vllm-cache"} in patch.env
    assert not any(e["name"].startswith("MODELCACHE_") for e in patch.env)  # serving pods never upload
    assert (
        compile_cache_s3_key(CACHE, shape) == "dev/compile-cache/vllm-0.33.0/Qwen--Qwen3-8B/tp2/nvidia-l40s"
    )


def test_vllm_arguments_are_flags_vllm_0_33_knows() -> None:
    cases = {
        name: serving_pod_patch(_serving(**overrides)).model_args
        for name, overrides in SERVING_VARIANTS.items()
    }
    parsed = parse_with_vllm(cases)
    for name, result in parsed.items():
        assert result["ok"], (name, result["error"])
        assert result["values"]["load_format"] in {"auto", "runai_streamer"}
    assert {result["values"]["load_format"] for result in parsed.values()} == {"auto", "runai_streamer"}
