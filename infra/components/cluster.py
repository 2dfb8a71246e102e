"""`Cluster`: the EKS cluster the serving workload runs on, new or existing, and a Kubernetes provider for it.

New: a VPC with public subnets (load balancers, one NAT gateway) and private subnets (nodes), an S3
gateway endpoint so model bytes never cross the NAT, the cluster with API authentication and the add-ons
a GPU workload needs (VPC CNI, kube-proxy, CoreDNS, the Pod Identity agent, and the EBS CSI driver with an
encrypted gp3 StorageClass for Prometheus' volume), Kubernetes secrets
envelope-encrypted with a customer-managed KMS key (rotation on), a small on-demand system node group for
cluster services (IMDSv2 only, hop limit 1, as the GPU nodes), and Karpenter (controller role bound by
Pod Identity, its node role with an access entry, the SQS queue that receives spot interruption warnings).
Plain `pulumi_aws` resources, so unit tests with mocks see every one of them.

Existing: the cluster is looked up by name, and it is expected to run Karpenter v1 and the Pod Identity
agent already; its Karpenter node role is named in the config (or follows Karpenter's own convention).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import cast

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from infra import aws_policies
from infra.components import kubernetes_labels
from infra.errors import UserError
from infra.kubernetes.nodepools import DISCOVERY_TAG, karpenter_values
from infra.versions import KARPENTER_CHART, KARPENTER_VERSION

EKS_ADDONS_BEFORE_NODES = ("vpc-cni", "kube-proxy", "eks-pod-identity-agent")
EKS_ADDONS_AFTER_NODES = ("coredns",)
# The VPC CNI enforces NetworkPolicies (the one in front of vLLM) only when asked to. An existing cluster
# needs the same setting on its vpc-cni add-on, or its policies are accepted and silently not enforced.
ADDON_CONFIGURATION = {"vpc-cni": json.dumps({"enableNetworkPolicy": "true"})}
NODE_POLICIES = (
    "AmazonEKSWorkerNodePolicy",
    "AmazonEKS_CNI_Policy",
    "AmazonEC2ContainerRegistryPullOnly",
    "AmazonSSMManagedInstanceCore",
)
# Karpenter v1.14's controller policies, by the name aws_policies.karpenter_controller_policies gives them.
KARPENTER_POLICIES = (
    "node-lifecycle",
    "iam-integration",
    "eks-integration",
    "interruption",
    "resource-discovery",
)
PUBLIC_ACCESS_KEY = "cluster.publicAccessCidrs"  # the stack config key users change
MAX_PUBLIC_ACCESS_CIDRS = 40  # EKS's quota of public access CIDR blocks per cluster
# EKS ships no CSI driver and no default StorageClass: without these a PersistentVolumeClaim (Prometheus')
# stays Pending forever. The class is not made the default, so it changes nothing else on the cluster.
EBS_CSI_ADDON = "aws-ebs-csi-driver"
EBS_CSI_SERVICE_ACCOUNT = "ebs-csi-controller-sa"  # the add-on's controller, in kube-system
EBS_CSI_POLICY = "service-role/AmazonEBSCSIDriverPolicy"
STORAGE_CLASS = "llm-serving-gp3"
KARPENTER_NAMESPACE = "kube-system"
KARPENTER_SERVICE_ACCOUNT = "karpenter"


class ClusterMode(StrEnum):
    NEW = "new"
    EXISTING = "existing"


@dataclass(frozen=True)
class ClusterArgs:
    """Inputs of `Cluster`. Structure-deciding values are plain Python values."""

    mode: ClusterMode
    cluster_name: str
    region: str
    kubernetes_version: str
    workload_namespace: str
    tags: Mapping[str, str] = field(default_factory=dict)
    # existing clusters only
    kubeconfig: str | None = None  # path to (or contents of) a kubeconfig; default: built from the lookup
    karpenter_node_role: str | None = None  # default: KarpenterNodeRole-<cluster>, Karpenter's convention
    # new clusters only
    vpc_cidr: str = "10.0.0.0/16"
    availability_zones: int = 3
    system_instance_types: tuple[str, ...] = ("m6i.large",)
    system_nodes: int = 2
    system_disk_gib: int = 60  # root volume of each system node; it also runs the model-cache fill Job
    # The Kubernetes API endpoint. By default it is private (reachable from inside the VPC only): a public
    # endpoint is one leaked or over-broad credential away from the cluster. Listing networks opens the
    # public endpoint to them only; EKS would otherwise open it to 0.0.0.0/0.
    public_access_cidrs: tuple[str, ...] = ()
    private_access: bool = True  # off: nodes reach the public endpoint through the NAT (its address is added)

    def __post_init__(self) -> None:
        if self.mode is ClusterMode.NEW and self.kubeconfig:
            raise ValueError("a kubeconfig applies only to an existing cluster")
        if self.mode is ClusterMode.EXISTING and (self.public_access_cidrs or not self.private_access):
            raise UserError(
                "the API endpoint's access applies only to a new cluster: change it on the existing "
                "cluster itself (aws eks update-cluster-config --resources-vpc-config ...)",
                key=PUBLIC_ACCESS_KEY,
            )
        validate_public_access_cidrs(self.public_access_cidrs, private_access=self.private_access)
        if not 2 <= self.availability_zones <= 6:
            raise ValueError("EKS needs subnets in 2 to 6 availability zones")
        if self.system_nodes < 1:
            raise ValueError("the system node group needs at least one node")
        if self.system_disk_gib < 20:
            raise ValueError("system nodes need a root volume of at least 20 GiB")


def validate_public_access_cidrs(cidrs: Sequence[str], *, private_access: bool) -> None:
    """The networks that may reach the public API endpoint: IPv4 CIDRs as EKS takes them, within its limit,
    and at least one way in."""
    if not cidrs and not private_access:
        raise UserError(
            "with private access off and no public networks listed the Kubernetes API would be unreachable: "
            "list the networks that run `pulumi up` and kubectl, or keep private access on",
            key=PUBLIC_ACCESS_KEY,
        )
    if len(cidrs) > MAX_PUBLIC_ACCESS_CIDRS - (0 if private_access else 1):
        raise UserError(
            f"EKS allows at most {MAX_PUBLIC_ACCESS_CIDRS} networks (one of them the NAT's when private access "
            f"is off); {len(cidrs)} are listed",
            key=PUBLIC_ACCESS_KEY,
        )
    for cidr in cidrs:
        try:
            network = ipaddress.IPv4Network(cidr, strict=True)
        except ValueError as error:
            raise UserError(
                f"{cidr!r} is not an IPv4 network such as 203.0.113.7/32 ({error})", key=PUBLIC_ACCESS_KEY
            ) from None
        if str(network) != cidr:
            raise UserError(f"{cidr!r}: write it as {network}", key=PUBLIC_ACCESS_KEY)


def kubeconfig_for(cluster_name: str, endpoint: str, ca_data: str, region: str) -> str:
    """A kubeconfig that authenticates with `aws eks get-token` (the AWS CLI), as JSON."""
    user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": "aws",
            "args": [
                "eks",
                "get-token",
                "--cluster-name",
                cluster_name,
                "--region",
                region,
                "--output",
                "json",
            ],
        }
    }
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": cluster_name, "cluster": {"server": endpoint, "certificate-authority-data": ca_data}}
            ],
            "users": [{"name": cluster_name, "user": user}],
            "contexts": [{"name": cluster_name, "context": {"cluster": cluster_name, "user": cluster_name}}],
            "current-context": cluster_name,
        }
    )


class Cluster(pulumi.ComponentResource):
    """An EKS cluster ready for GPU node pools, and a Kubernetes provider for the components that follow."""

    cluster_name: pulumi.Output[str]
    cluster_arn: pulumi.Output[str]  # what Pod Identity trust policies name as aws:SourceArn
    endpoint: pulumi.Output[str]
    kubeconfig: pulumi.Output[str]
    karpenter_node_role: pulumi.Output[str]
    workload_namespace: pulumi.Output[str]
    vpc_id: pulumi.Output[str]
    # Where load balancers get their addresses: the NetworkPolicy in front of vLLM admits these.
    load_balancer_cidrs: pulumi.Output[list[str]]
    provider: k8s.Provider
    # what Kubernetes objects of later components must wait for (Karpenter and its CRDs on a new cluster)
    ready: list[pulumi.Resource]
    # The StorageClass for persistent volumes (Prometheus'): ours on a new cluster, None (the cluster's
    # default) on an existing one; `storage_ready` is what a claim must wait for.
    storage_class: str | None
    storage_ready: list[pulumi.Resource]

    def __init__(self, name: str, args: ClusterArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("llm-serving:index:Cluster", name, None, opts)
        self._name = name
        self._args = args
        self._tags = dict(args.tags)
        if args.mode is ClusterMode.NEW:
            self._create()
        else:
            self._look_up()
        self.workload_namespace = k8s.core.v1.Namespace(
            f"{name}-namespace",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=args.workload_namespace, labels=kubernetes_labels(self._tags)
            ),
            opts=pulumi.ResourceOptions(parent=self, provider=self.provider, depends_on=self.ready),
        ).metadata.apply(lambda metadata: metadata.name or args.workload_namespace)
        self.register_outputs(
            {
                "clusterName": self.cluster_name,
                "clusterArn": self.cluster_arn,
                "endpoint": self.endpoint,
                "kubeconfig": self.kubeconfig,
                "karpenterNodeRole": self.karpenter_node_role,
                "workloadNamespace": self.workload_namespace,
            }
        )

    # --- helpers ----------------------------------------------------------------------------------------

    def _opts(
        self, *, depends_on: Sequence[pulumi.Resource] = (), provider: pulumi.ProviderResource | None = None
    ) -> pulumi.ResourceOptions:
        """Children are parented to the cluster (and inherit its providers); never the caller's opts."""
        return pulumi.ResourceOptions(parent=self, depends_on=list(depends_on), provider=provider)

    def _tagged(self, name: str) -> dict[str, str]:
        return {**self._tags, "Name": name}

    def _role(self, name: str, trust: dict, policies: tuple[str, ...]) -> aws.iam.Role:
        role = aws.iam.Role(
            name, assume_role_policy=json.dumps(trust), tags=self._tagged(name), opts=self._opts()
        )
        for policy in policies:
            aws.iam.RolePolicyAttachment(
                f"{name}-{policy.lower().replace('_', '-')}",
                role=role.name,
                policy_arn=aws_policies.managed_policy_arn(self._args.region, policy),
                opts=self._opts(),
            )
        return role

    def _pod_identity_role(self, name: str, cluster: aws.eks.Cluster) -> aws.iam.Role:
        """A role only this account's cluster may hand to a pod through Pod Identity."""
        account = aws.get_caller_identity_output(opts=pulumi.InvokeOutputOptions(parent=self)).account_id
        return aws.iam.Role(
            name,
            assume_role_policy=pulumi.Output.all(account, cluster.arn).apply(
                lambda values: json.dumps(aws_policies.pod_identity_trust_policy(values[0], values[1]))
            ),
            tags=self._tagged(name),
            opts=self._opts(),
        )

    # --- an existing cluster ----------------------------------------------------------------------------

    def _look_up(self) -> None:
        args = self._args
        found = aws.eks.get_cluster_output(
            name=args.cluster_name, opts=pulumi.InvokeOutputOptions(parent=self)
        )
        self.cluster_name = found.name
        self.cluster_arn = found.arn
        self.endpoint = found.endpoint
        self.vpc_id = found.vpc_config.vpc_id
        # Its load balancer subnets are unknown here; the VPC's CIDR admits them (and, more loosely, the VPC).
        vpc = aws.ec2.get_vpc_output(id=self.vpc_id, opts=pulumi.InvokeOutputOptions(parent=self))
        self.load_balancer_cidrs = vpc.cidr_block.apply(lambda cidr: [cidr])
        if args.kubeconfig:
            self.kubeconfig = pulumi.Output.secret(args.kubeconfig)
        else:
            self.kubeconfig = pulumi.Output.secret(
                found.apply(
                    lambda c: kubeconfig_for(
                        c.name, c.endpoint, c.certificate_authorities[0].data, args.region
                    )
                )
            )
        self.karpenter_node_role = pulumi.Output.from_input(
            args.karpenter_node_role or f"KarpenterNodeRole-{args.cluster_name}"
        )
        self.provider = k8s.Provider(
            f"{self._name}-k8s", kubeconfig=self.kubeconfig, enable_server_side_apply=True, opts=self._opts()
        )
        self.ready = []
        self.storage_class = None
        self.storage_ready = []

    # --- a new cluster ----------------------------------------------------------------------------------

    def _create(self) -> None:
        args, name = self._args, self._name
        public_subnets, private_subnets, route_tables, nat_ip = self._network()

        cluster_role = self._role(
            f"{name}-cluster",
            aws_policies.service_trust_policy("eks.amazonaws.com"),
            ("AmazonEKSClusterPolicy",),
        )
        public_access = bool(args.public_access_cidrs) or not args.private_access
        public_cidrs: pulumi.Input[list[str]] = list(args.public_access_cidrs)
        if not args.private_access:
            # Nodes and Karpenter then reach the API from the NAT's address.
            public_cidrs = nat_ip.public_ip.apply(lambda ip: [*args.public_access_cidrs, f"{ip}/32"])
        elif not args.public_access_cidrs:
            pulumi.log.warn(
                f"the Kubernetes API of {args.cluster_name} is private: run `pulumi up` and kubectl from inside "
                f"its VPC (or a network peered or VPN-connected to it), or list your networks in "
                f"{PUBLIC_ACCESS_KEY}",
                resource=self,
            )
        secrets_key = aws.kms.Key(
            f"{name}-secrets-key",
            description=f"{args.cluster_name}: envelope encryption of Kubernetes secrets",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            tags=self._tagged(f"{args.cluster_name}-secrets"),
            opts=self._opts(),
        )
        secrets_key_use = aws.iam.RolePolicy(
            f"{name}-cluster-secrets-key",
            role=cluster_role.id,
            policy=secrets_key.arn.apply(
                lambda arn: json.dumps(aws_policies.secrets_key_policy_for_cluster(arn))
            ),
            opts=self._opts(),
        )
        cluster = aws.eks.Cluster(
            f"{name}-eks",
            name=args.cluster_name,
            version=args.kubernetes_version,
            role_arn=cluster_role.arn,
            vpc_config=aws.eks.ClusterVpcConfigArgs(
                subnet_ids=[s.id for s in private_subnets + public_subnets],
                endpoint_private_access=args.private_access,
                endpoint_public_access=public_access,
                public_access_cidrs=public_cidrs if public_access else None,
            ),
            access_config=aws.eks.ClusterAccessConfigArgs(
                authentication_mode="API", bootstrap_cluster_creator_admin_permissions=True
            ),
            encryption_config=aws.eks.ClusterEncryptionConfigArgs(
                resources=["secrets"],
                provider=aws.eks.ClusterEncryptionConfigProviderArgs(key_arn=secrets_key.arn),
            ),
            enabled_cluster_log_types=["api", "audit", "authenticator"],
            tags=self._tagged(args.cluster_name),
            opts=self._opts(depends_on=[*route_tables, secrets_key_use]),
        )
        # Karpenter discovers the cluster security group by tag, for new and existing clusters alike.
        aws.ec2.Tag(
            f"{name}-cluster-sg-discovery",
            resource_id=cluster.vpc_config.cluster_security_group_id,
            key=DISCOVERY_TAG,
            value=args.cluster_name,
            opts=self._opts(),
        )
        early_addons = [self._addon(cluster, addon) for addon in EKS_ADDONS_BEFORE_NODES]

        system_role = self._role(
            f"{name}-system-node", aws_policies.service_trust_policy("ec2.amazonaws.com"), NODE_POLICIES
        )
        system_template = aws.ec2.LaunchTemplate(
            f"{name}-system-template",
            description="system nodes: IMDSv2 only, unreachable from pods (hop limit 1), encrypted root volume",
            # Pods get AWS credentials from Pod Identity; IMDS would hand them the node role's instead.
            metadata_options=aws.ec2.LaunchTemplateMetadataOptionsArgs(
                http_endpoint="enabled",
                http_tokens="required",
                http_put_response_hop_limit=1,
            ),
            block_device_mappings=[
                aws.ec2.LaunchTemplateBlockDeviceMappingArgs(
                    device_name="/dev/xvda",  # the root device of the AL2023 EKS AMI
                    ebs=aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs(
                        volume_size=args.system_disk_gib,
                        volume_type="gp3",
                        encrypted="true",
                        delete_on_termination="true",
                    ),
                )
            ],
            tags=self._tagged(f"{args.cluster_name}-system"),
            opts=self._opts(),
        )
        system_nodes = aws.eks.NodeGroup(
            f"{name}-system",
            cluster_name=cluster.name,
            node_role_arn=system_role.arn,
            subnet_ids=[s.id for s in private_subnets],
            instance_types=list(args.system_instance_types),
            ami_type="AL2023_x86_64_STANDARD",
            capacity_type="ON_DEMAND",
            launch_template=aws.eks.NodeGroupLaunchTemplateArgs(
                # the newest version, so a template change rolls the nodes (None only under render's mocks)
                id=system_template.id,
                version=cast(
                    pulumi.Output[str],
                    system_template.latest_version.apply(lambda v: None if v is None else str(v)),
                ),
            ),
            scaling_config=aws.eks.NodeGroupScalingConfigArgs(
                desired_size=args.system_nodes, min_size=args.system_nodes, max_size=args.system_nodes + 1
            ),
            labels={"llm-serving/pool": "system"},
            tags=self._tagged(f"{args.cluster_name}-system"),
            opts=self._opts(depends_on=early_addons),
        )
        late_addons = [
            self._addon(cluster, addon, depends_on=[system_nodes]) for addon in EKS_ADDONS_AFTER_NODES
        ]

        self.cluster_name = cluster.name
        self.cluster_arn = cluster.arn
        self.endpoint = cluster.endpoint
        self.kubeconfig = pulumi.Output.secret(
            pulumi.Output.all(cluster.name, cluster.endpoint, cluster.certificate_authority).apply(
                lambda values: kubeconfig_for(values[0], values[1], values[2]["data"], args.region)
            )
        )
        self.provider = k8s.Provider(
            f"{name}-k8s", kubeconfig=self.kubeconfig, enable_server_side_apply=True, opts=self._opts()
        )
        karpenter = self._karpenter(cluster, system_nodes, late_addons)
        self.ready = [karpenter]
        self.storage_class = STORAGE_CLASS
        self.storage_ready = [self._block_storage(cluster, system_nodes)]

    def _subnet_tier(
        self,
        vpc: aws.ec2.Vpc,
        zones: pulumi.Output[aws.GetAvailabilityZonesResult],
        route_table: aws.ec2.RouteTable,
        *,
        public: bool,
        extra_tags: dict[str, pulumi.Input[str]],
    ) -> list[aws.ec2.Subnet]:
        """One subnet per availability zone, all routed through `route_table`."""
        args, tier = self._args, "public" if public else "private"
        subnets = []
        for index in range(args.availability_zones):
            subnet_name = f"{self._name}-{tier}-{index}"
            subnet = aws.ec2.Subnet(
                subnet_name,
                vpc_id=vpc.id,
                availability_zone=zones.names.apply(lambda names, i=index: names[i]),
                cidr_block=_subnet_cidr(args.vpc_cidr, index, public=public),
                map_public_ip_on_launch=public or None,
                tags={**self._tagged(subnet_name), **extra_tags},
                opts=self._opts(),
            )
            subnets.append(subnet)
            aws.ec2.RouteTableAssociation(
                f"{subnet_name}-routes", subnet_id=subnet.id, route_table_id=route_table.id, opts=self._opts()
            )
        return subnets

    def _network(
        self,
    ) -> tuple[list[aws.ec2.Subnet], list[aws.ec2.Subnet], list[aws.ec2.RouteTable], aws.ec2.Eip]:
        """VPC, two tiers of subnets across the first availability zones, one NAT, the S3 gateway endpoint."""
        args, name = self._args, self._name
        zones = aws.get_availability_zones_output(
            state="available", opts=pulumi.InvokeOutputOptions(parent=self)
        )
        vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=args.vpc_cidr,
            enable_dns_hostnames=True,
            enable_dns_support=True,
            tags=self._tagged(f"{name}-vpc"),
            opts=self._opts(),
        )
        gateway = aws.ec2.InternetGateway(
            f"{name}-igw", vpc_id=vpc.id, tags=self._tagged(f"{name}-igw"), opts=self._opts()
        )
        public_rt = aws.ec2.RouteTable(
            f"{name}-public-routes",
            vpc_id=vpc.id,
            routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", gateway_id=gateway.id)],
            tags=self._tagged(f"{name}-public-routes"),
            opts=self._opts(),
        )
        # Load balancers, internal ones included, live in the public tier: no pod gets an address there, so
        # the NetworkPolicy in front of vLLM can tell the ALB's traffic from any pod's.
        public = self._subnet_tier(
            vpc,
            zones,
            public_rt,
            public=True,
            extra_tags={"kubernetes.io/role/elb": "1", "kubernetes.io/role/internal-elb": "1"},
        )
        nat_ip = aws.ec2.Eip(
            f"{name}-nat-ip", domain="vpc", tags=self._tagged(f"{name}-nat-ip"), opts=self._opts()
        )
        nat = aws.ec2.NatGateway(
            f"{name}-nat",
            allocation_id=nat_ip.id,
            subnet_id=public[0].id,
            tags=self._tagged(f"{name}-nat"),
            opts=self._opts(depends_on=[gateway]),
        )
        private_rt = aws.ec2.RouteTable(
            f"{name}-private-routes",
            vpc_id=vpc.id,
            routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", nat_gateway_id=nat.id)],
            tags=self._tagged(f"{name}-private-routes"),
            opts=self._opts(),
        )
        private = self._subnet_tier(
            vpc,
            zones,
            private_rt,
            public=False,
            extra_tags={DISCOVERY_TAG: args.cluster_name},
        )
        aws.ec2.VpcEndpoint(
            f"{name}-s3",
            vpc_id=vpc.id,
            service_name=f"com.amazonaws.{args.region}.s3",
            vpc_endpoint_type="Gateway",
            route_table_ids=[private_rt.id, public_rt.id],
            tags=self._tagged(f"{name}-s3"),
            opts=self._opts(),
        )
        self.vpc_id = vpc.id
        self.load_balancer_cidrs = pulumi.Output.from_input(
            [_subnet_cidr(args.vpc_cidr, index, public=True) for index in range(args.availability_zones)]
        )
        return public, private, [public_rt, private_rt], nat_ip

    def _addon(
        self, cluster: aws.eks.Cluster, addon: str, depends_on: list[pulumi.Resource] | None = None
    ) -> aws.eks.Addon:
        return aws.eks.Addon(
            f"{self._name}-{addon}",
            cluster_name=cluster.name,
            addon_name=addon,
            configuration_values=ADDON_CONFIGURATION.get(addon),
            resolve_conflicts_on_create="OVERWRITE",
            resolve_conflicts_on_update="OVERWRITE",
            tags=self._tagged(f"{self._args.cluster_name}-{addon}"),
            opts=self._opts(depends_on=depends_on or []),
        )

    def _block_storage(
        self, cluster: aws.eks.Cluster, system_nodes: aws.eks.NodeGroup
    ) -> k8s.storage.v1.StorageClass:
        """The EBS CSI driver (its controller's role bound by Pod Identity) and an encrypted gp3 class that
        provisions in the zone of the pod that claims it."""
        name = self._name
        role = self._pod_identity_role(f"{name}-ebs-csi", cluster)
        attachment = aws.iam.RolePolicyAttachment(
            f"{name}-ebs-csi-policy",
            role=role.name,
            policy_arn=aws_policies.managed_policy_arn(self._args.region, EBS_CSI_POLICY),
            opts=self._opts(),
        )
        addon = aws.eks.Addon(
            f"{name}-{EBS_CSI_ADDON}",
            cluster_name=cluster.name,
            addon_name=EBS_CSI_ADDON,
            pod_identity_associations=[
                aws.eks.AddonPodIdentityAssociationArgs(
                    role_arn=role.arn, service_account=EBS_CSI_SERVICE_ACCOUNT
                )
            ],
            resolve_conflicts_on_create="OVERWRITE",
            resolve_conflicts_on_update="OVERWRITE",
            tags=self._tagged(f"{self._args.cluster_name}-{EBS_CSI_ADDON}"),
            opts=self._opts(depends_on=[system_nodes, attachment]),
        )
        return k8s.storage.v1.StorageClass(
            f"{name}-storage-class",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=STORAGE_CLASS, labels=kubernetes_labels(self._tags)),
            provisioner="ebs.csi.aws.com",
            parameters={"type": "gp3", "encrypted": "true"},
            volume_binding_mode="WaitForFirstConsumer",
            allow_volume_expansion=True,
            reclaim_policy="Delete",
            opts=self._opts(provider=self.provider, depends_on=[addon]),
        )

    def _karpenter(
        self, cluster: aws.eks.Cluster, system_nodes: aws.eks.NodeGroup, addons: list[aws.eks.Addon]
    ) -> k8s.helm.v3.Release:
        """Karpenter's node role (with its access entry), interruption queue, controller role and chart."""
        args, name = self._args, self._name
        node_role = self._role(
            f"{name}-karpenter-node", aws_policies.service_trust_policy("ec2.amazonaws.com"), NODE_POLICIES
        )
        aws.eks.AccessEntry(
            f"{name}-karpenter-node-access",
            cluster_name=cluster.name,
            principal_arn=node_role.arn,
            type="EC2_LINUX",
            tags=self._tagged(f"{name}-karpenter-node"),
            opts=self._opts(),
        )
        self.karpenter_node_role = node_role.name

        queue = aws.sqs.Queue(
            f"{name}-karpenter-queue",
            message_retention_seconds=300,
            sqs_managed_sse_enabled=True,
            tags=self._tagged(f"{name}-karpenter-queue"),
            opts=self._opts(),
        )
        aws.sqs.QueuePolicy(
            f"{name}-karpenter-queue-policy",
            queue_url=queue.url,
            policy=queue.arn.apply(lambda arn: json.dumps(aws_policies.interruption_queue_policy(arn))),
            opts=self._opts(),
        )
        for event, pattern in aws_policies.INTERRUPTION_EVENTS.items():
            rule = aws.cloudwatch.EventRule(
                f"{name}-karpenter-{event}",
                event_pattern=json.dumps(pattern),
                tags=self._tagged(f"{name}-karpenter-{event}"),
                opts=self._opts(),
            )
            aws.cloudwatch.EventTarget(
                f"{name}-karpenter-{event}-target",
                rule=rule.name,
                arn=queue.arn,
                target_id="KarpenterInterruptionQueueTarget",
                opts=self._opts(),
            )

        controller_role = self._pod_identity_role(f"{name}-karpenter-controller", cluster)
        documents = pulumi.Output.all(cluster.name, cluster.arn, node_role.arn, queue.arn).apply(
            lambda values: aws_policies.karpenter_controller_policies(
                cluster_name=values[0],
                cluster_arn=values[1],
                region=args.region,
                node_role_arn=values[2],
                queue_arn=values[3],
            )
        )
        policies = [
            aws.iam.RolePolicy(
                f"{name}-karpenter-{policy}",
                role=controller_role.id,
                policy=documents.apply(lambda docs, p=policy: json.dumps(docs[p])),
                opts=self._opts(),
            )
            for policy in KARPENTER_POLICIES
        ]
        identity = aws.eks.PodIdentityAssociation(
            f"{name}-karpenter-pod-identity",
            cluster_name=cluster.name,
            namespace=KARPENTER_NAMESPACE,
            service_account=KARPENTER_SERVICE_ACCOUNT,
            role_arn=controller_role.arn,
            tags=self._tagged(f"{name}-karpenter-pod-identity"),
            opts=self._opts(),
        )
        values = pulumi.Output.all(cluster.name, cluster.endpoint, queue.name).apply(
            lambda v: karpenter_values(
                cluster_name=v[0], cluster_endpoint=v[1], interruption_queue=v[2], region=args.region
            )
        )
        return k8s.helm.v3.Release(
            f"{name}-karpenter",
            name="karpenter",
            chart=KARPENTER_CHART,
            version=KARPENTER_VERSION,
            namespace=KARPENTER_NAMESPACE,
            values=values,
            opts=self._opts(provider=self.provider, depends_on=[system_nodes, identity, *policies, *addons]),
        )


def _subnet_cidr(vpc_cidr: str, index: int, *, public: bool) -> str:
    """Private subnets get /19s (room for many pod IPs from the VPC CNI); public ones small /24s."""
    network = ipaddress.ip_network(vpc_cidr)
    if public:
        # the last /20 of the VPC, carved into /24s
        last = list(network.subnets(new_prefix=20))[-1]
        return str(list(last.subnets(new_prefix=24))[index])
    return str(list(network.subnets(new_prefix=19))[index])
