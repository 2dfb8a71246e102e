"""Model architecture: parsing config.json, exact parameter counts, quantization, errors."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from infra.errors import UserError
from infra.hub import hub_errors
from infra.sizing.models import (
    Quantization,
    count_params,
    load_model,
    load_model_catalog,
    parse_config,
    parse_quantization,
    safetensors_totals,
)

LLAMA_8B = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "max_position_embeddings": 131072,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}

CATALOG = load_model_catalog()
WITH_PUBLISHED_PARAMS = sorted(e.model_id for e in CATALOG.values() if e.published_params)


@pytest.mark.parametrize("model_id", WITH_PUBLISHED_PARAMS)
def test_parameter_count_matches_the_published_size(model_id: str) -> None:
    entry = CATALOG[model_id.lower()]
    model = load_model(model_id)
    assert model.params_source == "config"
    published = float(entry.published_params or 0)
    # Published sizes are rounded to three significant figures ("8.03B").
    assert model.param_count == pytest.approx(published, rel=0.006), (model.param_count, published)


def test_the_catalog_has_the_models_the_planner_is_tested_with() -> None:
    for model_id in (
        "codellama/CodeLlama-7b-Instruct-hf",
        "codellama/CodeLlama-70b-Instruct-hf",
        "meta-llama/Llama-3.1-70B-Instruct",
        "Qwen/Qwen3-14B",
        "Qwen/Qwen2.5-7B-Instruct",
    ):
        assert model_id.lower() in CATALOG


@pytest.mark.parametrize(
    ("overrides", "expected_extra"),
    [
        # Qwen2 always has q/k/v biases: (32 + 2 x 8) x 128 per layer.
        ({"model_type": "qwen2"}, 32 * (32 + 16) * 128),
        # Qwen3: q_norm and k_norm, head_dim each.
        ({"model_type": "qwen3"}, 32 * 2 * 128),
        # attention_bias on a Llama: q/k/v biases and the o_proj bias.
        ({"attention_bias": True}, 32 * ((32 + 16) * 128 + 4096)),
        # Tied embeddings drop the LM head.
        ({"tie_word_embeddings": True}, -128256 * 4096),
    ],
)
def test_family_specific_parameters(overrides: dict, expected_extra: int) -> None:
    base = count_params(LLAMA_8B, "llama")
    variant = count_params({**LLAMA_8B, **overrides}, "variant")
    assert base is not None and variant is not None
    assert variant.total - base.total == expected_extra


def test_llama_3_1_8b_parameter_count_is_exact() -> None:
    counts = count_params(LLAMA_8B, "llama")
    assert counts is not None
    assert counts.total == 8_030_261_248  # the figure safetensors metadata reports for Llama-3.1-8B


def test_mixtral_counts_every_expert_and_the_router() -> None:
    config = {**LLAMA_8B, "model_type": "mixtral", "vocab_size": 32000, "num_local_experts": 8}
    counts = count_params(config, "mixtral")
    dense = count_params({**config, "model_type": "llama"}, "dense")
    assert counts is not None and dense is not None
    mlp = 3 * 4096 * 14336
    assert counts.total - dense.total == 32 * (7 * mlp + 4096 * 8)


def test_unknown_family_has_no_count_but_safetensors_fills_it() -> None:
    config = {**LLAMA_8B, "model_type": "somethingnew"}
    assert count_params(config, "x") is None
    model = parse_config(config, "x", safetensors_params=1234)
    assert model.param_count == 1234 and model.params_source == "safetensors"
    with pytest.raises(UserError, match="--params-billion"):
        _ = parse_config(config, "x").param_count


def test_param_override_wins() -> None:
    model = parse_config(LLAMA_8B, "llama").with_param_override(7.5)
    assert model.param_count == 7_500_000_000 and model.params_source == "override"


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        ({"quant_method": "awq", "bits": 4, "group_size": 128}, Quantization("awq", 4, 128)),
        ({"quant_method": "gptq", "bits": 8, "group_size": -1}, Quantization("gptq", 8, -1)),
        ({"quant_method": "fp8", "activation_scheme": "dynamic"}, Quantization("fp8", 8, -1)),
        ({"quant_method": "bitsandbytes", "load_in_4bit": True}, Quantization("bitsandbytes", 4, 64)),
        ({"quant_method": "bitsandbytes", "load_in_8bit": True}, Quantization("bitsandbytes", 8, -1)),
        (
            {
                "quant_method": "compressed-tensors",
                "config_groups": {
                    "group_0": {"weights": {"num_bits": 4, "strategy": "group", "group_size": 128}}
                },
            },
            Quantization("compressed-tensors", 4, 128),
        ),
        (
            {
                "quant_method": "compressed-tensors",
                "config_groups": {"group_0": {"weights": {"num_bits": 8, "strategy": "channel"}}},
            },
            Quantization("compressed-tensors", 8, -1),
        ),
    ],
)
def test_quantization_config(block: dict, expected: Quantization) -> None:
    assert parse_quantization({"quantization_config": block}) == expected


def test_awq_storage_counts_scales_and_zero_points() -> None:
    assert Quantization("awq", 4, 128).bits_per_weight == pytest.approx(4 + 20 / 128)
    assert Quantization("fp8", 8, -1).bits_per_weight == 8


def test_unknown_quantization_names_the_key() -> None:
    with pytest.raises(UserError, match=r"quantization: .*'hqq'.*supported: awq"):
        parse_quantization({"quantization_config": {"quant_method": "hqq"}})


@pytest.mark.parametrize(
    ("overrides", "window", "sliding_layers"),
    [
        ({}, None, 0),
        ({"model_type": "gemma2", "sliding_window": 4096, "num_hidden_layers": 42}, 4096, 21),
        ({"model_type": "qwen2", "sliding_window": 32768, "use_sliding_window": False}, None, 0),
        (
            {"layer_types": ["sliding_attention", "full_attention"] * 16, "sliding_window": 128},
            128,
            16,
        ),
    ],
)
def test_sliding_window_layers_are_flagged(overrides: dict, window: int | None, sliding_layers: int) -> None:
    model = parse_config({**LLAMA_8B, **overrides}, "m")
    assert (model.sliding_window, model.sliding_window_layers) == (window, sliding_layers)
    assert model.kv_is_approximate == (sliding_layers > 0)


def test_yarn_rope_scaling_extends_the_context() -> None:
    config = {
        **LLAMA_8B,
        "max_position_embeddings": 32768,
        "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768},
    }
    assert parse_config(config, "m").derived_max_model_len == 131072


def test_multimodal_config_reads_the_text_model() -> None:
    config = {"model_type": "llava", "text_config": LLAMA_8B, "torch_dtype": "bfloat16"}
    assert parse_config(config, "m").num_layers == 32


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({k: v for k, v in LLAMA_8B.items() if k != "hidden_size"}, "no 'hidden_size'"),
        ({**LLAMA_8B, "num_hidden_layers": 0}, "'num_hidden_layers' must be a positive integer"),
        ({**LLAMA_8B, "num_key_value_heads": 5}, "not a multiple of num_key_value_heads 5"),
        ({**LLAMA_8B, "torch_dtype": "int3"}, "unknown torch_dtype 'int3'"),
        ({**LLAMA_8B, "hidden_size": 4100}, "hidden_size 4100 is not divisible by num_attention_heads 32"),
    ],
)
def test_bad_config_names_the_problem(config: dict, message: str) -> None:
    with pytest.raises(UserError, match=message) as error:
        parse_config(config, "m")
    assert error.value.key == "config"


@pytest.mark.parametrize(
    ("content", "message"),
    [("{not json", "not valid JSON"), ("[1, 2]", "must hold a JSON object")],
)
def test_malformed_config_file(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "config.json"
    path.write_text(content)
    with pytest.raises(UserError, match=message):
        load_model("m", config_path=path)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_model("m", config_path=tmp_path / "nope.json")


def test_unknown_model_offline_says_what_would_work(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match=r"model: .*not in the built-in catalog.*--config PATH") as error:
        load_model("someorg/not-a-model")
    assert "Qwen/Qwen3-14B" in str(error.value)


def test_unknown_model_without_org_is_refused() -> None:
    with pytest.raises(UserError, match="not a Hugging Face repo id"):
        load_model("llama-3-8b-please")


def test_head_dim_in_the_config_wins_over_hidden_size_by_heads() -> None:
    assert parse_config({**LLAMA_8B, "hidden_size": 4100, "head_dim": 128}, "m").head_dim == 128


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("../../etc/passwd", "no such model directory, and not in the built-in catalog"),
        ("./models/qwen", "no such model directory"),
        ("org/name/extra", "no such model directory"),
        ("a--b/c", "not a Hugging Face repo id"),
        ("qwen3-8b", "Did you mean Qwen/Qwen3-8B"),
    ],
)
def test_what_is_neither_a_folder_nor_a_repo_id_never_reaches_the_hub(
    ref: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # relative paths resolve to nothing, wherever the repository lives
    with pytest.raises(UserError, match=message) as error:
        load_model(ref)
    assert error.value.key == "model"


def test_a_file_is_not_a_model_directory(tmp_path: Path) -> None:
    (tmp_path / "passwd").write_text("root:x:0:0")
    with pytest.raises(UserError, match=r"is a file, not a model directory.*--config") as error:
        load_model(str(tmp_path / "passwd"))
    assert error.value.key == "model"


def test_an_unknown_model_offline_gets_the_nearest_catalog_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="did you mean Qwen/Qwen3-8B"):
        load_model("Qwen/Qwen3-8Bx")


@pytest.mark.parametrize(("endpoint", "key"), [(None, None), ("http://127.0.0.1:9", "HF_ENDPOINT")])
def test_an_unreachable_hub_names_hf_endpoint_only_when_the_user_set_it(
    monkeypatch: pytest.MonkeyPatch, endpoint: str | None, key: str | None
) -> None:
    import httpx2

    if endpoint is None:
        monkeypatch.delenv("HF_ENDPOINT", raising=False)
    else:
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
    expected = r"cannot reach the Hugging Face Hub.*; did you mean X\?"
    with (
        pytest.raises(UserError, match=expected) as error,
        hub_errors("org/x", "main", did_you_mean="did you mean X?"),
    ):
        raise httpx2.ConnectError("Name or service not known")
    assert error.value.key == key


def test_catalog_lookup_is_case_insensitive() -> None:
    assert load_model("QWEN/qwen3-14b").model_id == "Qwen/Qwen3-14B"


def _write_safetensors(path: Path, tensors: dict[str, tuple[str, list[int]]]) -> int:
    """A real safetensors file: 8-byte header length, JSON header, then the tensor bytes."""
    sizes = {"BF16": 2, "F32": 4, "I8": 1}
    header, offset = {}, 0
    for name, (dtype, shape) in tensors.items():
        count = 1
        for dim in shape:
            count *= dim
        header[name] = {
            "dtype": dtype,
            "shape": shape,
            "data_offsets": [offset, offset + count * sizes[dtype]],
        }
        offset += count * sizes[dtype]
    header["__metadata__"] = {"format": "pt"}
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * offset)
    return offset


def test_local_directory_reads_safetensors_headers(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({**LLAMA_8B, "model_type": "newfamily"}))
    first = _write_safetensors(
        tmp_path / "model-00001.safetensors", {"a": ("BF16", [64, 32]), "b": ("F32", [10])}
    )
    second = _write_safetensors(tmp_path / "model-00002.safetensors", {"c": ("I8", [100])})
    assert safetensors_totals(tmp_path) == (first + second, 64 * 32 + 10 + 100)
    model = load_model(str(tmp_path))
    assert model.param_count == 64 * 32 + 10 + 100
    assert model.checkpoint_bytes == first + second
