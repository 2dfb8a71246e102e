"""`GpuNodePool`: GPU capacity for exactly the instance types and counts the plan asks for.

A Karpenter NodePool and EC2NodeClass (built by `infra.kubernetes.nodepools`) plus the NVIDIA device
plugin that advertises `nvidia.com/gpu` on those nodes. Karpenter launches nodes only when GPU pods are
pending and removes them when they are empty, so the pool scales from zero whenever the stack's
`replicas.min` is 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import pulumi
import pulumi_kubernetes as k8s

from infra.components import kubernetes_labels
from infra.kubernetes import nodepools
from infra.sizing.plan import ServingPlan, max_nodes, replicas_per_node
from infra.versions import EKS_AMI_ALIAS, NVIDIA_DEVICE_PLUGIN_REPO, NVIDIA_DEVICE_PLUGIN_VERSION


@dataclass(frozen=True)
class GpuNodePoolArgs:
    """Inputs of `GpuNodePool`: the counts are plain values (they shape the pool), the wiring is Inputs."""

    cluster_name: pulumi.Input[str]
    node_role: pulumi.Input[str]  # IAM role name of Karpenter's nodes
    instance_types: tuple[str, ...]
    capacity_type: Literal["spot", "on-demand"]
    gpus_per_node: int
    max_nodes: int
    root_volume_gib: int
    local_nvme: bool
    ami_alias: str = EKS_AMI_ALIAS
    install_device_plugin: bool = True
    tags: Mapping[str, str] = field(default_factory=dict)
    depends_on: Sequence[pulumi.Resource] = ()  # what must exist first (Karpenter and its CRDs)

    @staticmethod
    def from_plan(
        plan: ServingPlan,
        *,
        max_replicas: int,
        spread: bool = False,
        local_nvme_gb: int,
        checkpoint_bytes: int,
        cluster_name: pulumi.Input[str],
        node_role: pulumi.Input[str],
        tags: Mapping[str, str],
        depends_on: Sequence[pulumi.Resource] = (),
        install_device_plugin: bool = True,
    ) -> GpuNodePoolArgs:
        """The pool a plan needs: its instance type, enough nodes for `max_replicas` (a rollout's surge
        included, one node each when `spread`), a disk for the model's checkpoint on each pod."""
        local_nvme = local_nvme_gb > 0
        per_node = replicas_per_node(
            gpus_per_node=plan.gpu.count,
            gpus_per_replica=plan.gpus_per_replica,
            nodes_per_replica=plan.nodes_per_replica,
            spread=spread,
        )
        return GpuNodePoolArgs(
            cluster_name=cluster_name,
            node_role=node_role,
            instance_types=(plan.instance_type,),
            capacity_type=plan.capacity_type,
            gpus_per_node=plan.gpu.count,
            max_nodes=max_nodes(
                gpus_per_node=plan.gpu.count,
                gpus_per_replica=plan.gpus_per_replica,
                nodes_per_replica=plan.nodes_per_replica,
                max_replicas=max_replicas,
                spread=spread,
            ),
            root_volume_gib=nodepools.root_volume_gib(
                checkpoint_bytes, pods_per_node=per_node, local_nvme=local_nvme
            ),
            local_nvme=local_nvme,
            tags=tags,
            depends_on=depends_on,
            install_device_plugin=install_device_plugin,
        )


class GpuNodePool(pulumi.ComponentResource):
    """A Karpenter GPU pool. Needs a Kubernetes provider (through `opts.providers`) for a Karpenter cluster."""

    pool_name: pulumi.Output[str]
    node_selector: pulumi.Output[dict[str, str]]
    tolerations: pulumi.Output[list[dict[str, str]]]  # what a pod needs to run on the pool
    max_gpus: pulumi.Output[int]

    def __init__(self, name: str, args: GpuNodePoolArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("llm-serving:index:GpuNodePool", name, None, opts)
        pool = name
        labels = kubernetes_labels(args.tags)

        def spec(cluster_name: str, node_role: str) -> nodepools.GpuPoolSpec:
            return nodepools.GpuPoolSpec(
                name=pool,
                cluster_name=cluster_name,
                node_role=node_role,
                instance_types=args.instance_types,
                capacity_type=args.capacity_type,
                gpus_per_node=args.gpus_per_node,
                max_nodes=args.max_nodes,
                root_volume_gib=args.root_volume_gib,
                local_nvme=args.local_nvme,
                ami_alias=args.ami_alias,
                tags=args.tags,
            )

        specs = pulumi.Output.all(args.cluster_name, args.node_role).apply(lambda v: spec(v[0], v[1]))
        node_class_manifest = specs.apply(nodepools.ec2_node_class)
        node_pool_manifest = specs.apply(nodepools.node_pool)
        after = pulumi.ResourceOptions(parent=self, depends_on=list(args.depends_on))

        node_class = k8s.apiextensions.CustomResource(
            f"{name}-nodeclass",
            api_version=nodepools.NODECLASS_API,
            kind="EC2NodeClass",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=pool, labels={**labels, nodepools.POOL_LABEL: pool}),
            spec=node_class_manifest.apply(lambda m: m["spec"]),
            opts=after,
        )
        k8s.apiextensions.CustomResource(
            f"{name}-nodepool",
            api_version=nodepools.NODEPOOL_API,
            kind="NodePool",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=pool, labels={**labels, nodepools.POOL_LABEL: pool}),
            spec=node_pool_manifest.apply(lambda m: m["spec"]),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*args.depends_on, node_class]),
        )
        if args.install_device_plugin:
            k8s.helm.v3.Release(
                f"{name}-device-plugin",
                name="nvidia-device-plugin",
                chart="nvidia-device-plugin",
                version=NVIDIA_DEVICE_PLUGIN_VERSION,
                repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=NVIDIA_DEVICE_PLUGIN_REPO),
                namespace="kube-system",
                values=nodepools.device_plugin_values(),
                opts=after,
            )

        self.pool_name = pulumi.Output.from_input(pool)
        self.node_selector = pulumi.Output.from_input({nodepools.POOL_LABEL: pool})
        self.tolerations = pulumi.Output.from_input([nodepools.gpu_toleration()])
        self.max_gpus = pulumi.Output.from_input(args.gpus_per_node * args.max_nodes)
        self.register_outputs(
            {
                "poolName": self.pool_name,
                "nodeSelector": self.node_selector,
                "tolerations": self.tolerations,
                "maxGpus": self.max_gpus,
            }
        )
