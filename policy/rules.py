"""The guardrails of the llm-serving policy pack, as plain functions over plain resources.

Each rule takes every resource of the stack (type, name, URN, inputs, the URNs it depends on) and the
stack's limits, and returns its violations. `policy/__main__.py` wraps each in a CrossGuard stack policy;
tests run them on what the recording mocks record for a stack. Nothing here imports Pulumi, so the same
functions run in the policy pack's own virtualenv and in the test suite.

Values only a deployment knows (an ARN, a digest of an image built in the same update) reach the rules as
strings starting with `UNKNOWN_PREFIX`; a rule never calls such a value a violation.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from infra.errors import UserError
from infra.sizing.gpus import GpuCatalog

PROJECT = "llm-serving"
UNKNOWN_PREFIX = "<known after deploy"  # what render's mocks put where AWS would compute a value
GPU_RESOURCE = "nvidia.com/gpu"
NODEPOOL_TYPE = "kubernetes:karpenter.sh/v1:NodePool"
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
CAPACITY_TYPE_LABEL = "karpenter.sh/capacity-type"
POOL_LABELS = ("llm-serving/pool", "karpenter.sh/nodepool")
WORLD = ("0.0.0.0/0", "::/0")


@dataclass(frozen=True)
class Resource:
    type: str
    name: str
    urn: str
    props: Mapping[str, Any]
    dependencies: frozenset[str] = frozenset()  # URNs of the resources it depends on


@dataclass(frozen=True)
class Violation:
    urn: str
    message: str


@dataclass(frozen=True)
class StackLimits:
    """What the stack file allows: spot capacity, and the $/h ceiling (None: no ceiling)."""

    stack: str
    allow_spot: bool = False
    max_cost_per_hour: float | None = None
    catalog: GpuCatalog | None = field(default=None, compare=False)


def stack_of(urn: str) -> str:
    """The stack name in a resource URN: urn:pulumi:STACK::PROJECT::TYPE::NAME."""
    return urn.removeprefix("urn:pulumi:").split("::", 1)[0]


def stack_limits(stack: str, repo: Path, catalog: GpuCatalog | None = None) -> StackLimits:
    """Limits from stacks/Pulumi.<stack>.yaml, with Pulumi.yaml's defaults for keys the stack leaves out."""
    schema = (yaml.safe_load((repo / "Pulumi.yaml").read_text()) or {}).get("config") or {}
    path = repo / "stacks" / f"Pulumi.{stack}.yaml"
    config = ((yaml.safe_load(path.read_text()) or {}).get("config") or {}) if path.is_file() else {}

    def value(key: str) -> Any:
        full = f"{PROJECT}:{key}"
        return config[full] if full in config else (schema.get(key) or {}).get("default")

    ceiling = float(value("maxCostPerHour") or 0)
    return StackLimits(
        stack=stack,
        allow_spot=value("capacityType") == "spot",
        max_cost_per_hour=ceiling if ceiling > 0 else None,
        catalog=catalog,
    )


def is_unknown(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(UNKNOWN_PREFIX)


# ---------------------------------------------------------------------------------------------------------
# Pods inside Kubernetes objects


def _pod_specs(props: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    kind = props.get("kind")
    spec = props.get("spec") or {}
    if kind == "Pod":
        yield spec
    elif kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        yield (spec.get("template") or {}).get("spec") or {}
    elif kind == "CronJob":
        yield (((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}).get("spec") or {}
    elif kind == "LeaderWorkerSet":
        templates = spec.get("leaderWorkerTemplate") or {}
        for role in ("leaderTemplate", "workerTemplate"):
            if templates.get(role):
                yield templates[role].get("spec") or {}


def pod_specs(resources: Iterable[Resource]) -> Iterator[tuple[Resource, Mapping[str, Any]]]:
    for resource in resources:
        if resource.type.startswith("kubernetes:") and not resource.type.startswith("kubernetes:helm.sh/"):
            for spec in _pod_specs(resource.props):
                yield resource, spec


def containers(spec: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for group in ("initContainers", "containers"):
        yield from spec.get(group) or ()


def _where(resource: Resource, container: Mapping[str, Any]) -> str:
    kind = resource.props.get("kind", resource.type)
    name = (resource.props.get("metadata") or {}).get("name", resource.name)
    return f"{kind} {name}, container {container.get('name')!r}"


# ---------------------------------------------------------------------------------------------------------
# The rules


def buckets_private_encrypted_tls_only(resources: list[Resource], limits: StackLimits) -> list[Violation]:
    """Every S3 bucket has a public access block with all four switches on, default encryption, and a
    bucket policy denying requests without TLS (aws:SecureTransport false)."""
    violations = []
    for bucket in (r for r in resources if r.type == "aws:s3/bucket:Bucket"):
        attached = [r for r in resources if bucket.urn in r.dependencies]

        def of_type(type_: str, attached: list[Resource] = attached) -> list[Resource]:
            return [r for r in attached if r.type == type_]

        blocks = of_type("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock")
        switches = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
        if not any(all(block.props.get(s) is True for s in switches) for block in blocks):
            violations.append(
                Violation(
                    bucket.urn,
                    f"bucket {bucket.name} needs a public access block with {', '.join(switches)} all true",
                )
            )
        if bucket.props.get("acl") not in (None, "private"):
            violations.append(
                Violation(
                    bucket.urn, f"bucket {bucket.name} has acl {bucket.props.get('acl')!r}; keep it private"
                )
            )
        encryption = of_type(
            "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
        )
        if not any(
            rule.get("applyServerSideEncryptionByDefault")
            for e in encryption
            for rule in e.props.get("rules") or ()
        ):
            violations.append(
                Violation(
                    bucket.urn,
                    f"bucket {bucket.name} needs default server-side encryption (AES256 or aws:kms)",
                )
            )
        policies = [p.props.get("policy") for p in of_type("aws:s3/bucketPolicy:BucketPolicy")]
        if not any(is_unknown(p) or denies_insecure_transport(p) for p in policies):
            violations.append(
                Violation(
                    bucket.urn,
                    f"bucket {bucket.name} needs a bucket policy that denies s3:* when aws:SecureTransport is false",
                )
            )
    return violations


def denies_insecure_transport(policy: Any) -> bool:
    document = json.loads(policy) if isinstance(policy, str) else policy
    if not isinstance(document, Mapping):
        return False
    statements = document.get("Statement") or []
    for statement in statements if isinstance(statements, list) else [statements]:
        actions = statement.get("Action")
        actions = actions if isinstance(actions, list) else [actions]
        condition = (statement.get("Condition") or {}).get("Bool") or {}
        if (
            statement.get("Effect") == "Deny"
            and statement.get("Principal") in ("*", {"AWS": "*"})
            and "s3:*" in actions
            and str(condition.get("aws:SecureTransport")).lower() == "false"
        ):
            return True
    return False


FLOATING_TAGS = frozenset({"latest", "stable", "main", "master", "nightly", "edge", "dev", "head", "release"})
_PARTIAL_VERSION = re.compile(r"v?\d+(\.\d+)?(-.+)?")  # 1, v1, 3.11, 3.11-slim: they move to new patches


def image_problem(image: str) -> str | None:
    """Why an image reference is floating, or None when it is a digest or an immutable tag."""
    if "@sha256:" in image:
        return None
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return "has no tag (Docker reads it as latest)"
    tag = last.rsplit(":", 1)[1]
    if tag.lower() in FLOATING_TAGS:
        return f"uses the floating tag {tag!r}"
    if _PARTIAL_VERSION.fullmatch(tag):
        return f"uses {tag!r}, a partial version that moves with new releases"
    return None


def no_floating_image_tags(resources: list[Resource], limits: StackLimits) -> list[Violation]:
    """Every container image is a digest or an immutable tag (a full version or a content hash)."""
    violations = []
    for resource, spec in pod_specs(resources):
        for container in containers(spec):
            image = container.get("image")
            if is_unknown(image):
                continue  # an image built in this update, run by its digest once pushed
            problem = "has no image" if not isinstance(image, str) else image_problem(image)
            if problem:
                violations.append(
                    Violation(
                        resource.urn,
                        f"{_where(resource, container)}: image {image!r} {problem}; pin a digest or a full version tag",
                    )
                )
    return violations


SECRET_ENV = re.compile(
    r"(HF_TOKEN|HUGGING_?FACE_HUB_TOKEN|HUGGINGFACE_TOKEN|VLLM_API_KEY|(OPENAI_)?API_KEY)"
)
SECRET_FLAGS = ("--api-key", "--hf-token")
SECRET_DATA_KEY = re.compile(r"(?i)(api[-_]?key|hf[-_]?token|token)")


def secrets_only_as_secrets(resources: list[Resource], limits: StackLimits) -> list[Violation]:
    """The API key and the HF token reach pods only from Kubernetes Secrets (secretKeyRef): never as a
    literal env value, a command-line flag (visible in `ps` and the pod spec), or a ConfigMap entry."""
    violations = []
    for resource, spec in pod_specs(resources):
        for container in containers(spec):
            for env in container.get("env") or ():
                if SECRET_ENV.fullmatch(str(env.get("name"))) and "value" in env:
                    violations.append(
                        Violation(
                            resource.urn,
                            f"{_where(resource, container)}: env {env['name']} is a literal; "
                            "use valueFrom.secretKeyRef",
                        )
                    )
            words = [
                str(word) for word in (*(container.get("command") or ()), *(container.get("args") or ()))
            ]
            for flag in SECRET_FLAGS:
                if any(word == flag or word.startswith(f"{flag}=") for word in words):
                    violations.append(
                        Violation(
                            resource.urn,
                            f"{_where(resource, container)}: {flag} on the command line; "
                            "pass it as an env var from a Secret",
                        )
                    )
    for resource in resources:
        if resource.props.get("kind") == "ConfigMap":
            keys = [key for key in (resource.props.get("data") or {}) if SECRET_DATA_KEY.search(key)]
            if keys:
                violations.append(
                    Violation(
                        resource.urn,
                        f"ConfigMap {resource.name} holds {', '.join(keys)}; credentials belong in a Secret",
                    )
                )
    return violations


def _quantity(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def resource_requests_on_every_container(resources: list[Resource], limits: StackLimits) -> list[Violation]:
    """Every container and init container requests CPU and memory (the scheduler and Karpenter size
    nodes from requests; a container without them can land anywhere and starve its neighbours)."""
    violations = []
    for resource, spec in pod_specs(resources):
        for container in containers(spec):
            requests = (container.get("resources") or {}).get("requests") or {}
            missing = [name for name in ("cpu", "memory") if name not in requests]
            if missing:
                violations.append(
                    Violation(
                        resource.urn, f"{_where(resource, container)}: no {' or '.join(missing)} request"
                    )
                )
    return violations


def _requirement(pool: Resource, key: str) -> list[str]:
    template = ((pool.props.get("spec") or {}).get("template") or {}).get("spec") or {}
    for requirement in template.get("requirements") or ():
        if requirement.get("key") == key and requirement.get("operator") == "In":
            return [str(value) for value in requirement.get("values") or ()]
    return []


def spot_only_where_allowed(resources: list[Resource], limits: StackLimits) -> list[Violation]:
    """Spot capacity (GPU pools and managed node groups) only in a stack whose capacityType is spot."""
    if limits.allow_spot:
        return []
    violations = []
    for pool in (r for r in resources if r.type == NODEPOOL_TYPE):
        capacity = _requirement(pool, CAPACITY_TYPE_LABEL)
        if not capacity or "spot" in capacity:
            shown = capacity or "any capacity type (no karpenter.sh/capacity-type requirement)"
            violations.append(
                Violation(
                    pool.urn,
                    f"NodePool {pool.name} allows {shown} but stack {limits.stack} sets capacityType on-demand",
                )
            )
    for group in (r for r in resources if r.type == "aws:eks/nodeGroup:NodeGroup"):
        if str(group.props.get("capacityType", "ON_DEMAND")).upper() == "SPOT":
            violations.append(
                Violation(
                    group.urn,
                    f"node group {group.name} runs on spot but stack {limits.stack} sets capacityType on-demand",
                )
            )
    return violations


def _pool_max_nodes(pool: Resource, gpus_per_node: int) -> int | None:
    pool_limits = (pool.props.get("spec") or {}).get("limits") or {}
    nodes = _quantity(pool_limits.get("nodes"))
    gpus = _quantity(pool_limits.get(GPU_RESOURCE))
    candidates = [int(nodes)] if nodes is not None else []
    if gpus is not None and gpus_per_node > 0:
        candidates.append(math.ceil(gpus / gpus_per_node))
    return min(candidates) if candidates else None


def _pool_node_cost(pool: Resource, limits: StackLimits, violations: list[Violation]) -> tuple[float, int]:
    """The dearest $/h of one node the pool allows (instance and capacity types) and its GPUs per node."""
    assert limits.catalog is not None
    capacities = _requirement(pool, CAPACITY_TYPE_LABEL) or ["on-demand", "spot"]
    worst, gpus_per_node = 0.0, 0
    for name in _requirement(pool, INSTANCE_TYPE_LABEL):
        try:
            instance = limits.catalog.by_name(name)
        except UserError:  # an instance type outside the catalog has no price to check
            violations.append(
                Violation(
                    pool.urn, f"NodePool {pool.name}: {name} is not in the GPU catalog; no price to check"
                )
            )
            continue
        price = max(instance.hourly_cost(capacity) or 0.0 for capacity in capacities)
        if price > worst:
            worst, gpus_per_node = price, instance.gpu_count
    return worst, gpus_per_node


def _surge_nodes(pool: Resource, resources: list[Resource], gpus_per_node: int) -> int:
    """Nodes one extra replica of the workloads on this pool takes: the pool's limits leave room for a
    rollout's surge replica, which is transient (the program's ceiling check leaves it out too)."""
    pools = dict.fromkeys(_pool_names(pool), pool)
    nodes = 0
    for resource, spec in pod_specs(resources):
        if _selected_pool(spec, pools) is None or gpus_per_node <= 0:
            continue
        if resource.props.get("kind") == "LeaderWorkerSet":  # each pod of a replica takes a whole node
            size = ((resource.props.get("spec") or {}).get("leaderWorkerTemplate") or {}).get("size")
            nodes = max(nodes, int(_quantity(size) or 1))
            continue
        nodes = max(nodes, math.ceil(pod_gpus(spec) / gpus_per_node))
    return nodes


def cost_ceiling_respected(resources: list[Resource], limits: StackLimits) -> list[Violation]:
    """Every GPU pool together, at its node limit less one rollout surge replica, priced at its dearest
    allowed instance and capacity type (catalog list prices, as the planner prices), stays within the
    stack's maxCostPerHour."""
    if limits.max_cost_per_hour is None or limits.catalog is None:
        return []
    violations: list[Violation] = []
    total, parts, bounded = 0.0, [], True
    for pool in (r for r in resources if r.type == NODEPOOL_TYPE):
        if not _requirement(pool, INSTANCE_TYPE_LABEL):
            violations.append(
                Violation(
                    pool.urn, f"NodePool {pool.name} allows any instance type; its cost cannot be bounded"
                )
            )
            bounded = False
            continue
        price, gpus_per_node = _pool_node_cost(pool, limits, violations)
        nodes = _pool_max_nodes(pool, gpus_per_node)
        if nodes is None:
            violations.append(
                Violation(
                    pool.urn,
                    f"NodePool {pool.name} has no nodes or {GPU_RESOURCE} limit; its cost is unbounded",
                )
            )
            bounded = False
            continue
        steady = max(nodes - _surge_nodes(pool, resources, gpus_per_node), 0)
        total += steady * price
        parts.append((pool, f"{pool.name}: {steady} x ${price:.2f}/h"))
    if bounded and parts and round(total, 2) > limits.max_cost_per_hour:
        violations.append(
            Violation(
                parts[0][0].urn,
                f"the GPU pools can cost ${total:.2f}/h at their limits ({'; '.join(p for _, p in parts)}), "
                f"above stack {limits.stack}'s maxCostPerHour ${limits.max_cost_per_hour:.2f}/h",
            )
        )
    return violations


def _gpus(container: Mapping[str, Any]) -> float:
    """A container's GPUs: its limit (Kubernetes requires an extended resource's request to equal it)."""
    resources = container.get("resources") or {}
    for part in ("limits", "requests"):
        value = _quantity((resources.get(part) or {}).get(GPU_RESOURCE))
        if value is not None:
            return value
    return 0.0


def pod_gpus(spec: Mapping[str, Any]) -> float:
    """The GPUs a pod holds on its node: its containers' sum, or its largest init container if more (init
    containers run one at a time, before the others)."""
    init = [_gpus(c) for c in spec.get("initContainers") or ()]
    return max(sum(_gpus(c) for c in spec.get("containers") or ()), *init, 0.0)


def _selected_pool(spec: Mapping[str, Any], pools: Mapping[str, Resource]) -> Resource | None:
    selector = spec.get("nodeSelector") or {}
    for label in POOL_LABELS:
        if selector.get(label) in pools:
            return pools[selector[label]]
    required = (
        ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
            "requiredDuringSchedulingIgnoredDuringExecution"
        )
    ) or {}
    for term in required.get("nodeSelectorTerms") or ():
        for expression in term.get("matchExpressions") or ():
            values = expression.get("values") or ()
            if (
                expression.get("key") in POOL_LABELS
                and expression.get("operator") == "In"
                and len(values) == 1
                and values[0] in pools
            ):
                return pools[values[0]]
    return None


def _pool_names(pool: Resource) -> set[str]:
    """The names a pod can select a pool by: its Karpenter name and its llm-serving/pool node label."""
    name = (pool.props.get("metadata") or {}).get("name", pool.name)
    labels = ((((pool.props.get("spec") or {}).get("template") or {}).get("metadata")) or {}).get(
        "labels"
    ) or {}
    return {name, *(str(labels[label]) for label in POOL_LABELS if label in labels)}


def gpu_requests_match_node_pool(resources: list[Resource], limits: StackLimits) -> list[Violation]:
    """A pod asking for GPUs selects a GPU pool, and its GPU limit fits that pool's instance types: at most
    the GPUs of one instance, and a divisor of it (so replicas pack nodes with no GPU left stranded)."""
    if limits.catalog is None:
        return []
    pools = {name: pool for pool in resources if pool.type == NODEPOOL_TYPE for name in _pool_names(pool)}
    violations = []
    for resource, spec in pod_specs(resources):
        gpus = pod_gpus(spec)
        for container in containers(spec):
            requests = (container.get("resources") or {}).get("requests") or {}
            limit = ((container.get("resources") or {}).get("limits") or {}).get(GPU_RESOURCE)
            if GPU_RESOURCE in requests and _quantity(requests[GPU_RESOURCE]) != _quantity(limit):
                violations.append(
                    Violation(
                        resource.urn,
                        f"{_where(resource, container)}: {GPU_RESOURCE} request {requests[GPU_RESOURCE]} "
                        f"differs from its limit {limit}; Kubernetes needs them equal",
                    )
                )
        if not gpus:
            continue
        pool = _selected_pool(spec, pools)
        if pool is None:
            violations.append(
                Violation(
                    resource.urn,
                    f"{resource.props.get('kind')} {resource.name} requests {gpus:g} GPU(s) but selects no GPU "
                    f"NodePool ({' or '.join(POOL_LABELS)})",
                )
            )
            continue
        for name in _requirement(pool, INSTANCE_TYPE_LABEL):
            try:
                per_node = limits.catalog.by_name(name).gpu_count
            except UserError:
                continue
            if gpus > per_node or per_node % gpus:
                violations.append(
                    Violation(
                        resource.urn,
                        f"{resource.props.get('kind')} {resource.name} requests {gpus:g} GPU(s); "
                        f"NodePool {pool.name}'s {name} has {per_node}",
                    )
                )
    return violations


def eks_endpoint_not_open_to_the_world(resources: list[Resource], limits: StackLimits) -> list[Violation]:
    """An EKS cluster's public API endpoint is off, or limited to named CIDRs (not 0.0.0.0/0; EKS
    defaults an unset publicAccessCidrs to 0.0.0.0/0)."""
    violations = []
    for cluster in (r for r in resources if r.type == "aws:eks/cluster:Cluster"):
        vpc = cluster.props.get("vpcConfig") or {}
        if vpc.get("endpointPublicAccess", True) is False:
            continue
        cidrs = [str(cidr) for cidr in vpc.get("publicAccessCidrs") or ()]
        if not cidrs or any(cidr in WORLD for cidr in cidrs):
            shown = ", ".join(cidrs) if cidrs else "no publicAccessCidrs, which EKS reads as 0.0.0.0/0"
            violations.append(
                Violation(
                    cluster.urn,
                    f"EKS cluster {cluster.name} has a public endpoint open to the world ({shown}); "
                    "set publicAccessCidrs to your CIDRs or turn endpointPublicAccess off",
                )
            )
    return violations


Rule = Callable[[list[Resource], StackLimits], list[Violation]]

# name -> rule; the names are the CrossGuard policy names (what `pulumi preview` prints next to a violation)
RULES: dict[str, Rule] = {
    "s3-buckets-private-encrypted-tls-only": buckets_private_encrypted_tls_only,
    "no-floating-image-tags": no_floating_image_tags,
    "api-key-and-hf-token-only-as-secrets": secrets_only_as_secrets,
    "gpu-requests-match-node-pool": gpu_requests_match_node_pool,
    "resource-requests-on-every-container": resource_requests_on_every_container,
    "spot-only-where-the-stack-allows": spot_only_where_allowed,
    "cost-ceiling-respected": cost_ceiling_respected,
    "eks-endpoint-not-open-to-the-world": eks_endpoint_not_open_to_the_world,
}
