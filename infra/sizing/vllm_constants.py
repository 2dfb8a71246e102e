"""Every number the sizing takes from vLLM 0.33.0 or from measurements, with where it comes from.

Facts marked README are from ../shared/vllm-0.33.0/README.md (read off the real 0.33.0 wheel).
Numbers marked MEASURED are from vLLM start-up logs posted in public issues; they cannot be derived from
a config and are the planner's only empirical inputs. Replace them here when a GPU run measures better ones
(the `vllm:cache_config_info` metric exposes the real KV block count to compare against).
"""

from __future__ import annotations

GIB = 1024**3

# README (a), (d): `--gpu-memory-utilization` default, a fraction of *total* device memory.
DEFAULT_GPU_MEMORY_UTILIZATION = 0.92
# README (d) 5, 7: KV-cache block size for standard attention backends.
BLOCK_SIZE = 16

# README (a): vLLM's per-GPU defaults for --max-num-batched-tokens / --max-num-seqs (get_batch_defaults).
# (minimum total memory GiB, excludes A100, tokens, seqs), first match wins.
BATCH_DEFAULTS = (
    (160.0, False, 16384, 1024),
    (70.0, True, 8192, 1024),
    (0.0, False, 2048, 256),
)

# README (d) 2: the profile run's transient peak is one forward pass of max_num_batched_tokens tokens plus a
# sampler run over max_num_seqs rows. Activations alive at the peak, per token: the residual stream, the
# normed input, the attention output and the qkv projection (counted as this many hidden-size copies) plus
# the MLP's gate_up and activated outputs (3 x intermediate / tp).
ACTIVATION_HIDDEN_COPIES = 4
# The sampler holds fp32 logits, processed logits and probabilities over the full vocabulary per sequence.
SAMPLER_FP32_COPIES = 3
# MEASURED, vllm-project/vllm PR #10511 (Meta-Llama-3-8B on H100, 8192-token profile): activation peak
# 1.26 GiB. The two constants above give 1.28 GiB for that case (tests/sizing/test_memory.py checks it).

# MEASURED: memory outside torch's allocator (cuBLAS workspaces, attention backend workspace, CUDA runtime
# growth after the baseline). vLLM logs 0.16 GiB (PR #12126, H100) to 0.20 GiB (PR #14447, RTX 3090) for
# one GPU; we keep a conservative 0.5 GiB.
NON_TORCH_BYTES = int(0.5 * GIB)
# MEASURED, PR #10511: non_torch_memory grew from 1.79 GiB at TP=1 to 3.58 GiB at TP=2 (NCCL buffers and
# vLLM's custom all-reduce). Charged per GPU whenever a replica spans more than one GPU.
MULTI_GPU_COMMUNICATION_BYTES = int(1.79 * GIB)
# README (d) 3: CUDA-graph memory is estimated by a dummy capture and subtracted from the KV budget.
# vLLM prints it as "Graph capturing finished in N secs, took X GiB"; dense 7B-70B models report well under
# 1 GiB per GPU. 1 GiB is our conservative assumption; `--enforce-eager` would remove it.
CUDA_GRAPH_BYTES = 1 * GIB

# Cold start, MEASURED (../shared/notes/what-users-expect.md, Llama-3.1-8B on an L40S with caches kept):
# weight load 18 s for the 16.06 GB checkpoint from local disk, compile 23 s (torch.compile cache hit),
# CUDA-graph capture 7 s, engine init 34 s. Without the compile cache: compile 52 s, capture 54 s, init 94 s.
WEIGHT_LOAD_BYTES_PER_S = 16.06e9 / 18
WARM_ENGINE_START_S = 23 + 7 + 34
COLD_ENGINE_START_S = 52 + 54 + 94
# Assumption: S3 -> instance downloads reach half the instance's nominal network bandwidth.
S3_NETWORK_EFFICIENCY = 0.5

# CPU weight offload (`--cpu-offload-gb`, vLLM 0.33.0 vllm/model_executor/offloader/uva.py): the offloaded
# parameters sit in pinned (page-locked) host memory and every forward pass reads them over PCIe in place.
# They count against the serving pod's memory limit, which is this share of its GPUs' part of the node
# (infra/kubernetes/vllm_workload.py requests it): the rest is Karpenter's VM overhead (7.5% of the nominal
# size), EKS AL2023's kube-reserved (255 MiB + 11 MiB per pod), the eviction threshold and the daemons.
POD_MEMORY_FRACTION = 0.8
# /dev/shm the pod mounts per GPU (memory-backed: NCCL and the multiprocess executor write through it).
SHM_BYTES_PER_GPU = 2 * GIB
# ASSUMPTION: the resident memory of vLLM's own processes per GPU (API server, engine core, one worker
# each holding torch, the CUDA context's host side, the tokenizer and small pinned staging buffers), and
# the overshoot of the offloader, which stops at the first whole parameter past the limit (at most one
# layer projection, under 0.5 GiB for models up to 70B at TP=1).
VLLM_HOST_BYTES_PER_GPU = 4 * GIB
# ASSUMPTION: pinned host-to-GPU bandwidth per GPU, about 80% of the PCIe x16 link as CUDA's
# bandwidthTest reports it (Gen3 16, Gen4 32, Gen5 64 GB/s nominal). UVA reads inside the kernels
# are no faster than a pinned copy, so a forward pass takes at least offloaded bytes / this.
PCIE_GEN3_BYTES_PER_S = 12e9
PCIE_GEN4_BYTES_PER_S = 25e9
PCIE_GEN5_BYTES_PER_S = 50e9
# The host link of each catalog GPU (NVIDIA datasheets); a GPU not listed is planned as Gen4.
PCIE_BYTES_PER_S = {
    "T4": PCIE_GEN3_BYTES_PER_S,
    "H100": PCIE_GEN5_BYTES_PER_S,
    "H200": PCIE_GEN5_BYTES_PER_S,
    "B200": PCIE_GEN5_BYTES_PER_S,
    "B300": PCIE_GEN5_BYTES_PER_S,
    "RTX-PRO-6000": PCIE_GEN5_BYTES_PER_S,
}
