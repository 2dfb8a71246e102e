"""Kubernetes objects of the model cache, as plain dicts (no Pulumi): the Job that fills the cache, and what
a serving pod needs to read it (init containers, volumes, vLLM arguments and environment).

Identities are by reference only: the fill Job runs as the cache's *writer* service account and serving
pods as its *reader* service account; EKS Pod Identity (infra/components/model_cache.py) gives each its
role, so no AWS key appears anywhere. The Hugging Face token reaches the fill Job only through a
Secret's key (`secretKeyRef`), never as a literal value or an argument.

Two ways for vLLM to get the weights (`LoadMode`):
- `local`: an init container pulls the entry onto node-local NVMe (an emptyDir, which Karpenter's RAID0
  instance-store policy puts on NVMe, or a hostPath that survives pod restarts on the node); vLLM then
  loads `--model <dir>` from local disk with HF_HUB_OFFLINE=1.
- `runai_streamer`: vLLM streams safetensors from `s3://` straight to GPU memory (`--load-format
  runai_streamer`); an init container only checks that the entry is complete (marker + manifest).
Which is faster is in docs/benchmarks.md ("local pull or runai_streamer").
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from infra import modelscope
from infra.modelcache.layout import CacheEntry, S3Location, compile_cache_key, is_commit_hash, model_slug
from infra.versions import VLLM_VERSION

Manifest = dict[str, Any]

CACHE_TOOL = ["modelcache"]  # images/serving/modelcache.sh: `python -m infra.modelcache`, isolated from vLLM
MODEL_VOLUME = "model-cache"
COMPILE_VOLUME = "vllm-compile-cache"
SCRATCH_VOLUME = "scratch"
TMP_VOLUME = "tmp"
COMPILE_CACHE_DIR = "/vllm-cache"  # VLLM_CACHE_ROOT; vLLM keeps torch_compile_cache/ below it
IMAGE_UID = 1000  # the non-root user of images/serving/Dockerfile


class LoadMode(StrEnum):
    LOCAL = "local"
    RUNAI_STREAMER = "runai_streamer"


class VolumeKind(StrEnum):
    EMPTY_DIR = "emptyDir"  # on NVMe when the node pool uses the RAID0 instance-store policy
    HOST_PATH = "hostPath"  # survives pod restarts on the node; the directory must be writable by uid 1000


@dataclass(frozen=True)
class SecretKeyRef:
    """A key of a Kubernetes Secret in the workload's namespace."""

    name: str
    key: str = "HF_TOKEN"


@dataclass(frozen=True)
class ModelCacheRef:
    """Which cache entry: the stack's bucket and prefix, model, and revision (branch, tag or commit)."""

    bucket: str
    model: str
    revision: str
    prefix: str = ""

    @property
    def root(self) -> S3Location:
        return S3Location(self.bucket, self.prefix.strip("/"))

    @property
    def root_uri(self) -> str:
        return self.root.uri

    def entry(self) -> CacheEntry:
        """The entry in S3; needs a pinned commit, because a branch resolves only at run time."""
        if not is_commit_hash(self.revision):
            raise ValueError(
                f"revision {self.revision!r} is not a 40-hex commit: pin the model revision to a commit "
                "for load mode runai_streamer (vLLM is pointed at the entry's S3 prefix directly)"
            )
        return CacheEntry(self.root, self.model, self.revision)


@dataclass(frozen=True)
class Resources:
    cpu: str
    memory: str
    ephemeral_storage: str | None = None

    def render(self) -> Manifest:
        requests = {"cpu": self.cpu, "memory": self.memory}
        if self.ephemeral_storage:
            requests["ephemeral-storage"] = self.ephemeral_storage
        # CPU is not limited (throttling only slows the transfer); memory is, to the request.
        return {"requests": requests, "limits": {"memory": self.memory}}


# What a cache-tool init container requests at the tool's defaults; a sized pull asks for more memory.
INIT_RESOURCES = Resources(cpu="2", memory="2Gi")


def container_security_context() -> Manifest:
    """Non-root, no capabilities, RuntimeDefault seccomp, read-only root: every container this program runs."""
    return {
        "runAsNonRoot": True,
        "runAsUser": IMAGE_UID,
        "runAsGroup": IMAGE_UID,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _tmp_volume() -> Manifest:
    return {"name": TMP_VOLUME, "emptyDir": {"sizeLimit": "1Gi"}}


def _env(name: str, value: str) -> Manifest:
    return {"name": name, "value": value}


# --- The fill Job -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FillJobArgs:
    """Inputs of the Job that pushes one model revision from the Hub into the stack's cache."""

    name: str
    namespace: str
    image: str  # the serving image (images/serving), which carries the cache tool
    cache: ModelCacheRef
    service_account_name: str  # the cache's writer identity (Pod Identity), by name
    scratch_size_gib: int  # the Hub snapshot lands here before upload: the model's size plus headroom
    hf_token_secret: SecretKeyRef | None = None  # None for public, ungated models
    region: str | None = None
    source: str | None = None  # what push downloads when not the cache's model: s3://BUCKET/PREFIX
    include: Sequence[str] = ()  # Hub file globs to take (default all), e.g. "*.safetensors"
    exclude: Sequence[str] = ()  # Hub file globs to skip, e.g. "original/*" (duplicate consolidated weights)
    resources: Resources = Resources(cpu="2", memory="4Gi")
    backoff_limit: int = 4  # a retry resumes: downloaded files and uploaded objects are kept
    active_deadline_seconds: int = 6 * 3600
    ttl_seconds_after_finished: int = 7 * 24 * 3600
    labels: Mapping[str, str] = field(default_factory=dict)
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: Sequence[Mapping[str, Any]] = ()

    def __post_init__(self) -> None:
        if self.scratch_size_gib < 1:
            raise ValueError("scratch_size_gib must be at least 1")
        if self.backoff_limit < 0 or self.active_deadline_seconds < 60:
            raise ValueError("backoff_limit must be >= 0 and active_deadline_seconds >= 60")


def fill_job(args: FillJobArgs) -> Manifest:
    """A batch/v1 Job running `push MODEL --revision REV --to s3://BUCKET/PREFIX` once; idempotent, so
    re-applying it (or a retry after a failure) skips a complete entry and resumes a partial one."""
    labels = {"app.kubernetes.io/component": "model-cache-fill", **args.labels}
    push_args = [
        "push", args.source or args.cache.model, "--revision", args.cache.revision, "--to", args.cache.root_uri,
        "--scratch", "/scratch/snapshots",
    ]  # fmt: skip
    for pattern in args.include:
        push_args += ["--include", pattern]
    for pattern in args.exclude:
        push_args += ["--exclude", pattern]
    env = [
        _env("HF_HOME", "/scratch/hf-home"),
        _env("HF_HUB_DISABLE_TELEMETRY", "1"),
        _env("PYTHONUNBUFFERED", "1"),
    ]
    if modelscope.is_modelscope(args.cache.model):
        # ModelScope's client keeps its cache and config under HOME, which is read-only here.
        env += [
            _env("MODELSCOPE_CACHE", "/scratch/modelscope"),
            _env("MODELSCOPE_HOME", "/scratch/modelscope"),
        ]
    if args.region:
        env.append(_env("AWS_REGION", args.region))
    if args.hf_token_secret is not None:
        env.append(
            {
                "name": "HF_TOKEN",
                "valueFrom": {
                    "secretKeyRef": {"name": args.hf_token_secret.name, "key": args.hf_token_secret.key}
                },
            }
        )
    pod_spec: Manifest = {
        "serviceAccountName": args.service_account_name,
        "restartPolicy": "Never",
        "securityContext": {"fsGroup": IMAGE_UID, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [
            {
                "name": "push",
                "image": args.image,
                "command": CACHE_TOOL,
                "args": push_args,
                "env": env,
                "resources": Resources(
                    args.resources.cpu, args.resources.memory, f"{args.scratch_size_gib}Gi"
                ).render(),
                "securityContext": container_security_context(),
                "volumeMounts": [
                    {"name": SCRATCH_VOLUME, "mountPath": "/scratch"},
                    {"name": TMP_VOLUME, "mountPath": "/tmp"},
                ],
            }
        ],
        "volumes": [
            {"name": SCRATCH_VOLUME, "emptyDir": {"sizeLimit": f"{args.scratch_size_gib}Gi"}},
            _tmp_volume(),
        ],
    }
    if args.node_selector:
        pod_spec["nodeSelector"] = dict(args.node_selector)
    if args.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in args.tolerations]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": args.name, "namespace": args.namespace, "labels": labels},
        "spec": {
            "backoffLimit": args.backoff_limit,
            "activeDeadlineSeconds": args.active_deadline_seconds,
            "ttlSecondsAfterFinished": args.ttl_seconds_after_finished,
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }


# --- The serving pod ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CompileCacheShape:
    """Restore vLLM's torch.compile cache for this shape before start. Serving pods never upload it: what
    they would write, every later pod of the shape would run; the cache's writer publishes it."""

    gpu_type: str  # e.g. "NVIDIA L40S", as nvidia-smi names it
    tensor_parallel_size: int = 1
    vllm_version: str = VLLM_VERSION


@dataclass(frozen=True)
class CachedAdapter:
    """A LoRA adapter served by `name`, pulled from its own cache entry next to the model."""

    name: str
    cache: ModelCacheRef


@dataclass(frozen=True)
class ServingCacheArgs:
    """How one serving pod gets its model from the cache."""

    image: str  # the serving image: carries the cache tool and vLLM
    cache: ModelCacheRef
    service_account_name: str  # the cache's reader identity (Pod Identity), by name
    mode: LoadMode = LoadMode.LOCAL
    volume: VolumeKind = VolumeKind.EMPTY_DIR
    volume_size_gib: int = 100  # emptyDir sizeLimit: model size plus headroom
    host_path: str = "/mnt/model-cache"  # with VolumeKind.HOST_PATH
    mount_path: str = "/models"
    region: str | None = None
    # None: the cache tool's own defaults, tuned per CPU count on the benchmark (docs/benchmarks.md); the
    # program sizes them for the node's link (infra/sizing/model_pull.py)
    pull_concurrency: int | None = None
    pull_chunk_size_mib: int | None = None
    pull_processes: int | None = None
    runai_concurrency: int = 16  # Run:ai streamer's parallel S3 reads per file
    compile_cache: CompileCacheShape | None = None
    init_resources: Resources = INIT_RESOURCES
    adapters: tuple[CachedAdapter, ...] = ()  # always pulled onto the volume, whatever the mode

    def __post_init__(self) -> None:
        if self.mode is LoadMode.RUNAI_STREAMER:
            self.cache.entry()  # raises with the reason unless the revision is a pinned commit
        if not self.mount_path.startswith("/") or self.volume_size_gib < 1:
            raise ValueError("mount_path must be absolute and volume_size_gib at least 1")

    @property
    def model_dir(self) -> str:
        """Where the local-mode pull puts the model (and vLLM's --model points)."""
        return self.entry_dir(self.cache)

    def entry_dir(self, cache: ModelCacheRef) -> str:
        """Where a pull puts one cache entry (the model's, or an adapter's) on the model volume."""
        return f"{self.mount_path}/{model_slug(cache.model)}/{cache.revision}"

    @property
    def local_volume(self) -> bool:
        """Whether the pod needs the model volume: the local pull, or adapters to pull."""
        return self.mode is LoadMode.LOCAL or bool(self.adapters)


@dataclass(frozen=True)
class ServingPodPatch:
    """What the serving workload adds to its pod spec and its vLLM container.

    pod spec: `serviceAccountName`, `initContainers` (before any of its own), `volumes`.
    vLLM container: `volume_mounts`, `env`, and `model_args` (where `vllm serve` loads the model from;
    `infra.vllm.args.serve_args` puts them first).
    """

    service_account_name: str
    init_containers: list[Manifest]
    volumes: list[Manifest]
    volume_mounts: list[Manifest]
    env: list[Manifest]
    model_args: list[str]


def _region_env(region: str | None) -> list[Manifest]:
    return [_env("AWS_REGION", region)] if region else []


def model_volume(args: ServingCacheArgs) -> Manifest:
    if args.volume is VolumeKind.HOST_PATH:
        return {"name": MODEL_VOLUME, "hostPath": {"path": args.host_path, "type": "DirectoryOrCreate"}}
    return {"name": MODEL_VOLUME, "emptyDir": {"sizeLimit": f"{args.volume_size_gib}Gi"}}


def _pull_args(args: ServingCacheArgs, cache: ModelCacheRef) -> list[str]:
    tool_args = [
        "pull", "--from", cache.root_uri, "--model", cache.model, "--revision", cache.revision,
        "--to", args.entry_dir(cache),
    ]  # fmt: skip
    if args.pull_concurrency is not None:
        tool_args += ["--concurrency", str(args.pull_concurrency)]
    if args.pull_chunk_size_mib is not None:
        tool_args += ["--chunk-size-mib", str(args.pull_chunk_size_mib)]
    if args.pull_processes is not None:
        tool_args += ["--processes", str(args.pull_processes)]
    if args.volume is VolumeKind.EMPTY_DIR:
        # An emptyDir dies with the pod, so a node crash cannot leave a torn file for a later pull to
        # trust; fsync would only wait for the disk.
        tool_args.append("--no-fsync")
    else:
        # A hostPath outlives the node's page cache. Without fsync the pull after a reboot would read
        # the whole checkpoint back to check it; flushing as it goes is cheaper on NVMe.
        tool_args.append("--fsync")
    return tool_args


def _cache_tool_container(
    args: ServingCacheArgs, name: str, tool_args: list[str], mounts: list[Manifest]
) -> Manifest:
    return {
        "name": name,
        "image": args.image,
        "command": CACHE_TOOL,
        "args": tool_args,
        "env": [_env("PYTHONUNBUFFERED", "1"), *_region_env(args.region)],
        "resources": args.init_resources.render(),
        "securityContext": container_security_context(),
        "volumeMounts": [*mounts, {"name": TMP_VOLUME, "mountPath": "/tmp"}],
    }


def model_pull_init_container(args: ServingCacheArgs) -> Manifest:
    """local mode: pull the entry onto the node; runai_streamer mode: only refuse an incomplete entry."""
    if args.mode is LoadMode.LOCAL:
        volume = [{"name": MODEL_VOLUME, "mountPath": args.mount_path}]
        return _cache_tool_container(args, "model-pull", _pull_args(args, args.cache), volume)
    return _cache_tool_container(args, "model-check", ["verify", "--from", args.cache.entry().uri], [])


def adapter_pull_init_containers(args: ServingCacheArgs) -> list[Manifest]:
    """One verified pull per LoRA adapter, onto the model volume next to the weights (numbered: adapter
    names need not be DNS labels)."""
    volume = [{"name": MODEL_VOLUME, "mountPath": args.mount_path}]
    return [
        _cache_tool_container(args, f"lora-pull-{index}", _pull_args(args, adapter.cache), volume)
        for index, adapter in enumerate(args.adapters)
    ]


def lora_module_args(args: ServingCacheArgs) -> list[str]:
    """vLLM's `--lora-modules name=path ...` for the pulled adapters (none without adapters)."""
    if not args.adapters:
        return []
    return ["--lora-modules", *(f"{a.name}={args.entry_dir(a.cache)}" for a in args.adapters)]


def compile_cache_init_container(args: ServingCacheArgs) -> Manifest | None:
    shape = args.compile_cache
    if shape is None:
        return None
    tool_args = [
        "compile-cache", "pull", "--from", args.cache.root_uri, "--dir", f"{COMPILE_CACHE_DIR}/torch_compile_cache",
        "--model", args.cache.model, "--gpu", shape.gpu_type,
        "--tensor-parallel-size", str(shape.tensor_parallel_size), "--vllm-version", shape.vllm_version,
    ]  # fmt: skip
    return {
        "name": "compile-cache-restore",
        "image": args.image,
        "command": CACHE_TOOL,
        "args": tool_args,
        "env": [_env("PYTHONUNBUFFERED", "1"), *_region_env(args.region)],
        "resources": Resources(cpu="1", memory="1Gi").render(),
        "securityContext": container_security_context(),
        "volumeMounts": [
            {"name": COMPILE_VOLUME, "mountPath": COMPILE_CACHE_DIR},
            {"name": TMP_VOLUME, "mountPath": "/tmp"},
        ],
    }


def vllm_load_settings(args: ServingCacheArgs) -> tuple[list[str], list[Manifest]]:
    """(vLLM arguments, environment) that make vLLM read the cache and never the Hub."""
    env = [_env("HF_HUB_OFFLINE", "1"), *_region_env(args.region)]
    if args.mode is LoadMode.LOCAL:
        vllm_args = ["--model", args.model_dir]
    else:
        vllm_args = [
            "--model", args.cache.entry().files_uri, "--load-format", "runai_streamer",
            "--model-loader-extra-config", json.dumps({"concurrency": args.runai_concurrency}),
        ]  # fmt: skip
    if args.compile_cache is not None:
        env.append(_env("VLLM_CACHE_ROOT", COMPILE_CACHE_DIR))
    return [*vllm_args, *lora_module_args(args)], env


def serving_pod_patch(args: ServingCacheArgs) -> ServingPodPatch:
    """Everything a serving pod needs from the cache, for the workload builder to merge in."""
    init_containers = [model_pull_init_container(args), *adapter_pull_init_containers(args)]
    volumes = [_tmp_volume()]
    mounts: list[Manifest] = []
    if args.local_volume:
        volumes.append(model_volume(args))
        mounts.append({"name": MODEL_VOLUME, "mountPath": args.mount_path, "readOnly": True})
    compile_init = compile_cache_init_container(args)
    if compile_init is not None:
        init_containers.append(compile_init)
        volumes.append({"name": COMPILE_VOLUME, "emptyDir": {"sizeLimit": "20Gi"}})
        mounts.append({"name": COMPILE_VOLUME, "mountPath": COMPILE_CACHE_DIR})
    vllm_args, env = vllm_load_settings(args)
    return ServingPodPatch(
        service_account_name=args.service_account_name,
        init_containers=init_containers,
        volumes=volumes,
        volume_mounts=mounts,
        env=env,
        model_args=vllm_args,
    )


def compile_cache_s3_key(cache: ModelCacheRef, shape: CompileCacheShape) -> str:
    """The S3 prefix of this shape's compile cache (for IAM scoping and docs)."""
    return cache.root.key(
        compile_cache_key(shape.vllm_version, cache.model, shape.tensor_parallel_size, shape.gpu_type)
    )
