"""Model architecture: what the sizing needs to know about a model, read from its Hugging Face config.json.

Sources, in order: an explicit config.json path, a local model directory, the built-in catalog
(`catalog/models.yaml`, works offline), the Hugging Face Hub through `huggingface_hub` when online.
Parameter counts are computed exactly from the config for the dense Llama/Mistral/Qwen2/Qwen3/Gemma
families and for Mixtral/Qwen-MoE/DeepSeek-MLA; otherwise they come from safetensors metadata.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from infra import modelscope
from infra.errors import UserError
from infra.hub import hub_errors

CATALOG_PATH = Path(__file__).parent / "catalog" / "models.yaml"

# torch_dtype strings in config.json -> bytes per element.
DTYPE_BYTES = {
    "float32": 4,
    "float": 4,
    "bfloat16": 2,
    "float16": 2,
    "half": 2,
    "float8_e4m3fn": 1,
}

# Families whose parameter count this module computes from the config, keyed by model_type.
DENSE_FAMILIES = {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2"}
MOE_FAMILIES = {"mixtral", "qwen2_moe", "qwen3_moe"}
MLA_FAMILIES = {"deepseek_v2", "deepseek_v3"}
# Families with a bias on the q/k/v projections regardless of `attention_bias` (Qwen2 modelling code).
QKV_BIAS_FAMILIES = {"qwen2", "qwen2_moe"}


@dataclass(frozen=True)
class Quantization:
    """A checkpoint's weight quantization, reduced to what costs memory."""

    method: str  # vLLM's name: awq, gptq, fp8, compressed-tensors, bitsandbytes
    weight_bits: int  # bits per quantized weight
    group_size: int  # weights sharing one scale; -1 = per output channel

    @property
    def bits_per_weight(self) -> float:
        """Storage per quantized weight, scales and zero points included (16-bit scale per group)."""
        if self.group_size <= 0:
            return float(self.weight_bits)
        zero_point_bits = self.weight_bits if self.method in {"awq", "gptq"} else 0
        return self.weight_bits + (16 + zero_point_bits) / self.group_size


@dataclass(frozen=True)
class ParamCounts:
    """Parameters by how they are stored: quantization touches only `linear`."""

    embedding: int
    lm_head: int  # 0 when tied to the embedding
    linear: int  # attention and MLP/expert projections: what AWQ/GPTQ/FP8 quantize
    other: int  # norms, biases, routers: kept in the activation dtype

    @property
    def total(self) -> int:
        return self.embedding + self.lm_head + self.linear + self.other


@dataclass(frozen=True)
class ModelArchitecture:
    model_id: str
    model_type: str
    architecture: str
    hidden_size: int
    num_layers: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    max_position_embeddings: int
    derived_max_model_len: int  # what vLLM uses when --max-model-len is not given
    torch_dtype: str
    quantization: Quantization | None
    params: ParamCounts | None  # None when the family is unknown and no safetensors metadata exists
    params_source: str  # "config", "safetensors" or "override"
    checkpoint_bytes: int | None  # total bytes of the safetensors files, when known
    sliding_window: int | None = None
    sliding_window_layers: int = 0  # layers using a sliding window (the rest attend fully)
    kv_lora_rank: int | None = None  # MLA: the latent KV "head"
    qk_rope_head_dim: int | None = None
    num_experts: int = 0
    experts_per_token: int = 0
    gated: bool = False

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank is not None

    @property
    def kv_is_approximate(self) -> bool:
        """vLLM's KV token figure is derived, not a per-token cost, for sliding-window and MLA models."""
        return self.sliding_window_layers > 0 or self.is_mla

    @property
    def param_count(self) -> int:
        if self.params is None:
            raise UserError(
                f"cannot count the parameters of {self.model_id} (model_type {self.model_type!r} is not a "
                "family this planner knows, and no safetensors metadata was found); pass --params-billion",
                key="model",
            )
        return self.params.total

    def with_param_override(self, params_billion: float) -> ModelArchitecture:
        """An explicit parameter count always wins; it is treated as all-linear (quantizable) weights."""
        total = round(params_billion * 1e9)
        return replace(self, params=ParamCounts(0, 0, total, 0), params_source="override")


def _require(config: Mapping[str, Any], key: str, model_id: str) -> Any:
    if key not in config or config[key] is None:
        raise UserError(
            f"config.json of {model_id} has no {key!r}; a decoder-only transformer config is required",
            key="config",
        )
    return config[key]


def _int(config: Mapping[str, Any], key: str, model_id: str) -> int:
    value = _require(config, key, model_id)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise UserError(
            f"config.json of {model_id}: {key!r} must be a positive integer, got {value!r}", key="config"
        )
    return value


def _head_dim(config: Mapping[str, Any], hidden: int, heads: int, model_id: str) -> int:
    """The attention head size: `head_dim` when the config has one, else hidden_size / heads exactly."""
    if config.get("head_dim"):
        return _int(config, "head_dim", model_id)
    if hidden % heads:
        raise UserError(
            f"config.json of {model_id}: hidden_size {hidden} is not divisible by num_attention_heads "
            f"{heads} and there is no head_dim; add the model's head_dim to its config.json",
            key="config",
        )
    return hidden // heads


def parse_quantization(config: Mapping[str, Any]) -> Quantization | None:
    """The `quantization_config` block of a config.json, as vLLM would read it."""
    block = config.get("quantization_config")
    if not block:
        return None
    method = str(block.get("quant_method", "")).lower()
    if method in {"awq", "gptq"}:
        return Quantization(method, int(block.get("bits", block.get("w_bit", 4))), _group(block))
    if method == "fp8":
        return Quantization("fp8", 8, -1)
    if method == "bitsandbytes":
        if block.get("load_in_4bit"):
            # NF4 with one fp32 absmax per 64 weights (no double quantization assumed: conservative).
            return Quantization("bitsandbytes", 4, 64)
        return Quantization("bitsandbytes", 8, -1)
    if method == "compressed-tensors":
        weights = _compressed_tensors_weights(block)
        bits = int(weights.get("num_bits", 8))
        group = weights.get("group_size") if weights.get("strategy") == "group" else -1
        return Quantization("compressed-tensors", bits, int(group or -1))
    raise UserError(
        f"quantization_config.quant_method {method!r} is not supported by the planner; supported: "
        "awq, gptq, fp8, compressed-tensors, bitsandbytes",
        key="quantization",
    )


def _group(block: Mapping[str, Any]) -> int:
    group = block.get("group_size", block.get("q_group_size", 128))
    return int(group) if group is not None else -1


def _compressed_tensors_weights(block: Mapping[str, Any]) -> Mapping[str, Any]:
    for group in (block.get("config_groups") or {}).values():
        if group.get("weights"):
            return group["weights"]
    raise UserError("quantization_config (compressed-tensors) has no config_groups[*].weights", key="config")


def count_params(config: Mapping[str, Any], model_id: str) -> ParamCounts | None:
    """Exact parameter count from config.json for the families this module knows; None otherwise."""
    model_type = str(config.get("model_type", ""))
    if model_type not in DENSE_FAMILIES | MOE_FAMILIES | MLA_FAMILIES:
        return None
    hidden = _int(config, "hidden_size", model_id)
    layers = _int(config, "num_hidden_layers", model_id)
    vocab = _int(config, "vocab_size", model_id)
    heads = _int(config, "num_attention_heads", model_id)
    kv_heads = int(config.get("num_key_value_heads") or heads)
    head_dim = _head_dim(config, hidden, heads, model_id)
    tied = bool(config.get("tie_word_embeddings", model_type in {"gemma", "gemma2"}))

    embedding = vocab * hidden
    lm_head = 0 if tied else vocab * hidden
    linear = other = 0
    if model_type in MLA_FAMILIES:
        attn_linear, attn_other = _mla_attention_params(config, hidden, heads, model_id)
    else:
        attn_linear = hidden * heads * head_dim * 2 + hidden * kv_heads * head_dim * 2
        attn_other = 0
        if model_type in QKV_BIAS_FAMILIES or config.get("attention_bias"):
            attn_other += heads * head_dim + 2 * kv_heads * head_dim
        if config.get("attention_bias") and model_type not in QKV_BIAS_FAMILIES:
            attn_other += hidden  # o_proj bias
        if model_type in {"qwen3", "qwen3_moe"}:
            attn_other += 2 * head_dim  # q_norm and k_norm
    norms_per_layer = 4 if model_type == "gemma2" else 2
    for layer in range(layers):
        mlp_linear, mlp_other = _mlp_params(config, model_type, hidden, layer, model_id)
        linear += attn_linear + mlp_linear
        other += attn_other + mlp_other + norms_per_layer * hidden
    other += hidden  # final norm
    return ParamCounts(embedding, lm_head, linear, other)


def _mla_attention_params(
    config: Mapping[str, Any], hidden: int, heads: int, model_id: str
) -> tuple[int, int]:
    kv_lora = _int(config, "kv_lora_rank", model_id)
    rope = _int(config, "qk_rope_head_dim", model_id)
    nope = _int(config, "qk_nope_head_dim", model_id)
    v_head = _int(config, "v_head_dim", model_id)
    q_lora = config.get("q_lora_rank")
    q_head = nope + rope
    if q_lora:
        q_linear, q_other = hidden * q_lora + q_lora * heads * q_head, q_lora  # q_a, q_b, q_a_layernorm
    else:
        q_linear, q_other = hidden * heads * q_head, 0
    linear = (
        q_linear + hidden * (kv_lora + rope) + kv_lora * heads * (nope + v_head) + heads * v_head * hidden
    )
    return linear, q_other + kv_lora  # kv_a_layernorm


def _mlp_params(
    config: Mapping[str, Any], model_type: str, hidden: int, layer: int, model_id: str
) -> tuple[int, int]:
    """(linear, other) parameters of one layer's MLP or mixture of experts."""
    dense = 3 * hidden * int(config.get("intermediate_size") or 0)
    dense_bias = (2 * int(config.get("intermediate_size") or 0) + hidden) if config.get("mlp_bias") else 0
    if model_type == "mixtral":
        experts = _int(config, "num_local_experts", model_id)
        return experts * dense, hidden * experts
    if model_type in {"qwen2_moe", "qwen3_moe"}:
        step = int(config.get("decoder_sparse_step") or 1)
        if layer in (config.get("mlp_only_layers") or []) or (layer + 1) % step != 0:
            return dense, 0
        experts = _int(config, "num_experts", model_id)
        linear = experts * 3 * hidden * _int(config, "moe_intermediate_size", model_id)
        other = hidden * experts  # router
        shared = int(config.get("shared_expert_intermediate_size") or 0)
        if shared:
            linear += 3 * hidden * shared
            other += hidden  # shared_expert_gate
        return linear, other
    if model_type in MLA_FAMILIES:
        first_dense = int(config.get("first_k_dense_replace") or 0)
        frequency = int(config.get("moe_layer_freq") or 1)
        routed = int(config.get("n_routed_experts") or 0)
        if not routed or layer < first_dense or layer % frequency != 0:
            return dense, 0
        moe_width = 3 * hidden * _int(config, "moe_intermediate_size", model_id)
        shared = int(config.get("n_shared_experts") or 0)
        router_bias = routed if model_type == "deepseek_v3" else 0  # e_score_correction_bias
        return (routed + shared) * moe_width, hidden * routed + router_bias
    return dense, dense_bias


def derived_max_model_len(config: Mapping[str, Any], model_id: str) -> int:
    """vLLM's default --max-model-len: max_position_embeddings, stretched by YaRN-style rope scaling."""
    length = _int(config, "max_position_embeddings", model_id)
    scaling = config.get("rope_scaling") or {}
    rope_type = scaling.get("rope_type") or scaling.get("type")
    if rope_type == "yarn" and scaling.get("factor"):
        base = scaling.get("original_max_position_embeddings") or length
        length = int(base * float(scaling["factor"]))
    return length


def _sliding_layers(config: Mapping[str, Any], model_type: str, layers: int) -> tuple[int | None, int]:
    layer_types = config.get("layer_types")
    window = config.get("sliding_window")
    if layer_types:
        count = sum(1 for kind in layer_types if kind == "sliding_attention")
        return (int(window) if window and count else None), count
    if not window:
        return None, 0
    if model_type == "gemma2":
        return int(window), layers // 2  # every other layer slides (Gemma 2 modelling code)
    if model_type in {"qwen2", "qwen2_moe", "qwen3", "qwen3_moe"}:
        if not config.get("use_sliding_window"):
            return None, 0
        return int(window), max(0, layers - int(config.get("max_window_layers") or 0))
    return int(window), layers


def parse_config(
    config: Mapping[str, Any],
    model_id: str,
    *,
    checkpoint_bytes: int | None = None,
    safetensors_params: int | None = None,
    gated: bool = False,
) -> ModelArchitecture:
    """A ModelArchitecture from a config.json dict. Multimodal configs nest the text model in text_config."""
    if not isinstance(config, Mapping):
        raise UserError(f"config.json of {model_id} is not a JSON object", key="config")
    text = config.get("text_config")
    if isinstance(text, Mapping) and "num_hidden_layers" in text:
        merged = {**text, "quantization_config": config.get("quantization_config")}
        merged.setdefault("torch_dtype", config.get("torch_dtype") or config.get("dtype"))
        config = merged
    model_type = str(_require(config, "model_type", model_id))
    hidden = _int(config, "hidden_size", model_id)
    layers = _int(config, "num_hidden_layers", model_id)
    heads = _int(config, "num_attention_heads", model_id)
    kv_heads = int(config.get("num_key_value_heads") or heads)
    if heads % kv_heads:
        raise UserError(
            f"config.json of {model_id}: num_attention_heads {heads} is not a multiple of "
            f"num_key_value_heads {kv_heads}",
            key="config",
        )
    dtype = str(config.get("torch_dtype") or config.get("dtype") or "bfloat16")
    if dtype not in DTYPE_BYTES:
        raise UserError(f"config.json of {model_id}: unknown torch_dtype {dtype!r}", key="config")
    params = count_params(config, model_id)
    source = "config"
    if params is None and safetensors_params:
        params, source = ParamCounts(0, 0, safetensors_params, 0), "safetensors"
    window, sliding_layers = _sliding_layers(config, model_type, layers)
    architectures = config.get("architectures") or [model_type]
    return ModelArchitecture(
        model_id=model_id,
        model_type=model_type,
        architecture=str(architectures[0]),
        hidden_size=hidden,
        num_layers=layers,
        num_attention_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=_head_dim(config, hidden, heads, model_id),
        intermediate_size=int(config.get("intermediate_size") or config.get("moe_intermediate_size") or 0),
        vocab_size=_int(config, "vocab_size", model_id),
        tie_word_embeddings=bool(config.get("tie_word_embeddings", model_type in {"gemma", "gemma2"})),
        max_position_embeddings=_int(config, "max_position_embeddings", model_id),
        derived_max_model_len=derived_max_model_len(config, model_id),
        torch_dtype=dtype,
        quantization=parse_quantization(config),
        params=params,
        params_source=source,
        checkpoint_bytes=checkpoint_bytes,
        sliding_window=window,
        sliding_window_layers=sliding_layers,
        kv_lora_rank=config.get("kv_lora_rank") if model_type in MLA_FAMILIES else None,
        qk_rope_head_dim=config.get("qk_rope_head_dim") if model_type in MLA_FAMILIES else None,
        num_experts=int(
            config.get("num_local_experts")
            or config.get("num_experts")
            or config.get("n_routed_experts")
            or 0
        ),
        experts_per_token=int(config.get("num_experts_per_tok") or 0),
        gated=gated,
    )


# ----- sources ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CatalogEntry:
    model_id: str
    config: Mapping[str, Any]
    gated: bool
    published_params: float | None
    safetensors_total_bytes: int | None


@cache
def load_model_catalog(path: Path = CATALOG_PATH) -> dict[str, CatalogEntry]:
    """The built-in catalog, keyed by lower-cased model id."""
    data = yaml.safe_load(path.read_text())
    entries = {}
    for item in data["models"]:
        entry = CatalogEntry(
            model_id=item["id"],
            config=item["config"],
            gated=bool(item.get("gated", False)),
            published_params=item.get("published_params"),
            safetensors_total_bytes=item.get("safetensors_total_bytes"),
        )
        entries[entry.model_id.lower()] = entry
    return entries


def gated_without_token(model_id: str, *, has_token: bool, stack: str) -> str | None:
    """Why the fill Job could not download `model_id`: a model the catalog marks gated on the Hub, with no
    hfToken in the stack. None when it can (a token is set, the model is not gated, or it is not in the
    catalog, so whether the Hub gates it is not known offline)."""
    entry = load_model_catalog().get(model_id.lower())
    if has_token or entry is None or not entry.gated:
        return None
    return (
        f"{entry.model_id} is gated on the Hugging Face Hub and stack {stack!r} has no token: accept its "
        f"terms at https://huggingface.co/{entry.model_id} with your account, then set your token with "
        f"`pulumi config set --secret hfToken hf_... -s {stack}`"
    )


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(
            f"{path} does not exist; pass the path of a model's config.json", key="config"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read {path}: {error}", key="config") from None
    except json.JSONDecodeError as error:
        raise UserError(
            f"{path} is not valid JSON (line {error.lineno}, column {error.colno}: {error.msg})", key="config"
        ) from None
    if not isinstance(config, dict):
        raise UserError(f"{path} must hold a JSON object, the model's config.json", key="config")
    return config


def safetensors_totals(directory: Path) -> tuple[int, int] | None:
    """(total bytes of tensor data, total parameters) from the headers of *.safetensors files."""
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        return None
    total_bytes = total_params = 0
    for file in files:
        with file.open("rb") as handle:
            (header_len,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(header_len))
        for name, tensor in header.items():
            if name == "__metadata__":
                continue
            start, end = tensor["data_offsets"]
            count = 1
            for dim in tensor["shape"]:
                count *= dim
            total_bytes += end - start
            total_params += count
    return total_bytes, total_params


def load_model(
    ref: str,
    *,
    revision: str | None = None,
    config_path: Path | None = None,
    token: str | None = None,
) -> ModelArchitecture:
    """Resolve a model reference: explicit config.json, local directory, ModelScope (`modelscope://org/name`),
    built-in catalog, or the Hub."""
    if config_path is not None:
        return parse_config(read_config_file(Path(config_path)), ref)
    if modelscope.is_modelscope(ref):
        return parse_config(read_config_file(modelscope.download_config(ref, revision)), ref)
    local = Path(ref).expanduser()
    if local.is_dir():
        config = read_config_file(local / "config.json")
        totals = safetensors_totals(local)
        return parse_config(
            config,
            ref,
            checkpoint_bytes=totals[0] if totals else None,
            safetensors_params=totals[1] if totals else None,
        )
    entry = load_model_catalog().get(ref.lower())
    if entry is not None:
        return parse_config(
            entry.config, entry.model_id, checkpoint_bytes=entry.safetensors_total_bytes, gated=entry.gated
        )
    return _load_from_hub(ref, revision=revision, token=token)


# A Hugging Face repo id: org/name, each part letters, digits, '-', '_', '.', not starting or ending in '-'
# or '.', with no '--' or '..' (huggingface_hub's validate_repo_id, checked here before any import).
_REPO_PART = r"[A-Za-z0-9](?:[\w.-]{0,94}[A-Za-z0-9])?"
REPO_ID = re.compile(rf"{_REPO_PART}/{_REPO_PART}")


def is_repo_id(ref: str) -> bool:
    return bool(REPO_ID.fullmatch(ref)) and "--" not in ref and ".." not in ref


def did_you_mean(ref: str) -> str:
    """'did you mean X?' naming the catalog ids (or names without the org) closest to `ref`; "" if none."""
    ids = {entry.model_id.lower(): entry.model_id for entry in load_model_catalog().values()}
    names = {model_id.split("/", 1)[-1].lower(): model_id for model_id in ids.values()}
    wanted = ref.strip().lower()
    close = [ids[m] for m in difflib.get_close_matches(wanted, ids, n=2, cutoff=0.8)]
    close += [names[m] for m in difflib.get_close_matches(wanted.rsplit("/", 1)[-1], names, n=2, cutoff=0.8)]
    unique = list(dict.fromkeys(close))[:2]
    return f"did you mean {' or '.join(unique)}?" if unique else ""


def _not_a_model(ref: str) -> str:
    """Why `ref` names no model: a file, a missing folder, or no org/name, with what would work."""
    path = Path(ref).expanduser()
    if path.is_file():
        return (
            f"{ref!r} is a file, not a model directory; pass a folder holding config.json, or "
            f"--config {ref} if it is a config.json"
        )
    hint = did_you_mean(ref)
    looks_like_path = ref.startswith((".", "/", "~")) or ref.count("/") > 1 or "\\" in ref
    what = "no such model directory, and not" if looks_like_path else "not a local directory, not"
    return (
        f"unknown model {ref!r}: {what} in the built-in catalog, and not a Hugging Face repo id "
        f"(org/name).{' D' + hint[1:] if hint else ''} Catalog models: {_catalog_ids()}"
    )


def _catalog_ids() -> str:
    return ", ".join(sorted(entry.model_id for entry in load_model_catalog().values()))


def _load_from_hub(ref: str, *, revision: str | None, token: str | None) -> ModelArchitecture:
    if not is_repo_id(ref):
        raise UserError(_not_a_model(ref), key="model")
    suggestion = did_you_mean(ref)
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise UserError(
            f"model {ref!r} is not in the built-in catalog and HF_HUB_OFFLINE=1; "
            f"{suggestion + ' ' if suggestion else ''}pass --config PATH to its config.json. "
            f"Catalog models: {_catalog_ids()}",
            key="model",
        )
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, NotASafetensorsRepoError, SafetensorsParsingError

    token = token or os.environ.get("HF_TOKEN")
    offline = f"pass --config PATH to its config.json. Catalog models: {_catalog_ids()}"
    with hub_errors(ref, revision or "main", unreachable_hint=offline, did_you_mean=suggestion):
        _hub_preflight(ref, revision or "main", token)
        path = hf_hub_download(ref, "config.json", revision=revision, token=token, etag_timeout=10)
    config = read_config_file(Path(path))
    params = None
    try:
        metadata = HfApi().get_safetensors_metadata(ref, revision=revision, token=token)
        params = sum(metadata.parameter_count.values())
    except (HfHubHTTPError, NotASafetensorsRepoError, SafetensorsParsingError, OSError, ValueError):
        pass  # safetensors metadata is optional; the config formula covers the known families
    return parse_config(config, ref, safetensors_params=params)


def _hub_preflight(ref: str, revision: str, token: str | None) -> None:
    """One request without retries, so a typo fails at once: the Hub's "no such repository or revision"
    and a Hub that refuses or cannot be resolved are final. Slow or failing answers (timeouts, 5xx) are
    left to the download, which retries them."""
    import httpx2
    from huggingface_hub import HfApi
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        HfApi().model_info(ref, revision=revision, token=token, timeout=10)
    except (RepositoryNotFoundError, RevisionNotFoundError, GatedRepoError, httpx2.ConnectError):
        raise
    except (HfHubHTTPError, httpx2.TransportError):
        pass  # possibly transient: hf_hub_download retries these
