"""The AWS regions a stack may name, and what is wrong with a name that is not one. Pure: no AWS calls.

The list is botocore's (requirements.txt pins it) for the commercial, China and GovCloud partitions, where
EKS runs; tests/test_aws_regions.py fails when a botocore upgrade adds or drops one, so it cannot drift.
"""

from __future__ import annotations

import difflib

AWS_REGIONS: tuple[str, ...] = (
    # aws
    "af-south-1",
    "ap-east-1",
    "ap-east-2",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-south-1",
    "ap-south-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "ap-southeast-4",
    "ap-southeast-5",
    "ap-southeast-6",
    "ap-southeast-7",
    "ca-central-1",
    "ca-west-1",
    "eu-central-1",
    "eu-central-2",
    "eu-north-1",
    "eu-south-1",
    "eu-south-2",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "il-central-1",
    "me-central-1",
    "me-south-1",
    "mx-central-1",
    "sa-east-1",
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    # aws-cn
    "cn-north-1",
    "cn-northwest-1",
    # aws-us-gov
    "us-gov-east-1",
    "us-gov-west-1",
)
PARTITIONS = ("aws", "aws-cn", "aws-us-gov")


def region_problem(name: str) -> str | None:
    """None for an AWS region; otherwise one sentence saying why not and which regions are close."""
    if name in AWS_REGIONS:
        return None
    close = difflib.get_close_matches(name.strip().lower(), AWS_REGIONS, n=3, cutoff=0.75)
    if name.strip().lower() in AWS_REGIONS:
        close = [name.strip().lower()]
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    return f"{name!r} is not an AWS region; {hint}regions: {', '.join(AWS_REGIONS)}"
