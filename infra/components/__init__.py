"""Pulumi components: one ComponentResource per concern, each a thin shell over pure builders.

Every component takes `(name, args, opts)` with a frozen `Args` dataclass, parents its children to itself,
names them from its own name, passes the tags to every child that takes tags, and calls
`register_outputs` last.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

import pulumi
import pulumi_aws as aws

from infra import aws_policies

_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def kubernetes_labels(tags: Mapping[str, str]) -> dict[str, str]:
    """The standard labels of every Kubernetes object this program creates, from the stack's tags."""
    labels = {"app.kubernetes.io/managed-by": "pulumi", "app.kubernetes.io/part-of": "llm-serving"}
    for key in ("project", "stack"):
        value = tags.get(key, "")
        if value and len(value) <= 63 and _LABEL_VALUE.match(value):
            labels[f"llm-serving/{key}"] = value
    return labels


def pod_identity_trust(
    parent: pulumi.Resource,
    *,
    cluster_name: pulumi.Input[str],
    region: str | None,
    cluster_arn: pulumi.Input[str] | None = None,
) -> pulumi.Output[str]:
    """A Pod Identity role's trust policy (JSON) for this account's cluster only: the cluster's ARN when a
    component has it, else the ARN EKS gives the named cluster in `region`."""
    account = aws.get_caller_identity_output(opts=pulumi.InvokeOutputOptions(parent=parent)).account_id
    return pulumi.Output.all(account, cluster_name, cluster_arn).apply(
        lambda v: json.dumps(
            aws_policies.pod_identity_trust_policy(
                v[0], v[2] or aws_policies.eks_cluster_arn(region or "", v[0], v[1])
            )
        )
    )
