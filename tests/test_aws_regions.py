"""Region names are checked against a real list: botocore's, which AWS publishes with every SDK release."""

from __future__ import annotations

import pytest

from infra.aws_regions import AWS_REGIONS, PARTITIONS, region_problem


def test_the_list_is_botocores_for_the_partitions_eks_runs_in() -> None:
    import botocore.session

    session = botocore.session.get_session()
    expected = {
        region
        for partition in PARTITIONS
        for region in session.get_available_regions("eks", partition_name=partition)
    }
    assert set(AWS_REGIONS) == expected
    assert len(AWS_REGIONS) == len(set(AWS_REGIONS))


@pytest.mark.parametrize(
    "name", ["us-east-1", "eu-central-2", "ap-southeast-7", "us-gov-west-1", "cn-north-1"]
)
def test_real_regions_have_no_problem(name: str) -> None:
    assert region_problem(name) is None


@pytest.mark.parametrize(
    ("name", "suggested"),
    [
        ("us-east-9", ["us-east-1", "us-east-2"]),
        ("eu-west", ["eu-west-1"]),
        ("US-EAST-1", ["us-east-1"]),
        ("mars-north-1", []),
    ],
)
def test_a_name_that_is_no_region_says_what_would_work(name: str, suggested: list[str]) -> None:
    problem = region_problem(name) or ""
    assert problem.startswith(f"{name!r} is not an AWS region; ")
    did_you_mean, _, listed = problem.partition("regions: ")
    assert all(region in did_you_mean for region in suggested) and ("did you mean" in did_you_mean) == bool(
        suggested
    )
    assert listed.split(", ") == list(AWS_REGIONS)
