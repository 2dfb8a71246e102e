"""CPU weight offload (`--cpu-offload-gb`): the host memory a node can pin for it, how much a layout
needs, and what it costs. Pure functions; the planner decides when to use it.

vLLM 0.33.0's UVA offloader moves decoder-layer parameters into pinned host memory, per GPU, until the
requested GiB are reached; the GPU reads them over PCIe in place in every forward pass, so each decode
step waits for the offloaded bytes to cross the link.
"""

from __future__ import annotations

import math

from infra.sizing import vllm_constants as vc
from infra.sizing.gpus import MIB, GpuInstanceType, GpuModel


def host_bytes_per_gpu(instance: GpuInstanceType) -> int | None:
    """Host memory one GPU's share of the serving pod can pin for offloaded weights, after /dev/shm and
    vLLM's own processes; None when the instance's memory is unknown (a GPU outside the catalog).

    Bounded by the pod's memory limit, not the node's: pinned pages past it get the pod OOM-killed. A share
    per GPU, because replicas smaller than a node are packed (and priced) per GPU.
    """
    if instance.memory_mib <= 0:
        return None
    pod_share = instance.memory_mib * MIB * vc.POD_MEMORY_FRACTION / instance.gpu_count
    return max(0, math.floor(pod_share - vc.SHM_BYTES_PER_GPU - vc.VLLM_HOST_BYTES_PER_GPU))


def offload_needed_gib(kv_cache_bytes: int, kv_needed_bytes: int) -> int:
    """Whole GiB per GPU to offload so the KV cache grows from `kv_cache_bytes` (negative when even the
    weights do not fit) to `kv_needed_bytes`; 0 when it already fits."""
    return max(0, math.ceil((kv_needed_bytes - kv_cache_bytes) / vc.GIB))


def pcie_bytes_per_s(gpu: GpuModel) -> float:
    return vc.PCIE_BYTES_PER_S.get(gpu.name, vc.PCIE_GEN4_BYTES_PER_S)


def throughput_note(offload_bytes: int, gpu_weight_bytes: int, gpu: GpuModel) -> str:
    """The decode-step cost of offloading, in the plan's notes: a memory-bound step reads every weight
    once, from GPU memory for the resident part and over PCIe for the offloaded part."""
    link = pcie_bytes_per_s(gpu)
    offloaded_s = offload_bytes / link
    note = (
        f"CPU offload: {offload_bytes / vc.GIB:g} GiB of weights per GPU live in pinned host memory and "
        f"cross PCIe (~{link / 1e9:.0f} GB/s) in every forward pass, at least {offloaded_s * 1000:,.0f} ms "
        "per decode step"
    )
    if gpu.memory_bandwidth_gbps > 0:
        hbm = gpu.memory_bandwidth_gbps * 1e9
        with_offload = gpu_weight_bytes / hbm + offloaded_s
        all_on_gpu = (gpu_weight_bytes + offload_bytes) / hbm
        note += (
            f" against ~{all_on_gpu * 1000:,.0f} ms with every weight in GPU memory: about "
            f"{with_offload / all_on_gpu:.0f}x lower decode throughput"
        )
    return note
