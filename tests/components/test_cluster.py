"""Cluster under recording mocks: a new EKS cluster with its network, add-ons and Karpenter; or a lookup."""

from __future__ import annotations

import json

import pytest
import yaml

from infra.components.cluster import STORAGE_CLASS as CLUSTER_STORAGE_CLASS
from infra.components.cluster import Cluster, ClusterArgs, ClusterMode, kubeconfig_for
from infra.errors import UserError
from infra.versions import KARPENTER_CHART, KARPENTER_VERSION, KUBERNETES_VERSIONS
from tests.components.support import Recorded, run
from tests.conftest import shared_path

TAGS = {"project": "llm-serving", "stack": "test", "owner": "ml-platform"}
COMPONENT = "llm-serving:index:Cluster"
# pulumi_aws types that take no tags argument
UNTAGGABLE = {
    "aws:iam/rolePolicyAttachment:RolePolicyAttachment",
    "aws:iam/rolePolicy:RolePolicy",
    "aws:ec2/routeTableAssociation:RouteTableAssociation",
    "aws:ec2/tag:Tag",
    "aws:sqs/queuePolicy:QueuePolicy",
    "aws:cloudwatch/eventTarget:EventTarget",
}


def new_args(**changes) -> ClusterArgs:
    values = dict(
        mode=ClusterMode.NEW,
        cluster_name="eks-a",
        region="eu-west-1",
        kubernetes_version=KUBERNETES_VERSIONS[-1],
        workload_namespace="serving",
        tags=TAGS,
    )
    return ClusterArgs(**{**values, **changes})


@pytest.fixture(scope="module")
def recorded() -> Recorded:
    return run(lambda: Cluster("c", new_args()))


def test_new_cluster_creates_exactly_these_children(recorded: Recorded) -> None:
    expected = {
        ("aws:ec2/vpc:Vpc", "c-vpc"),
        ("aws:ec2/internetGateway:InternetGateway", "c-igw"),
        ("aws:ec2/routeTable:RouteTable", "c-public-routes"),
        ("aws:ec2/routeTable:RouteTable", "c-private-routes"),
        ("aws:ec2/eip:Eip", "c-nat-ip"),
        ("aws:ec2/natGateway:NatGateway", "c-nat"),
        ("aws:ec2/vpcEndpoint:VpcEndpoint", "c-s3"),
        ("aws:iam/role:Role", "c-cluster"),
        ("aws:iam/rolePolicyAttachment:RolePolicyAttachment", "c-cluster-amazoneksclusterpolicy"),
        ("aws:kms/key:Key", "c-secrets-key"),
        ("aws:iam/rolePolicy:RolePolicy", "c-cluster-secrets-key"),
        ("aws:eks/cluster:Cluster", "c-eks"),
        ("aws:ec2/launchTemplate:LaunchTemplate", "c-system-template"),
        ("aws:ec2/tag:Tag", "c-cluster-sg-discovery"),
        ("aws:iam/role:Role", "c-system-node"),
        ("aws:eks/nodeGroup:NodeGroup", "c-system"),
        ("aws:iam/role:Role", "c-karpenter-node"),
        ("aws:eks/accessEntry:AccessEntry", "c-karpenter-node-access"),
        ("aws:sqs/queue:Queue", "c-karpenter-queue"),
        ("aws:sqs/queuePolicy:QueuePolicy", "c-karpenter-queue-policy"),
        ("aws:iam/role:Role", "c-karpenter-controller"),
        ("aws:eks/podIdentityAssociation:PodIdentityAssociation", "c-karpenter-pod-identity"),
        ("aws:iam/role:Role", "c-ebs-csi"),
        ("aws:iam/rolePolicyAttachment:RolePolicyAttachment", "c-ebs-csi-policy"),
        ("kubernetes:storage.k8s.io/v1:StorageClass", "c-storage-class"),
        ("pulumi:providers:kubernetes", "c-k8s"),
        ("kubernetes:helm.sh/v3:Release", "c-karpenter"),
        ("kubernetes:core/v1:Namespace", "c-namespace"),
    }
    for tier in ("public", "private"):
        for index in range(3):
            expected.add(("aws:ec2/subnet:Subnet", f"c-{tier}-{index}"))
            expected.add(("aws:ec2/routeTableAssociation:RouteTableAssociation", f"c-{tier}-{index}-routes"))
    for addon in ("vpc-cni", "kube-proxy", "eks-pod-identity-agent", "coredns", "aws-ebs-csi-driver"):
        expected.add(("aws:eks/addon:Addon", f"c-{addon}"))
    for policy in (
        "node-lifecycle",
        "iam-integration",
        "eks-integration",
        "interruption",
        "resource-discovery",
    ):
        expected.add(("aws:iam/rolePolicy:RolePolicy", f"c-karpenter-{policy}"))
    for event in ("health", "spot-interruption", "rebalance", "state-change", "capacity-reservation"):
        expected.add(("aws:cloudwatch/eventRule:EventRule", f"c-karpenter-{event}"))
        expected.add(("aws:cloudwatch/eventTarget:EventTarget", f"c-karpenter-{event}-target"))
    for role in ("system-node", "karpenter-node"):
        for policy in (
            "amazoneksworkernodepolicy",
            "amazoneks-cni-policy",
            "amazonec2containerregistrypullonly",
            "amazonssmmanagedinstancecore",
        ):
            expected.add(("aws:iam/rolePolicyAttachment:RolePolicyAttachment", f"c-{role}-{policy}"))
    names = recorded.names()
    assert len(names) == len(set(names)), "a child is registered twice"
    assert set(names) - {(COMPONENT, "c")} == expected


def test_every_child_is_parented_to_the_cluster(recorded: Recorded) -> None:
    component = recorded.one(COMPONENT, "c")
    assert len(recorded.children_of(component)) == len(recorded.registrations) - 1


def test_every_aws_child_that_takes_tags_carries_them(recorded: Recorded) -> None:
    for registration in recorded.registrations:
        if not registration.type.startswith("aws:") or registration.type in UNTAGGABLE:
            continue
        tags = registration.inputs.get("tags") or {}
        assert TAGS.items() <= tags.items(), f"{registration.type} {registration.name} lacks the stack tags"


def test_network_keeps_nodes_private_and_model_bytes_off_the_nat(recorded: Recorded) -> None:
    assert recorded.inputs("aws:ec2/vpc:Vpc", "c-vpc")["cidrBlock"] == "10.0.0.0/16"
    private = [recorded.inputs("aws:ec2/subnet:Subnet", f"c-private-{i}") for i in range(3)]
    assert [s["availabilityZone"] for s in private] == ["us-east-1a", "us-east-1b", "us-east-1c"]
    assert all(s["tags"]["karpenter.sh/discovery"] == "eks-a" for s in private)
    assert all("mapPublicIpOnLaunch" not in s for s in private)
    private_routes = recorded.inputs("aws:ec2/routeTable:RouteTable", "c-private-routes")["routes"]
    assert private_routes == [{"cidrBlock": "0.0.0.0/0", "natGatewayId": "<known after deploy: c-nat.id>"}]
    endpoint = recorded.inputs("aws:ec2/vpcEndpoint:VpcEndpoint", "c-s3")
    assert endpoint["vpcEndpointType"] == "Gateway"
    assert endpoint["serviceName"] == "com.amazonaws.eu-west-1.s3"
    assert "<known after deploy: c-private-routes.id>" in endpoint["routeTableIds"]


def test_eks_cluster_uses_api_auth_and_private_node_subnets(recorded: Recorded) -> None:
    eks = recorded.inputs("aws:eks/cluster:Cluster", "c-eks")
    assert eks["name"] == "eks-a" and eks["version"] == KUBERNETES_VERSIONS[-1]
    assert eks["accessConfig"]["authenticationMode"] == "API"
    assert eks["roleArn"] == "<known after deploy: c-cluster.arn>"
    nodes = recorded.inputs("aws:eks/nodeGroup:NodeGroup", "c-system")
    assert nodes["subnetIds"] == [f"<known after deploy: c-private-{i}.id>" for i in range(3)]
    assert nodes["capacityType"] == "ON_DEMAND"
    assert "diskSize" not in nodes  # EKS refuses it next to a launch template: the template sizes the disk
    (root,) = recorded.inputs("aws:ec2/launchTemplate:LaunchTemplate", "c-system-template")[
        "blockDeviceMappings"
    ]
    assert root["ebs"]["volumeSize"] == 60  # the default: room for the serving image the fill Job runs
    assert root["deviceName"] == "/dev/xvda" and root["ebs"]["encrypted"] == "true"
    tag = recorded.inputs("aws:ec2/tag:Tag", "c-cluster-sg-discovery")
    assert tag["key"] == "karpenter.sh/discovery" and tag["value"] == "eks-a"


def test_karpenter_is_installed_with_its_identity_and_queue(recorded: Recorded) -> None:
    release = recorded.inputs("kubernetes:helm.sh/v3:Release", "c-karpenter")
    assert (release["chart"], release["version"], release["namespace"]) == (
        KARPENTER_CHART,
        KARPENTER_VERSION,
        "kube-system",
    )
    assert release["values"]["settings"] == {
        "clusterName": "eks-a",
        "clusterEndpoint": "<known after deploy: c-eks.endpoint>",
        "interruptionQueue": "c-karpenter-queue-<suffix>",
    }
    identity = recorded.inputs(
        "aws:eks/podIdentityAssociation:PodIdentityAssociation", "c-karpenter-pod-identity"
    )
    assert (identity["namespace"], identity["serviceAccount"]) == (
        "kube-system",
        release["values"]["serviceAccount"]["name"],
    )
    by_sid = {
        s["Sid"]: s
        for policy in (
            "node-lifecycle",
            "iam-integration",
            "eks-integration",
            "interruption",
            "resource-discovery",
        )
        for s in json.loads(
            recorded.inputs("aws:iam/rolePolicy:RolePolicy", f"c-karpenter-{policy}")["policy"]
        )["Statement"]
    }
    assert by_sid["AllowPassingInstanceRole"]["Resource"] == "<known after deploy: c-karpenter-node.arn>"
    assert (
        by_sid["AllowInterruptionQueueActions"]["Resource"] == "<known after deploy: c-karpenter-queue.arn>"
    )
    access = recorded.inputs("aws:eks/accessEntry:AccessEntry", "c-karpenter-node-access")
    assert access["type"] == "EC2_LINUX"
    rule = recorded.inputs("aws:cloudwatch/eventRule:EventRule", "c-karpenter-spot-interruption")
    assert json.loads(rule["eventPattern"])["detail-type"] == ["EC2 Spot Instance Interruption Warning"]


def test_karpenter_values_are_keys_of_the_pinned_chart(recorded: Recorded) -> None:
    defaults = yaml.safe_load(
        shared_path("k8s-schemas", "charts", f"karpenter-{KARPENTER_VERSION}-values.yaml").read_text()
    )
    values = recorded.inputs("kubernetes:helm.sh/v3:Release", "c-karpenter")["values"]

    def check(ours: dict, theirs: dict, path: str) -> None:
        for key, value in ours.items():
            assert key in theirs, f"{path}{key} is not a value of the karpenter chart"
            if isinstance(value, dict) and theirs[key]:
                check(value, theirs[key], f"{path}{key}.")

    check(values, defaults, "")


def test_kubernetes_provider_and_namespace(recorded: Recorded) -> None:
    provider = recorded.one("pulumi:providers:kubernetes", "c-k8s")
    assert "kubeconfig" in provider.inputs
    namespace = recorded.inputs("kubernetes:core/v1:Namespace", "c-namespace")
    assert namespace["metadata"]["name"] == "serving"
    assert namespace["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "pulumi"


def test_existing_cluster_is_looked_up_not_created() -> None:
    recorded = run(
        lambda: Cluster(
            "c", new_args(mode=ClusterMode.EXISTING, cluster_name="theirs", karpenter_node_role=None)
        )
    )
    assert sorted(recorded.names()) == sorted(
        [
            (COMPONENT, "c"),
            ("pulumi:providers:kubernetes", "c-k8s"),
            ("kubernetes:core/v1:Namespace", "c-namespace"),
        ]
    )


def test_existing_cluster_outputs_name_role_and_given_kubeconfig() -> None:
    from tests.components.support import resolve

    holder: dict[str, Cluster] = {}

    def build() -> None:
        holder["c"] = Cluster(
            "c",
            new_args(mode=ClusterMode.EXISTING, cluster_name="theirs", kubeconfig="/home/me/.kube/config"),
        )

    recorded = run(build)
    cluster = holder["c"]
    assert resolve(cluster.cluster_name) == "theirs"
    assert resolve(cluster.karpenter_node_role) == "KarpenterNodeRole-theirs"
    assert resolve(cluster.kubeconfig) == "/home/me/.kube/config"
    assert recorded.one("pulumi:providers:kubernetes", "c-k8s").inputs["kubeconfig"] is not None


def test_kubeconfig_authenticates_with_the_aws_cli() -> None:
    config = json.loads(kubeconfig_for("eks-a", "https://x", "Q0E=", "eu-west-1"))
    assert config["clusters"][0]["cluster"] == {"server": "https://x", "certificate-authority-data": "Q0E="}
    assert config["users"][0]["user"]["exec"]["args"][-4:] == ["--region", "eu-west-1", "--output", "json"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"kubeconfig": "/x"}, "only to an existing cluster"),
        ({"availability_zones": 1}, "2 to 6"),
        ({"system_nodes": 0}, "at least one node"),
        ({"system_disk_gib": 10}, "at least 20 GiB"),
    ],
)
def test_args_reject_contradictions(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        new_args(**changes)


# --- the Kubernetes API endpoint -------------------------------------------------------------------------


def test_the_api_endpoint_is_private_by_default(recorded: Recorded) -> None:
    vpc_config = recorded.inputs("aws:eks/cluster:Cluster", "c-eks")["vpcConfig"]
    assert vpc_config["endpointPrivateAccess"] is True
    assert vpc_config["endpointPublicAccess"] is False
    assert "publicAccessCidrs" not in vpc_config  # EKS would default an open endpoint to 0.0.0.0/0


def test_listed_networks_and_only_those_reach_the_public_endpoint() -> None:
    cidrs = ("203.0.113.7/32", "198.51.100.0/24")
    recorded = run(lambda: Cluster("c", new_args(public_access_cidrs=cidrs)))
    vpc_config = recorded.inputs("aws:eks/cluster:Cluster", "c-eks")["vpcConfig"]
    assert vpc_config["endpointPublicAccess"] is True and vpc_config["endpointPrivateAccess"] is True
    assert vpc_config["publicAccessCidrs"] == list(cidrs)


def test_without_private_access_the_nodes_reach_the_api_through_the_nat() -> None:
    recorded = run(
        lambda: Cluster("c", new_args(public_access_cidrs=("203.0.113.7/32",), private_access=False))
    )
    vpc_config = recorded.inputs("aws:eks/cluster:Cluster", "c-eks")["vpcConfig"]
    assert vpc_config["endpointPublicAccess"] is True and vpc_config["endpointPrivateAccess"] is False
    (listed, nat) = vpc_config["publicAccessCidrs"]
    assert (
        listed == "203.0.113.7/32"
        and nat.startswith("<known after deploy: c-nat-ip.")
        and nat.endswith("/32")
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"public_access_cidrs": ("10.0.0.1/8",)}, "has host bits set"),
        ({"public_access_cidrs": ("203.0.113.7",)}, r"write it as 203\.0\.113\.7/32"),
        ({"public_access_cidrs": ("2001:db8::/32",)}, "not an IPv4 network"),
        ({"public_access_cidrs": ("office",)}, "not an IPv4 network"),
        ({"public_access_cidrs": tuple(f"10.0.{i}.0/24" for i in range(41))}, "at most 40 networks"),
        ({"private_access": False}, "would be unreachable"),
        (
            {"mode": ClusterMode.EXISTING, "public_access_cidrs": ("203.0.113.7/32",)},
            "only to a new cluster",
        ),
    ],
)
def test_bad_endpoint_access_is_one_line_naming_the_key(changes: dict, message: str) -> None:
    with pytest.raises(UserError, match=message) as caught:
        new_args(**changes)
    assert caught.value.key == "cluster.publicAccessCidrs" and "\n" not in str(caught.value)


# --- secrets, node metadata, Pod Identity trust ------------------------------------------------------------


def test_secrets_are_envelope_encrypted_with_a_rotating_key(recorded: Recorded) -> None:
    eks = recorded.inputs("aws:eks/cluster:Cluster", "c-eks")
    assert eks["encryptionConfig"] == {
        "resources": ["secrets"],
        "provider": {"keyArn": "<known after deploy: c-secrets-key.arn>"},
    }
    key = recorded.inputs("aws:kms/key:Key", "c-secrets-key")
    assert key["enableKeyRotation"] is True
    use = recorded.inputs("aws:iam/rolePolicy:RolePolicy", "c-cluster-secrets-key")
    assert use["role"] == "<known after deploy: c-cluster.id>"
    (statement,) = json.loads(use["policy"])["Statement"]
    assert statement["Resource"] == "<known after deploy: c-secrets-key.arn>"
    # the role may use the key before EKS is asked to encrypt with it
    cluster = recorded.one("aws:eks/cluster:Cluster", "c-eks")
    assert recorded.one("aws:iam/rolePolicy:RolePolicy", "c-cluster-secrets-key").urn in cluster.dependencies


def test_system_nodes_require_imdsv2_out_of_reach_of_pods(recorded: Recorded) -> None:
    template = recorded.inputs("aws:ec2/launchTemplate:LaunchTemplate", "c-system-template")
    assert template["metadataOptions"] == {
        "httpEndpoint": "enabled",
        "httpTokens": "required",
        "httpPutResponseHopLimit": 1,
    }
    nodes = recorded.inputs("aws:eks/nodeGroup:NodeGroup", "c-system")
    assert nodes["launchTemplate"]["id"] == "<known after deploy: c-system-template.id>"
    # Karpenter cannot ask IMDS for its region any more
    values = recorded.inputs("kubernetes:helm.sh/v3:Release", "c-karpenter")["values"]
    assert values["controller"]["env"] == [{"name": "AWS_REGION", "value": "eu-west-1"}]


def test_a_new_cluster_provisions_encrypted_volumes_through_the_ebs_csi_driver(recorded: Recorded) -> None:
    # EKS has no CSI driver and no default StorageClass: Prometheus' claim would stay Pending without them.
    addon = recorded.inputs("aws:eks/addon:Addon", "c-aws-ebs-csi-driver")
    assert addon["podIdentityAssociations"] == [
        {"roleArn": "<known after deploy: c-ebs-csi.arn>", "serviceAccount": "ebs-csi-controller-sa"}
    ]
    attachment = recorded.inputs("aws:iam/rolePolicyAttachment:RolePolicyAttachment", "c-ebs-csi-policy")
    assert attachment["policyArn"] == "arn:aws:iam::aws:policy/service-role/AmazonEBSCSIDriverPolicy"
    trust = json.loads(recorded.inputs("aws:iam/role:Role", "c-ebs-csi")["assumeRolePolicy"])
    assert trust["Statement"][0]["Condition"]["ArnEquals"] == {
        "aws:SourceArn": "<known after deploy: c-eks.arn>"
    }
    storage = recorded.inputs("kubernetes:storage.k8s.io/v1:StorageClass", "c-storage-class")
    assert storage["provisioner"] == "ebs.csi.aws.com"
    assert storage["parameters"] == {"type": "gp3", "encrypted": "true"}
    assert storage["volumeBindingMode"] == "WaitForFirstConsumer"  # in the zone of the pod that claims it
    # not the cluster's default class: it changes nothing else, and claims name it
    assert "storageclass.kubernetes.io/is-default-class" not in storage["metadata"].get("annotations", {})
    assert storage["metadata"]["name"] == CLUSTER_STORAGE_CLASS
    # the class exists only once the driver (and the nodes it runs on) does
    created = recorded.one("kubernetes:storage.k8s.io/v1:StorageClass", "c-storage-class")
    assert recorded.one("aws:eks/addon:Addon", "c-aws-ebs-csi-driver").urn in created.dependencies


def test_karpenters_identity_trusts_only_this_cluster(recorded: Recorded) -> None:
    trust = json.loads(recorded.inputs("aws:iam/role:Role", "c-karpenter-controller")["assumeRolePolicy"])
    (statement,) = trust["Statement"]
    assert statement["Condition"] == {
        "StringEquals": {"aws:SourceAccount": "<known after deploy: AWS account id>"},
        "ArnEquals": {"aws:SourceArn": "<known after deploy: c-eks.arn>"},
    }
