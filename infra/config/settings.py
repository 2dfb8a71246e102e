"""The stack's settings: the only code that reads `pulumi.Config`.

`Pulumi.yaml` declares every key once (type, description, default, secret); this module turns the raw values
into one frozen, validated `StackSettings` and raises `UserError` naming the key for any bad or
contradictory value.

The unit that flows through the program is a model revision (`Revision`): model id, Hub revision, planner
inputs, traffic weight and extra vLLM arguments. A stack lists them under `revisions`; every key a revision
leaves out takes the stack-level key of the same name, so a stack without `revisions` serves one revision,
`primary`, made of the stack-level keys (the one-revision shorthand).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Annotated, Any, Literal

import pulumi
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SkipValidation,
    ValidationError,
    field_validator,
    model_validator,
)

from infra import modelscope
from infra.aws_regions import region_problem
from infra.config.schema import PROJECT, did_you_mean, load_schema
from infra.errors import UserError
from infra.modelcache.layout import validate_revision
from infra.modelcache.s3_source import is_s3_source, parse_s3_source
from infra.observability.autoscaling import ScalingThresholds
from infra.observability.charts import PrometheusStorage
from infra.observability.rules import AlertThresholds
from infra.sizing.memory import (
    CHECKPOINT_QUANTIZATION,
    DTYPE_CHOICES,
    KV_CACHE_DTYPE_BYTES,
    ONLINE_QUANTIZATION,
)
from infra.sizing.models import is_repo_id
from infra.versions import KUBERNETES_VERSIONS

# Tags Karpenter's EC2NodeClass refuses (it sets them itself); the stack's tags go on the GPU nodes too.
KARPENTER_RESERVED_TAGS = (
    "eks:eks-cluster-name",
    "karpenter.sh/nodepool",
    "karpenter.sh/nodeclaim",
    "karpenter.k8s.aws/ec2nodeclass",
)
# The planner's own lists: config accepts exactly what the planner can size.
DTYPES = tuple(DTYPE_CHOICES)
QUANTIZATIONS = ("", *sorted(CHECKPOINT_QUANTIZATION | set(ONLINE_QUANTIZATION)))
KV_CACHE_DTYPES = tuple(KV_CACHE_DTYPE_BYTES)
PRIMARY_REVISION = "primary"  # the revision a stack without `revisions` serves
TOTAL_WEIGHT = 100
MAX_OFFLOAD_GIB = 4096  # a sanity bound: the planner checks the instance's real host memory

_EKS_NAME = re.compile(r"^[0-9A-Za-z][A-Za-z0-9_-]{0,99}$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_REVISION_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,18}[a-z0-9])?$")
_MODEL = re.compile(r"^[^\s]+$")
_ADAPTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_CIDR = re.compile(r"^\d{1,3}(\.\d{1,3}){3}/\d{1,2}$")
_CERTIFICATE_ARN = re.compile(r"^arn:aws[a-z-]*:acm:[a-z0-9-]+:\d{12}:certificate/[0-9a-f-]+$")
# A KMS key by its ARN (not an alias: IAM grants on an alias ARN do not cover the key's use).
_KMS_KEY_ARN = re.compile(r"^arn:aws[a-z-]*:kms:(?P<region>[a-z0-9-]+):\d{12}:key/[0-9a-zA-Z-]+$")
# An image reference as Docker parses it: [registry[:port]/]path[:tag][@sha256:digest].
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE_REFERENCE = re.compile(
    rf"^(?:[A-Za-z0-9.-]+(?::[0-9]+)?/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?(?:@(?P<digest>sha256:[a-f0-9]{64}))?$"
)


def image_reference_problem(reference: str) -> str | None:
    """Why an image reference is not pinned (None when it names a tag other than latest, or a digest)."""
    match = _IMAGE_REFERENCE.match(reference)
    if not match:
        return "is not an image reference such as REGISTRY/REPO:TAG or REPO@sha256:DIGEST"
    if match["digest"]:
        return None
    if not match["tag"]:
        return "names no tag or digest; pin one (a floating image changes under running pods)"
    if match["tag"] == "latest":
        return "uses the floating tag latest; pin a version tag or a digest"
    return None


def _one_of(value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"must be one of {', '.join(repr(c) for c in choices)}, got {value!r}")
    return value


def _names(value: Any) -> Any:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError(f"must be a list of non-empty names, got {value!r}")
    if len(set(value)) != len(value):
        raise ValueError(f"lists a name twice: {value!r}")
    return tuple(value)


def _model_id(value: str) -> str:
    if not _MODEL.match(value):
        raise ValueError(f"{value!r} is not a model id (org/name) or a path: no spaces")
    return value


def _matching(pattern: re.Pattern[str], what: str) -> AfterValidator:
    """A value that must match `pattern`; the error says it is not `what`."""

    def check(value: str) -> str:
        if not pattern.match(value):
            raise ValueError(f"{value!r} is not {what}")
        return value

    return AfterValidator(check)


def _entries(value: Any) -> Any:
    if not isinstance(value, list | tuple):
        raise ValueError(f"must be a list of {{name, source, revision}} entries, got {value!r}")
    return tuple(value)


def _arg_list(value: Any) -> Any:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"must be a list of vLLM arguments as strings, got {value!r}")
    return tuple(value)


def _offload_gib(value: Any) -> Any:
    # The YAML number as vLLM reads --cpu-offload-gb (a float); 0 means no offload.
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= MAX_OFFLOAD_GIB:
        raise ValueError(
            f"must be a number of GiB per GPU from 0 (no offload) to {MAX_OFFLOAD_GIB}, got {value!r}"
        )
    return float(value)


# Value types shared by the stack-level keys and a revision's overrides of them.
ModelId = Annotated[str, AfterValidator(_model_id)]
Dtype = Annotated[str, AfterValidator(lambda value: _one_of(value, DTYPES))]
QuantizationMethod = Annotated[str, AfterValidator(lambda value: _one_of(value, QUANTIZATIONS))]
KvCacheDtype = Annotated[str, AfterValidator(lambda value: _one_of(value, KV_CACHE_DTYPES))]
KubernetesVersion = Annotated[str, AfterValidator(lambda value: _one_of(value, KUBERNETES_VERSIONS))]
Names = Annotated[tuple[str, ...], BeforeValidator(_names)]
OffloadGib = Annotated[float, BeforeValidator(_offload_gib)]
VllmArgs = Annotated[tuple[str, ...], BeforeValidator(_arg_list)]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True, strict=True)


class LoraAdapter(_Strict):
    """One LoRA adapter a revision serves by name, cached and pulled like the model."""

    name: Annotated[
        str,
        _matching(
            _ADAPTER_NAME,
            "an adapter name: letters, digits, '.', '_' and '-', at most 64 (clients send it as the model)",
        ),
    ]
    source: str
    revision: str = "main"

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        if is_s3_source(value):
            try:
                parse_s3_source(value, key="source")
            except UserError as error:
                raise ValueError(str(error).removeprefix("source: ")) from None
            return value
        if not is_repo_id(value):
            raise ValueError(
                f"{value!r} is neither a Hugging Face repo id (org/name) nor an S3 folder "
                "(s3://BUCKET/PREFIX); the fill Job pushes adapters from there into the model cache"
            )
        return value

    @field_validator("revision")
    @classmethod
    def _revision(cls, value: str) -> str:
        try:
            return validate_revision(value)
        except UserError:
            raise ValueError(f"{value!r} is not a branch, tag or commit") from None


LoraAdapters = Annotated[tuple[LoraAdapter, ...], BeforeValidator(_entries)]


def adapters_problem(adapters: tuple[LoraAdapter, ...], served_name: str) -> str | None:
    """Why a revision's adapters cannot be served side by side: a name twice, or the model's own name."""
    names = [adapter.name for adapter in adapters]
    for index, name in enumerate(names):
        if names.index(name) != index:
            return f"[{index}].name: {name!r} names two adapters; clients pick an adapter by its name"
        if name == served_name:
            return f"[{index}].name: {name!r} is the model's own served name; give the adapter another"
    return None


class ReplicaRange(_Strict):
    """Serving replicas. `min` 0 lets the GPU pool scale to zero."""

    min: int = Field(ge=0, le=100)
    max: int = Field(ge=1, le=100)

    @model_validator(mode="after")
    def _ordered(self) -> ReplicaRange:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")
        return self


class ClusterSettings(_Strict):
    """A new EKS cluster, or an existing one by name (optionally reached through a kubeconfig file)."""

    mode: Literal["new", "existing"]
    name: str | None = Field(default=None, description="EKS cluster name")
    kubeconfig: str | None = Field(default=None, description="path to a kubeconfig file (existing only)")
    node_role: str | None = Field(
        default=None, alias="nodeRole", description="IAM role of Karpenter's nodes (existing only)"
    )
    # The EKS API endpoint of a new cluster: private by default, public only to the listed networks.
    public_access_cidrs: tuple[str, ...] = Field(default=(), alias="publicAccessCidrs")
    private_access: bool = Field(default=True, alias="privateAccess")

    @field_validator("public_access_cidrs", mode="before")
    @classmethod
    def _cidrs(cls, value: Any) -> Any:
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"must be a list of IPv4 CIDRs such as 203.0.113.7/32, got {value!r}")
        return tuple(value)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and not _EKS_NAME.match(value):
            raise ValueError(f"{value!r} is not an EKS cluster name (letters, digits, - and _, at most 100)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ClusterSettings:
        if self.mode == "existing" and not self.name:
            raise ValueError(
                "mode existing needs the cluster's name: {mode: existing, name: NAME[, kubeconfig: PATH]}"
            )
        if self.mode == "new" and (self.kubeconfig or self.node_role):
            raise ValueError(
                "kubeconfig and nodeRole apply only to mode existing; a new cluster makes its own"
            )
        if self.mode == "existing" and (self.public_access_cidrs or not self.private_access):
            raise ValueError(
                "publicAccessCidrs and privateAccess apply only to mode new; an existing cluster keeps its "
                "own endpoint settings"
            )
        return self


class EndpointSettings(_Strict):
    """The stack's one OpenAI-compatible endpoint (an ALB): internal unless the stack says otherwise."""

    scheme: Literal["internal", "internet-facing"] = "internal"
    certificate_arn: str | None = Field(default=None, alias="certificateArn")
    allowed_cidrs: tuple[str, ...] = Field(default=(), alias="allowedCidrs")

    @field_validator("allowed_cidrs", mode="before")
    @classmethod
    def _cidrs(cls, value: Any) -> Any:
        if not isinstance(value, list | tuple) or not all(
            isinstance(v, str) and _CIDR.match(v) for v in value
        ):
            raise ValueError(f"must be a list of IPv4 CIDRs such as 203.0.113.0/24, got {value!r}")
        return tuple(value)

    @field_validator("certificate_arn")
    @classmethod
    def _certificate(cls, value: str | None) -> str | None:
        if value is not None and not _CERTIFICATE_ARN.match(value):
            raise ValueError(
                f"{value!r} is not an ACM certificate ARN (arn:aws:acm:REGION:ACCOUNT:certificate/ID)"
            )
        return value

    @model_validator(mode="after")
    def _public_needs_tls_and_sources(self) -> EndpointSettings:
        if self.scheme == "internet-facing":
            if not self.certificate_arn:
                raise ValueError(
                    "certificateArn: an internet-facing endpoint serves HTTPS only; name the ACM certificate "
                    "of its DNS name ({scheme: internet-facing, certificateArn: arn:aws:acm:...})"
                )
            if not self.allowed_cidrs:
                raise ValueError(
                    "allowedCidrs: list the client networks an internet-facing endpoint admits (0.0.0.0/0 "
                    "admits everyone; the API key is then the only guard)"
                )
        elif self.certificate_arn or self.allowed_cidrs:
            raise ValueError(
                "scheme: certificateArn and allowedCidrs apply to an internet-facing endpoint; an internal "
                "one is reachable only inside the VPC"
            )
        return self


# --- monitoring and autoscaling (issue 9) ---------------------------------------------------------------------


@contextmanager
def _config_keys(keys: Mapping[str, str]) -> Iterator[None]:
    """A builder's UserError inside becomes a validation error naming the config key (`storageGiB: ...`)."""
    try:
        yield
    except UserError as error:
        message = str(error).removeprefix(f"{error.key}: ")
        raise ValueError(f"{keys.get(error.key or '', error.key)}: {message}") from None


class MonitoringSettings(_Strict):
    """Prometheus' retention and volume, and the TTFT SLO its alert holds the revisions to."""

    retention: str
    storage_gib: int = Field(alias="storageGiB")
    ttft_p95_slo_seconds: float = Field(alias="ttftP95SloSeconds")
    storage_class: str | None = Field(default=None, alias="storageClass")

    @model_validator(mode="after")
    def _checked_by_the_builders(self) -> MonitoringSettings:
        with _config_keys({"ttft_p95_slo_seconds": "ttftP95SloSeconds"}):  # the others name theirs
            self.storage()
            self.alert_thresholds()
        return self

    def storage(self, cluster_storage_class: str | None = None) -> PrometheusStorage:
        """`cluster_storage_class`: the class the program made on a new cluster; a stack's own wins."""
        return PrometheusStorage(
            retention=self.retention,
            storage_gib=self.storage_gib,
            storage_class=self.storage_class or cluster_storage_class,
        )

    def alert_thresholds(self) -> AlertThresholds:
        return AlertThresholds(ttft_p95_slo_seconds=self.ttft_p95_slo_seconds)


class AutoscalingSettings(_Strict):
    """What makes KEDA add a replica: queue per replica, KV-cache usage, optionally GPU utilization."""

    waiting_per_replica: float = Field(alias="waitingPerReplica")
    kv_cache_usage: float = Field(alias="kvCacheUsage")
    gpu_utilization_percent: float = Field(alias="gpuUtilizationPercent", ge=0)

    @model_validator(mode="after")
    def _checked_by_the_builders(self) -> AutoscalingSettings:
        keys = {
            "waiting_per_replica": "waitingPerReplica",
            "kv_cache_usage": "kvCacheUsage",
            "gpu_utilization_percent": "gpuUtilizationPercent",
        }
        with _config_keys(keys):
            self.thresholds()
        return self

    def thresholds(self) -> ScalingThresholds:
        if self.gpu_utilization_percent == 0:  # 0 turns the GPU trigger off
            return ScalingThresholds(
                waiting_per_replica=self.waiting_per_replica, kv_cache_usage=self.kv_cache_usage
            )
        return ScalingThresholds(
            waiting_per_replica=self.waiting_per_replica,
            kv_cache_usage=self.kv_cache_usage,
            gpu_utilization=True,
            gpu_utilization_percent=self.gpu_utilization_percent,
        )


# Object keys whose Pulumi.yaml default is a map: a stack that sets some of its keys keeps the defaults of
# the others (Pulumi itself replaces the whole object).
MERGED_OBJECT_KEYS = ("monitoring", "autoscaling")


class ModelCacheSettings(_Strict):
    """The model-cache bucket's encryption at rest: SSE-S3, or SSE-KMS with a created or given key."""

    encryption: Literal["s3", "kms"] = "s3"
    kms_key_arn: str | None = Field(default=None, alias="kmsKeyArn")

    @field_validator("kms_key_arn")
    @classmethod
    def _key_arn(cls, value: str | None) -> str | None:
        if value is not None and not _KMS_KEY_ARN.match(value):
            raise ValueError(
                f"{value!r} is not a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID; an alias will not do, "
                "the identities' grants name the key)"
            )
        return value

    @model_validator(mode="after")
    def _key_needs_kms(self) -> ModelCacheSettings:
        if self.kms_key_arn and self.encryption != "kms":
            raise ValueError(
                "kmsKeyArn: a key applies only to {encryption: kms, kmsKeyArn: ARN}; with encryption s3 the "
                "bucket uses SSE-S3"
            )
        return self

    @property
    def kms_key_region(self) -> str | None:
        match = _KMS_KEY_ARN.match(self.kms_key_arn or "")
        return match["region"] if match else None


class RevisionOverrides(_Strict):
    """One entry of `revisions`: every key left out takes the stack-level key of the same name."""

    name: Annotated[
        str,
        _matching(
            _REVISION_NAME,
            "a revision name: lowercase letters, digits and -, starting with a letter, at most 20 characters "
            "(it names the revision's Deployment, Service and GPU pool)",
        ),
    ]
    weight: int = Field(ge=0, le=TOTAL_WEIGHT)
    model: ModelId | None = None
    model_revision: str | None = Field(default=None, alias="modelRevision", min_length=1)
    served_model_name: str | None = Field(default=None, alias="servedModelName")
    extra_args: VllmArgs | None = Field(default=None, alias="extraArgs")
    lora_adapters: LoraAdapters | None = Field(default=None, alias="loraAdapters")
    max_model_len: int | None = Field(default=None, alias="maxModelLen", ge=0, le=10_000_000)
    concurrency: int | None = Field(default=None, ge=1, le=4096)
    dtype: Dtype | None = None
    quantization: QuantizationMethod | None = None
    kv_cache_dtype: KvCacheDtype | None = Field(default=None, alias="kvCacheDtype")
    cpu_offload_gb: OffloadGib | None = Field(default=None, alias="cpuOffloadGb")
    gpus: Names | None = None
    instance_types: Names | None = Field(default=None, alias="instanceTypes")
    replicas: ReplicaRange | None = None


class Revision(BaseModel):
    """A model revision with every key resolved: what gets its own plan, cache entry, workload and weight."""

    model_config = ConfigDict(frozen=True)

    name: str
    index: int | None  # its position in `revisions` (None for the shorthand), for error keys
    weight: int
    model: str
    model_revision: str
    served_model_name: str  # empty: the model id
    extra_args: tuple[str, ...]
    lora_adapters: tuple[LoraAdapter, ...]
    max_model_len: int
    concurrency: int
    dtype: str
    quantization: str
    kv_cache_dtype: str
    cpu_offload_gb: (
        float  # GiB of weights per GPU in host memory (`--cpu-offload-gb`); 0: the planner decides
    )
    gpus: tuple[str, ...]
    instance_types: tuple[str, ...]
    replicas: ReplicaRange

    @property
    def served_name(self) -> str:
        """What clients send: servedModelName, else the model id (a ModelScope id without its prefix)."""
        return self.served_model_name or modelscope.repo_id(self.model)

    def key(self, name: str) -> str:
        """The config key a stack author changes for this revision's `name` (camelCase)."""
        return name if self.index is None else f"revisions[{self.index}].{name}"


# Revision fields a stack-level key supplies when the revision leaves them out.
INHERITED = (
    "model", "model_revision", "served_model_name", "extra_args", "lora_adapters", "max_model_len", "concurrency",
    "dtype", "quantization", "kv_cache_dtype", "cpu_offload_gb", "gpus", "instance_types", "replicas",
)  # fmt: skip


class StackSettings(BaseModel):
    """Everything the program needs from the stack config, validated. Field aliases are the config keys."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", populate_by_name=True, arbitrary_types_allowed=True
    )

    project: str = PROJECT
    stack: str
    model: ModelId = Field(alias="model", min_length=1)
    model_revision: str = Field(alias="modelRevision", min_length=1)
    served_model_name: str = Field(alias="servedModelName")
    extra_args: VllmArgs = Field(alias="extraArgs")
    lora_adapters: LoraAdapters = Field(alias="loraAdapters")
    max_model_len: int = Field(alias="maxModelLen", ge=0, le=10_000_000, strict=True)
    concurrency: int = Field(alias="concurrency", ge=1, le=4096, strict=True)
    dtype: Dtype = Field(alias="dtype")
    quantization: QuantizationMethod = Field(alias="quantization")
    kv_cache_dtype: KvCacheDtype = Field(alias="kvCacheDtype")
    cpu_offload_gb: OffloadGib = Field(alias="cpuOffloadGb")
    gpus: Names = Field(alias="gpus")
    instance_types: Names = Field(alias="instanceTypes")
    capacity_type: Literal["spot", "on-demand"] = Field(alias="capacityType")
    replicas: ReplicaRange = Field(alias="replicas")
    revision_overrides: tuple[RevisionOverrides, ...] = Field(alias="revisions")
    max_cost_per_hour: float = Field(alias="maxCostPerHour", ge=0)
    cluster: ClusterSettings = Field(alias="cluster")
    endpoint: EndpointSettings = Field(alias="endpoint")
    kubernetes_version: KubernetesVersion = Field(alias="kubernetesVersion")
    region: str = Field(alias="region")
    namespace: str = Field(alias="namespace")
    extra_tags: dict[str, str] = Field(alias="tags")
    serving_image: str = Field(alias="servingImage")
    model_load_mode: Literal["local", "runai_streamer"] = Field(alias="modelLoadMode")
    compile_cache: bool = Field(alias="compileCache", strict=True)
    monitoring: MonitoringSettings = Field(alias="monitoring")
    autoscaling: AutoscalingSettings = Field(alias="autoscaling")
    model_cache: ModelCacheSettings = Field(alias="modelCache")
    # Secrets stay Pulumi secrets (Outputs); only whether they are set decides the program's shape.
    hf_token: SkipValidation[pulumi.Output[str] | None] = Field(default=None, repr=False, exclude=True)
    api_key: SkipValidation[pulumi.Output[str] | None] = Field(default=None, repr=False, exclude=True)

    @field_validator("revision_overrides", mode="before")
    @classmethod
    def _revision_list(cls, value: Any) -> Any:
        if not isinstance(value, list | tuple):
            raise ValueError(f"must be a list of revisions ({{name, weight, ...}}), got {value!r}")
        return tuple(value)

    @field_validator("max_cost_per_hour", mode="before")
    @classmethod
    def _number(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"must be a number of USD per hour, got {value!r}")
        return float(value)

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        problem = region_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        if not _DNS_LABEL.match(value):
            raise ValueError(f"{value!r} is not a Kubernetes namespace name (lowercase DNS label)")
        return value

    @field_validator("extra_tags", mode="before")
    @classmethod
    def _tags(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            raise ValueError(f"must be a map of string to string, got {value!r}")
        for tag, tag_value in value.items():
            if not isinstance(tag, str) or not isinstance(tag_value, str):
                raise ValueError(f"must map strings to strings; {tag!r}: {tag_value!r} is not")
            if tag.lower().startswith("aws:") or not 0 < len(tag) <= 128 or len(tag_value) > 256:
                raise ValueError(f"{tag!r} is not a valid AWS tag key (1-128 chars, not aws:)")
            if tag in KARPENTER_RESERVED_TAGS or tag.startswith("kubernetes.io/cluster"):
                raise ValueError(f"{tag!r} is a tag Karpenter sets on its nodes; choose another key")
        return value

    @field_validator("serving_image")
    @classmethod
    def _serving_image(cls, value: str) -> str:
        problem = image_reference_problem(value) if value else None
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> StackSettings:
        key_region = self.model_cache.kms_key_region
        if key_region and key_region != self.region:
            raise ValueError(
                f"modelCache.kmsKeyArn: the key is in {key_region} but the bucket in {self.region}; S3 encrypts "
                "only with a key of its own region"
            )
        revisions = self.revisions
        names = [r.name for r in revisions]
        for index, name in enumerate(names):
            if names.index(name) != index:
                raise ValueError(f"revisions[{index}].name: {name!r} names two revisions; names must differ")
        total = sum(r.weight for r in revisions)
        if total != TOTAL_WEIGHT:
            weights = ", ".join(f"{r.name}={r.weight}" for r in revisions)
            raise ValueError(
                f"revisions: traffic weights must sum to {TOTAL_WEIGHT}, got {total} ({weights}); a revision "
                "with weight 0 keeps running without traffic"
            )
        serving = [r for r in revisions if r.weight > 0]
        for revision in serving[1:]:
            if revision.served_name != serving[0].served_name:
                raise ValueError(
                    f"{revision.key('servedModelName')}: {revision.served_name!r} differs from "
                    f"{serving[0].served_name!r} of revision {serving[0].name!r}; revisions that share "
                    "traffic are one endpoint and must serve one model name (set servedModelName on both)"
                )
            adapters = [a.name for a in revision.lora_adapters]
            if adapters != [a.name for a in serving[0].lora_adapters]:
                raise ValueError(
                    f"{revision.key('loraAdapters')}: serves LoRA adapters {adapters}, revision "
                    f"{serving[0].name!r} {[a.name for a in serving[0].lora_adapters]}; revisions that share "
                    "traffic must serve the same adapter names, or a request for one fails on the other"
                )
        for revision in revisions:
            problem = adapters_problem(revision.lora_adapters, revision.served_name)
            if problem:
                raise ValueError(f"{revision.key('loraAdapters')}{problem}")
            if revision.quantization == "fp8" and revision.dtype == "float16":
                raise ValueError(
                    f"{revision.key('quantization')}: fp8 quantizes from bfloat16 weights; use dtype auto or "
                    "bfloat16"
                )
            if self.model_load_mode == "runai_streamer" and modelscope.is_modelscope(revision.model):
                raise ValueError(
                    f"{revision.key('model')}: a ModelScope revision names no commit, and modelLoadMode "
                    "runai_streamer points vLLM at the cache entry of one commit; use modelLoadMode local"
                )
            if self.model_load_mode == "runai_streamer" and not _COMMIT.match(revision.model_revision):
                raise ValueError(
                    f"{revision.key('modelRevision')}: {revision.model_revision!r} is not a 40-hex commit sha; "
                    "modelLoadMode runai_streamer points vLLM at the cache entry of one commit, so pin the "
                    "revision to the commit (the Hub shows it per revision), or use modelLoadMode local"
                )
        return self

    # --- derived values -------------------------------------------------------------------------------

    @property
    def revisions(self) -> tuple[Revision, ...]:
        """The model revisions this stack serves, every key resolved (one, `primary`, without `revisions`)."""
        inherited = {name: getattr(self, name) for name in INHERITED}
        if not self.revision_overrides:
            return (Revision(name=PRIMARY_REVISION, index=None, weight=TOTAL_WEIGHT, **inherited),)
        resolved = []
        for index, overrides in enumerate(self.revision_overrides):
            values = dict(inherited)
            values.update(
                {name: getattr(overrides, name) for name in INHERITED if getattr(overrides, name) is not None}
            )
            resolved.append(Revision(name=overrides.name, index=index, weight=overrides.weight, **values))
        return tuple(resolved)

    @property
    def name(self) -> str:
        """Base name of every resource of this stack."""
        return f"llm-{self.stack}"

    @property
    def cluster_name(self) -> str:
        return self.cluster.name or f"{self.project}-{self.stack}"

    @property
    def cost_ceiling(self) -> float | None:
        return self.max_cost_per_hour or None

    @property
    def tags(self) -> dict[str, str]:
        """The AWS tags every resource carries: project and stack first, then the user's."""
        return {"project": self.project, "stack": self.stack, "managed-by": "pulumi", **self.extra_tags}


def _key_of(loc: tuple[Any, ...]) -> str:
    """A pydantic error location as the stack file spells it: revisions[1].weight, endpoint.scheme."""
    key = ""
    for part in loc:
        text = str(part)
        if text.startswith("function-"):
            continue
        if isinstance(part, int):
            key += f"[{part}]"
        else:
            key += f".{text}" if key else text
    return key or "config"


def _message(error: Mapping[str, Any]) -> tuple[str, str]:
    """(key, message) of one pydantic error, the key spelled as in the stack file."""
    key = _key_of(tuple(error["loc"]))
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] in ("literal_error", "enum"):
        expected = (error.get("ctx") or {}).get("expected", "one of the allowed values")
        message = f"must be {expected}, got {error.get('input')!r}"
    elif error["type"] == "extra_forbidden":
        message = "is not a known field"
    elif error["type"] == "missing":
        message = "is required"
    elif isinstance(error.get("input"), str | int | float) and "got" not in message:
        message = f"{message}, got {error['input']!r}"
    named = re.match(r"^([A-Za-z][\w.\[\]]*): (.*)$", message)
    if named:  # a cross-field check names the key it blames, relative to where it runs
        blamed, message = named.groups()
        key = blamed if key == "config" or blamed.startswith(key) else f"{key}.{blamed}"
    return key, message


def settings_from_values(
    values: Mapping[str, Any],
    *,
    stack: str,
    hf_token: pulumi.Output[str] | None = None,
    api_key: pulumi.Output[str] | None = None,
) -> StackSettings:
    """Validate decoded config values (keys as in `Pulumi.yaml`; missing keys take the schema default)."""
    schema = load_schema()
    unknown = [key for key in values if key not in schema]
    if unknown:
        raise UserError(
            "is not a config key of this project" + did_you_mean(unknown[0], schema), key=unknown[0]
        )
    data = {name: values.get(name, key.default) for name, key in schema.items() if not key.secret}
    for name in MERGED_OBJECT_KEYS:
        if isinstance(data[name], Mapping):
            data[name] = {**schema[name].default, **data[name]}
    try:
        return StackSettings.model_validate(
            {**data, "stack": stack, "hf_token": hf_token, "api_key": api_key}
        )
    except ValidationError as error:
        problems = [_message(e) for e in error.errors()]
        key, message = problems[0]
        more = "".join(f"; {k}: {m}" for k, m in problems[1:])
        raise UserError(message + more, key=key) from None


def load_settings() -> StackSettings:
    """Read the current stack's config through `pulumi.Config` and validate it."""
    config = pulumi.Config()
    values: dict[str, Any] = {}
    for name, key in load_schema().items():
        if key.secret:
            continue
        try:
            if key.type == "string":
                value: Any = config.get(name)
            elif key.type == "integer":
                value = config.get_int(name)
            elif key.type == "boolean":
                value = config.get_bool(name)
            else:  # arrays and the untyped structured keys
                value = config.get_object(name)
        except (pulumi.ConfigTypeError, json.JSONDecodeError) as error:
            raise UserError(f"must be of type {key.type_label}: {error}", key=name) from None
        if value is not None:
            values[name] = value
    secrets = {
        field: config.get_secret(name) if config.get(name) else None
        for field, name in (("hf_token", "hfToken"), ("api_key", "apiKey"))
    }
    return settings_from_values(
        values, stack=pulumi.get_stack(), hf_token=secrets["hf_token"], api_key=secrets["api_key"]
    )
