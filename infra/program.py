"""The glue `__main__.py` calls: plans per revision from settings, their cost, user errors as one line, and
the components' args.

Kept out of `__main__.py` so the root program reads as settings -> plans -> components -> exports, and so
tests can call each step. Nothing here reads config or creates resources.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import pulumi

from infra.components.cluster import ClusterArgs, ClusterMode
from infra.components.gpu_node_pool import GpuNodePoolArgs
from infra.components.model_cache import BucketEncryption, ModelCacheArgs
from infra.components.monitoring import MonitoredRevision, MonitoringArgs
from infra.components.serving_endpoint import ServingEndpointArgs
from infra.components.serving_image import ServingImageArgs
from infra.components.vllm_service import ServiceWiring, VllmServiceArgs
from infra.config import Revision, StackSettings
from infra.errors import UserError
from infra.kubernetes import serving_cache, wake
from infra.kubernetes.endpoint import IDLE_TIMEOUT_S, Backend
from infra.kubernetes.model_cache import LoadMode
from infra.kubernetes.serving_cache import RevisionCache
from infra.kubernetes.vllm_workload import LWS_API, SURGE, InstanceShape, workload_name
from infra.modelcache.s3_source import is_s3_source
from infra.observability.dashboards import CapacityPlan
from infra.observability.manifests import Autoscaling, PoolShape, ScaleTarget
from infra.sizing.adapters import AdapterRef, lora_slots
from infra.sizing.gpus import load_catalog
from infra.sizing.model_pull import PullSettings, pull_settings
from infra.sizing.models import gated_without_token, load_model
from infra.sizing.plan import Constraints, ServingPlan, Workload, replicas_per_node
from infra.sizing.planner import plan_serving
from infra.vllm.args import serve_args


def one_line(error: UserError) -> UserError:
    """The same error with its message on one line (the planner explains a no-fit over several lines)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    error.args = ("; ".join(lines),)
    return error


@contextmanager
def user_errors() -> Iterator[None]:
    """A UserError inside becomes one logged line and a RunError (Pulumi prints no traceback for it)."""
    try:
        yield
    except UserError as error:
        message = str(one_line(error))
        pulumi.log.error(message)
        raise pulumi.RunError(message) from error


# The planner names its inputs by their Workload/Constraints fields; the stack file by its config keys.
# Both directions live here: planner_inputs builds the one, as_config_error maps errors back to the other.
PLANNER_TO_CONFIG_KEYS = {
    "instance_types": "instanceTypes",
    "capacity_type": "capacityType",
    "max_model_len": "maxModelLen",
    "kv_cache_dtype": "kvCacheDtype",
    "cpu_offload_gib": "cpuOffloadGb",
    "dtype": "dtype",
    "quantization": "quantization",
    "gpus": "gpus",
    "concurrency": "concurrency",
    "lora": "loraAdapters",
}


def planner_inputs(settings: StackSettings, revision: Revision) -> tuple[Workload, Constraints]:
    """What the planner sizes for one revision, and where it may run."""
    workload = Workload(
        max_model_len=revision.max_model_len or None,
        concurrency=revision.concurrency,
        dtype=None if revision.dtype == "auto" else revision.dtype,
        quantization=revision.quantization or None,
        kv_cache_dtype=revision.kv_cache_dtype,
        replicas=revision.replicas.max,  # the planner ranks by, and prices, what the stack pays at max
        spread=spread(revision),
        cpu_offload_gib=revision.cpu_offload_gb,
    )
    constraints = Constraints(
        gpus=revision.gpus,
        instance_types=revision.instance_types,
        capacity_type=settings.capacity_type,
        region=settings.region,
    )
    return workload, constraints


def adapter_refs(revision: Revision, region: str | None = None) -> list[AdapterRef]:
    """Where the planner reads each of the revision's adapters (an s3:// one in the stack's region), and
    the key an error about it names."""
    return [
        AdapterRef(
            adapter.source,
            adapter.revision,
            key=f"{revision.key('loraAdapters')}[{index}].source",
            region=region,
        )
        for index, adapter in enumerate(revision.lora_adapters)
    ]


def as_config_error(error: UserError, revision: Revision) -> UserError:
    """The planner's error, naming the config key a stack author changes for this revision."""
    key = PLANNER_TO_CONFIG_KEYS.get(error.key or "")
    if key and str(error).startswith(f"{error.key}: "):
        message = str(error).removeprefix(f"{error.key}: ")
        config_key = key if key == "capacityType" else revision.key(key)
        error.args = (f"{config_key}: {message}",)
        error.key = config_key
    elif revision.index is not None and error.key in (None, "model"):
        # a listed revision's model could not be planned: say which revision
        error.args = (f"{revision.key('model')}: {str(error).removeprefix('model: ')}",)
        error.key = revision.key("model")
    return error


def check_model_access(settings: StackSettings) -> None:
    """UserError naming hfToken when a revision serves a model the catalog marks gated and the stack has no
    token: the preview fails rather than warns, because without it the fill Job fails only after
    `pulumi up` has spent its time on the cluster and GPU pool, and the revision never serves."""
    for revision in settings.revisions:
        problem = gated_without_token(
            revision.model, has_token=settings.hf_token is not None, stack=settings.stack
        )
        if problem:
            where = f" ({revision.key('model')})" if revision.index is not None else ""
            raise UserError(problem.replace(" is gated", f"{where} is gated", 1), key="hfToken")


def build_plan(settings: StackSettings, revision: Revision) -> ServingPlan:
    """Ask the planner for one revision's model, workload and constraints."""
    try:
        model = load_model(revision.model, revision=revision.model_revision)
        workload, constraints = planner_inputs(settings, revision)
        workload = replace(workload, lora=lora_slots(adapter_refs(revision, settings.region)))
        return plan_serving(model, workload, constraints)
    except UserError as error:
        raise as_config_error(error, revision) from None


def build_plans(settings: StackSettings) -> dict[str, ServingPlan]:
    """Every revision's plan, by revision name."""
    return {revision.name: build_plan(settings, revision) for revision in settings.revisions}


def spread(revision: Revision) -> bool:
    """Replicas on separate nodes when the stack must keep two or more serving through a node's loss."""
    return revision.replicas.min >= 2


@dataclass(frozen=True)
class RevisionCost:
    revision: str
    nodes: int
    node_cost: float


def check_plan_cost(settings: StackSettings, plans: Mapping[str, ServingPlan]) -> float | None:
    """The GPU nodes' cost of every revision at max replicas in USD/h, as each plan priced them (whole
    nodes, as AWS bills them; a node per replica where replicas are spread); UserError naming
    maxCostPerHour when that is over the ceiling. None when the catalog has no price for some plan. A
    rollout's surge replica is transient and not counted."""
    costs = []
    for revision in settings.revisions:
        plan = plans[revision.name]
        if (plan.priced_for_replicas, plan.priced_spread) != (revision.replicas.max, spread(revision)):
            raise ValueError(f"the plan of revision {revision.name} was priced for other replicas")
        if plan.stack_cost_per_hour_usd is None:
            return None
        nodes = plan.nodes_for_replicas
        costs.append(RevisionCost(revision.name, nodes, plan.stack_cost_per_hour_usd / nodes))
    total = round(sum(plans[c.revision].stack_cost_per_hour_usd or 0.0 for c in costs), 2)
    ceiling = settings.cost_ceiling
    if ceiling is not None and total > ceiling:
        parts = ", ".join(
            f"{c.revision}: {c.nodes} x {plans[c.revision].instance_type} {plans[c.revision].capacity_type} "
            f"at ${c.node_cost:.2f}/h"
            for c in costs
        )
        raise UserError(
            f"the plans cost ${total:.2f}/h at max replicas ({parts}), above the ceiling of ${ceiling:.2f}/h; "
            "raise maxCostPerHour, lower replicas.max, allow cheaper gpus, or use capacityType spot",
            key="maxCostPerHour",
        )
    return total


def plan_summary(
    settings: StackSettings, plans: Mapping[str, ServingPlan], cost_at_max: float | None
) -> dict:
    """The plans as exported and printed: each revision's planner answer, its replicas, weight and vLLM
    arguments, and the stack's total cost at max replicas."""
    revisions = {}
    for revision in settings.revisions:
        plan = plans[revision.name]
        revisions[revision.name] = {
            **plan.to_dict(),
            "model_revision": revision.model_revision,
            "served_model_name": revision.served_name,
            "weight": revision.weight,
            "replicas": {"min": revision.replicas.min, "max": revision.replicas.max},
            "vllm_args": vllm_args_preview(revision, plan),
        }
    return {
        "revisions": revisions,
        "cost_per_hour_usd_at_max_replicas": cost_at_max,
        "max_cost_per_hour_usd": settings.cost_ceiling,
    }


def vllm_args_preview(revision: Revision, plan: ServingPlan) -> list[str]:
    """The serve arguments without the cache's `--model` location (known once the bucket exists)."""
    return serve_args(
        plan,
        model_args=[],
        served_name=revision.served_name,
        extra_args=revision.extra_args,
        extra_args_key=revision.key("extraArgs"),
    )


def describe_plans(
    settings: StackSettings, plans: Mapping[str, ServingPlan], cost_at_max: float | None
) -> str:
    """A line per revision for `pulumi preview`'s diagnostics."""
    lines = []
    for revision in settings.revisions:
        plan = plans[revision.name]
        cost = "unknown" if plan.cost_per_hour_usd is None else f"${plan.cost_per_hour_usd:.2f}/h per replica"
        lines.append(
            f"serving plan for revision {revision.name} ({plan.model}@{revision.model_revision}, weight "
            f"{revision.weight}): {plan.gpus_per_replica} x {plan.gpu.name} on {plan.instance_type} "
            f"({plan.capacity_type}), tensor parallel {plan.tensor_parallel_size}, pipeline parallel "
            f"{plan.pipeline_parallel_size}, max_model_len {plan.max_model_len}, KV cache {plan.kv_cache_tokens} "
            f"tokens, {cost}; replicas {revision.replicas.min}-{revision.replicas.max}"
            + (
                f"; LoRA adapters {', '.join(a.name for a in revision.lora_adapters)} (max rank "
                f"{plan.lora.max_lora_rank}, {plan.lora.bytes_per_gpu / 1024**3:.2f} GiB per GPU)"
                if plan.lora and revision.lora_adapters
                else ""
            )
        )
    if cost_at_max is not None:
        lines.append(f"GPU nodes at max replicas: ${cost_at_max:.2f}/h")
    return "\n".join(lines)


def load_time_fp8(revision: Revision) -> bool:
    """quantization fp8 quantizes a 16-bit checkpoint at load time (the config key says so): the Hub serves
    twice the bytes the planner counts."""
    return revision.quantization == "fp8"


def revision_cache(settings: StackSettings, revision: Revision, plan: ServingPlan) -> RevisionCache:
    """The revision's cache entry. A bad combination is a UserError naming the config key."""
    try:
        return RevisionCache.from_plan(
            plan,
            revision=revision.model_revision,
            load_mode=LoadMode(settings.model_load_mode),
            compile_cache=settings.compile_cache,
            load_time_fp8=load_time_fp8(revision),
            region=settings.region,
            adapters=[(a.name, a.source, a.revision) for a in revision.lora_adapters],
            pull=revision_pull(revision, plan),
        )
    except ValueError as error:
        raise UserError(str(error), key=revision.key("modelRevision")) from None


def revision_pull(revision: Revision, plan: ServingPlan) -> PullSettings:
    """The serving pods' pull, sized for the planned instance's link, shared by the pods a node holds."""
    instance = load_catalog().by_name(plan.instance_type)
    pods = replicas_per_node(
        gpus_per_node=plan.gpu.count,
        gpus_per_replica=plan.gpus_per_replica,
        nodes_per_replica=plan.nodes_per_replica,
        spread=spread(revision),
    )
    return pull_settings(instance.network_gbps, instance.vcpus, pods_per_node=pods)


def cluster_args(settings: StackSettings, plans: Mapping[str, ServingPlan] | None = None) -> ClusterArgs:
    """The cluster for the stack; with the plans, system nodes get disk for the largest fill Job."""
    args = ClusterArgs(
        mode=ClusterMode(settings.cluster.mode),
        cluster_name=settings.cluster_name,
        region=settings.region,
        kubernetes_version=settings.kubernetes_version,
        workload_namespace=settings.namespace,
        kubeconfig=settings.cluster.kubeconfig,
        karpenter_node_role=settings.cluster.node_role,
        public_access_cidrs=settings.cluster.public_access_cidrs,
        private_access=settings.cluster.private_access,
        tags=settings.tags,
    )
    if not plans:
        return args
    largest = max(
        revision_cache(settings, revision, plans[revision.name]).checkpoint_bytes
        for revision in settings.revisions
    )
    return replace(args, system_disk_gib=serving_cache.system_node_disk_gib(largest))


def gpu_pool_args(
    settings: StackSettings,
    revision: Revision,
    plan: ServingPlan,
    *,
    cluster_name: pulumi.Input[str],
    node_role: pulumi.Input[str],
    install_device_plugin: bool,
    depends_on: Sequence[pulumi.Resource],
) -> GpuNodePoolArgs:
    """The revision's GPU pool: room for max replicas plus a rollout's surge replica (maxUnavailable 0
    means the new pod starts before an old one stops), one node each when replicas are spread."""
    return GpuNodePoolArgs.from_plan(
        plan,
        max_replicas=revision.replicas.max + SURGE,
        spread=spread(revision),
        local_nvme_gb=load_catalog().by_name(plan.instance_type).local_nvme_gb,
        checkpoint_bytes=revision_cache(settings, revision, plan).checkpoint_bytes,
        cluster_name=cluster_name,
        node_role=node_role,
        tags=settings.tags,
        depends_on=depends_on,
        install_device_plugin=install_device_plugin,
    )


def serving_image_args(settings: StackSettings) -> ServingImageArgs:
    """Build images/serving into the stack's ECR repository, unless the stack names a prebuilt image."""
    return ServingImageArgs(prebuilt=settings.serving_image or None, tags=settings.tags)


def model_cache_args(
    settings: StackSettings, *, cluster_name: pulumi.Input[str], namespace: pulumi.Input[str]
) -> ModelCacheArgs:
    # the region names the cluster in the identities' trust (aws:SourceArn) and scopes KMS grants to S3
    return ModelCacheArgs(
        cluster_name=cluster_name,
        namespace=namespace,
        region=settings.region,
        encryption=BucketEncryption(settings.model_cache.encryption),
        kms_key_arn=settings.model_cache.kms_key_arn,
        source_folders=s3_adapter_sources(settings),
        tags=settings.tags,
    )


def s3_adapter_sources(settings: StackSettings) -> tuple[str, ...]:
    """Every s3:// adapter folder of any revision, once: what the cache's writer may read."""
    sources = (a.source for r in settings.revisions for a in r.lora_adapters)
    return tuple(dict.fromkeys(s for s in sources if is_s3_source(s)))


def instance_shape(plan: ServingPlan) -> InstanceShape:
    instance = load_catalog().by_name(plan.instance_type)
    return InstanceShape(vcpus=instance.vcpus, memory_gib=instance.memory_mib / 1024, gpus=instance.gpu_count)


def initial_replicas(revision: Revision) -> int:
    """Replicas the workload starts with: the minimum, but at least one, so a fresh stack serves (and a
    revision at minimum 0 fills its node's caches once). KEDA owns the count from then on."""
    return max(1, revision.replicas.min)


def vllm_service_args(
    settings: StackSettings,
    revision: Revision,
    plan: ServingPlan,
    wiring: ServiceWiring,
    *,
    node_selector: pulumi.Input[Mapping[str, str]],
    tolerations: pulumi.Input[Sequence[Mapping[str, Any]]],
    fill_cache: bool,
    adapters_filled_elsewhere: frozenset[tuple[str, str]] = frozenset(),
    fill_after: Sequence[pulumi.Resource],
    serve_after: Sequence[pulumi.Resource],
) -> VllmServiceArgs:
    """One revision's workload. Its extra arguments are checked here (a UserError names the revision's
    key), so a misspelt flag fails the preview."""
    return VllmServiceArgs(
        revision=revision.name,
        plan=plan,
        cache=revision_cache(settings, revision, plan),
        instance=instance_shape(plan),
        served_name=revision.served_name,
        # the fill Job gets the token's Secret only when the stack has a token
        wiring=wiring if settings.hf_token is not None else replace(wiring, hf_token_secret_name=None),
        node_selector=node_selector,
        tolerations=tolerations,
        replicas=initial_replicas(revision),
        min_replicas=revision.replicas.min,
        extra_args=revision.extra_args,
        extra_args_key=revision.key("extraArgs"),
        fill_cache=fill_cache,
        adapters_filled_elsewhere=adapters_filled_elsewhere,
        autoscaled=True,  # every revision gets a ScaledObject (monitoring_args)
        tags=settings.tags,
        fill_after=fill_after,
        serve_after=serve_after,
    )


def endpoint_args(
    settings: StackSettings,
    plans: Mapping[str, ServingPlan],
    *,
    cluster_name: pulumi.Input[str],
    vpc_id: pulumi.Input[str],
    namespace: pulumi.Input[str],
    load_balancer_cidrs: pulumi.Input[Sequence[str]],
    depends_on: Sequence[pulumi.Resource],
) -> ServingEndpointArgs:
    """The endpoint in front of every revision, split by weight: its Service, or for a revision that scales
    from zero the interceptor that holds its requests while it wakes (and an idle timeout that outlasts the
    wait)."""
    backends = []
    waits = [IDLE_TIMEOUT_S]
    for revision in settings.revisions:
        route = wake_route(settings, revision, plans[revision.name])
        if route is None or not route.routed:
            backends.append(Backend(workload_name(revision.name), revision.weight))
        else:
            backends.append(Backend(route.service, revision.weight, wake.INTERCEPTOR_PROXY_PORT))
            waits.append(route.readiness_timeout_s)
    return ServingEndpointArgs(
        cluster_name=cluster_name,
        vpc_id=vpc_id,
        region=settings.region,
        namespace=namespace,
        backends=tuple(backends),
        idle_timeout_s=max(waits),
        wakes_from_zero=len(waits) > 1,
        load_balancer_cidrs=load_balancer_cidrs,
        scheme=settings.endpoint.scheme,
        certificate_arn=settings.endpoint.certificate_arn,
        allowed_cidrs=settings.endpoint.allowed_cidrs,
        tags=settings.tags,
        depends_on=depends_on,
    )


def cache_entries(cache: RevisionCache) -> list[tuple[str, str]]:
    """The (Hub id, revision) cache entries a revision reads: its model's, then its adapters'."""
    return [(cache.model, cache.revision), *((a.model, a.revision) for a in cache.adapters)]


def served_models(settings: StackSettings, plans: Mapping[str, ServingPlan]) -> dict[str, dict[str, Any]]:
    """Per revision, what a client and the smoke test check against: the served name, the context length
    and KV-cache tokens the plan promises, the traffic weight, and the LoRA adapters served by name."""
    return {
        r.name: {
            "servedModelName": r.served_name,
            "maxModelLen": plans[r.name].max_model_len,
            "kvCacheTokens": plans[r.name].kv_cache_tokens,
            "weight": r.weight,
            **({"loraAdapters": [a.name for a in r.lora_adapters]} if r.lora_adapters else {}),
        }
        for r in settings.revisions
    }


# --- monitoring and autoscaling ---------------------------------------------------------------------------


def cold_start_s(plan: ServingPlan) -> int:
    """A new replica's time to serve when it needs a new node: the node and its image, then the plan's cold
    start (weights from S3, load, engine start). Paces KEDA, which must not add GPUs while one still loads."""
    return math.ceil(wake.NEW_NODE_AND_IMAGE_S + plan.estimated_cold_start_s)


def scale_target(revision: Revision, plan: ServingPlan) -> ScaleTarget:
    """What KEDA scales: the revision's Deployment, or its LeaderWorkerSet when a replica spans nodes."""
    if plan.nodes_per_replica > 1:
        return ScaleTarget(LWS_API, "LeaderWorkerSet", workload_name(revision.name))
    return ScaleTarget("apps/v1", "Deployment", workload_name(revision.name))


def wake_route(settings: StackSettings, revision: Revision, plan: ServingPlan) -> wake.WakeRoute | None:
    """The interceptor's route to a revision at minimum 0 replicas (None for one that always runs)."""
    if revision.replicas.min > 0:
        return None
    return wake.WakeRoute(
        revision=revision.name,
        namespace=settings.namespace,
        readiness_timeout_s=wake.wake_budget_s(plan),
        response_header_timeout_s=IDLE_TIMEOUT_S,
        concurrency_per_replica=plan.max_num_seqs,
        routed=revision.weight > 0,
    )


def check_waking_revisions(settings: StackSettings) -> None:
    """The interceptor routes by host and path, not by weight: one revision with traffic may scale to zero."""
    waking = [r for r in settings.revisions if r.replicas.min == 0 and r.weight > 0]
    if len(waking) > 1:
        raise UserError(
            f"revisions {', '.join(r.name for r in waking)} all take traffic and scale to zero; the wake-up "
            "proxy can hold requests for one of them: give the others replicas.min 1 or weight 0",
            key=waking[1].key("replicas"),
        )


def monitored_revision(
    settings: StackSettings, revision: Revision, plan: ServingPlan, pool: GpuNodePoolArgs
) -> MonitoredRevision:
    """How monitoring and KEDA see one revision: its workload, replica range and thresholds, the GPU pool
    its maximum must fit (the pool counts a rollout's surge too), what was planned, and its wake route."""
    return MonitoredRevision(
        revision=revision.name,
        namespace=settings.namespace,
        scale_target=scale_target(revision, plan),
        autoscaling=Autoscaling(
            min_replicas=revision.replicas.min,
            max_replicas=revision.replicas.max,
            cold_start_seconds=cold_start_s(plan),
            thresholds=settings.autoscaling.thresholds(),
        ),
        plan=CapacityPlan(revision.name, plan.kv_cache_tokens, plan.max_concurrency),
        wake=wake_route(settings, revision, plan),
        pool=PoolShape(
            max_nodes=pool.max_nodes,
            gpus_per_node=pool.gpus_per_node,
            gpus_per_replica=plan.gpus_per_replica,
            nodes_per_replica=plan.nodes_per_replica,
        ),
    )


def monitoring_args(
    settings: StackSettings,
    plans: Mapping[str, ServingPlan],
    pools: Mapping[str, GpuNodePoolArgs],
    *,
    depends_on: Sequence[pulumi.Resource],
    storage_class: str | None = None,
) -> MonitoringArgs:
    """The stack's monitoring and autoscaling: a MonitoredRevision per revision, Prometheus sized and the
    TTFT alert set from the stack's `monitoring` key. `storage_class`: the cluster's class for Prometheus'
    volume (None: the cluster's default), unless the stack names one."""
    check_waking_revisions(settings)
    return MonitoringArgs(
        revisions=[monitored_revision(settings, r, plans[r.name], pools[r.name]) for r in settings.revisions],
        storage=settings.monitoring.storage(storage_class),
        thresholds=settings.monitoring.alert_thresholds(),
        tags=settings.tags,
        depends_on=depends_on,
    )
