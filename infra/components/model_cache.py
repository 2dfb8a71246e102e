"""`ModelCache`: the per-stack S3 bucket that holds model revisions, and who may touch it.

The bucket blocks public access, encrypts at rest (SSE-S3, or SSE-KMS with a customer-managed key), refuses
plain HTTP, disables ACLs (bucket owner enforced), keeps overwritten and deleted objects as noncurrent
versions for `noncurrent_version_days` and aborts abandoned multipart uploads. Serving pods get a
read-only role (the compile cache included: the writer publishes it), the fill Jobs a role that may put
objects but delete none; each is bound to its Kubernetes service account with EKS Pod Identity, so no pod
needs AWS keys.

What reads and writes the bucket is per model revision and lives with the workload: `VllmService` runs the
revision's fill Job as the writer and gives its pods the cache patch as the reader (both built by
`infra.kubernetes.serving_cache`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from infra import aws_policies
from infra.components import kubernetes_labels, pod_identity_trust

READER_SERVICE_ACCOUNT = "vllm"
WRITER_SERVICE_ACCOUNT = "model-cache-fill"
ABORT_INCOMPLETE_UPLOADS_DAYS = 3
# How long an overwritten or deleted object stays recoverable: time to notice a bad push or a deletion,
# short enough that a replaced 140 GB model does not cost storage for long.
NONCURRENT_VERSION_DAYS = 30


class BucketEncryption(StrEnum):
    S3 = "s3"  # SSE-S3 (AES256): no key to manage
    KMS = "kms"  # SSE-KMS with a customer-managed key: key policy and CloudTrail say who may and did decrypt


@dataclass(frozen=True)
class ModelCacheArgs:
    """Inputs of `ModelCache`: the cluster and namespace its identities are bound in."""

    cluster_name: pulumi.Input[str]
    namespace: pulumi.Input[str]
    reader_service_account: str = READER_SERVICE_ACCOUNT
    writer_service_account: str = WRITER_SERVICE_ACCOUNT
    create_service_accounts: bool = True  # False when the workload brings its own
    force_destroy: bool = False  # True lets `pulumi destroy` delete a bucket that still holds models
    # What the identities' trust names as aws:SourceArn (Cluster.cluster_arn); None derives it from
    # cluster_name, the region and the caller's account.
    cluster_arn: pulumi.Input[str] | None = None
    encryption: BucketEncryption = BucketEncryption.S3
    kms_key_arn: pulumi.Input[str] | None = None  # with KMS: this key; None creates one (rotation on)
    noncurrent_version_days: int = NONCURRENT_VERSION_DAYS
    region: str | None = None  # scopes the KMS grants to S3 in this region
    # s3://BUCKET/PREFIX folders the writer copies into the cache (LoRA adapters): read-only, those only
    source_folders: tuple[str, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kms_key_arn is not None and self.encryption is not BucketEncryption.KMS:
            raise ValueError("a KMS key applies only to encryption KMS")
        if self.cluster_arn is None and self.region is None:
            raise ValueError(
                "give the cluster's ARN or the region, so the identities trust only that cluster"
            )
        if self.noncurrent_version_days < 1:
            raise ValueError("noncurrent_version_days must be at least 1")


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
        kms_key_arn = self._encryption(name, args, bucket, tags)
        versioning = aws.s3.BucketVersioning(
            f"{name}-versioning",
            bucket=bucket.id,
            versioning_configuration=aws.s3.BucketVersioningVersioningConfigurationArgs(status="Enabled"),
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
                ),
                # An overwritten or deleted object stays recoverable this long, then stops costing storage.
                aws.s3.BucketLifecycleConfigurationRuleArgs(
                    id="expire-noncurrent-versions",
                    status="Enabled",
                    filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=""),
                    noncurrent_version_expiration=aws.s3.BucketLifecycleConfigurationRuleNoncurrentVersionExpirationArgs(
                        noncurrent_days=args.noncurrent_version_days
                    ),
                    expiration=aws.s3.BucketLifecycleConfigurationRuleExpirationArgs(
                        expired_object_delete_marker=True
                    ),
                ),
            ],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[versioning]),
        )

        reader, reader_ready = self._identity(
            f"{name}-reader",
            args,
            args.reader_service_account,
            bucket,
            {"policy": aws_policies.model_cache_read_policy},
            kms_key_arn,
            tags,
        )
        writer, writer_ready = self._identity(
            f"{name}-writer",
            args,
            args.writer_service_account,
            bucket,
            {
                "policy": aws_policies.model_cache_write_policy,
                **(
                    {
                        "sources": lambda _bucket, _key, region: aws_policies.source_folders_read_policy(
                            args.source_folders, region
                        )
                    }
                    if args.source_folders
                    else {}
                ),
            },
            kms_key_arn,
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

    def _encryption(
        self, name: str, args: ModelCacheArgs, bucket: aws.s3.Bucket, tags: dict[str, str]
    ) -> pulumi.Output[str | None]:
        """Default encryption of the bucket; returns the customer-managed key's ARN (None with SSE-S3)."""
        child = pulumi.ResourceOptions(parent=self)
        kms = args.encryption is BucketEncryption.KMS
        key_arn: pulumi.Output[str | None] = pulumi.Output.from_input(None)
        if kms and args.kms_key_arn is not None:
            key_arn = pulumi.Output.from_input(args.kms_key_arn)
        elif kms:
            key_arn = aws.kms.Key(
                f"{name}-key",
                description=f"{name}: model cache bucket",
                enable_key_rotation=True,
                deletion_window_in_days=30,
                tags={**tags, "Name": f"{name}-key"},
                opts=child,
            ).arn
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-encryption",
            bucket=bucket.id,
            rules=[
                aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                    apply_server_side_encryption_by_default=aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
                        sse_algorithm="aws:kms" if kms else "AES256",
                        kms_master_key_id=key_arn if kms else None,
                    ),
                    # One data key per bucket rather than per object: far fewer KMS calls for ranged GETs.
                    bucket_key_enabled=True if kms else None,
                )
            ],
            opts=child,
        )
        return key_arn

    def _identity(
        self,
        name: str,
        args: ModelCacheArgs,
        service_account: str,
        bucket: aws.s3.Bucket,
        policies: Mapping[str, Callable[[str, str | None, str | None], dict[str, Any]]],
        kms_key_arn: pulumi.Output[str | None],
        tags: dict[str, str],
    ) -> tuple[pulumi.Output[str], list[pulumi.Resource]]:
        """A role with inline policies on the bucket, bound by Pod Identity to one service account.
        Returns the role's ARN and what a pod of that identity must wait for."""
        child = pulumi.ResourceOptions(parent=self)
        role = aws.iam.Role(
            name,
            assume_role_policy=pod_identity_trust(
                self, cluster_name=args.cluster_name, region=args.region, cluster_arn=args.cluster_arn
            ),
            tags={**tags, "Name": name},
            opts=child,
        )
        ready: list[pulumi.Resource] = [
            aws.iam.RolePolicy(
                f"{name}-{suffix}",
                role=role.id,
                policy=pulumi.Output.all(bucket.arn, kms_key_arn).apply(
                    lambda values, policy_for=policy_for: json.dumps(
                        policy_for(values[0], values[1], args.region)
                    )
                ),
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
                    # Pods reach AWS through Pod Identity's own projected token, never the Kubernetes API.
                    automount_service_account_token=False,
                    opts=child,
                )
            )
        return role.arn, ready
