"""`ModelCache`: the per-stack S3 bucket that holds model revisions, and who may touch it.

The bucket blocks public access, encrypts at rest, refuses plain HTTP, disables ACLs (bucket owner
enforced) and aborts abandoned multipart uploads. Serving pods get a read-only role, the fill Jobs a write
role; each is bound to its Kubernetes service account with EKS Pod Identity, so no pod needs AWS keys.

What reads and writes the bucket is per model revision and lives with the workload: `VllmService` runs the
revision's fill Job as the writer and gives its pods the cache patch as the reader (both built by
`infra.kubernetes.serving_cache`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from infra import aws_policies
from infra.components import kubernetes_labels

READER_SERVICE_ACCOUNT = "vllm"
WRITER_SERVICE_ACCOUNT = "model-cache-fill"
ABORT_INCOMPLETE_UPLOADS_DAYS = 3


@dataclass(frozen=True)
class ModelCacheArgs:
    """Inputs of `ModelCache`: the cluster and namespace its identities are bound in."""

    cluster_name: pulumi.Input[str]
    namespace: pulumi.Input[str]
    reader_service_account: str = READER_SERVICE_ACCOUNT
    writer_service_account: str = WRITER_SERVICE_ACCOUNT
    create_service_accounts: bool = True  # False when the workload brings its own
    force_destroy: bool = False  # True lets `pulumi destroy` delete a bucket that still holds models
    tags: Mapping[str, str] = field(default_factory=dict)


class ModelCache(pulumi.ComponentResource):
    bucket_name: pulumi.Output[str]
    bucket_arn: pulumi.Output[str]
    reader_role_arn: pulumi.Output[str]
    writer_role_arn: pulumi.Output[str]
    reader_service_account: pulumi.Output[str]
    writer_service_account: pulumi.Output[str]
    # What a pod of each identity must wait for: its role's policies, the Pod Identity association and the
    # service account (a pod started earlier runs without credentials).
    reader_ready: list[pulumi.Resource]
    writer_ready: list[pulumi.Resource]

    def __init__(self, name: str, args: ModelCacheArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("llm-serving:index:ModelCache", name, None, opts)
        tags = dict(args.tags)
        child = pulumi.ResourceOptions(parent=self)

        bucket = aws.s3.Bucket(
            f"{name}-bucket",
            force_destroy=args.force_destroy,
            tags={**tags, "Name": f"{name}-bucket"},
            opts=child,
        )
        public_access = aws.s3.BucketPublicAccessBlock(
            f"{name}-public-access",
            bucket=bucket.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=child,
        )
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-encryption",
            bucket=bucket.id,
            rules=[
                aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                    apply_server_side_encryption_by_default=aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
                        sse_algorithm="AES256"
                    ),
                )
            ],
            opts=child,
        )
        aws.s3.BucketOwnershipControls(
            f"{name}-ownership",
            bucket=bucket.id,
            rule=aws.s3.BucketOwnershipControlsRuleArgs(object_ownership="BucketOwnerEnforced"),
            opts=child,
        )
        aws.s3.BucketPolicy(
            f"{name}-tls-only",
            bucket=bucket.id,
            policy=bucket.arn.apply(lambda arn: json.dumps(aws_policies.tls_only_bucket_policy(arn))),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[public_access]),
        )
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-lifecycle",
            bucket=bucket.id,
            rules=[
                aws.s3.BucketLifecycleConfigurationRuleArgs(
                    id="abort-incomplete-uploads",
                    status="Enabled",
                    filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=""),
                    abort_incomplete_multipart_upload=aws.s3.BucketLifecycleConfigurationRuleAbortIncompleteMultipartUploadArgs(
                        days_after_initiation=ABORT_INCOMPLETE_UPLOADS_DAYS
                    ),
                )
            ],
            opts=child,
        )

        reader, reader_ready = self._identity(
            f"{name}-reader",
            args,
            args.reader_service_account,
            bucket,
            {"policy": aws_policies.model_cache_read_policy},
            tags,
        )
        writer, writer_ready = self._identity(
            f"{name}-writer",
            args,
            args.writer_service_account,
            bucket,
            {"policy": aws_policies.model_cache_write_policy},
            tags,
        )

        self.bucket_name = bucket.bucket
        self.bucket_arn = bucket.arn
        self.reader_role_arn = reader
        self.writer_role_arn = writer
        self.reader_service_account = pulumi.Output.from_input(args.reader_service_account)
        self.writer_service_account = pulumi.Output.from_input(args.writer_service_account)
        self.reader_ready = reader_ready
        self.writer_ready = writer_ready
        self.register_outputs(
            {
                "bucketName": self.bucket_name,
                "bucketArn": self.bucket_arn,
                "readerRoleArn": self.reader_role_arn,
                "writerRoleArn": self.writer_role_arn,
                "readerServiceAccount": self.reader_service_account,
                "writerServiceAccount": self.writer_service_account,
            }
        )

    def _identity(
        self,
        name: str,
        args: ModelCacheArgs,
        service_account: str,
        bucket: aws.s3.Bucket,
        policies: Mapping[str, Callable[[str], dict[str, Any]]],
        tags: dict[str, str],
    ) -> tuple[pulumi.Output[str], list[pulumi.Resource]]:
        """A role with inline policies on the bucket, bound by Pod Identity to one service account.
        Returns the role's ARN and what a pod of that identity must wait for."""
        child = pulumi.ResourceOptions(parent=self)
        role = aws.iam.Role(
            name,
            assume_role_policy=json.dumps(aws_policies.pod_identity_trust_policy()),
            tags={**tags, "Name": name},
            opts=child,
        )
        ready: list[pulumi.Resource] = [
            aws.iam.RolePolicy(
                f"{name}-{suffix}",
                role=role.id,
                policy=bucket.arn.apply(lambda arn, policy_for=policy_for: json.dumps(policy_for(arn))),
                opts=child,
            )
            for suffix, policy_for in policies.items()
        ]
        association = aws.eks.PodIdentityAssociation(
            f"{name}-pod-identity",
            cluster_name=args.cluster_name,
            namespace=args.namespace,
            service_account=service_account,
            role_arn=role.arn,
            tags={**tags, "Name": f"{name}-pod-identity"},
            opts=child,
        )
        ready.append(association)
        if args.create_service_accounts:
            ready.append(
                k8s.core.v1.ServiceAccount(
                    f"{name}-service-account",
                    metadata=k8s.meta.v1.ObjectMetaArgs(
                        name=service_account, namespace=args.namespace, labels=kubernetes_labels(tags)
                    ),
                    opts=child,
                )
            )
        return role.arn, ready
