"""vLLM 0.33.0's memory accounting, per GPU (README section d), as pure functions.

budget = ceil(total x gpu_memory_utilization)
kv     = budget - weights - activations (profile peak) - non-torch - CUDA graphs
blocks = floor(kv / (block_size x KV bytes per token)),  KV tokens = blocks x block_size
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from infra.errors import UserError
from infra.sizing import vllm_constants as vc
from infra.sizing.models import DTYPE_BYTES, ModelArchitecture, ParamCounts, Quantization
from infra.sizing.plan import MemoryPerGpu

# `--dtype` choices of vLLM 0.33.0 (serve-flags.json) -> the torch dtype they select.
DTYPE_CHOICES = {
    "auto": None,
    "bfloat16": "bfloat16",
    "float16": "float16",
    "half": "float16",
    "float": "float32",
    "float32": "float32",
}
# `--kv-cache-dtype` values the planner sizes (a subset of vLLM's choices) -> bytes per element.
KV_CACHE_DTYPE_BYTES = {"auto": None, "bfloat16": 2, "float16": 2, "fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1}
# Quantization methods vLLM can apply to an unquantized checkpoint at load time, and what they store.
ONLINE_QUANTIZATION = {
    "fp8": Quantization("fp8", 8, -1),
    "bitsandbytes": Quantization("bitsandbytes", 4, 64),
}
# Methods that need a checkpoint quantized that way.
CHECKPOINT_QUANTIZATION = {"awq", "gptq", "compressed-tensors", "fp8", "bitsandbytes"}


@dataclass(frozen=True)
class GpuMemory:
    """What the memory model needs to know about one GPU."""

    name: str
    total_bytes: int
    bf16: bool
    fp8: bool
    compute_capability: float
    is_a100: bool


@dataclass(frozen=True)
class Precision:
    dtype: str  # the activation/weight dtype vLLM will run in
    quantization: Quantization | None
    quantization_arg: str | None  # what to pass as --quantization; None when vLLM reads the checkpoint
    kv_cache_dtype: str  # as passed to vLLM
    kv_bytes: int

    @property
    def act_bytes(self) -> int:
        return DTYPE_BYTES[self.dtype]


def resolve_precision(
    model: ModelArchitecture,
    gpu: GpuMemory,
    *,
    dtype: str | None,
    quantization: str | None,
    kv_cache_dtype: str,
) -> Precision:
    """The dtype, quantization and KV-cache dtype vLLM will use for this model on this GPU."""
    requested = (dtype or "auto").lower()
    if requested not in DTYPE_CHOICES:
        raise UserError(f"{dtype!r} is not a vLLM dtype; use one of {', '.join(DTYPE_CHOICES)}", key="dtype")
    resolved = DTYPE_CHOICES[requested]
    if resolved is None:
        # vLLM's auto dtype: the checkpoint's 16-bit type; fp32 checkpoints run in bf16; without bf16
        # support (T4, compute capability < 8.0) it falls back to fp16.
        resolved = model.torch_dtype if model.torch_dtype in {"bfloat16", "float16"} else "bfloat16"
        if resolved == "bfloat16" and not gpu.bf16:
            resolved = "float16"
    elif resolved == "bfloat16" and not gpu.bf16:
        raise UserError(
            f"{gpu.name} has no bfloat16 support (compute capability {gpu.compute_capability}); use float16",
            key="dtype",
        )

    quant, quant_arg = _resolve_quantization(model, quantization, gpu)
    kv_choice = (kv_cache_dtype or "auto").lower()
    if kv_choice not in KV_CACHE_DTYPE_BYTES:
        raise UserError(
            f"{kv_cache_dtype!r} is not supported by the planner; use one of {', '.join(KV_CACHE_DTYPE_BYTES)}",
            key="kv_cache_dtype",
        )
    if kv_choice in {"bfloat16", "float16"} and kv_choice != resolved:
        raise UserError(
            f"{kv_choice} must match the model dtype ({resolved}); use auto or an fp8 type",
            key="kv_cache_dtype",
        )
    kv_bytes = KV_CACHE_DTYPE_BYTES[kv_choice] or DTYPE_BYTES[resolved]
    return Precision(resolved, quant, quant_arg, kv_choice, kv_bytes)


def _resolve_quantization(
    model: ModelArchitecture, requested: str | None, gpu: GpuMemory
) -> tuple[Quantization | None, str | None]:
    checkpoint = model.quantization
    if requested in (None, "", "auto", "none"):
        quant, arg = checkpoint, None
    else:
        method = requested.lower()
        if checkpoint is not None:
            if method != checkpoint.method:
                raise UserError(
                    f"{method!r} contradicts the checkpoint of {model.model_id}, which is {checkpoint.method}-"
                    f"quantized; leave quantization unset to use the checkpoint's",
                    key="quantization",
                )
            quant, arg = checkpoint, None
        elif method in ONLINE_QUANTIZATION:
            quant, arg = ONLINE_QUANTIZATION[method], method
        elif method in CHECKPOINT_QUANTIZATION:
            raise UserError(
                f"{method!r} needs a checkpoint quantized with {method} and {model.model_id} is not; pick a "
                f"{method} checkpoint, or quantize at load time with one of: {', '.join(ONLINE_QUANTIZATION)}",
                key="quantization",
            )
        else:
            raise UserError(
                f"{requested!r} is not a quantization the planner sizes; use one of "
                f"{', '.join(sorted(CHECKPOINT_QUANTIZATION))}",
                key="quantization",
            )
    if quant is not None and quant.method == "fp8" and 0 < gpu.compute_capability < 8.0:
        raise UserError(
            f"fp8 weights need compute capability 8.0 or newer; {gpu.name} has {gpu.compute_capability}",
            key="quantization",
        )
    return quant, arg


def layers_per_stage(num_layers: int, pp: int) -> int:
    """The layers on the fullest pipeline stage (vLLM splits layers evenly, the remainder to some stages)."""
    return math.ceil(num_layers / pp)


def kv_heads_per_rank(model: ModelArchitecture, tp: int) -> int:
    """README (d) 5: heads are replicated when tp > num_kv_heads."""
    return max(1, model.num_kv_heads // tp)


def kv_bytes_per_token(model: ModelArchitecture, tp: int, pp: int, kv_bytes: int) -> int:
    """KV-cache bytes one token costs on one GPU: 2 x layers x kv_heads/tp x head_dim x bytes.

    MLA keeps one latent vector (kv_lora_rank + rope dim) per layer, replicated on every TP rank.
    Sliding-window layers are charged as full attention: an upper bound (the plan says it is approximate).
    """
    layers = layers_per_stage(model.num_layers, pp)
    if model.is_mla:
        assert model.kv_lora_rank is not None and model.qk_rope_head_dim is not None
        return layers * (model.kv_lora_rank + model.qk_rope_head_dim) * kv_bytes
    return 2 * layers * kv_heads_per_rank(model, tp) * model.head_dim * kv_bytes


def weight_bytes_per_gpu(model: ModelArchitecture, precision: Precision, tp: int, pp: int) -> int:
    """Weights on the fullest rank: linear layers in the quantized format, embeddings in the model dtype.

    Every projection and the vocabulary-parallel embedding and LM head are split across TP ranks; K/V
    projections are replicated when tp exceeds the KV heads; pipeline stages hold ceil(layers/pp) layers
    and the first/last stage also holds the embedding/LM head.
    """
    params = _params(model)
    act = precision.act_bytes
    stage_fraction = layers_per_stage(model.num_layers, pp) / model.num_layers
    embedding, lm_head = params.embedding, params.lm_head
    vocab_bytes = (embedding + lm_head if pp == 1 else max(embedding, lm_head or embedding)) / tp * act
    other_bytes = params.other * stage_fraction * act
    return math.ceil(_layer_linear_bytes(model, precision, tp, pp) + vocab_bytes + other_bytes)


def offloadable_bytes_per_gpu(model: ModelArchitecture, precision: Precision, tp: int, pp: int) -> int:
    """What `--cpu-offload-gb` can move to host memory on the fullest rank: vLLM 0.33.0's UVA offloader
    wraps only the decoder layers (`make_layers`), so embeddings and LM head stay on the GPU. Counted
    from the layers' projections alone (their norms are a rounding error), a lower bound."""
    return math.floor(_layer_linear_bytes(model, precision, tp, pp))


def _params(model: ModelArchitecture) -> ParamCounts:
    if model.params is None:
        _ = model.param_count  # raises the explanatory UserError
        raise AssertionError("unreachable")
    return model.params


def _layer_linear_bytes(model: ModelArchitecture, precision: Precision, tp: int, pp: int) -> float:
    """The attention and MLP projections of one rank's layers, in the quantized format."""
    bits = precision.quantization.bits_per_weight if precision.quantization else precision.act_bytes * 8
    linear = _params(model).linear
    replicated_kv = 0
    if not model.is_mla and tp > model.num_kv_heads and model.params_source == "config":
        kv_linear = 2 * model.hidden_size * model.num_kv_heads * model.head_dim * model.num_layers
        replicated_kv = 2 * model.hidden_size * model.head_dim * model.num_layers  # one head per rank
        linear -= kv_linear
    stage_fraction = layers_per_stage(model.num_layers, pp) / model.num_layers
    return (linear / tp + replicated_kv) * stage_fraction * bits / 8


def batch_defaults(gpu: GpuMemory) -> tuple[int, int]:
    """vLLM's (max_num_batched_tokens, max_num_seqs) for this GPU (README a)."""
    total_gib = gpu.total_bytes / vc.GIB
    for min_gib, excludes_a100, tokens, seqs in vc.BATCH_DEFAULTS:
        if total_gib >= min_gib and not (excludes_a100 and gpu.is_a100):
            return tokens, seqs
    raise AssertionError("BATCH_DEFAULTS ends with a catch-all row")


def activation_peak_bytes(
    model: ModelArchitecture, precision: Precision, tp: int, batched_tokens: int, num_seqs: int
) -> int:
    """Transient peak of vLLM's profile run: one forward pass of `batched_tokens` plus the sampler."""
    qkv = (model.num_attention_heads + 2 * model.num_kv_heads) * model.head_dim / tp
    if model.num_experts and model.experts_per_token:
        # Fused MoE keeps gate_up, activated and down outputs for every routed (token, expert) pair.
        mlp = model.experts_per_token * (3 * model.intermediate_size / tp + model.hidden_size)
    else:
        mlp = 3 * model.intermediate_size / tp
    per_token = (vc.ACTIVATION_HIDDEN_COPIES * model.hidden_size + qkv + mlp) * precision.act_bytes
    sampler = num_seqs * model.vocab_size * 4 * vc.SAMPLER_FP32_COPIES
    return math.ceil(batched_tokens * per_token + sampler)


def non_torch_bytes(gpus_per_replica: int) -> int:
    extra = vc.MULTI_GPU_COMMUNICATION_BYTES if gpus_per_replica > 1 else 0
    return vc.NON_TORCH_BYTES + extra


def memory_per_gpu(
    model: ModelArchitecture,
    precision: Precision,
    gpu: GpuMemory,
    *,
    tp: int,
    pp: int,
    gpu_memory_utilization: float,
    batched_tokens: int,
    num_seqs: int,
    lora_bytes: int = 0,
    cpu_offload_bytes: int = 0,
) -> MemoryPerGpu:
    """Bytes per GPU on the fullest rank; `kv_cache` is negative when the model does not fit.

    `lora_bytes` (lora_bytes_per_gpu) are allocated with the model, so vLLM counts them as weights too.
    `cpu_offload_bytes` of the weights live in pinned host memory (`--cpu-offload-gb`): vLLM's profile
    counts only what stays on the GPU, and UVA reads the rest in place, with no GPU staging buffer.
    """
    budget = math.ceil(gpu.total_bytes * gpu_memory_utilization)
    weights = weight_bytes_per_gpu(model, precision, tp, pp) + lora_bytes - cpu_offload_bytes
    activations = activation_peak_bytes(model, precision, tp, batched_tokens, num_seqs)
    other = non_torch_bytes(tp * pp)
    graphs = vc.CUDA_GRAPH_BYTES
    kv = budget - weights - activations - other - graphs
    return MemoryPerGpu(budget, weights, activations, graphs, other, kv)


def kv_blocks(kv_cache_bytes: int, bytes_per_token: int) -> int:
    if kv_cache_bytes <= 0:
        return 0
    return kv_cache_bytes // (vc.BLOCK_SIZE * bytes_per_token)


def blocks_per_request(max_model_len: int) -> int:
    return math.ceil(max_model_len / vc.BLOCK_SIZE)


def max_concurrency(num_blocks: int, max_model_len: int) -> float:
    """README (d) 6: full-length requests that fit at once, as vLLM logs it."""
    return num_blocks / blocks_per_request(max_model_len)


# `--max-lora-rank` choices of vLLM 0.33.0 (serve-flags.json).
LORA_RANK_CHOICES = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def lora_rank_for(rank: int) -> int:
    """The smallest `--max-lora-rank` vLLM accepts that holds adapters of rank `rank` (adapter_config.json r)."""
    for choice in LORA_RANK_CHOICES:
        if choice >= rank:
            return choice
    raise UserError(
        f"LoRA rank {rank} exceeds vLLM 0.33.0's largest --max-lora-rank, {LORA_RANK_CHOICES[-1]}", key="lora"
    )


# Architectures whose vLLM 0.33.0 class lists embed_tokens and lm_head in `embedding_modules`, so LoRA wraps
# the embedding and the LM head too; the others (Qwen2, Mistral, Gemma 2, ...) declare none and only their
# linear layers get LoRA slots. Checked against vLLM's own classes in tests/sizing/test_lora_memory.py;
# an architecture in neither list is charged both ends, which can only overestimate.
LORA_VOCAB_ARCHITECTURES = frozenset({"LlamaForCausalLM", "Qwen3ForCausalLM", "Phi3ForCausalLM"})
LORA_LINEAR_ONLY_ARCHITECTURES = frozenset(
    {"MistralForCausalLM", "Qwen2ForCausalLM", "Gemma2ForCausalLM", "Gemma3ForCausalLM"}
)


def lora_vocab_ends(model: ModelArchitecture, pp: int) -> int:
    """How many vocabulary-sized LoRA wrappers the fullest stage holds: the embedding (A: vocab x rank, B:
    hidden x rank) and the LM head's logits processor (A: rank x hidden, B: vocab x rank). With tied
    embeddings the LM head is the embedding module itself, which vLLM wraps a second time under its own name."""
    if model.architecture in LORA_LINEAR_ONLY_ARCHITECTURES:
        return 0
    last_stage = 2 if model.tie_word_embeddings else 1
    if pp == 1:
        return 1 + last_stage
    return 1 + last_stage if model.tie_word_embeddings else 1  # the last stage holds a tied embedding too


def lora_bytes_per_gpu(
    model: ModelArchitecture, tp: int, pp: int, *, max_loras: int, max_lora_rank: int, lora_bytes: int
) -> int:
    """GPU memory vLLM 0.33.0 preallocates for LoRA when it loads the model (counted in "Model loading
    took"): every wrapped module holds `max_loras` slots of A (rank x input) and B (output x rank) in the
    LoRA dtype (vllm/lora/layers/*.create_lora_weights, --fully-sharded-loras off). Column-parallel layers
    (qkv, gate_up) keep the full input and their output shard; row-parallel ones (o, down) their input shard
    and the full output. The embedding and the LM head span the whole vocabulary (lora_vocab_ends).
    """
    if model.num_experts or model.is_mla:
        raise UserError(
            f"LoRA memory is sized for dense attention models; {model.model_id} is "
            f"{'MLA' if model.is_mla else 'a mixture of experts'}",
            key="lora",
        )
    hidden, q_out = model.hidden_size, model.num_attention_heads * model.head_dim // tp
    kv_out = kv_heads_per_rank(model, tp) * model.head_dim
    intermediate = model.intermediate_size // tp
    a_inputs = 3 * hidden + q_out + 2 * hidden + intermediate  # qkv (3 slices), o, gate_up (2 slices), down
    b_outputs = q_out + 2 * kv_out + hidden + 2 * intermediate + hidden
    layers = layers_per_stage(model.num_layers, pp) * (a_inputs + b_outputs)
    ends = lora_vocab_ends(model, pp) * (model.vocab_size + hidden)
    return max_loras * max_lora_rank * (layers + ends) * lora_bytes
