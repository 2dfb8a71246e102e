"""IAM and resource policy documents, as plain dicts. Pure: no Pulumi, no AWS calls.

Components serialise these with `json.dumps` once their ARNs are known. Each document is as narrow as the
job allows: the serving pods only read the model cache, the fill job writes it, Karpenter's controller
follows the policies Karpenter's own v1.14 getting-started template grants, and the bucket refuses plain HTTP.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from infra.modelcache.layout import parse_s3_uri

Document = dict[str, Any]
VERSION = "2012-10-17"


def partition(region: str) -> str:
    """The ARN partition of a region."""
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def managed_policy_arn(region: str, name: str) -> str:
    return f"arn:{partition(region)}:iam::aws:policy/{name}"


def service_trust_policy(service: str) -> Document:
    """Trust for an AWS service principal, e.g. eks.amazonaws.com or ec2.amazonaws.com."""
    return {
        "Version": VERSION,
        "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}],
    }


def pod_identity_trust_policy(account_id: str, cluster_arn: str) -> Document:
    """Trust for EKS Pod Identity: the agent assumes the role and tags the session with the pod's identity,
    for this account's cluster only (the service principal alone would let any cluster's associations in)."""
    return {
        "Version": VERSION,
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "pods.eks.amazonaws.com"},
                "Action": ["sts:AssumeRole", "sts:TagSession"],
                "Condition": {
                    "StringEquals": {"aws:SourceAccount": account_id},
                    "ArnEquals": {"aws:SourceArn": cluster_arn},
                },
            }
        ],
    }


def eks_cluster_arn(region: str, account_id: str, cluster_name: str) -> str:
    """The ARN EKS gives a cluster, known before the cluster exists."""
    return f"arn:{partition(region)}:eks:{region}:{account_id}:cluster/{cluster_name}"


def secrets_key_policy_for_cluster(key_arn: str) -> Document:
    """What the EKS cluster role needs to envelope-encrypt Kubernetes secrets with a customer-managed key."""
    return {
        "Version": VERSION,
        "Statement": [
            {
                "Sid": "EncryptSecrets",
                "Effect": "Allow",
                "Action": ["kms:Encrypt", "kms:Decrypt", "kms:ListGrants", "kms:DescribeKey"],
                "Resource": key_arn,
            }
        ],
    }


def tls_only_bucket_policy(bucket_arn: str) -> Document:
    """Deny every request to the bucket or its objects that does not use TLS."""
    return {
        "Version": VERSION,
        "Statement": [
            {
                "Sid": "DenyInsecureTransport",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [bucket_arn, f"{bucket_arn}/*"],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        ],
    }


# Where the cache tool writes, below the bucket root: model entries (infra/modelcache/layout.py) and the
# compile cache (infra/modelcache/compile_cache.py).
CACHE_WRITE_PREFIXES = ("models/", "compile-cache/")


def _cache_key_statement(kms_key_arn: str, actions: list[str], region: str | None) -> Document:
    """Use of the bucket's customer-managed key, only through S3 when the region is known."""
    statement: Document = {
        "Sid": "UseCacheKey",
        "Effect": "Allow",
        "Action": actions,
        "Resource": kms_key_arn,
    }
    if region:
        statement["Condition"] = {"StringEquals": {"kms:ViaService": f"s3.{region}.amazonaws.com"}}
    return statement


def model_cache_read_policy(
    bucket_arn: str, kms_key_arn: str | None = None, region: str | None = None
) -> Document:
    """What a serving pod needs to pull (or stream) the cached model: list and get, nothing else (and
    decrypt, when the bucket uses a customer-managed key)."""
    statements: list[Document] = [
        {"Sid": "ListCache", "Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": bucket_arn},
        {"Sid": "ReadCache", "Effect": "Allow", "Action": ["s3:GetObject"], "Resource": f"{bucket_arn}/*"},
    ]
    if kms_key_arn:
        statements.append(_cache_key_statement(kms_key_arn, ["kms:Decrypt"], region))
    return {"Version": VERSION, "Statement": statements}


def model_cache_write_policy(
    bucket_arn: str, kms_key_arn: str | None = None, region: str | None = None
) -> Document:
    """What the fill job's `push` calls: HEAD and GET (GetObject; a missing key answers 404 rather than 403
    only with ListBucket), single and multipart PUTs of model entries and compile caches, and the abort
    boto3 sends when a multipart upload fails. No delete: a versioned bucket keeps what a PUT overwrites,
    and `push --force` (which deletes the old marker first) is for an operator's own credentials."""
    statements: list[Document] = [
        {"Sid": "ListCache", "Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": bucket_arn},
        {"Sid": "ReadCache", "Effect": "Allow", "Action": ["s3:GetObject"], "Resource": f"{bucket_arn}/*"},
        {
            "Sid": "WriteCache",
            "Effect": "Allow",
            "Action": ["s3:PutObject", "s3:AbortMultipartUpload"],
            "Resource": [f"{bucket_arn}/{prefix}*" for prefix in CACHE_WRITE_PREFIXES],
        },
    ]
    if kms_key_arn:
        # Multipart uploads to an SSE-KMS bucket decrypt the data key of earlier parts, too.
        statements.append(_cache_key_statement(kms_key_arn, ["kms:GenerateDataKey", "kms:Decrypt"], region))
    return {"Version": VERSION, "Statement": statements}


def source_folders_read_policy(folders: Sequence[str], region: str | None = None) -> Document:
    """What the fill Job's `push s3://BUCKET/PREFIX` needs of the folders it copies (LoRA adapters kept in
    other buckets): list each folder and get its objects, nothing else. A folder encrypted with SSE-KMS
    also needs kms:Decrypt on its key, which the key's owner grants (the README says so)."""
    if not folders:
        raise ValueError("name at least one s3://BUCKET/PREFIX folder")
    arn = f"arn:{partition(region or '')}:s3:::"
    prefixes: dict[str, list[str]] = {}
    for uri in folders:
        location = parse_s3_uri(uri, key="source")
        if not location.prefix:
            raise ValueError(f"{uri} is a whole bucket, not a folder")
        prefixes.setdefault(location.bucket, []).append(location.prefix)
    statements: list[Document] = [
        {
            "Sid": f"ListSource{index}",
            "Effect": "Allow",
            "Action": ["s3:ListBucket"],
            "Resource": f"{arn}{bucket}",
            "Condition": {"StringLike": {"s3:prefix": sorted({f"{p}/*" for p in bucket_prefixes})}},
        }
        for index, (bucket, bucket_prefixes) in enumerate(sorted(prefixes.items()))
    ]
    statements.append(
        {
            "Sid": "ReadSources",
            "Effect": "Allow",
            "Action": ["s3:GetObject"],
            "Resource": sorted({f"{arn}{bucket}/{p}/*" for bucket, ps in prefixes.items() for p in ps}),
        }
    )
    return {"Version": VERSION, "Statement": statements}


def ecr_keep_last_images_policy(count: int) -> Document:
    """An ECR lifecycle policy keeping the newest `count` images of a repository, tagged or not."""
    if count < 1:
        raise ValueError("keep at least one image")
    return {
        "rules": [
            {
                "rulePriority": 1,
                "description": f"keep the last {count} images",
                "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": count},
                "action": {"type": "expire"},
            }
        ]
    }


def interruption_queue_policy(queue_arn: str) -> Document:
    """Let EventBridge deliver spot interruption, rebalance, health and state-change events to the queue."""
    return {
        "Version": VERSION,
        "Id": "EC2InterruptionPolicy",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": ["events.amazonaws.com", "sqs.amazonaws.com"]},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
            },
            {
                "Sid": "DenyHTTP",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "sqs:*",
                "Resource": queue_arn,
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            },
        ],
    }


# The EventBridge events Karpenter handles, by rule suffix: spot interruption warnings give the two-minute
# notice that lets Karpenter drain a GPU node before it goes.
INTERRUPTION_EVENTS: dict[str, Document] = {
    "health": {"source": ["aws.health"], "detail-type": ["AWS Health Event"]},
    "spot-interruption": {"source": ["aws.ec2"], "detail-type": ["EC2 Spot Instance Interruption Warning"]},
    "rebalance": {"source": ["aws.ec2"], "detail-type": ["EC2 Instance Rebalance Recommendation"]},
    "state-change": {"source": ["aws.ec2"], "detail-type": ["EC2 Instance State-change Notification"]},
    "capacity-reservation": {
        "source": ["aws.ec2"],
        "detail-type": ["EC2 Capacity Reservation Instance Interruption Warning"],
    },
}


def karpenter_controller_policies(
    *, cluster_name: str, cluster_arn: str, region: str, node_role_arn: str, queue_arn: str
) -> dict[str, Document]:
    """Karpenter v1.14's controller permissions, as its getting-started CloudFormation template splits them
    (node lifecycle, IAM integration, EKS integration, interruption, resource discovery), scoped to this
    cluster's tags, region, node role and queue. Zonal shift is left out: `settings.enableZonalShift` is off.
    """
    arn = f"arn:{partition(region)}"
    ec2 = f"{arn}:ec2:{region}"
    account = _account_of(cluster_arn)
    instance_profiles = f"{arn}:iam::{account}:instance-profile/*"
    owned = {f"aws:RequestTag/kubernetes.io/cluster/{cluster_name}": "owned"}
    owned_named = {**owned, "aws:RequestTag/eks:eks-cluster-name": cluster_name}
    resource_owned = {f"aws:ResourceTag/kubernetes.io/cluster/{cluster_name}": "owned"}
    launched = [
        f"{ec2}:*:{kind}/*"
        for kind in (
            "fleet",
            "instance",
            "volume",
            "network-interface",
            "launch-template",
            "spot-instances-request",
        )
    ]
    node_lifecycle = [
        {
            "Sid": "AllowScopedEC2InstanceAccessActions",
            "Effect": "Allow",
            "Resource": [
                f"{ec2}::image/*",
                f"{ec2}::snapshot/*",
                f"{ec2}:*:security-group/*",
                f"{ec2}:*:subnet/*",
                f"{ec2}:*:capacity-reservation/*",
                f"{ec2}:*:placement-group/*",
            ],
            "Action": ["ec2:RunInstances", "ec2:CreateFleet"],
        },
        {
            "Sid": "AllowScopedEC2LaunchTemplateAccessActions",
            "Effect": "Allow",
            "Resource": f"{ec2}:*:launch-template/*",
            "Action": ["ec2:RunInstances", "ec2:CreateFleet"],
            "Condition": {
                "StringEquals": resource_owned,
                "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"},
            },
        },
        {
            "Sid": "AllowScopedEC2InstanceActionsWithTags",
            "Effect": "Allow",
            "Resource": launched,
            "Action": ["ec2:RunInstances", "ec2:CreateFleet", "ec2:CreateLaunchTemplate"],
            "Condition": {
                "StringEquals": owned_named,
                "StringLike": {"aws:RequestTag/karpenter.sh/nodepool": "*"},
            },
        },
        {
            "Sid": "AllowScopedResourceCreationTagging",
            "Effect": "Allow",
            "Resource": launched,
            "Action": "ec2:CreateTags",
            "Condition": {
                "StringEquals": {
                    **owned_named,
                    "ec2:CreateAction": ["RunInstances", "CreateFleet", "CreateLaunchTemplate"],
                },
                "StringLike": {"aws:RequestTag/karpenter.sh/nodepool": "*"},
            },
        },
        {
            "Sid": "AllowScopedResourceTagging",
            "Effect": "Allow",
            "Resource": f"{ec2}:*:instance/*",
            "Action": "ec2:CreateTags",
            "Condition": {
                "StringEquals": resource_owned,
                "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"},
                "StringEqualsIfExists": {"aws:RequestTag/eks:eks-cluster-name": cluster_name},
                "ForAllValues:StringEquals": {
                    "aws:TagKeys": ["eks:eks-cluster-name", "karpenter.sh/nodeclaim", "Name"]
                },
            },
        },
        {
            "Sid": "AllowScopedDeletion",
            "Effect": "Allow",
            "Resource": [f"{ec2}:*:instance/*", f"{ec2}:*:launch-template/*"],
            "Action": ["ec2:TerminateInstances", "ec2:DeleteLaunchTemplate"],
            "Condition": {
                "StringEquals": resource_owned,
                "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"},
            },
        },
    ]
    region_tag = {"aws:RequestTag/topology.kubernetes.io/region": region}
    resource_region_tag = {"aws:ResourceTag/topology.kubernetes.io/region": region}
    iam_integration = [
        {
            "Sid": "AllowPassingInstanceRole",
            "Effect": "Allow",
            "Resource": node_role_arn,
            "Action": "iam:PassRole",
            "Condition": {
                "StringEquals": {"iam:PassedToService": ["ec2.amazonaws.com", "ec2.amazonaws.com.cn"]}
            },
        },
        {
            "Sid": "AllowScopedInstanceProfileCreationActions",
            "Effect": "Allow",
            "Resource": instance_profiles,
            "Action": ["iam:CreateInstanceProfile"],
            "Condition": {
                "StringEquals": {**owned_named, **region_tag},
                "StringLike": {"aws:RequestTag/karpenter.k8s.aws/ec2nodeclass": "*"},
            },
        },
        {
            "Sid": "AllowScopedInstanceProfileTagActions",
            "Effect": "Allow",
            "Resource": instance_profiles,
            "Action": ["iam:TagInstanceProfile"],
            "Condition": {
                "StringEquals": {**resource_owned, **resource_region_tag, **owned_named, **region_tag},
                "StringLike": {
                    "aws:ResourceTag/karpenter.k8s.aws/ec2nodeclass": "*",
                    "aws:RequestTag/karpenter.k8s.aws/ec2nodeclass": "*",
                },
            },
        },
        {
            "Sid": "AllowScopedInstanceProfileActions",
            "Effect": "Allow",
            "Resource": instance_profiles,
            "Action": [
                "iam:AddRoleToInstanceProfile",
                "iam:RemoveRoleFromInstanceProfile",
                "iam:DeleteInstanceProfile",
            ],
            "Condition": {
                "StringEquals": {**resource_owned, **resource_region_tag},
                "StringLike": {"aws:ResourceTag/karpenter.k8s.aws/ec2nodeclass": "*"},
            },
        },
    ]
    eks_integration = [
        {
            "Sid": "AllowAPIServerEndpointDiscovery",
            "Effect": "Allow",
            "Resource": cluster_arn,
            "Action": "eks:DescribeCluster",
        }
    ]
    interruption = [
        {
            "Sid": "AllowInterruptionQueueActions",
            "Effect": "Allow",
            "Resource": queue_arn,
            "Action": ["sqs:DeleteMessage", "sqs:GetQueueUrl", "sqs:ReceiveMessage"],
        }
    ]
    resource_discovery = [
        {
            "Sid": "AllowRegionalReadActions",
            "Effect": "Allow",
            "Resource": "*",
            "Action": [
                "ec2:DescribeCapacityReservations",
                "ec2:DescribeImages",
                "ec2:DescribeInstances",
                "ec2:DescribeInstanceStatus",
                "ec2:DescribeInstanceTypeOfferings",
                "ec2:DescribeInstanceTypes",
                "ec2:DescribeLaunchTemplates",
                "ec2:DescribePlacementGroups",
                "ec2:DescribeSecurityGroups",
                "ec2:DescribeSpotPriceHistory",
                "ec2:DescribeSubnets",
            ],
            "Condition": {"StringEquals": {"aws:RequestedRegion": region}},
        },
        {
            "Sid": "AllowSSMReadActions",
            "Effect": "Allow",
            "Resource": f"{arn}:ssm:{region}::parameter/aws/service/*",
            "Action": "ssm:GetParameter",
        },
        {
            "Sid": "AllowPricingReadActions",
            "Effect": "Allow",
            "Resource": "*",
            "Action": "pricing:GetProducts",
        },
        {
            "Sid": "AllowUnscopedInstanceProfileListAction",
            "Effect": "Allow",
            "Resource": "*",
            "Action": "iam:ListInstanceProfiles",
        },
        {
            "Sid": "AllowInstanceProfileReadActions",
            "Effect": "Allow",
            "Resource": instance_profiles,
            "Action": "iam:GetInstanceProfile",
        },
    ]
    return {
        name: {"Version": VERSION, "Statement": statements}
        for name, statements in (
            ("node-lifecycle", node_lifecycle),
            ("iam-integration", iam_integration),
            ("eks-integration", eks_integration),
            ("interruption", interruption),
            ("resource-discovery", resource_discovery),
        )
    }


def _account_of(arn: str) -> str:
    """The account of an ARN, or `*` while the ARN is not known yet (render placeholders)."""
    parts = arn.split(":")
    return parts[4] if len(parts) > 5 and parts[0] == "arn" and parts[4].isdigit() else "*"


# The AWS Load Balancer Controller's permissions, as its project publishes them for v2.x/v3.x
# (docs/install/iam_policy.json), grouped by purpose. Writes are limited to what the controller tagged
# with its cluster tag (elbv2.k8s.aws/cluster); only lookups, listeners/rules (which live under the
# controller's own load balancers) and target registration are unconditional.
_LBC_DESCRIBE = [
    "iam:CreateServiceLinkedRole",
    "ec2:DescribeAccountAttributes", "ec2:DescribeAddresses", "ec2:DescribeAvailabilityZones",
    "ec2:DescribeInternetGateways", "ec2:DescribeVpcs", "ec2:DescribeVpcPeeringConnections",
    "ec2:DescribeSubnets", "ec2:DescribeSecurityGroups", "ec2:DescribeInstances",
    "ec2:DescribeNetworkInterfaces", "ec2:DescribeTags", "ec2:DescribeCoipPools", "ec2:DescribeRouteTables",
    "ec2:DescribeIpamPools", "ec2:GetCoipPoolUsage", "ec2:GetSecurityGroupsForVpc",
    "elasticloadbalancing:DescribeLoadBalancers", "elasticloadbalancing:DescribeLoadBalancerAttributes",
    "elasticloadbalancing:DescribeListeners", "elasticloadbalancing:DescribeListenerCertificates",
    "elasticloadbalancing:DescribeListenerAttributes", "elasticloadbalancing:DescribeSSLPolicies",
    "elasticloadbalancing:DescribeRules", "elasticloadbalancing:DescribeTargetGroups",
    "elasticloadbalancing:DescribeTargetGroupAttributes", "elasticloadbalancing:DescribeTargetHealth",
    "elasticloadbalancing:DescribeTags", "elasticloadbalancing:DescribeTrustStores",
    "elasticloadbalancing:DescribeCapacityReservation",
]  # fmt: skip
_LBC_INTEGRATIONS = [
    "cognito-idp:DescribeUserPoolClient", "acm:ListCertificates", "acm:DescribeCertificate",
    "iam:ListServerCertificates", "iam:GetServerCertificate",
    "waf-regional:GetWebACL", "waf-regional:GetWebACLForResource", "waf-regional:AssociateWebACL",
    "waf-regional:DisassociateWebACL", "wafv2:GetWebACL", "wafv2:GetWebACLForResource",
    "wafv2:AssociateWebACL", "wafv2:DisassociateWebACL",
    "shield:GetSubscriptionState", "shield:DescribeProtection", "shield:CreateProtection",
    "shield:DeleteProtection",
]  # fmt: skip
_LBC_MANAGE_TAGGED = [
    "elasticloadbalancing:ModifyLoadBalancerAttributes", "elasticloadbalancing:SetIpAddressType",
    "elasticloadbalancing:SetSecurityGroups", "elasticloadbalancing:SetSubnets",
    "elasticloadbalancing:DeleteLoadBalancer", "elasticloadbalancing:ModifyTargetGroup",
    "elasticloadbalancing:ModifyTargetGroupAttributes", "elasticloadbalancing:DeleteTargetGroup",
    "elasticloadbalancing:ModifyListenerAttributes", "elasticloadbalancing:ModifyCapacityReservation",
    "elasticloadbalancing:ModifyIpPools",
]  # fmt: skip


def load_balancer_controller_policy() -> Document:
    """What the AWS Load Balancer Controller needs to run the stack's ALB (and nothing it did not create)."""
    return {
        "Version": VERSION,
        "Statement": [
            {"Sid": "Describe", "Effect": "Allow", "Action": _LBC_DESCRIBE, "Resource": "*"},
            {"Sid": "Integrations", "Effect": "Allow", "Action": _LBC_INTEGRATIONS, "Resource": "*"},
            {
                "Sid": "SecurityGroups",
                "Effect": "Allow",
                "Action": [
                    "ec2:AuthorizeSecurityGroupIngress",
                    "ec2:RevokeSecurityGroupIngress",
                    "ec2:CreateSecurityGroup",
                ],
                "Resource": "*",
            },
            {
                "Sid": "TagNewSecurityGroups",
                "Effect": "Allow",
                "Action": ["ec2:CreateTags"],
                "Resource": "arn:aws:ec2:*:*:security-group/*",
                "Condition": {
                    "StringEquals": {"ec2:CreateAction": "CreateSecurityGroup"},
                    "Null": {"aws:RequestTag/elbv2.k8s.aws/cluster": "false"},
                },
            },
            {
                "Sid": "RetagOwnSecurityGroups",
                "Effect": "Allow",
                "Action": ["ec2:CreateTags", "ec2:DeleteTags"],
                "Resource": "arn:aws:ec2:*:*:security-group/*",
                "Condition": {
                    "Null": {
                        "aws:RequestTag/elbv2.k8s.aws/cluster": "true",
                        "aws:ResourceTag/elbv2.k8s.aws/cluster": "false",
                    }
                },
            },
            {
                "Sid": "ManageOwnSecurityGroups",
                "Effect": "Allow",
                "Action": [
                    "ec2:AuthorizeSecurityGroupIngress",
                    "ec2:RevokeSecurityGroupIngress",
                    "ec2:DeleteSecurityGroup",
                ],
                "Resource": "*",
                "Condition": {"Null": {"aws:ResourceTag/elbv2.k8s.aws/cluster": "false"}},
            },
            {
                "Sid": "CreateTaggedLoadBalancers",
                "Effect": "Allow",
                "Action": [
                    "elasticloadbalancing:CreateLoadBalancer",
                    "elasticloadbalancing:CreateTargetGroup",
                ],
                "Resource": "*",
                "Condition": {"Null": {"aws:RequestTag/elbv2.k8s.aws/cluster": "false"}},
            },
            {
                "Sid": "ListenersAndRules",
                "Effect": "Allow",
                "Action": [
                    "elasticloadbalancing:CreateListener",
                    "elasticloadbalancing:DeleteListener",
                    "elasticloadbalancing:CreateRule",
                    "elasticloadbalancing:DeleteRule",
                    "elasticloadbalancing:ModifyListener",
                    "elasticloadbalancing:AddListenerCertificates",
                    "elasticloadbalancing:RemoveListenerCertificates",
                    "elasticloadbalancing:ModifyRule",
                    "elasticloadbalancing:SetWebAcl",
                ],
                "Resource": "*",
            },
            {
                "Sid": "TagOwnLoadBalancers",
                "Effect": "Allow",
                "Action": ["elasticloadbalancing:AddTags", "elasticloadbalancing:RemoveTags"],
                "Resource": [
                    "arn:aws:elasticloadbalancing:*:*:targetgroup/*/*",
                    "arn:aws:elasticloadbalancing:*:*:loadbalancer/net/*/*",
                    "arn:aws:elasticloadbalancing:*:*:loadbalancer/app/*/*",
                ],
                "Condition": {
                    "Null": {
                        "aws:RequestTag/elbv2.k8s.aws/cluster": "true",
                        "aws:ResourceTag/elbv2.k8s.aws/cluster": "false",
                    }
                },
            },
            {
                "Sid": "TagOnCreate",
                "Effect": "Allow",
                "Action": ["elasticloadbalancing:AddTags"],
                "Resource": [
                    "arn:aws:elasticloadbalancing:*:*:targetgroup/*/*",
                    "arn:aws:elasticloadbalancing:*:*:loadbalancer/net/*/*",
                    "arn:aws:elasticloadbalancing:*:*:loadbalancer/app/*/*",
                ],
                "Condition": {
                    "StringEquals": {
                        "elasticloadbalancing:CreateAction": ["CreateTargetGroup", "CreateLoadBalancer"]
                    },
                    "Null": {"aws:RequestTag/elbv2.k8s.aws/cluster": "false"},
                },
            },
            {
                "Sid": "ManageOwnLoadBalancers",
                "Effect": "Allow",
                "Action": _LBC_MANAGE_TAGGED,
                "Resource": "*",
                "Condition": {"Null": {"aws:ResourceTag/elbv2.k8s.aws/cluster": "false"}},
            },
            {
                "Sid": "Targets",
                "Effect": "Allow",
                "Action": ["elasticloadbalancing:RegisterTargets", "elasticloadbalancing:DeregisterTargets"],
                "Resource": "arn:aws:elasticloadbalancing:*:*:targetgroup/*/*",
            },
        ],
    }
