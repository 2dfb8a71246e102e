"""The planner's inputs and its answer. Plain frozen dataclasses: every other layer reads these."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from infra.errors import UserError

CapacityType = Literal["on-demand", "spot"]
GIB = 1024**3


@dataclass(frozen=True)
class LoraSlots:
    """LoRA adapters served next to the base weights, as vLLM sizes them: slots in one batch and max rank."""

    max_loras: int = 1  # `--max-loras`
    max_lora_rank: int = 16  # `--max-lora-rank`, one of vLLM's choices
    # In a plan: the most one adapter of that rank takes on disk (fp32, every module LoRA wraps), and the
    # GPU memory per GPU the slots take (part of memory_per_gpu.weights).
    adapter_bytes: int = 0
    bytes_per_gpu: int = 0


@dataclass(frozen=True)
class Workload:
    """What the deployment must serve."""

    max_model_len: int | None = None  # None: the model's max_position_embeddings
    concurrency: int = 1  # full-length sequences whose KV cache must fit at once
    dtype: str | None = None  # None or "auto": the checkpoint's torch_dtype
    quantization: str | None = None  # None: whatever the checkpoint's quantization_config says
    kv_cache_dtype: str = "auto"  # "auto" (model dtype), "fp8", "fp8_e4m3", "fp8_e5m2"
    gpu_memory_utilization: float | None = None  # None: vLLM 0.33.0's default, 0.92
    replicas: int = 1  # replicas the stack runs: plans are ranked by what that many cost in whole nodes
    lora: LoraSlots | None = None  # None: no LoRA adapters (`--enable-lora` off)
    spread: bool = False  # one replica per node (to keep serving through a node's loss), none sharing one
    cpu_offload_gib: float = 0.0  # `--cpu-offload-gb`: weights per GPU to keep in host memory; 0: none


@dataclass(frozen=True)
class Constraints:
    """Where the deployment may run."""

    gpus: tuple[str, ...] = ()  # allowed GPU names (A10G, L4, ...); empty: any
    instance_types: tuple[str, ...] = ()  # allowed EC2 instance types; empty: any
    tensor_parallel_size: int | None = None  # None: the smallest that fits
    capacity_type: CapacityType = "on-demand"
    region: str = "us-east-1"
    max_nodes_per_replica: int = 4  # pipeline parallelism across at most this many nodes
    gpu_memory_gib: float | None = None  # plan for a GPU outside the catalog (total memory per GPU)
    gpu_compute_capability: float | None = None  # of that GPU; None: gpus.DEFAULT_CUSTOM_COMPUTE_CAPABILITY


@dataclass(frozen=True)
class GpuShare:
    name: str
    memory_gib: float  # total memory per GPU as the driver reports it
    count: int  # GPUs per node in the chosen instance type


@dataclass(frozen=True)
class MemoryPerGpu:
    """Bytes per GPU, as vLLM 0.33.0 accounts them (README section d). budget = the rest summed."""

    budget: int
    weights: int
    activations: int
    cuda_graphs: int
    other: int
    kv_cache: int

    def gib(self) -> dict[str, float]:
        return {name: round(value / GIB, 2) for name, value in asdict(self).items()}


@dataclass(frozen=True)
class Alternative:
    instance_type: str
    gpu_name: str
    tensor_parallel_size: int
    pipeline_parallel_size: int
    gpus_per_replica: int
    kv_cache_tokens: int
    max_concurrency: float
    cost_per_hour_usd: float | None  # per replica, as if every node were full of replicas
    stack_cost_per_hour_usd: float | None = None  # the whole nodes the plan's replica count needs
    cpu_offload_gib: float = 0.0  # weights per GPU in host memory (`--cpu-offload-gb`)


@dataclass(frozen=True)
class ServingPlan:
    model: str
    params_billion: float
    dtype: str
    quantization: str | None
    kv_cache_dtype: str
    instance_type: str
    gpu: GpuShare
    tensor_parallel_size: int
    pipeline_parallel_size: int
    nodes_per_replica: int
    gpus_per_replica: int
    max_model_len: int
    gpu_memory_utilization: float
    memory_per_gpu: MemoryPerGpu
    kv_bytes_per_token_per_gpu: int
    kv_cache_tokens: int
    max_concurrency: float
    # The batch limits the activation memory was sized for; infra/vllm pins them in the serve arguments.
    max_num_batched_tokens: int
    max_num_seqs: int
    quantization_arg: str | None  # vLLM's --quantization (load-time methods); None: from the checkpoint
    capacity_type: CapacityType
    # Per replica, as if every node were full of replicas; None for a GPU outside the catalog.
    cost_per_hour_usd: float | None
    estimated_cold_start_s: float  # node has the image: weights from S3, load to GPUs, warm engine start
    estimated_load_s: float  # of that, what vLLM itself takes (load and engine start): its startup probe
    approximate: bool  # True for sliding-window / hybrid / MLA models, where vLLM's figure is derived
    notes: tuple[str, ...] = ()
    alternatives: tuple[Alternative, ...] = field(default_factory=tuple)
    # What the stack pays for `priced_for_replicas` (Workload.replicas) replicas: whole nodes, as AWS bills.
    stack_cost_per_hour_usd: float | None = None
    priced_for_replicas: int = 1
    priced_spread: bool = False  # whether those replicas were priced a node each (Workload.spread)
    nodes_for_replicas: int = 1
    price_region: str = "us-east-1"  # the catalog's prices are this region's list prices
    prices_read_on: str = ""  # ISO date the catalog's prices were read
    lora: LoraSlots | None = None  # the LoRA slots sized (rank one of vLLM's choices); None: LoRA off
    cpu_offload_gib: float = 0.0  # weights per GPU in pinned host memory (`--cpu-offload-gb`)

    @property
    def weights_total_bytes(self) -> int:
        """The model's weights across all ranks of one replica: what a node downloads and stores."""
        lora = self.lora.bytes_per_gpu if self.lora else 0  # allocated at start, not downloaded
        offloaded = int(self.cpu_offload_gib * GIB)  # in host memory, but downloaded all the same
        return (self.memory_per_gpu.weights - lora + offloaded) * self.gpus_per_replica

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["memory_per_gpu_gib"] = self.memory_per_gpu.gib()
        data["memory_per_gpu_bytes"] = data.pop("memory_per_gpu")
        return data


def replicas_per_node(
    *, gpus_per_node: int, gpus_per_replica: int, nodes_per_replica: int, spread: bool
) -> int:
    """Replicas (pods of one replica) one node holds: replicas smaller than a node share it unless spread;
    a replica spanning nodes has one pod on each of its nodes."""
    if nodes_per_replica > 1 or spread:
        return 1
    return max(1, gpus_per_node // gpus_per_replica)


def max_nodes(
    *,
    gpus_per_node: int,
    gpus_per_replica: int,
    nodes_per_replica: int,
    max_replicas: int,
    spread: bool = False,
) -> int:
    """Nodes `max_replicas` replicas need, as AWS bills them: whole nodes. Replicas smaller than a node share
    it (e.g. two TP=4 replicas on one 8-GPU node) unless they are spread one per node; a replica spanning
    nodes takes whole nodes. The planner prices with it and the GPU pool is sized with it."""
    if nodes_per_replica > 1:
        return max_replicas * nodes_per_replica
    per_node = replicas_per_node(
        gpus_per_node=gpus_per_node,
        gpus_per_replica=gpus_per_replica,
        nodes_per_replica=nodes_per_replica,
        spread=spread,
    )
    return math.ceil(max_replicas / per_node)


def parse_token_count(text: str, key: str = "max_model_len") -> int:
    """Token counts as vLLM's --max-model-len reads them: 32768, 32k (= 32000) or 32K (= 32768)."""
    value = text.strip()
    multipliers = {"k": 1000, "K": 1024, "m": 1000**2, "M": 1024**2}
    try:
        if value and value[-1] in multipliers:
            return int(float(value[:-1]) * multipliers[value[-1]])
        return int(value)
    except ValueError:
        raise UserError(
            f"{text!r} is not a token count; use e.g. 32768, 32k (32000) or 32K (32768)", key=key
        ) from None
