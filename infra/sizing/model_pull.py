"""How a serving pod's init container pulls the checkpoint on the node the planner picks: the connections,
worker processes and range size it passes to `cache pull`, and the rate the planner's cold start assumes.

Real S3 serves one connection ~90 MB/s, so a pull fills a link only with enough ranged GETs in flight.
The tool's own default (8 per CPU, 16 to 64) carries at most ~5.8 GB/s: an eighth of the S3 share the
planner assumes for an 800 Gb/s node. Here the connections follow the node's share of its link instead,
up to the tool's limit of 256 (also s5cmd's default). These are estimates from per-connection and
per-GiB costs, not measurements on such a node (docs/benchmarks.md, "Estimated pull times").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from infra.sizing import vllm_constants as vc

# AWS's S3 performance guidelines: ~85-90 MB/s per connection; more throughput means more connections.
S3_BYTES_PER_S_PER_CONNECTION = 90e6
# Twice the connections the share needs at 90 MB/s each: connections to S3 vary, and one that runs at half
# speed should not make the link wait.
CONNECTION_HEADROOM = 2
MIN_CONNECTIONS = 32  # what the tool picks itself on a 4-vCPU node, the smallest GPU node
MAX_CONNECTIONS = 256  # `cache pull --concurrency` accepts at most this
# One event loop per this many connections: the benchmark's loop drove 16 at ~0.5-1 GiB/s; 8 leaves room
# for TLS on real S3 (~0.3-0.45 CPU s/GiB more).
CONNECTIONS_PER_PROCESS = 8
MAX_PROCESSES = 64  # `cache pull --processes` accepts at most this
DEFAULT_RANGE_MIB = 32
# Above this many connections ranges double: a connection then asks ~1.3 GETs/s instead of ~2.7, so ten
# pods of 256 connections scaling out together stay under S3's 5,500 GETs/s per prefix (an entry is one).
LARGE_RANGES_ABOVE_CONNECTIONS = 64
LARGE_RANGE_MIB = 64
# Init container memory, rounded up to GiB: a base for the tool and the page cache it dirties, plus each
# forked worker's own pages (3.0-3.4 MB private each, smaps_rollup of 4 workers mid-pull) and each socket's
# receive queue at its worst: when the writer waits on a throttled disk every socket fills to the kernel's
# default tcp_rmem maximum (6 MiB), and that memory is charged to the container like its own.
BASE_MEMORY_MIB = 1024
MEMORY_PER_PROCESS_MIB = 8
MEMORY_PER_CONNECTION_MIB = 6
MIN_MEMORY_GIB = 2


@dataclass(frozen=True)
class PullSettings:
    """`cache pull --concurrency --processes --chunk-size-mib` for one pod, and its memory limit."""

    connections: int
    processes: int
    range_mib: int

    @property
    def memory_gib(self) -> int:
        mib = (
            BASE_MEMORY_MIB
            + self.processes * MEMORY_PER_PROCESS_MIB
            + self.connections * MEMORY_PER_CONNECTION_MIB
        )
        return max(MIN_MEMORY_GIB, math.ceil(mib / 1024))


def link_share_bytes_per_s(network_gbps: float, pods_per_node: int = 1) -> float:
    """One pod's share of what S3 is assumed to deliver over the node's link."""
    return network_gbps * 1e9 / 8 * vc.S3_NETWORK_EFFICIENCY / pods_per_node


def pull_connections(network_gbps: float, pods_per_node: int = 1) -> int:
    """Twice the connections the pod's share of the link needs, within the tool's range."""
    if network_gbps <= 0 or pods_per_node < 1:
        raise ValueError("network_gbps must be positive and pods_per_node at least 1")
    share = link_share_bytes_per_s(network_gbps, pods_per_node)
    wanted = math.ceil(CONNECTION_HEADROOM * share / S3_BYTES_PER_S_PER_CONNECTION)
    return min(MAX_CONNECTIONS, max(MIN_CONNECTIONS, wanted))


def pull_settings(network_gbps: float, vcpus: int, pods_per_node: int = 1) -> PullSettings:
    """pull_connections, an event loop per 8 of them (at most one per 2 of the pod's vCPUs), and longer
    ranges when there are many."""
    if vcpus < 1:
        raise ValueError("vcpus must be at least 1")
    connections = pull_connections(network_gbps, pods_per_node)
    pod_vcpus = max(1, vcpus // pods_per_node)
    processes = min(MAX_PROCESSES, max(1, pod_vcpus // 2), math.ceil(connections / CONNECTIONS_PER_PROCESS))
    range_mib = LARGE_RANGE_MIB if connections > LARGE_RANGES_ABOVE_CONNECTIONS else DEFAULT_RANGE_MIB
    return PullSettings(connections=connections, processes=processes, range_mib=range_mib)


def pull_bytes_per_s(network_gbps: float, pods_per_node: int = 1) -> float:
    """The rate a pull is estimated to reach: the pod's link share, or what its connections carry."""
    carried = pull_connections(network_gbps, pods_per_node) * S3_BYTES_PER_S_PER_CONNECTION
    return min(link_share_bytes_per_s(network_gbps, pods_per_node), carried)
