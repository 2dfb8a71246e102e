"""The LoRA memory term as vLLM 0.33.0 preallocates it (vllm/lora/layers/*.create_lora_weights), table-tested
against hand arithmetic: per layer, A holds rank x input and B output x rank for qkv (3 slices), o, gate_up
(2 slices) and down; the embedding and LM head add (vocab + hidden) each on their stage."""

from __future__ import annotations

import pytest

from infra.errors import UserError
from infra.sizing import memory as mem
from infra.sizing.models import load_model
from infra.sizing.plan import Constraints, LoraSlots, Workload
from infra.sizing.planner import plan_serving

# Llama-3.1-8B: hidden 4096, 32 heads, 8 KV heads, head_dim 128, intermediate 14336, 32 layers, vocab 128256.
LLAMA_TP1_LAYER = (3 * 4096 + 4096 + 2 * 4096 + 14336) + (4096 + 2 * 1024 + 4096 + 2 * 14336 + 4096)  # 81920
LLAMA_TP2_LAYER = (3 * 4096 + 2048 + 2 * 4096 + 7168) + (2048 + 2 * 512 + 4096 + 2 * 7168 + 4096)  # 55296
LLAMA_ENDS = 128256 + 4096
# Qwen2.5-7B at TP=4: hidden 3584, 28 heads -> 7 per rank, 4 KV heads -> 1, intermediate 18944 -> 4736.
QWEN_TP4_LAYER = (3 * 3584 + 896 + 2 * 3584 + 4736) + (896 + 2 * 128 + 3584 + 2 * 4736 + 3584)
QWEN_ENDS = 152064 + 3584


@pytest.mark.parametrize(
    ("model_id", "tp", "pp", "max_loras", "rank", "expected"),
    [
        ("meta-llama/Llama-3.1-8B-Instruct", 1, 1, 1, 16, (32 * LLAMA_TP1_LAYER + 2 * LLAMA_ENDS) * 16 * 2),
        ("meta-llama/Llama-3.1-8B-Instruct", 2, 1, 1, 16, (32 * LLAMA_TP2_LAYER + 2 * LLAMA_ENDS) * 16 * 2),
        ("meta-llama/Llama-3.1-8B-Instruct", 1, 2, 2, 8, (16 * LLAMA_TP1_LAYER + LLAMA_ENDS) * 2 * 8 * 2),
        ("Qwen/Qwen2.5-7B-Instruct", 4, 1, 4, 64, (28 * QWEN_TP4_LAYER + 2 * QWEN_ENDS) * 4 * 64 * 2),
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
    with pytest.raises(UserError) as error:
        plan_serving(model, Workload(lora=LoraSlots(0, 16)), one_l4)
    assert error.value.key == "lora"
