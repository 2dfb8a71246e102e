"""The planner: model + workload + constraints -> the cheapest ServingPlan that fits, or an explanation.

For every allowed instance type it tries each valid tensor-parallel size within one node (smallest
first); only when no single node can hold the model does it add pipeline stages across nodes. A
candidate fits when `concurrency` full-length sequences fit in the KV cache that vLLM 0.33.0 would
allocate (infra/sizing/memory.py). Candidates are ranked by what the workload's replicas cost in whole
nodes (a lone replica on a 4-GPU node pays the whole node), then $/h per replica, GPUs, KV tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from infra.errors import UserError
from infra.sizing import memory as mem
from infra.sizing import offload
from infra.sizing import vllm_constants as vc
from infra.sizing.gpus import (
    DEFAULT_CUSTOM_COMPUTE_CAPABILITY,
    SPOT_PRICE_FACTOR,
    GpuCatalog,
    GpuInstanceType,
    GpuModel,
    custom_gpu,
    load_catalog,
)
from infra.sizing.model_pull import pull_bytes_per_s
from infra.sizing.models import ModelArchitecture
from infra.sizing.plan import (
    GIB,
    Alternative,
    Constraints,
    GpuShare,
    LoraSlots,
    MemoryPerGpu,
    ServingPlan,
    Workload,
    max_nodes,
    replicas_per_node,
)

MAX_ALTERNATIVES = 5
MAX_OFFLOAD_ALTERNATIVES = 2
# A GPU outside the catalog (--gpu-memory-gib) is planned as an 8-GPU node with a 25 Gb/s link.
CUSTOM_GPUS_PER_NODE = 8
CUSTOM_NETWORK_GBPS = 25.0


class NoFitError(UserError):
    """No allowed GPU configuration can serve the model with the requested workload."""


@dataclass(frozen=True)
class Candidate:
    instance: GpuInstanceType
    precision: mem.Precision
    tp: int
    pp: int
    memory: MemoryPerGpu
    kv_bytes_per_token: int
    blocks: int
    blocks_needed: int
    batched_tokens: int
    num_seqs: int
    cost_per_replica: float | None  # a node's price shared by the replicas it holds
    nodes_for_replicas: int  # nodes the workload's replica count occupies
    stack_cost: float | None  # those nodes' price
    cpu_offload_gib: float = 0.0  # `--cpu-offload-gb`: weights per GPU kept in host memory
    offloadable_bytes: int = 0  # decoder-layer weights per GPU, the most vLLM can offload
    host_bytes_per_gpu: int | None = None  # host memory a GPU's share of the node can pin; None: unknown

    @property
    def fits(self) -> bool:
        return self.blocks >= self.blocks_needed and self.offload_problem is None

    @property
    def cpu_offload_bytes(self) -> int:
        return int(self.cpu_offload_gib * GIB)  # as vLLM converts the flag

    @property
    def offload_problem(self) -> str | None:
        wanted = self.cpu_offload_bytes
        if wanted > self.offloadable_bytes:
            return (
                f"--cpu-offload-gb {self.cpu_offload_gib:g} is more than the "
                f"{self.offloadable_bytes / GIB:.1f} GiB of decoder-layer weights per GPU vLLM can offload"
            )
        if self.host_bytes_per_gpu is not None and wanted > self.host_bytes_per_gpu:
            return (
                f"{self.cpu_offload_gib:g} GiB offloaded per GPU exceed the {self.host_bytes_per_gpu / GIB:.1f} "
                f"GiB of host memory per GPU left after the OS, the kubelet and vLLM's own processes"
            )
        return None

    @property
    def gpus(self) -> int:
        return self.tp * self.pp

    @property
    def kv_tokens(self) -> int:
        return self.blocks * vc.BLOCK_SIZE

    def rank_key(self) -> tuple[float, float, int, int]:
        stack = self.stack_cost if self.stack_cost is not None else math.inf
        per_replica = self.cost_per_replica if self.cost_per_replica is not None else math.inf
        return (stack, per_replica, self.gpus, -self.kv_tokens)

    def replicas_per_node(self, *, spread: bool) -> int:
        return replicas_per_node(
            gpus_per_node=self.instance.gpu_count,
            gpus_per_replica=self.gpus,
            nodes_per_replica=self.pp,
            spread=spread,
        )

    def shortfall(self) -> str:
        m = self.memory
        fixed = m.weights + m.activations + m.other + m.cuda_graphs
        where = f"{self.instance.name} TP={self.tp}" + (f" PP={self.pp}" if self.pp > 1 else "")
        if self.offload_problem is not None:
            return f"{where}: {self.offload_problem}"
        if m.kv_cache <= 0:
            return (
                f"{where}: weights {m.weights / GIB:.1f} GiB + activations, graphs and runtime "
                f"{(fixed - m.weights) / GIB:.1f} GiB exceed the {m.budget / GIB:.1f} GiB budget per GPU"
            )
        return (
            f"{where}: KV cache holds {self.kv_tokens:,} tokens, "
            f"{self.blocks_needed * vc.BLOCK_SIZE:,} needed"
        )


def gpu_memory_of(model: GpuModel) -> mem.GpuMemory:
    return mem.GpuMemory(
        name=model.name,
        total_bytes=model.memory_bytes,
        bf16=model.bf16,
        fp8=model.fp8,
        compute_capability=float(model.compute_capability or 0),
        is_a100=model.is_a100,
    )


def tensor_parallel_options(model: ModelArchitecture, gpus_per_node: int) -> list[int]:
    """TP sizes vLLM accepts for this model that also pack evenly onto a node of `gpus_per_node`."""
    options = []
    for tp in range(1, gpus_per_node + 1):
        if gpus_per_node % tp or model.num_attention_heads % tp:
            continue
        kv = model.num_kv_heads
        if (tp <= kv and kv % tp) or (tp > kv and tp % kv):
            continue
        options.append(tp)
    return options


def _validate(model: ModelArchitecture, workload: Workload, constraints: Constraints) -> tuple[int, float]:
    max_len = workload.max_model_len or model.derived_max_model_len
    if max_len <= 0:
        raise UserError(f"must be a positive number of tokens, got {max_len}", key="max_model_len")
    if max_len > model.derived_max_model_len:
        raise UserError(
            f"{max_len:,} exceeds what {model.model_id} supports ({model.derived_max_model_len:,} tokens, from "
            f"its config.json); use at most that",
            key="max_model_len",
        )
    if workload.concurrency < 1:
        raise UserError(f"must be at least 1, got {workload.concurrency}", key="concurrency")
    if workload.replicas < 1:
        raise UserError(f"must be at least 1, got {workload.replicas}", key="replicas")
    utilization = workload.gpu_memory_utilization
    if utilization is None:  # not `or`: an explicit 0 is an error, not the default
        utilization = vc.DEFAULT_GPU_MEMORY_UTILIZATION
    if not 0 < utilization <= 1:
        raise UserError(f"must be in (0, 1], got {utilization}", key="gpu_memory_utilization")
    tp = constraints.tensor_parallel_size
    if tp is not None and (tp < 1 or model.num_attention_heads % tp):
        raise UserError(
            f"{tp} does not divide the {model.num_attention_heads} attention heads of {model.model_id}; "
            f"use one of {[t for t in range(1, 9) if model.num_attention_heads % t == 0]}",
            key="tensor_parallel_size",
        )
    if constraints.capacity_type not in ("on-demand", "spot"):
        raise UserError(f"{constraints.capacity_type!r}: use on-demand or spot", key="capacity_type")
    if constraints.gpu_compute_capability is not None and constraints.gpu_memory_gib is None:
        raise UserError(
            "describes a GPU outside the catalog; give its memory with gpu_memory_gib too",
            key="gpu_compute_capability",
        )
    if constraints.max_nodes_per_replica < 1:
        raise UserError("must be at least 1", key="max_nodes_per_replica")
    if not 0 <= workload.cpu_offload_gib < math.inf:
        raise UserError(
            f"must be 0 (no offload) or GiB per GPU to keep in host memory, got {workload.cpu_offload_gib}",
            key="cpu_offload_gib",
        )
    return max_len, utilization


def _instances(constraints: Constraints, catalog: GpuCatalog) -> tuple[GpuInstanceType, ...]:
    if constraints.gpu_memory_gib is not None:
        capability = constraints.gpu_compute_capability
        if capability is None:  # not `or`: 0.0 is refused by custom_gpu, not replaced
            capability = DEFAULT_CUSTOM_COMPUTE_CAPABILITY
        gpu = custom_gpu(constraints.gpu_memory_gib, compute_capability=capability)
        return (
            GpuInstanceType(
                name=f"custom-{CUSTOM_GPUS_PER_NODE}x{constraints.gpu_memory_gib:g}GiB",
                gpu=gpu,
                gpu_count=CUSTOM_GPUS_PER_NODE,
                vcpus=0,
                memory_mib=0,
                local_nvme_gb=0,
                network_gbps=CUSTOM_NETWORK_GBPS,
                efa=False,
                on_demand_usd_per_hour=None,
            ),
        )
    return catalog.filter(constraints.gpus, constraints.instance_types)


def _evaluate(
    model: ModelArchitecture,
    workload: Workload,
    constraints: Constraints,
    instance: GpuInstanceType,
    precision: mem.Precision,
    tp: int,
    pp: int,
    max_len: int,
    utilization: float,
) -> Candidate:
    gpu = gpu_memory_of(instance.gpu)
    batched_tokens, num_seqs = mem.batch_defaults(gpu)
    memory = mem.memory_per_gpu(
        model,
        precision,
        gpu,
        tp=tp,
        pp=pp,
        gpu_memory_utilization=utilization,
        batched_tokens=batched_tokens,
        num_seqs=num_seqs,
        lora_bytes=_lora_bytes(model, workload, precision, tp, pp),
        cpu_offload_bytes=int(workload.cpu_offload_gib * GIB),
    )
    per_token = mem.kv_bytes_per_token(model, tp, pp, precision.kv_bytes)
    price = instance.hourly_cost(constraints.capacity_type)
    nodes = max_nodes(
        gpus_per_node=instance.gpu_count,
        gpus_per_replica=tp * pp,
        nodes_per_replica=pp,
        max_replicas=workload.replicas,
        spread=workload.spread,
    )
    if price is None:
        cost = stack_cost = None
    else:
        cost = round(price * tp / instance.gpu_count, 4) if pp == 1 else round(price * pp, 4)
        stack_cost = round(price * nodes, 4)
    return Candidate(
        instance=instance,
        precision=precision,
        tp=tp,
        pp=pp,
        memory=memory,
        kv_bytes_per_token=per_token,
        blocks=mem.kv_blocks(memory.kv_cache, per_token),
        blocks_needed=mem.blocks_per_request(max_len) * workload.concurrency,
        batched_tokens=batched_tokens,
        num_seqs=num_seqs,
        cost_per_replica=cost,
        nodes_for_replicas=nodes,
        stack_cost=stack_cost,
        cpu_offload_gib=workload.cpu_offload_gib,
        offloadable_bytes=mem.offloadable_bytes_per_gpu(model, precision, tp, pp),
        host_bytes_per_gpu=offload.host_bytes_per_gpu(instance),
    )


def _candidates(
    model: ModelArchitecture, workload: Workload, constraints: Constraints, catalog: GpuCatalog
) -> tuple[list[Candidate], list[UserError], int, float]:
    max_len, utilization = _validate(model, workload, constraints)
    evaluated: list[Candidate] = []
    precision_errors: list[UserError] = []
    instances = _instances(constraints, catalog)
    usable: list[tuple[GpuInstanceType, mem.Precision]] = []
    for instance in instances:
        try:
            precision = mem.resolve_precision(
                model,
                gpu_memory_of(instance.gpu),
                dtype=workload.dtype,
                quantization=workload.quantization,
                kv_cache_dtype=workload.kv_cache_dtype,
            )
        except UserError as error:
            precision_errors.append(error)
            continue
        usable.append((instance, precision))
        for tp in tensor_parallel_options(model, instance.gpu_count):
            if constraints.tensor_parallel_size in (None, tp):
                evaluated.append(
                    _evaluate(model, workload, constraints, instance, precision, tp, 1, max_len, utilization)
                )
    if not any(c.fits for c in evaluated):
        # No single node holds it: pipeline stages across whole nodes, each node fully tensor-parallel.
        for instance, precision in usable:
            options = tensor_parallel_options(model, instance.gpu_count)
            tp = constraints.tensor_parallel_size or (max(options) if options else 0)
            if tp not in options:
                continue
            for pp in range(2, min(constraints.max_nodes_per_replica, model.num_layers) + 1):
                candidate = _evaluate(
                    model, workload, constraints, instance, precision, tp, pp, max_len, utilization
                )
                evaluated.append(candidate)
                if candidate.fits:
                    break
    return evaluated, precision_errors, max_len, utilization


def plan_serving(
    model: ModelArchitecture,
    workload: Workload,
    constraints: Constraints,
    catalog: GpuCatalog | None = None,
) -> ServingPlan:
    """The cheapest plan that serves `workload` within `constraints`; NoFitError explains when none does."""
    catalog = catalog or load_catalog()
    evaluated, precision_errors, max_len, utilization = _candidates(model, workload, constraints, catalog)
    fitting = sorted((c for c in evaluated if c.fits), key=Candidate.rank_key)
    if not fitting and not workload.cpu_offload_gib:
        fitting = _offloaded(model, workload, constraints, evaluated, max_len, utilization)
    if not fitting:
        if not evaluated and precision_errors:
            raise precision_errors[0]
        raise NoFitError(
            _explain_no_fit(model, workload, constraints, catalog, evaluated, max_len), key="model"
        )
    best = fitting[0]
    alternatives = []
    # One row per (GPU, TP, PP) shape: bigger sizes of the same family add nothing per replica.
    seen = {(best.instance.gpu.name, best.tp, best.pp)}
    for candidate in fitting[1:]:
        shape = (candidate.instance.gpu.name, candidate.tp, candidate.pp)
        if shape in seen:
            continue
        seen.add(shape)
        if len(alternatives) == MAX_ALTERNATIVES:
            break
        alternatives.append(_alternative(candidate, max_len))
    if not best.cpu_offload_gib:
        # Offload is never chosen over a layout that fits without it, but is shown when it saves hardware.
        smaller = [
            c
            for c in _offloaded(model, workload, constraints, evaluated, max_len, utilization)
            if c.gpus < best.gpus or c.pp < best.pp
        ]
        listed = _one_per_shape(smaller)[:MAX_OFFLOAD_ALTERNATIVES]
        alternatives += [_alternative(c, max_len) for c in listed]
        plan = _to_plan(
            model, workload, constraints, catalog, best, max_len, utilization, tuple(alternatives)
        )
        costs = tuple(
            f"{c.instance.name} TP={c.tp} alternative, "
            + offload.throughput_note(c.cpu_offload_bytes, c.memory.weights, c.instance.gpu)
            for c in listed
        )
        return replace(plan, notes=plan.notes + costs)
    return _to_plan(model, workload, constraints, catalog, best, max_len, utilization, tuple(alternatives))


def _lora_slots(model: ModelArchitecture, workload: Workload, best: Candidate) -> LoraSlots | None:
    if workload.lora is None:
        return None
    rank = mem.lora_rank_for(workload.lora.max_lora_rank)
    adapter = mem.lora_bytes_per_gpu(model, 1, 1, max_loras=1, max_lora_rank=rank, lora_bytes=4)
    return LoraSlots(
        workload.lora.max_loras,
        rank,
        adapter_bytes=adapter,
        bytes_per_gpu=_lora_bytes(model, workload, best.precision, best.tp, best.pp),
    )


def _lora_bytes(
    model: ModelArchitecture, workload: Workload, precision: mem.Precision, tp: int, pp: int
) -> int:
    """The LoRA slots' GPU memory. Not counted (no GPU run measured it): with LoRA on, vLLM 0.33.0 also
    captures its CUDA graphs with LoRA active, beside the plain ones (v1/worker/gpu/lora_utils.py)."""
    if workload.lora is None:
        return 0
    if workload.lora.max_loras < 1:
        raise UserError(f"max_loras must be at least 1, got {workload.lora.max_loras}", key="lora")
    return mem.lora_bytes_per_gpu(
        model,
        tp,
        pp,
        max_loras=workload.lora.max_loras,
        max_lora_rank=mem.lora_rank_for(workload.lora.max_lora_rank),
        lora_bytes=precision.act_bytes,  # --lora-dtype auto: the model dtype
    )


def _alternative(candidate: Candidate, max_len: int) -> Alternative:
    return Alternative(
        instance_type=candidate.instance.name,
        gpu_name=candidate.instance.gpu.name,
        tensor_parallel_size=candidate.tp,
        pipeline_parallel_size=candidate.pp,
        gpus_per_replica=candidate.gpus,
        kv_cache_tokens=candidate.kv_tokens,
        max_concurrency=round(mem.max_concurrency(candidate.blocks, max_len), 2),
        cost_per_hour_usd=candidate.cost_per_replica,
        stack_cost_per_hour_usd=candidate.stack_cost,
        cpu_offload_gib=candidate.cpu_offload_gib,
    )


def _one_per_shape(candidates: list[Candidate]) -> list[Candidate]:
    shapes: set[tuple[str, int, int]] = set()
    kept = []
    for candidate in candidates:
        shape = (candidate.instance.gpu.name, candidate.tp, candidate.pp)
        if shape not in shapes:
            shapes.add(shape)
            kept.append(candidate)
    return kept


def _offloaded(
    model: ModelArchitecture,
    workload: Workload,
    constraints: Constraints,
    evaluated: list[Candidate],
    max_len: int,
    utilization: float,
) -> list[Candidate]:
    """Single-node layouts that fit once the fewest whole GiB of weights per GPU move to host memory
    (within what the node can pin), cheapest first."""
    found = []
    for candidate in evaluated:
        if candidate.pp > 1 or candidate.fits:
            continue
        kv_needed = candidate.blocks_needed * vc.BLOCK_SIZE * candidate.kv_bytes_per_token
        gib = offload.offload_needed_gib(candidate.memory.kv_cache, kv_needed)
        offloading = replace(workload, cpu_offload_gib=float(gib))
        retry = _evaluate(
            model, offloading, constraints, candidate.instance, candidate.precision, candidate.tp, 1, max_len,
            utilization,
        )  # fmt: skip
        if retry.fits:
            found.append(retry)
    return sorted(found, key=Candidate.rank_key)


def estimated_load_s(candidate: Candidate) -> float:
    """Load each GPU's shard from local disk and start the engine (compile and CUDA-graph caches kept)."""
    return round(candidate.memory.weights / vc.WEIGHT_LOAD_BYTES_PER_S + vc.WARM_ENGINE_START_S, 1)


def estimated_cold_start_s(model: ModelArchitecture, candidate: Candidate) -> float:
    """Pull the checkpoint over the node's link (as fast as the pull's connections carry), then load and
    start (estimated_load_s)."""
    total_weights = mem.weight_bytes_per_gpu(model, candidate.precision, 1, 1) / candidate.pp
    download = total_weights / pull_bytes_per_s(candidate.instance.network_gbps)
    return round(download + estimated_load_s(candidate), 1)


def _to_plan(
    model: ModelArchitecture,
    workload: Workload,
    constraints: Constraints,
    catalog: GpuCatalog,
    best: Candidate,
    max_len: int,
    utilization: float,
    alternatives: tuple[Alternative, ...],
) -> ServingPlan:
    notes = []
    if model.kv_is_approximate:
        kind = "MLA" if model.is_mla else "sliding-window layers"
        notes.append(f"{kind}: KV cache sized as if every layer attended fully; vLLM will report more tokens")
    per_node = best.replicas_per_node(spread=False)
    if per_node > 1:
        full = best.instance.hourly_cost(constraints.capacity_type)
        price = f" (${full:.2f}/h)" if full is not None else ""
        spread = ", spread one per node," if workload.spread else ""
        notes.append(
            f"{best.instance.name} holds {per_node} replicas; {workload.replicas} replica(s){spread} pay "
            f"{best.nodes_for_replicas} whole node(s){price}, the per-replica $/h holds when nodes are full"
        )
    if (
        best.precision.quantization
        and best.precision.quantization.method == "fp8"
        and not best.instance.gpu.fp8
    ):
        notes.append(f"{best.instance.gpu.name} has no FP8 tensor cores: vLLM runs FP8 weights weight-only")
    if constraints.capacity_type == "spot":
        notes.append("spot capacity can be reclaimed with two minutes' notice; keep more than one replica")
        if best.instance.spot_usd_per_hour is None and best.instance.on_demand_usd_per_hour is not None:
            notes.append(
                f"spot price estimated as on-demand x {SPOT_PRICE_FACTOR:g} (the catalog holds no spot "
                "prices; real spot prices vary by hour and zone)"
            )
    if workload.lora is not None:
        lora = _lora_bytes(model, workload, best.precision, best.tp, best.pp)
        notes.append(
            f"LoRA: {workload.lora.max_loras} adapter slot(s) of rank up to "
            f"{mem.lora_rank_for(workload.lora.max_lora_rank)} take {lora / GIB:.2f} GiB per GPU, "
            "allocated with the weights"
        )
    if best.stack_cost is not None and constraints.region != catalog.region:
        notes.append(
            f"prices are {catalog.region} list prices; {constraints.region} prices differ: "
            f"python -m infra gpus refresh --region {constraints.region} re-reads the catalog for it"
        )
    if best.cpu_offload_gib:
        notes.append(offload.throughput_note(best.cpu_offload_bytes, best.memory.weights, best.instance.gpu))
        if not workload.cpu_offload_gib:
            notes.append("CPU offload was chosen because no layout of the allowed GPUs fits without it")
    return ServingPlan(
        model=model.model_id,
        params_billion=round(model.param_count / 1e9, 3),
        dtype=best.precision.dtype,
        quantization=best.precision.quantization.method if best.precision.quantization else None,
        kv_cache_dtype=best.precision.kv_cache_dtype,
        instance_type=best.instance.name,
        gpu=GpuShare(best.instance.gpu.name, round(best.instance.gpu.memory_gib, 2), best.instance.gpu_count),
        tensor_parallel_size=best.tp,
        pipeline_parallel_size=best.pp,
        nodes_per_replica=best.pp,
        gpus_per_replica=best.gpus,
        max_model_len=max_len,
        gpu_memory_utilization=utilization,
        memory_per_gpu=best.memory,
        kv_bytes_per_token_per_gpu=best.kv_bytes_per_token,
        kv_cache_tokens=best.kv_tokens,
        max_concurrency=round(mem.max_concurrency(best.blocks, max_len), 2),
        max_num_batched_tokens=best.batched_tokens,
        max_num_seqs=best.num_seqs,
        quantization_arg=best.precision.quantization_arg,
        capacity_type=constraints.capacity_type,
        lora=_lora_slots(model, workload, best),
        cost_per_hour_usd=best.cost_per_replica,
        stack_cost_per_hour_usd=best.stack_cost,
        priced_for_replicas=workload.replicas,
        priced_spread=workload.spread,
        nodes_for_replicas=best.nodes_for_replicas,
        price_region=catalog.region,
        prices_read_on=catalog.prices_read_on,
        estimated_cold_start_s=estimated_cold_start_s(model, best),
        estimated_load_s=estimated_load_s(best),
        approximate=model.kv_is_approximate,
        notes=tuple(notes),
        alternatives=alternatives,
        cpu_offload_gib=best.cpu_offload_gib,
    )


def _explain_no_fit(
    model: ModelArchitecture,
    workload: Workload,
    constraints: Constraints,
    catalog: GpuCatalog,
    evaluated: list[Candidate],
    max_len: int,
) -> str:
    """Why nothing fits, the closest tries, and what would fit instead."""
    lines = [
        f"{model.model_id} ({model.param_count / 1e9:.1f}B parameters) does not fit "
        f"{workload.concurrency} x {max_len:,}-token sequence(s) on the allowed GPUs."
    ]
    closest = sorted(evaluated, key=lambda c: (-c.memory.kv_cache, c.gpus))[:3]
    lines += [f"  closest: {c.shortfall()}" for c in closest]
    suggestions = []
    best = closest[0] if closest else None
    if best is not None and best.blocks >= mem.blocks_per_request(1):
        longest = best.blocks // workload.concurrency * vc.BLOCK_SIZE
        if longest > 0:
            suggestions.append(
                f"a shorter context: max_model_len {longest:,} fits on {best.instance.name} TP={best.tp}"
            )
    retries = []
    if model.quantization is None and workload.quantization is None:
        retries.append(("quantization fp8", replace(workload, quantization="fp8"), constraints))
    if workload.kv_cache_dtype == "auto":
        retries.append(("kv_cache_dtype fp8", replace(workload, kv_cache_dtype="fp8"), constraints))
    if constraints.gpus or constraints.instance_types or constraints.gpu_memory_gib is not None:
        unrestricted = replace(constraints, gpus=(), instance_types=(), gpu_memory_gib=None)
        retries.append(("a larger GPU or more GPUs", workload, unrestricted))
    for label, retry_workload, retry_constraints in retries:
        found = _quiet_plan(model, retry_workload, retry_constraints, catalog)
        if found is not None:
            suggestions.append(f"{label}: {_describe(found)}")
    if suggestions:
        lines.append("Would fit: " + "; ".join(suggestions) + ".")
    else:
        lines.append(
            "Nothing in the catalog fits even with fp8 weights and KV cache; allow more nodes per replica "
            "or a smaller model."
        )
    return "\n".join(lines)


def _quiet_plan(
    model: ModelArchitecture, workload: Workload, constraints: Constraints, catalog: GpuCatalog
) -> Candidate | None:
    try:
        evaluated, _, _, _ = _candidates(model, workload, constraints, catalog)
    except UserError:
        return None
    fitting = sorted((c for c in evaluated if c.fits), key=Candidate.rank_key)
    return fitting[0] if fitting else None


def _describe(candidate: Candidate) -> str:
    gpus = f"{candidate.gpus} x {candidate.instance.gpu.name}"
    cost = f", ${candidate.stack_cost:.2f}/h" if candidate.stack_cost is not None else ""
    return f"{candidate.instance.name} ({gpus}, TP={candidate.tp}, PP={candidate.pp}{cost})"
