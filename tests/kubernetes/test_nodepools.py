"""Karpenter NodePool / EC2NodeClass builders and the add-on values, against the pinned CRDs and charts."""

from __future__ import annotations

import copy

import jsonschema
import pytest
import yaml

from infra.kubernetes import nodepools
from infra.kubernetes.serving_cache import cache_disk_gib
from infra.versions import EKS_AMI_ALIAS, NVIDIA_DEVICE_PLUGIN_VERSION
from tests.conftest import shared_path
from tests.kubernetes.crd_schemas import validate_custom_resource


def spec(**changes) -> nodepools.GpuPoolSpec:
    values = dict(
        name="llm-dev-gpu",
        cluster_name="eks-a",
        node_role="node-role",
        instance_types=("g6.xlarge",),
        capacity_type="spot",
        gpus_per_node=1,
        max_nodes=2,
        root_volume_gib=100,
        local_nvme=True,
        ami_alias=EKS_AMI_ALIAS,
        tags={"stack": "dev"},
    )
    return nodepools.GpuPoolSpec(**{**values, **changes})


@pytest.mark.parametrize("local_nvme", [True, False])
@pytest.mark.parametrize("capacity_type", ["spot", "on-demand"])
def test_node_pool_and_node_class_match_the_karpenter_crds(local_nvme: bool, capacity_type: str) -> None:
    pool = spec(local_nvme=local_nvme, capacity_type=capacity_type)
    validate_custom_resource(nodepools.node_pool(pool))
    validate_custom_resource(nodepools.ec2_node_class(pool))


def test_crd_validation_catches_a_misspelt_field() -> None:
    broken = copy.deepcopy(nodepools.node_pool(spec()))
    broken["spec"]["template"]["spec"]["taint"] = broken["spec"]["template"]["spec"].pop("taints")
    with pytest.raises(jsonschema.ValidationError):
        validate_custom_resource(broken)
    bad_size = copy.deepcopy(nodepools.ec2_node_class(spec()))
    bad_size["spec"]["blockDeviceMappings"][0]["ebs"]["volumeSize"] = "100GB"
    with pytest.raises(jsonschema.ValidationError):
        validate_custom_resource(bad_size)


def test_node_pool_is_exactly_the_plan() -> None:
    pool = nodepools.node_pool(
        spec(instance_types=("p4de.24xlarge",), capacity_type="on-demand", gpus_per_node=8, max_nodes=2)
    )
    requirements = {
        r["key"]: (r["operator"], r["values"]) for r in pool["spec"]["template"]["spec"]["requirements"]
    }
    assert requirements["node.kubernetes.io/instance-type"] == ("In", ["p4de.24xlarge"])
    assert requirements["karpenter.sh/capacity-type"] == ("In", ["on-demand"])
    assert pool["spec"]["limits"] == {"nvidia.com/gpu": "16", "nodes": "2"}
    assert pool["spec"]["disruption"]["consolidationPolicy"] == "WhenEmpty"


def test_node_class_uses_nvme_only_when_present_and_pins_the_ami() -> None:
    assert nodepools.ec2_node_class(spec(local_nvme=True))["spec"]["instanceStorePolicy"] == "RAID0"
    assert "instanceStorePolicy" not in nodepools.ec2_node_class(spec(local_nvme=False))["spec"]
    node_class = nodepools.ec2_node_class(spec())["spec"]
    assert node_class["amiSelectorTerms"] == [{"alias": EKS_AMI_ALIAS}]
    assert not EKS_AMI_ALIAS.endswith("@latest"), "pin the AMI (Karpenter advises against @latest)"
    assert node_class["metadataOptions"]["httpTokens"] == "required"
    assert node_class["blockDeviceMappings"][0]["ebs"]["encrypted"] is True


@pytest.mark.parametrize(
    ("model_gib", "pods", "nvme", "expected"),
    [
        (16, 1, True, 100),
        (140, 2, True, 100),
        (16, 1, False, 150),  # 100 + 16 x 1.15 + 5, in 50s
        (70, 1, False, 200),
        (70, 2, False, 300),  # two pods of a shared node each hold their copy
        (140, 1, False, 300),
    ],
)
def test_root_volume_holds_image_and_each_pods_model_without_nvme(
    model_gib: int, pods: int, nvme: bool, expected: int
) -> None:
    assert nodepools.root_volume_gib(model_gib * 1024**3, pods_per_node=pods, local_nvme=nvme) == expected
    if not nvme:  # the model's share is the serving pod's own model disk, not a second formula
        need = nodepools.BASE_ROOT_GIB + pods * cache_disk_gib(model_gib * 1024**3)
        assert need <= expected < need + nodepools.ROOT_GIB_STEP


@pytest.mark.parametrize(
    ("gpus_per_node", "gpus_per_replica", "nodes_per_replica", "max_replicas", "expected"),
    [
        (1, 1, 1, 1, 1),
        (1, 1, 1, 3, 3),
        (8, 4, 1, 4, 2),  # two TP=4 replicas per 8-GPU node
        (8, 4, 1, 3, 2),
        (4, 1, 1, 2, 1),
        (8, 16, 2, 3, 6),  # a replica across two nodes
    ],
)
def test_max_nodes(
    gpus_per_node: int, gpus_per_replica: int, nodes_per_replica: int, max_replicas: int, expected: int
) -> None:
    assert (
        nodepools.max_nodes(
            gpus_per_node=gpus_per_node,
            gpus_per_replica=gpus_per_replica,
            nodes_per_replica=nodes_per_replica,
            max_replicas=max_replicas,
        )
        == expected
    )


def test_pool_spec_rejects_an_empty_pool() -> None:
    with pytest.raises(ValueError, match="instance type"):
        spec(instance_types=())
    with pytest.raises(ValueError, match="at least one GPU"):
        spec(max_nodes=0)


def _chart_defaults() -> dict:
    path = shared_path(
        "k8s-schemas", "charts", f"nvidia-device-plugin-{NVIDIA_DEVICE_PLUGIN_VERSION}-values.yaml"
    )
    return yaml.safe_load(path.read_text())


def test_device_plugin_default_affinity_and_tolerations_fit_the_pool() -> None:
    """The chart's own affinity needs NFD labels or nvidia.com/gpu.present: our pool sets the latter."""
    defaults = _chart_defaults()
    labels = nodepools.node_labels(spec())
    terms = defaults["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert any(
        all(labels.get(e["key"]) in e["values"] for e in term["matchExpressions"] if e["operator"] == "In")
        for term in terms
    )
    taint = nodepools.gpu_taint()
    assert any(t["key"] == taint["key"] and t["operator"] == "Exists" for t in defaults["tolerations"])
    selector = nodepools.device_plugin_values()["nodeSelector"]
    assert selector.items() <= labels.items()


def test_device_plugin_values_are_keys_of_the_chart() -> None:
    defaults = _chart_defaults()
    for key, value in nodepools.device_plugin_values().items():
        assert key in defaults, key
        if isinstance(value, dict):
            assert value.keys() <= (defaults[key] or {}).keys() | set(value), key


def test_tags_karpenter_refuses_are_refused_by_the_config() -> None:
    """The EC2NodeClass CRD's CEL rules name the tag keys Karpenter reserves; the config rejects each."""
    import re

    from infra.config import settings_from_values
    from infra.errors import UserError

    crd = yaml.safe_load(shared_path("k8s-schemas", "karpenter.k8s.aws_ec2nodeclasses.yaml").read_text())
    tags_schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"][
        "tags"
    ]
    reserved = [
        match.group(1)
        for rule in tags_schema["x-kubernetes-validations"]
        if (match := re.search(r"restricted tag matching (\S+)", rule["message"]))
    ]
    assert len(reserved) >= 5
    for key in reserved:
        with pytest.raises(UserError, match=r"^tags: "):
            settings_from_values({"tags": {key + ("x" if key.endswith("/") else ""): "v"}}, stack="t")
