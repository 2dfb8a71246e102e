"""The LoRA memory term as vLLM 0.33.0 preallocates it (vllm/lora/layers/*.create_lora_weights), table-tested
against hand arithmetic: per layer, A holds rank x input and B output x rank for qkv (3 slices), o, gate_up
(2 slices) and down; where the architecture's vLLM class wraps them (embedding_modules), the embedding and
LM head add (vocab + hidden) each on their stage, and a tied LM head is wrapped twice."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from infra.errors import UserError
from infra.sizing import memory as mem
from infra.sizing.models import load_model, load_model_catalog, parse_config
from infra.sizing.plan import Constraints, LoraSlots, Workload
from infra.sizing.planner import plan_serving
from tests.conftest import REPO_ROOT
from tests.vllm_real_parser import VLLM_PYTHON

# Llama-3.1-8B: hidden 4096, 32 heads, 8 KV heads, head_dim 128, intermediate 14336, 32 layers, vocab 128256.
LLAMA_TP1_LAYER = (3 * 4096 + 4096 + 2 * 4096 + 14336) + (4096 + 2 * 1024 + 4096 + 2 * 14336 + 4096)  # 81920
LLAMA_TP2_LAYER = (3 * 4096 + 2048 + 2 * 4096 + 7168) + (2048 + 2 * 512 + 4096 + 2 * 7168 + 4096)  # 55296
LLAMA_ENDS = 128256 + 4096
# Qwen2.5-7B at TP=4: hidden 3584, 28 heads -> 7 per rank, 4 KV heads -> 1, intermediate 18944 -> 4736.
# vLLM's Qwen2ForCausalLM declares no embedding_modules: no LoRA on its embedding or LM head.
QWEN_TP4_LAYER = (3 * 3584 + 896 + 2 * 3584 + 4736) + (896 + 2 * 128 + 3584 + 2 * 4736 + 3584)
# Qwen3-8B: hidden 4096, 32 heads, 8 KV heads, head_dim 128, intermediate 12288, 36 layers, vocab 151936.
QWEN3_TP1_LAYER = (3 * 4096 + 4096 + 2 * 4096 + 12288) + (4096 + 2 * 1024 + 4096 + 2 * 12288 + 4096)
QWEN3_ENDS = 151936 + 4096


@pytest.mark.parametrize(
    ("model_id", "tp", "pp", "max_loras", "rank", "expected"),
    [
        ("meta-llama/Llama-3.1-8B-Instruct", 1, 1, 1, 16, (32 * LLAMA_TP1_LAYER + 2 * LLAMA_ENDS) * 16 * 2),
        ("meta-llama/Llama-3.1-8B-Instruct", 2, 1, 1, 16, (32 * LLAMA_TP2_LAYER + 2 * LLAMA_ENDS) * 16 * 2),
        ("meta-llama/Llama-3.1-8B-Instruct", 1, 2, 2, 8, (16 * LLAMA_TP1_LAYER + LLAMA_ENDS) * 2 * 8 * 2),
        ("Qwen/Qwen2.5-7B-Instruct", 4, 1, 4, 64, 28 * QWEN_TP4_LAYER * 4 * 64 * 2),
        ("Qwen/Qwen3-8B", 1, 1, 2, 32, (36 * QWEN3_TP1_LAYER + 2 * QWEN3_ENDS) * 2 * 32 * 2),
    ],
)
def test_lora_bytes_per_gpu(
    model_id: str, tp: int, pp: int, max_loras: int, rank: int, expected: int
) -> None:
    model = load_model(model_id)
    assert (
        mem.lora_bytes_per_gpu(model, tp, pp, max_loras=max_loras, max_lora_rank=rank, lora_bytes=2)
        == expected
    )


def test_one_rank_16_slot_of_llama_8b_is_88_mib() -> None:
    model = load_model("meta-llama/Llama-3.1-8B-Instruct")
    one = mem.lora_bytes_per_gpu(model, 1, 1, max_loras=1, max_lora_rank=16, lora_bytes=2)
    assert one == 92_356_608  # 88.08 MiB: each further slot or doubling of the rank adds as much again
    assert mem.lora_bytes_per_gpu(model, 1, 1, max_loras=2, max_lora_rank=32, lora_bytes=2) == 4 * one


@pytest.mark.parametrize(("rank", "choice"), [(1, 1), (4, 8), (8, 8), (9, 16), (300, 320), (512, 512)])
def test_rank_rounds_up_to_a_vllm_choice(rank: int, choice: int) -> None:
    assert mem.lora_rank_for(rank) == choice


def test_unsupported_shapes_name_the_key() -> None:
    with pytest.raises(UserError) as error:
        mem.lora_rank_for(1024)
    assert error.value.key == "lora"
    with pytest.raises(UserError, match="mixture of experts"):
        mem.lora_bytes_per_gpu(
            load_model("mistralai/Mixtral-8x7B-Instruct-v0.1"),
            2,
            1,
            max_loras=1,
            max_lora_rank=16,
            lora_bytes=2,
        )


def test_a_plan_with_adapters_charges_their_slots_as_weights() -> None:
    model = load_model("meta-llama/Llama-3.1-8B-Instruct")
    one_l4 = Constraints(instance_types=("g6.xlarge",), max_nodes_per_replica=1)
    plain = plan_serving(model, Workload(max_model_len=8192), one_l4)
    adapters = plan_serving(model, Workload(max_model_len=8192, lora=LoraSlots(4, 12)), one_l4)
    lora = mem.lora_bytes_per_gpu(model, 1, 1, max_loras=4, max_lora_rank=16, lora_bytes=2)  # rank 12 -> 16
    assert adapters.memory_per_gpu.weights - plain.memory_per_gpu.weights == lora
    assert plain.memory_per_gpu.kv_cache - adapters.memory_per_gpu.kv_cache == lora
    # the plan says what it sized: vLLM's rank choice, the slots' GPU memory, and an fp32 adapter's disk size
    assert adapters.lora is not None and plain.lora is None
    assert (adapters.lora.max_loras, adapters.lora.max_lora_rank, adapters.lora.bytes_per_gpu) == (
        4,
        16,
        lora,
    )
    fp32_adapter = mem.lora_bytes_per_gpu(model, 1, 1, max_loras=1, max_lora_rank=16, lora_bytes=4)
    assert adapters.lora.adapter_bytes == fp32_adapter
    assert adapters.weights_total_bytes == plain.weights_total_bytes  # slots are allocated, not downloaded
    assert any(note.startswith("LoRA: 4 adapter slot(s) of rank up to 16") for note in adapters.notes)
    with pytest.raises(UserError) as error:
        plan_serving(model, Workload(lora=LoraSlots(0, 16)), one_l4)
    assert error.value.key == "lora"


def test_a_tied_lm_head_is_wrapped_twice() -> None:
    """Tied: the LM head is the embedding module, so vLLM wraps it as an embedding again beside the logits."""
    config = dict(load_model_catalog()["qwen/qwen3-8b"].config, tie_word_embeddings=True)
    tied = parse_config(config, "tied/qwen3")
    one = mem.lora_bytes_per_gpu(tied, 1, 1, max_loras=1, max_lora_rank=8, lora_bytes=2)
    assert one == (36 * QWEN3_TP1_LAYER + 3 * QWEN3_ENDS) * 8 * 2
    staged = mem.lora_bytes_per_gpu(tied, 1, 2, max_loras=1, max_lora_rank=8, lora_bytes=2)
    assert staged == (18 * QWEN3_TP1_LAYER + 3 * QWEN3_ENDS) * 8 * 2


def test_which_architectures_wrap_the_vocabulary_is_what_vllm_says() -> None:
    """Every architecture the term knows, and every one in the model catalog, read from vLLM 0.33.0's own
    classes (tests/vllm_lora_check.py in .venv-vllm)."""
    if not VLLM_PYTHON.exists():
        pytest.skip(f"needs vLLM in {VLLM_PYTHON.parent.parent}: run `make vllm-parser` (make test does)")
    catalog = {str(e.config["architectures"][0]) for e in load_model_catalog().values()}
    known = mem.LORA_VOCAB_ARCHITECTURES | mem.LORA_LINEAR_ONLY_ARCHITECTURES
    result = subprocess.run(
        [str(VLLM_PYTHON), str(REPO_ROOT / "tests" / "vllm_lora_check.py")],
        input=json.dumps(sorted(known | catalog)),
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "VLLM_TARGET_DEVICE": "cpu"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    found = json.loads(result.stdout)
    for architecture in known:
        wraps = {"embed_tokens", "lm_head"} <= set(found[architecture]["embedding_modules"])
        assert found[architecture]["supports_lora"], architecture
        assert wraps == (architecture in mem.LORA_VOCAB_ARCHITECTURES), architecture
        assert wraps or not found[architecture]["embedding_modules"], architecture
    dense = {
        str(e.config["architectures"][0])
        for e in load_model_catalog().values()
        if not load_model(e.model_id).num_experts and not load_model(e.model_id).is_mla
    }
    assert dense <= known, f"dense catalog architectures the LoRA term does not know: {dense - known}"
