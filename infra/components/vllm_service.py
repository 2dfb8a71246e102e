"""`VllmService`: one model revision served by vLLM: its cache fill Job, its workload (a Deployment, or a
LeaderWorkerSet when a replica spans nodes), its Service and its PodDisruptionBudget.

Thin: the manifests come from `infra.kubernetes.serving_cache` (fill Job, cache patch) and
`infra.kubernetes.vllm_workload` (workload, Service, PDB); this component only resolves the Inputs they
need and orders the resources (the workload waits for the filled cache and its identity).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra.components import kubernetes_labels
from infra.components.serving_secrets import API_KEY_SECRET_KEY, HF_TOKEN_SECRET_KEY
from infra.kubernetes import serving_cache, vllm_workload
from infra.kubernetes.model_cache import SecretKeyRef
from infra.kubernetes.serving_cache import AdapterCache, RevisionCache
from infra.kubernetes.vllm_workload import InstanceShape, WorkloadSpec
from infra.sizing.plan import ServingPlan


@dataclass(frozen=True)
class ServiceWiring:
    """What every revision's VllmService takes from the stack's other components (the same for all)."""

    namespace: pulumi.Input[str]
    image: pulumi.Input[str]
    bucket: pulumi.Input[str]
    reader_service_account: str
    writer_service_account: str
    api_key_secret_name: pulumi.Input[str]
    hf_token_secret_name: pulumi.Input[str | None] | None = None  # the fill Job's token; never the pods'


@dataclass(frozen=True)
class VllmServiceArgs:
    """Inputs of `VllmService`. The revision, its plan and its cache entry are plain values (they shape the
    workload); the cluster's names and the image come from other resources (Inputs, in `wiring`)."""

    revision: str  # the revision's name in the stack config
    plan: ServingPlan
    cache: RevisionCache
    instance: InstanceShape
    served_name: str
    wiring: ServiceWiring
    node_selector: pulumi.Input[Mapping[str, str]]
    tolerations: pulumi.Input[Sequence[Mapping[str, Any]]]
    replicas: int
    min_replicas: int
    extra_args: tuple[str, ...] = ()
    extra_args_key: str = "extraArgs"
    fill_cache: bool = True  # False when another revision's Job fills the same entry
    # (Hub id, revision) of adapters whose entries another revision's Jobs fill
    adapters_filled_elsewhere: frozenset[tuple[str, str]] = frozenset()
    # KEDA owns the replica count (infra/components/monitoring.py): `replicas` is only the count to start with.
    autoscaled: bool = False
    tags: Mapping[str, str] = field(default_factory=dict)
    fill_after: Sequence[pulumi.Resource] = ()  # the writer identity
    serve_after: Sequence[pulumi.Resource] = ()  # the reader identity, the GPU pool, other fills

    def __post_init__(self) -> None:
        # Build once with placeholders: a bad extra argument or layout fails here, at preview, not in apply.
        vllm_workload.workload_manifests(
            self.spec(
                namespace="ns", image="image:1", bucket="bucket", api_key_secret="key", node_selector={}
            )
        )

    @property
    def name(self) -> str:
        return vllm_workload.workload_name(self.revision)

    def spec(
        self,
        *,
        namespace: str,
        image: str,
        bucket: str,
        api_key_secret: str,
        node_selector: Mapping[str, str],
        tolerations: Sequence[Mapping[str, Any]] = (),
    ) -> WorkloadSpec:
        return WorkloadSpec(
            name=self.name,
            namespace=namespace,
            revision=self.revision,
            image=image,
            plan=self.plan,
            instance=self.instance,
            cache_patch=serving_cache.revision_cache_patch(
                self.cache,
                bucket=bucket,
                image=image,
                reader_service_account=self.wiring.reader_service_account,
            ),
            checkpoint_bytes=self.cache.checkpoint_bytes,
            served_name=self.served_name,
            api_key_secret=SecretKeyRef(api_key_secret, API_KEY_SECRET_KEY),
            replicas=self.replicas,
            min_available=self.min_replicas,
            extra_args=self.extra_args,
            extra_args_key=self.extra_args_key,
            node_selector=node_selector,
            tolerations=tolerations,
            labels=kubernetes_labels(self.tags),
        )


class VllmService(pulumi.ComponentResource):
    service_name: pulumi.Output[str]
    workload_name: pulumi.Output[str]
    workload_kind: pulumi.Output[str]  # Deployment or LeaderWorkerSet (what an autoscaler targets)
    fill_job: k8s.batch.v1.Job | None  # None when another revision fills the same cache entry
    fill_jobs: dict[tuple[str, str], k8s.batch.v1.Job]  # every Job it created, by (Hub id, revision)

    def __init__(self, name: str, args: VllmServiceArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("llm-serving:index:VllmService", name, None, opts)
        labels = kubernetes_labels(args.tags)

        self.fill_job = None
        self.fill_jobs = {}
        if args.fill_cache:
            self.fill_job = self._fill(f"{name}-fill", args.cache, args, labels)
            self.fill_jobs[(args.cache.model, args.cache.revision)] = self.fill_job
        for adapter in args.cache.adapters:
            entry = (adapter.model, adapter.revision)
            if entry not in self.fill_jobs and entry not in args.adapters_filled_elsewhere:
                self.fill_jobs[entry] = self._fill(f"{name}-fill-lora-{adapter.name}", adapter, args, labels)

        manifests = pulumi.Output.all(
            args.wiring.namespace,
            args.wiring.image,
            args.wiring.bucket,
            args.wiring.api_key_secret_name,
            args.node_selector,
            args.tolerations,
        ).apply(
            lambda v: vllm_workload.workload_manifests(
                args.spec(
                    namespace=v[0],
                    image=v[1],
                    bucket=v[2],
                    api_key_secret=v[3],
                    node_selector=v[4],
                    tolerations=v[5],
                )
            )
        )
        after = [*args.serve_after, *self.fill_jobs.values()]
        serve = workload_options(args, parent=self, depends_on=after)
        workload = manifests.apply(lambda m: m[0])
        if args.plan.nodes_per_replica > 1:
            k8s.apiextensions.CustomResource(
                f"{name}-workload",
                api_version=vllm_workload.LWS_API,
                kind="LeaderWorkerSet",
                metadata=workload.apply(lambda m: m["metadata"]),
                spec=workload.apply(lambda m: m["spec"]),
                opts=serve,
            )
            kind = "LeaderWorkerSet"
        else:
            k8s.apps.v1.Deployment(
                f"{name}-workload",
                metadata=workload.apply(lambda m: m["metadata"]),
                spec=workload.apply(lambda m: m["spec"]),
                opts=serve,
            )
            kind = "Deployment"
        service = manifests.apply(lambda m: m[1])
        k8s.core.v1.Service(
            f"{name}-service",
            metadata=service.apply(lambda m: m["metadata"]),
            spec=service.apply(lambda m: m["spec"]),
            opts=pulumi.ResourceOptions(parent=self),
        )
        if args.min_replicas >= 1:
            budget = manifests.apply(lambda m: m[2])
            k8s.policy.v1.PodDisruptionBudget(
                f"{name}-pdb",
                metadata=budget.apply(lambda m: m["metadata"]),
                spec=budget.apply(lambda m: m["spec"]),
                opts=pulumi.ResourceOptions(parent=self),
            )

        self.service_name = pulumi.Output.from_input(args.name)
        self.workload_name = pulumi.Output.from_input(args.name)
        self.workload_kind = pulumi.Output.from_input(kind)
        self.register_outputs(
            {
                "serviceName": self.service_name,
                "workloadName": self.workload_name,
                "workloadKind": self.workload_kind,
            }
        )

    def _fill(
        self,
        name: str,
        cache: RevisionCache | AdapterCache,
        args: VllmServiceArgs,
        labels: Mapping[str, str],
    ) -> k8s.batch.v1.Job:
        """The Job that pushes one cache entry (the model's or an adapter's) from the Hub, as the writer;
        with the stack's HF token Secret when it has one (gated models and adapters)."""
        wiring = args.wiring
        job = pulumi.Output.all(
            wiring.namespace, wiring.image, wiring.bucket, wiring.hf_token_secret_name
        ).apply(
            lambda v: serving_cache.revision_fill_job(
                cache,
                bucket=v[2],
                namespace=v[0],
                image=v[1],
                writer_service_account=wiring.writer_service_account,
                hf_token_secret=SecretKeyRef(v[3], HF_TOKEN_SECRET_KEY) if v[3] else None,
                labels=labels,
            )
        )
        return k8s.batch.v1.Job(
            name,
            metadata=job.apply(lambda m: m["metadata"]),
            spec=job.apply(lambda m: m["spec"]),
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=list(args.fill_after), delete_before_replace=True
            ),
        )


def workload_options(
    args: VllmServiceArgs, *, parent: pulumi.Resource | None, depends_on: Sequence[pulumi.Resource]
) -> pulumi.ResourceOptions:
    """Under an autoscaler Pulumi sets the replica count when it creates the workload and never again: an
    `up` that changed the pod template would otherwise reset KEDA's count to the starting one (taking a
    busy revision down to its minimum, or waking one KEDA had scaled to zero). Chosen over omitting `replicas`:
    a new workload still starts with the intended count (1 for a revision at minimum 0, which fills the
    node's caches once), and a stack that sent `replicas` before does not depend on server-side apply's
    rules for a field a manager stops sending."""
    return pulumi.ResourceOptions(
        parent=parent,
        depends_on=list(depends_on),
        ignore_changes=["spec.replicas"] if args.autoscaled else None,
    )
