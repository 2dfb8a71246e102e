"""GpuNodePool under recording mocks: the pool is exactly what the plan asks for."""

from __future__ import annotations

import pytest

from infra.components.gpu_node_pool import GpuNodePool, GpuNodePoolArgs
from infra.kubernetes import nodepools
from infra.kubernetes.model_cache import MODEL_VOLUME, LoadMode
from infra.kubernetes.serving_cache import RevisionCache, revision_cache_patch
from infra.versions import EKS_AMI_ALIAS, NVIDIA_DEVICE_PLUGIN_VERSION
from tests.components.support import GIB, Recorded, make_plan, run

TAGS = {"project": "llm-serving", "stack": "test"}
COMPONENT = "llm-serving:index:GpuNodePool"
NODEPOOL = "kubernetes:karpenter.sh/v1:NodePool"
NODECLASS = "kubernetes:karpenter.k8s.aws/v1:EC2NodeClass"
RELEASE = "kubernetes:helm.sh/v3:Release"


def build(plan=None, *, max_replicas: int = 1, local_nvme_gb: int = 250, **extra) -> Recorded:
    plan = plan or make_plan()
    args = GpuNodePoolArgs.from_plan(
        plan,
        max_replicas=max_replicas,
        local_nvme_gb=local_nvme_gb,
        checkpoint_bytes=extra.pop("checkpoint_bytes", plan.weights_total_bytes),
        cluster_name="cluster-a",
        node_role="node-role-a",
        tags=TAGS,
        **extra,
    )
    return run(lambda: GpuNodePool("pool", args))


@pytest.fixture(scope="module")
def recorded() -> Recorded:
    return build()


def test_children_are_nodeclass_nodepool_and_device_plugin(recorded: Recorded) -> None:
    assert sorted(recorded.names()) == sorted(
        [
            (COMPONENT, "pool"),
            (NODECLASS, "pool-nodeclass"),
            (NODEPOOL, "pool-nodepool"),
            (RELEASE, "pool-device-plugin"),
        ]
    )
    component = recorded.one(COMPONENT, "pool")
    assert len(recorded.children_of(component)) == 3


def test_nodepool_asks_for_exactly_the_planned_instance_and_capacity(recorded: Recorded) -> None:
    spec = recorded.inputs(NODEPOOL, "pool-nodepool")["spec"]
    requirements = {r["key"]: r["values"] for r in spec["template"]["spec"]["requirements"]}
    assert requirements["node.kubernetes.io/instance-type"] == ["g6.xlarge"]
    assert requirements["karpenter.sh/capacity-type"] == ["spot"]
    assert spec["limits"] == {"nvidia.com/gpu": "1", "nodes": "1"}
    assert spec["template"]["spec"]["taints"] == [
        {"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}
    ]
    assert spec["template"]["metadata"]["labels"][nodepools.POOL_LABEL] == "pool"
    assert spec["template"]["spec"]["nodeClassRef"]["name"] == "pool"


def test_nodeclass_wires_cluster_role_ami_nvme_and_tags(recorded: Recorded) -> None:
    spec = recorded.inputs(NODECLASS, "pool-nodeclass")["spec"]
    assert spec["role"] == "node-role-a"
    assert spec["amiSelectorTerms"] == [{"alias": EKS_AMI_ALIAS}]
    assert spec["subnetSelectorTerms"] == [{"tags": {"karpenter.sh/discovery": "cluster-a"}}]
    assert spec["instanceStorePolicy"] == "RAID0"
    assert spec["blockDeviceMappings"][0]["ebs"]["volumeSize"] == "100Gi"
    assert TAGS.items() <= spec["tags"].items()
    metadata = recorded.inputs(NODECLASS, "pool-nodeclass")["metadata"]
    assert metadata["name"] == "pool" and metadata["labels"]["llm-serving/stack"] == "test"


def test_device_plugin_is_the_pinned_chart(recorded: Recorded) -> None:
    release = recorded.inputs(RELEASE, "pool-device-plugin")
    assert release["chart"] == "nvidia-device-plugin"
    assert release["version"] == NVIDIA_DEVICE_PLUGIN_VERSION
    assert release["namespace"] == "kube-system"
    assert release["values"]["nodeSelector"] == {nodepools.GPU_PRESENT_LABEL: "true"}


def test_without_nvme_the_root_volume_holds_the_model() -> None:
    plan = make_plan(
        memory_per_gpu=make_plan().memory_per_gpu.__class__(
            budget=0, weights=70 * GIB, activations=0, cuda_graphs=0, other=0, kv_cache=0
        )
    )
    spec = build(plan, local_nvme_gb=0).inputs(NODECLASS, "pool-nodeclass")["spec"]
    assert "instanceStorePolicy" not in spec
    assert spec["blockDeviceMappings"][0]["ebs"]["volumeSize"] == "200Gi"  # 100 + 70 x 1.15 + 5, in 50s


def test_without_nvme_the_root_volume_holds_every_serving_pods_model_volume() -> None:
    """The pool sizes its disk from the same model-disk formula as the serving pods' emptyDir, a copy per
    pod sharing the node (two TP=4 replicas on one 8-GPU node), for a load-time fp8 checkpoint too."""
    plan = make_plan(
        instance_type="p4de.24xlarge",
        gpu=make_plan().gpu.__class__("A100-80GB", 80.0, 8),
        gpus_per_replica=4,
        tensor_parallel_size=4,
    )
    cache = RevisionCache.from_plan(
        plan, revision="main", load_mode=LoadMode.LOCAL, compile_cache=False, load_time_fp8=True, region=None
    )
    patch = revision_cache_patch(cache, bucket="b", image="i:1", reader_service_account="vllm")
    (model_volume,) = [v for v in patch.volumes if v["name"] == MODEL_VOLUME]
    pod_disk = int(model_volume["emptyDir"]["sizeLimit"].removesuffix("Gi"))
    spec = build(plan, local_nvme_gb=0, checkpoint_bytes=cache.checkpoint_bytes).inputs(
        NODECLASS, "pool-nodeclass"
    )["spec"]
    root = int(spec["blockDeviceMappings"][0]["ebs"]["volumeSize"].removesuffix("Gi"))
    assert root >= nodepools.BASE_ROOT_GIB + 2 * pod_disk


def test_multi_gpu_replicas_share_nodes_and_cap_gpus() -> None:
    # two TP=4 replicas fit one 8-GPU node: 4 replicas need 2 nodes, 16 GPUs
    plan = make_plan(
        instance_type="p4de.24xlarge",
        gpu=make_plan().gpu.__class__("A100-80GB", 80.0, 8),
        gpus_per_replica=4,
        tensor_parallel_size=4,
        capacity_type="on-demand",
    )
    spec = build(plan, max_replicas=4).inputs(NODEPOOL, "pool-nodepool")["spec"]
    assert spec["limits"] == {"nvidia.com/gpu": "16", "nodes": "2"}
    requirements = {r["key"]: r["values"] for r in spec["template"]["spec"]["requirements"]}
    assert requirements["karpenter.sh/capacity-type"] == ["on-demand"]


def test_multi_node_replicas_take_whole_nodes() -> None:
    plan = make_plan(
        gpu=make_plan().gpu.__class__("H100", 80.0, 8),
        gpus_per_replica=16,
        pipeline_parallel_size=2,
        nodes_per_replica=2,
        tensor_parallel_size=8,
    )
    spec = build(plan, max_replicas=3).inputs(NODEPOOL, "pool-nodepool")["spec"]
    assert spec["limits"] == {"nvidia.com/gpu": "48", "nodes": "6"}


def test_device_plugin_can_be_left_to_the_cluster() -> None:
    assert not build(install_device_plugin=False).of_type(RELEASE)
