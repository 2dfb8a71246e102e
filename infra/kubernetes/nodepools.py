"""Karpenter NodePool and EC2NodeClass for the GPU pool, and the Helm values of the add-ons around it.

Pure: plain dicts for Karpenter v1 (`karpenter.sh/v1`, `karpenter.k8s.aws/v1`) that tests validate against
the CRDs in ../shared/k8s-schemas. The component `GpuNodePool` only turns them into resources.

Why these choices:
- exactly the plan's instance type(s) and capacity type, so the node that comes up is the one the planner
  sized vLLM for; the pool's `limits` cap GPUs and nodes at max replicas, so it cannot grow past the plan;
- a `nvidia.com/gpu` NoSchedule taint keeps everything but GPU workloads off these nodes, and the labels
  below are what the serving workload selects on;
- the AL2023 alias resolves to the EKS NVIDIA AMI (driver and container toolkit) on GPU instances;
- node-local NVMe, where the instance has it, becomes a RAID0 array for kubelet and containerd
  (`instanceStorePolicy: RAID0`), so emptyDir model caches and image layers land on NVMe;
- consolidation only when empty: moving a model server to a cheaper node costs a full cold start.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from infra.kubernetes.serving_cache import cache_disk_gib
from infra.sizing.plan import max_nodes as max_nodes  # re-exported: pools are sized as the planner prices

NODEPOOL_API = "karpenter.sh/v1"
NODECLASS_API = "karpenter.k8s.aws/v1"
GPU_RESOURCE = "nvidia.com/gpu"
POOL_LABEL = "llm-serving/pool"
# Matched by the nvidia-device-plugin chart's default node affinity: without node-feature-discovery on the
# cluster, this label is what lets the device plugin run on (only) our GPU nodes.
GPU_PRESENT_LABEL = "nvidia.com/gpu.present"
DISCOVERY_TAG = "karpenter.sh/discovery"

# Disk the node needs besides the model: OS, kubelet, the vLLM image pulled and unpacked (~25 GiB), logs.
BASE_ROOT_GIB = 100
ROOT_GIB_STEP = 50


@dataclass(frozen=True)
class GpuPoolSpec:
    """Everything the NodePool and EC2NodeClass of one GPU pool depend on."""

    name: str  # Kubernetes name of both objects
    cluster_name: str
    node_role: str  # IAM role name; Karpenter makes the instance profile
    instance_types: tuple[str, ...]
    capacity_type: Literal["spot", "on-demand"]
    gpus_per_node: int
    max_nodes: int
    root_volume_gib: int
    local_nvme: bool
    ami_alias: str
    labels: Mapping[str, str] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)
    consolidate_after: str = "10m"  # an idle GPU node goes this long after its last pod

    def __post_init__(self) -> None:
        if not self.instance_types:
            raise ValueError("a GPU pool needs at least one instance type")
        if self.gpus_per_node < 1 or self.max_nodes < 1:
            raise ValueError("a GPU pool needs at least one GPU per node and one node")


def node_labels(spec: GpuPoolSpec) -> dict[str, str]:
    """Labels every node of the pool carries; the serving workload selects on POOL_LABEL."""
    return {**spec.labels, POOL_LABEL: spec.name, GPU_PRESENT_LABEL: "true"}


def gpu_taint() -> dict[str, str]:
    return {"key": GPU_RESOURCE, "value": "true", "effect": "NoSchedule"}


def gpu_toleration() -> dict[str, str]:
    """The toleration a pod needs to run on the pool."""
    return {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}


def node_pool(spec: GpuPoolSpec) -> dict[str, Any]:
    """The Karpenter NodePool: which instances, on which capacity, how many at most."""
    return {
        "apiVersion": NODEPOOL_API,
        "kind": "NodePool",
        "metadata": {"name": spec.name, "labels": {POOL_LABEL: spec.name}},
        "spec": {
            "template": {
                "metadata": {"labels": node_labels(spec)},
                "spec": {
                    "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": spec.name},
                    "requirements": [
                        {
                            "key": "node.kubernetes.io/instance-type",
                            "operator": "In",
                            "values": list(spec.instance_types),
                        },
                        {
                            "key": "karpenter.sh/capacity-type",
                            "operator": "In",
                            "values": [spec.capacity_type],
                        },
                        {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
                    ],
                    "taints": [gpu_taint()],
                    "expireAfter": "720h",
                    # A node being drained waits this long for vLLM to finish in-flight requests.
                    "terminationGracePeriod": "1h",
                },
            },
            "limits": {GPU_RESOURCE: str(spec.gpus_per_node * spec.max_nodes), "nodes": str(spec.max_nodes)},
            "disruption": {
                "consolidationPolicy": "WhenEmpty",
                "consolidateAfter": spec.consolidate_after,
                "budgets": [{"nodes": "1"}],
            },
        },
    }


def ec2_node_class(spec: GpuPoolSpec) -> dict[str, Any]:
    """The EC2NodeClass: AMI, subnets, security groups, disks and IMDS settings of the pool's nodes."""
    discovery = {DISCOVERY_TAG: spec.cluster_name}
    node_class_spec: dict[str, Any] = {
        "role": spec.node_role,
        "amiSelectorTerms": [{"alias": spec.ami_alias}],
        "subnetSelectorTerms": [{"tags": dict(discovery)}],
        "securityGroupSelectorTerms": [{"tags": dict(discovery)}],
        "blockDeviceMappings": [
            {
                "deviceName": "/dev/xvda",
                "ebs": {
                    "volumeSize": f"{spec.root_volume_gib}Gi",
                    "volumeType": "gp3",
                    "iops": 6000,
                    "throughput": 500,  # MiB/s: image pulls and, without NVMe, model reads
                    "encrypted": True,
                    "deleteOnTermination": True,
                },
            }
        ],
        "metadataOptions": {
            "httpEndpoint": "enabled",
            "httpProtocolIPv6": "disabled",
            "httpPutResponseHopLimit": 1,  # pods get AWS credentials from Pod Identity, never from IMDS
            "httpTokens": "required",
        },
        "tags": {**spec.tags, "Name": f"{spec.cluster_name}-{spec.name}"},
    }
    if spec.local_nvme:
        node_class_spec["instanceStorePolicy"] = "RAID0"
    return {
        "apiVersion": NODECLASS_API,
        "kind": "EC2NodeClass",
        "metadata": {"name": spec.name, "labels": {POOL_LABEL: spec.name}},
        "spec": node_class_spec,
    }


def root_volume_gib(checkpoint_bytes: int, *, pods_per_node: int, local_nvme: bool) -> int:
    """Root EBS size: the OS and the vLLM image, plus, when there is no NVMe to hold it, the model disk of
    every serving pod on the node (serving_cache.cache_disk_gib, the one headroom formula)."""
    need = BASE_ROOT_GIB
    if not local_nvme:
        need += pods_per_node * cache_disk_gib(checkpoint_bytes)
    return int(math.ceil(need / ROOT_GIB_STEP) * ROOT_GIB_STEP)


def device_plugin_values() -> dict[str, Any]:
    """nvidia-device-plugin chart values: the chart's own affinity and tolerations already select our
    nodes (GPU_PRESENT_LABEL, the nvidia.com/gpu taint); keep it off every other node explicitly too."""
    return {
        "nodeSelector": {GPU_PRESENT_LABEL: "true"},
        "failOnInitError": True,
        "gfd": {"enabled": False},
    }


def karpenter_values(
    *, cluster_name: str, cluster_endpoint: str, interruption_queue: str, region: str
) -> dict[str, Any]:
    """Karpenter chart values: the cluster it manages and the SQS queue of spot interruption events."""
    return {
        "settings": {
            "clusterName": cluster_name,
            "clusterEndpoint": cluster_endpoint,
            "interruptionQueue": interruption_queue,
        },
        "serviceAccount": {"create": True, "name": "karpenter"},
        "replicas": 2,
        "controller": {
            # Karpenter asks IMDS for its region otherwise, which a hop limit of 1 keeps from pods.
            "env": [{"name": "AWS_REGION", "value": region}],
            "resources": {
                "requests": {"cpu": "250m", "memory": "512Mi"},
                "limits": {"memory": "1Gi"},
            },
        },
    }
