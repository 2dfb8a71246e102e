"""How one model revision's plan becomes model-cache wiring: its fill Job and its serving pods' cache patch,
built from the builders in `infra/kubernetes/model_cache.py`. `VllmService` calls these once per revision.
Pure: no Pulumi, table-tested in tests/kubernetes/test_serving_cache.py.

- GPU names as `nvidia-smi` prints them, for the torch.compile cache key (the serving pod restores and
  uploads under the same name, so the key only has to be stable; matching nvidia-smi lets a laptop user
  run `modelcache compile-cache ... --gpu "$(nvidia-smi --query-gpu=name --format=csv,noheader)"`).
- Disk sizes (the fill Job's scratch, the serving pod's local copy) and the fill Job's name and timeout.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from infra.kubernetes.model_cache import (
    INIT_RESOURCES,
    CachedAdapter,
    CompileCacheShape,
    FillJobArgs,
    LoadMode,
    Manifest,
    ModelCacheRef,
    Resources,
    SecretKeyRef,
    ServingCacheArgs,
    ServingPodPatch,
    VolumeKind,
    fill_job,
    serving_pod_patch,
)
from infra.modelcache.s3_source import cache_model_id
from infra.sizing.model_pull import PullSettings
from infra.sizing.plan import ServingPlan

GIB = 1024**3

# Catalog GPU name (infra/sizing/catalog/gpu_instances.yaml) -> the name nvidia-smi reports on that
# EC2 instance family. Not listed: "NVIDIA <catalog name>", which is what recent NVIDIA drivers print
# for the data-center parts (L4, L40S, H200, B200 follow that pattern).
NVIDIA_SMI_NAMES = {
    "T4": "Tesla T4",  # g4dn
    "A10G": "NVIDIA A10G",  # g5
    "L4": "NVIDIA L4",  # g6
    "L40S": "NVIDIA L40S",  # g6e
    "A100-40GB": "NVIDIA A100-SXM4-40GB",  # p4d
    "A100-80GB": "NVIDIA A100-SXM4-80GB",  # p4de
    "H100": "NVIDIA H100 80GB HBM3",  # p5
    "H200": "NVIDIA H200",  # p5e, p5en
    "B200": "NVIDIA B200",  # p6-b200
    "RTX-PRO-6000": "NVIDIA RTX PRO 6000 Blackwell Server Edition",  # g7e
}

# The Hub snapshot or the local copy holds the checkpoint (tokenizer, configs, sometimes a second format)
# next to the weights the planner counts; a fixed margin covers the small files and filesystem overhead.
DISK_HEADROOM = 1.15
DISK_MARGIN_GIB = 5
# A 16-bit checkpoint that vLLM quantizes to fp8 at load time is twice the weights the planner sizes.
LOAD_TIME_FP8_CHECKPOINT_FACTOR = 2

# The fill Job's await timeout for `pulumi up`: scheduling and pulling the serving image onto a node
# (the vLLM image is ~10 GB), then the Hub download and the S3 upload of every byte at a conservative
# Hub rate. Pulumi's default for a Job is 10 minutes, which an 8B model already exceeds.
FILL_STARTUP_SECONDS = 20 * 60
FILL_BYTES_PER_SECOND = 50 * 1024**2  # Hub download; the S3 upload inside AWS is faster
FILL_MAX_SECONDS = 6 * 3600  # the fill Job's activeDeadlineSeconds (FillJobArgs' default)

# The fill Job runs on the cluster's system nodes (it needs no GPU and does not tolerate the GPU taint):
# their disk holds the OS, the cluster's own images, the unpacked serving image (vLLM: ~20 GB) and the
# Job's scratch. The EKS default of 20 GiB holds none of that.
SYSTEM_NODE_BASE_DISK_GIB = 60
SYSTEM_NODE_DISK_STEP_GIB = 10

FILL_JOB_PREFIX = "model-cache-fill"
DNS_LABEL_MAX = 63
# Meta's repositories carry the weights twice: safetensors for vLLM and original/ consolidated .pth files.
FILL_EXCLUDE = ("original/*",)
# Fits a system node (m6i.large: 2 vCPU, 8 GiB) next to CoreDNS and Karpenter; CPU is requested, not
# limited, so the transfer uses whatever the node has idle.
FILL_RESOURCES = Resources(cpu="1", memory="3Gi")
TIMEOUT_ANNOTATION = "pulumi.com/timeoutSeconds"
REPLACE_UNREADY_ANNOTATION = "pulumi.com/replaceUnready"  # a failed fill is replaced on the next `up`


def nvidia_smi_name(gpu: str) -> str:
    """The name nvidia-smi gives a catalog GPU, e.g. L40S -> "NVIDIA L40S", T4 -> "Tesla T4"."""
    if not gpu.strip():
        raise ValueError("a GPU name is required")
    return NVIDIA_SMI_NAMES.get(gpu, f"NVIDIA {gpu}")


def checkpoint_bytes(weights_bytes: int, *, load_time_fp8: bool) -> int:
    """What the fill Job downloads and a serving node stores: the planner's weights of one replica, or
    twice that when the plan quantizes a 16-bit checkpoint to fp8 at load time."""
    if weights_bytes <= 0:
        raise ValueError("weights_bytes must be positive")
    return weights_bytes * (LOAD_TIME_FP8_CHECKPOINT_FACTOR if load_time_fp8 else 1)


def cache_disk_gib(checkpoint: int) -> int:
    """A disk (emptyDir sizeLimit, ephemeral-storage request) that holds one checkpoint with headroom."""
    return math.ceil(checkpoint * DISK_HEADROOM / GIB) + DISK_MARGIN_GIB


def system_node_disk_gib(checkpoint: int) -> int:
    """The root volume of a system node that can run the fill Job for a checkpoint of this size."""
    need = SYSTEM_NODE_BASE_DISK_GIB + cache_disk_gib(checkpoint)
    return math.ceil(need / SYSTEM_NODE_DISK_STEP_GIB) * SYSTEM_NODE_DISK_STEP_GIB


def fill_timeout_seconds(checkpoint: int) -> int:
    """How long `pulumi up` waits for the fill Job: start-up plus the download at a conservative rate
    and the upload at the same rate, capped at the Job's own deadline."""
    transfer = 2 * checkpoint / FILL_BYTES_PER_SECOND
    return min(FILL_MAX_SECONDS, FILL_STARTUP_SECONDS + math.ceil(transfer / 60) * 60)


def fill_job_name(model: str, revision: str) -> str:
    """The fill Job's name: a DNS label that changes with (model, revision), since a Job is immutable and a
    new revision needs a new Job. Readable model slug, plus a hash that tells revisions apart."""
    digest = hashlib.sha256(f"{model}@{revision}".encode()).hexdigest()[:10]
    slug = re.sub(r"[^a-z0-9]+", "-", model.rsplit("/", 1)[-1].lower()).strip("-")
    room = DNS_LABEL_MAX - len(FILL_JOB_PREFIX) - len(digest) - 2
    slug = slug[:room].strip("-")
    return "-".join(part for part in (FILL_JOB_PREFIX, slug, digest) if part)


@dataclass(frozen=True)
class AdapterCache:
    """A LoRA adapter's entry in the stack's cache: filled by its own Job, pulled next to the model."""

    name: str  # what clients send as the model
    model: str  # the entry's model id: the Hub repo id, or an S3 folder's (s3_source.cache_model_id)
    revision: str
    checkpoint_bytes: int  # at most what its fill downloads (the plan's fp32 bound)
    region: str | None = None
    source: str | None = None  # what the fill Job pushes when not `model`: s3://BUCKET/PREFIX

    def __post_init__(self) -> None:
        if self.checkpoint_bytes <= 0:
            raise ValueError("checkpoint_bytes must be positive")

    @staticmethod
    def from_source(
        name: str, source: str, revision: str, checkpoint_bytes: int, region: str | None
    ) -> AdapterCache:
        """An adapter from the Hub (org/name) or an S3 folder (s3://BUCKET/PREFIX)."""
        model = cache_model_id(source)
        return AdapterCache(
            name, model, revision, checkpoint_bytes, region, source if model != source else None
        )

    def ref(self, bucket: str) -> ModelCacheRef:
        return ModelCacheRef(bucket=bucket, model=self.model, revision=self.revision)

    @property
    def fill_job_name(self) -> str:
        return fill_job_name(self.model, self.revision)


@dataclass(frozen=True)
class RevisionCache:
    """One revision's entry in the stack's cache: what its fill Job pushes and its serving pods read."""

    model: str
    revision: str  # branch, tag or commit; runai_streamer needs a commit
    checkpoint_bytes: int  # what one fill downloads and one serving node stores
    gpu_type: str  # as nvidia-smi names it: part of the compile-cache key
    tensor_parallel_size: int = 1
    load_mode: LoadMode = LoadMode.LOCAL
    compile_cache: bool = True
    region: str | None = None
    adapters: tuple[AdapterCache, ...] = ()
    pull: PullSettings | None = None  # the serving pods' pull, sized for the node; None: the tool's defaults

    def __post_init__(self) -> None:
        if self.checkpoint_bytes <= 0 or self.tensor_parallel_size < 1:
            raise ValueError("checkpoint_bytes must be positive and tensor_parallel_size at least 1")
        if self.load_mode is LoadMode.RUNAI_STREAMER:
            self.ref("bucket").entry()  # refuses a streamed entry that is not a pinned commit

    @staticmethod
    def from_plan(
        plan: ServingPlan,
        *,
        revision: str,
        load_mode: LoadMode,
        compile_cache: bool,
        load_time_fp8: bool,
        region: str | None,
        adapters: Sequence[tuple[str, str, str]] = (),
        pull: PullSettings | None = None,
    ) -> RevisionCache:
        """The cache a plan needs: its model's size on disk, its compile-cache shape (TP, GPU type), and
        its LoRA adapters as (name, Hub id or s3:// folder, revision), each sized by the plan's bound for
        one adapter."""
        if adapters and plan.lora is None:
            raise ValueError("a plan without LoRA slots cannot serve adapters")
        adapter_bytes = plan.lora.adapter_bytes if plan.lora else 0
        return RevisionCache(
            model=plan.model,
            revision=revision,
            checkpoint_bytes=checkpoint_bytes(plan.weights_total_bytes, load_time_fp8=load_time_fp8),
            gpu_type=nvidia_smi_name(plan.gpu.name),
            tensor_parallel_size=plan.tensor_parallel_size,
            load_mode=load_mode,
            compile_cache=compile_cache,
            region=region,
            adapters=tuple(
                AdapterCache.from_source(name, source, rev, adapter_bytes, region)
                for name, source, rev in adapters
            ),
            pull=pull,
        )

    def ref(self, bucket: str) -> ModelCacheRef:
        return ModelCacheRef(bucket=bucket, model=self.model, revision=self.revision)

    @property
    def local_bytes(self) -> int:
        """What a serving node stores: the checkpoint when pulled (local mode), and every adapter."""
        model = self.checkpoint_bytes if self.load_mode is LoadMode.LOCAL else 0
        return model + sum(adapter.checkpoint_bytes for adapter in self.adapters)

    @property
    def fill_job_name(self) -> str:
        return fill_job_name(self.model, self.revision)


def revision_fill_job(
    cache: RevisionCache | AdapterCache,
    *,
    bucket: str,
    namespace: str,
    image: str,
    writer_service_account: str,
    hf_token_secret: SecretKeyRef | None,
    labels: Mapping[str, str],
) -> Manifest:
    """The Job that pushes the revision (or one of its adapters) from the Hub (or the adapter's S3
    folder) into the bucket, as the writer; `pulumi up` waits for it (annotations for the Kubernetes
    provider: a timeout sized for the download, and a failed Job is replaced on the next `up`)."""
    job = fill_job(
        FillJobArgs(
            name=cache.fill_job_name,
            namespace=namespace,
            image=image,
            cache=cache.ref(bucket),
            source=cache.source if isinstance(cache, AdapterCache) else None,
            service_account_name=writer_service_account,
            scratch_size_gib=cache_disk_gib(cache.checkpoint_bytes),
            hf_token_secret=hf_token_secret,
            region=cache.region,
            exclude=FILL_EXCLUDE,
            resources=FILL_RESOURCES,
            active_deadline_seconds=FILL_MAX_SECONDS,
            labels=labels,
        )
    )
    job["metadata"]["annotations"] = {
        TIMEOUT_ANNOTATION: str(fill_timeout_seconds(cache.checkpoint_bytes)),
        REPLACE_UNREADY_ANNOTATION: "true",
    }
    return job


def revision_cache_patch(
    cache: RevisionCache, *, bucket: str, image: str, reader_service_account: str
) -> ServingPodPatch:
    """What the revision's serving pods add to read the cache, as the reader. The model volume is an
    emptyDir: on the GPU pool's RAID0 NVMe when the instance has it (Karpenter's instanceStorePolicy puts
    kubelet there), else on the root volume the pool sizes for the model. A hostPath would survive pod
    restarts but is created root-owned, and the pull runs as uid 1000."""
    compile_cache = (
        CompileCacheShape(gpu_type=cache.gpu_type, tensor_parallel_size=cache.tensor_parallel_size)
        if cache.compile_cache
        else None
    )
    return serving_pod_patch(
        ServingCacheArgs(
            image=image,
            cache=cache.ref(bucket),
            service_account_name=reader_service_account,
            mode=cache.load_mode,
            volume=VolumeKind.EMPTY_DIR,
            volume_size_gib=cache_disk_gib(cache.local_bytes or cache.checkpoint_bytes),
            region=cache.region,
            compile_cache=compile_cache,
            adapters=tuple(CachedAdapter(a.name, a.ref(bucket)) for a in cache.adapters),
            **_pull_flags(cache.pull),
        )
    )


def _pull_flags(pull: PullSettings | None) -> dict[str, Any]:
    """ServingCacheArgs' pull fields for a sized pull: the tool's flags and room in the init container."""
    if pull is None:
        return {}
    return {
        "pull_concurrency": pull.connections,
        "pull_processes": pull.processes,
        "pull_chunk_size_mib": pull.range_mib,
        "init_resources": replace(INIT_RESOURCES, memory=f"{pull.memory_gib}Gi"),
    }
