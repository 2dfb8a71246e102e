"""The serving pod's pull sized for its node: connections for the link share, loops, ranges, memory."""

from __future__ import annotations

import pytest

from infra.modelcache.transfer import MiB, TransferSettings
from infra.sizing import model_pull
from infra.sizing.gpus import load_catalog
from infra.sizing.model_pull import PullSettings, pull_bytes_per_s, pull_connections, pull_settings


@pytest.mark.parametrize(
    ("network_gbps", "vcpus", "pods", "expected", "memory_gib"),
    [
        # 20 Gb/s: a 1.25 GB/s share needs 14 connections, twice that is under the floor of 32
        (20, 4, 1, PullSettings(connections=32, processes=2, range_mib=32), 2),
        (20, 16, 1, PullSettings(connections=32, processes=4, range_mib=32), 2),
        # 100 Gb/s: 6.25 GB/s, 2 x 70 connections; past 64 the ranges double
        (100, 48, 1, PullSettings(connections=139, processes=18, range_mib=64), 2),
        (100, 16, 1, PullSettings(connections=139, processes=8, range_mib=64), 2),
        # 400 Gb/s and up: the tool's limit of 256, an event loop per 8
        (400, 96, 1, PullSettings(connections=256, processes=32, range_mib=64), 3),
        (3200, 192, 1, PullSettings(connections=256, processes=32, range_mib=64), 3),
        # two pods on an 800 Gb/s node: each a 400 Gb/s share and half the vCPUs
        (800, 96, 2, PullSettings(connections=256, processes=24, range_mib=64), 3),
        # eight pods on a 100 Gb/s node: 12.5 Gb/s each, the floor again
        (100, 192, 8, PullSettings(connections=32, processes=4, range_mib=32), 2),
    ],
)
def test_pull_settings_follow_the_link_share(
    network_gbps: float, vcpus: int, pods: int, expected: PullSettings, memory_gib: int
) -> None:
    settings = pull_settings(network_gbps, vcpus, pods_per_node=pods)
    assert settings == expected
    assert settings.memory_gib == memory_gib


@pytest.mark.parametrize(
    ("network_gbps", "pods", "bytes_per_s"),
    [
        (20, 1, 1.25e9),  # the link share: its 32 connections could carry 2.9 GB/s
        (100, 1, 6.25e9),
        (800, 1, 256 * 90e6),  # the connections: 23 GB/s of a 50 GB/s share
        (800, 4, 12.5e9),  # four pods: a 12.5 GB/s share each, under what 256 connections carry
    ],
)
def test_pull_rate_is_the_link_share_or_what_the_connections_carry(
    network_gbps: float, pods: int, bytes_per_s: float
) -> None:
    assert pull_bytes_per_s(network_gbps, pods) == pytest.approx(bytes_per_s)


def test_every_catalog_instance_gets_settings_the_tool_accepts() -> None:
    """The tool's own settings check (TransferSettings refuses what `cache pull` would) takes the sizing
    for every instance in the catalog, and no pod gets more event loops than half its vCPUs."""
    for instance in load_catalog().instance_types:
        settings = pull_settings(instance.network_gbps, instance.vcpus)
        TransferSettings(
            concurrency=settings.connections,
            processes=settings.processes,
            chunk_size=settings.range_mib * MiB,
        )
        assert settings.connections >= model_pull.MIN_CONNECTIONS
        assert settings.processes <= max(1, instance.vcpus // 2)


@pytest.mark.parametrize(("network_gbps", "vcpus", "pods"), [(0, 4, 1), (20, 0, 1), (20, 4, 0)])
def test_nonsense_is_refused(network_gbps: float, vcpus: int, pods: int) -> None:
    with pytest.raises(ValueError):
        pull_settings(network_gbps, vcpus, pods_per_node=pods)


def test_connections_grow_with_the_link_until_the_limit() -> None:
    links = [10, 25, 50, 100, 200, 400, 3200]
    counts = [pull_connections(link) for link in links]
    assert counts == sorted(counts) and counts[0] == 32 and counts[-1] == 256
