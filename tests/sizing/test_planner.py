"""The planner against the sizing table of the project's source documents, and its failure modes."""

from __future__ import annotations

import contextlib

import pytest

from infra.errors import UserError
from infra.sizing import memory as mem
from infra.sizing.gpus import load_catalog
from infra.sizing.models import load_model
from infra.sizing.plan import Constraints, Workload
from infra.sizing.planner import NoFitError, plan_serving, tensor_parallel_options

FP16_4K = Workload(max_model_len=4096, dtype="float16")
GPU_CLASSES = {"24GB": ("A10G", "L4"), "40GB": ("A100-40GB",), "80GB": ("A100-80GB", "H100")}

# The source documents' table for CodeLlama Instruct in fp16 at 4096 tokens: GPUs needed per GPU class.
CODELLAMA_TABLE = [
    ("codellama/CodeLlama-7b-Instruct-hf", "24GB", 1),
    ("codellama/CodeLlama-13b-Instruct-hf", "24GB", 2),
    ("codellama/CodeLlama-13b-Instruct-hf", "40GB", 1),
    ("codellama/CodeLlama-34b-Instruct-hf", "24GB", 4),
    ("codellama/CodeLlama-34b-Instruct-hf", "40GB", 2),
    ("codellama/CodeLlama-34b-Instruct-hf", "80GB", 1),
    ("codellama/CodeLlama-70b-Instruct-hf", "40GB", 4),
    ("codellama/CodeLlama-70b-Instruct-hf", "80GB", 2),
]


@pytest.mark.parametrize(("model_id", "gpu_class", "gpus"), CODELLAMA_TABLE)
def test_codellama_sizing_table(model_id: str, gpu_class: str, gpus: int) -> None:
    model = load_model(model_id)
    for gpu in GPU_CLASSES[gpu_class]:
        plan = plan_serving(model, FP16_4K, Constraints(gpus=(gpu,)))
        assert (plan.tensor_parallel_size, plan.pipeline_parallel_size) == (gpus, 1), gpu
        assert plan.gpu.name == gpu and plan.dtype == "float16"
        smaller = [tp for tp in tensor_parallel_options(model, 8) if tp < gpus]
        for tp in smaller:  # "needs": every smaller split must fail, or fit only with CPU offload
            single_node = Constraints(gpus=(gpu,), tensor_parallel_size=tp, max_nodes_per_replica=1)
            with contextlib.suppress(NoFitError):
                assert plan_serving(model, FP16_4K, single_node).cpu_offload_gib > 0


def test_llama_70b_at_32k_context() -> None:
    model = load_model("meta-llama/Llama-3.1-70B-Instruct")
    plan = plan_serving(model, Workload(max_model_len=32768), Constraints())
    assert plan.max_model_len == 32768 and plan.kv_cache_tokens >= 32768
    assert plan.gpus_per_replica == plan.tensor_parallel_size * plan.pipeline_parallel_size
    memory = plan.memory_per_gpu
    assert (
        memory.budget
        == memory.weights + memory.activations + memory.cuda_graphs + memory.other + memory.kv_cache
    )
    assert plan.kv_bytes_per_token_per_gpu == 320 * 1024 // plan.tensor_parallel_size
    assert plan.kv_cache_tokens == memory.kv_cache // (16 * plan.kv_bytes_per_token_per_gpu) * 16
    assert plan.max_concurrency == pytest.approx(plan.kv_cache_tokens / 32768, abs=0.01)
    assert plan.cost_per_hour_usd is not None and plan.cost_per_hour_usd > 0
    for alternative in plan.alternatives:  # cheapest first; CPU-offload layouts (fewer GPUs) come last
        assert (
            alternative.cost_per_hour_usd is None
            or alternative.cost_per_hour_usd >= plan.cost_per_hour_usd
            or alternative.cpu_offload_gib > 0
        )


def test_the_cheapest_fitting_option_is_chosen() -> None:
    model = load_model("Qwen/Qwen3-8B")
    catalog = load_catalog()
    plan = plan_serving(model, Workload(max_model_len=8192), Constraints(), catalog)
    chosen = catalog.by_name(plan.instance_type)
    price = chosen.hourly_cost("on-demand")
    assert price is not None and plan.cost_per_hour_usd == pytest.approx(
        price * plan.tensor_parallel_size / chosen.gpu_count
    )
    cost = plan.cost_per_hour_usd
    assert cost is not None
    for alternative in plan.alternatives:
        assert alternative.cost_per_hour_usd is None or alternative.cost_per_hour_usd >= cost


def test_more_concurrency_needs_more_kv_cache() -> None:
    model = load_model("meta-llama/Llama-3.1-8B-Instruct")
    one = plan_serving(model, Workload(max_model_len=32768), Constraints(gpus=("L4",)))
    many = plan_serving(model, Workload(max_model_len=32768, concurrency=16), Constraints(gpus=("L4",)))
    assert (
        many.kv_cache_tokens >= 16 * 32768 > one.kv_cache_tokens
        or many.gpus_per_replica > one.gpus_per_replica
    )


def test_spot_is_cheaper_and_says_so() -> None:
    model = load_model("Qwen/Qwen3-8B")
    on_demand = plan_serving(model, Workload(max_model_len=8192), Constraints(gpus=("L4",)))
    spot = plan_serving(model, Workload(max_model_len=8192), Constraints(gpus=("L4",), capacity_type="spot"))
    assert spot.cost_per_hour_usd is not None and on_demand.cost_per_hour_usd is not None
    assert spot.cost_per_hour_usd < on_demand.cost_per_hour_usd
    assert any("spot" in note for note in spot.notes)


@pytest.mark.parametrize(("replicas", "nodes"), [(1, 1), (2, 1), (3, 2)])
def test_replicas_pay_for_whole_nodes(replicas: int, nodes: int) -> None:
    # Qwen3-14B in fp8 needs two L4s; a g6.12xlarge (4 x L4) holds two replicas.
    catalog = load_catalog()
    workload = Workload(quantization="fp8", replicas=replicas)
    plan = plan_serving(load_model("Qwen/Qwen3-14B"), workload, Constraints(gpus=("L4",)), catalog)
    node = catalog.by_name(plan.instance_type).hourly_cost("on-demand")
    assert (plan.instance_type, plan.tensor_parallel_size, plan.priced_for_replicas) == (
        "g6.12xlarge",
        2,
        replicas,
    )
    assert node is not None and plan.nodes_for_replicas == nodes
    assert plan.stack_cost_per_hour_usd == pytest.approx(node * nodes)
    assert plan.cost_per_hour_usd == pytest.approx(node / 2)  # the per-replica figure stays available
    if replicas == 1:
        assert any(f"1 replica(s) pay 1 whole node(s) (${node:.2f}/h)" in note for note in plan.notes)


@pytest.mark.parametrize(("replicas", "nodes"), [(1, 1), (2, 2), (3, 3)])
def test_spread_replicas_pay_a_node_each(replicas: int, nodes: int) -> None:
    """A stack that keeps replicas on separate nodes (replicas.min >= 2) pays a whole node per replica, and
    the planner prices it so (the GPU pool and the cost check read the same figure)."""
    catalog = load_catalog()
    workload = Workload(quantization="fp8", replicas=replicas, spread=True)
    plan = plan_serving(
        load_model("Qwen/Qwen3-14B"), workload, Constraints(instance_types=("g6.12xlarge",)), catalog
    )
    node = catalog.by_name(plan.instance_type).hourly_cost("on-demand")
    assert (plan.priced_for_replicas, plan.priced_spread, plan.nodes_for_replicas) == (replicas, True, nodes)
    assert node is not None and plan.stack_cost_per_hour_usd == pytest.approx(node * nodes)


@pytest.mark.parametrize("replicas", [1, 2, 5])
def test_plans_are_ranked_by_what_the_replicas_cost(replicas: int) -> None:
    workload = Workload(quantization="fp8", replicas=replicas)
    plan = plan_serving(load_model("Qwen/Qwen3-14B"), workload, Constraints())
    costs = [plan.stack_cost_per_hour_usd] + [alt.stack_cost_per_hour_usd for alt in plan.alternatives]
    assert None not in costs and costs == sorted(costs), costs  # type: ignore[type-var]
    for alt in plan.alternatives:  # never a half node for a lone replica
        assert alt.cost_per_hour_usd is not None and alt.stack_cost_per_hour_usd is not None
        assert alt.stack_cost_per_hour_usd >= alt.cost_per_hour_usd * replicas - 1e-6


def test_prices_say_where_they_come_from() -> None:
    model = load_model("Qwen/Qwen3-8B")
    plan = plan_serving(model, Workload(), Constraints(region="eu-west-1", capacity_type="spot"))
    assert (plan.price_region, plan.prices_read_on) == ("us-east-1", load_catalog().prices_read_on)
    assert any("us-east-1 list prices" in note and "--region eu-west-1" in note for note in plan.notes)
    assert any("on-demand x 0.6" in note for note in plan.notes)
    here = plan_serving(model, Workload(), Constraints(region="us-east-1"))
    assert not any("list prices" in note for note in here.notes)


def test_a_model_too_big_for_one_node_gets_pipeline_stages() -> None:
    model = load_model("meta-llama/Llama-3.1-405B-Instruct")
    plan = plan_serving(model, Workload(max_model_len=8192), Constraints(gpus=("A100-80GB",)))
    assert plan.pipeline_parallel_size > 1 and plan.nodes_per_replica == plan.pipeline_parallel_size
    assert plan.tensor_parallel_size == 8
    assert plan.nodes_per_replica == plan.pipeline_parallel_size


def test_nothing_fits_explains_why_and_what_would() -> None:
    model = load_model("meta-llama/Llama-3.1-70B-Instruct")
    with pytest.raises(NoFitError) as error:
        plan_serving(
            # One L4 with 16 GiB of host memory: not even CPU offload can hold 70B.
            model,
            Workload(max_model_len=131072),
            Constraints(instance_types=("g6.xlarge",), max_nodes_per_replica=1),
        )
    message = str(error.value)
    assert error.value.key == "model"
    assert "does not fit" in message and "closest:" in message and "Would fit:" in message
    assert "a larger GPU or more GPUs" in message or "max_model_len" in message


def test_quantization_is_suggested_when_it_would_fit() -> None:
    """Qwen3-14B in bf16 (27.5 GiB of weights) cannot fit one L4; in fp8 it does."""
    model = load_model("Qwen/Qwen3-14B")
    one_l4 = Constraints(instance_types=("g6.xlarge",), max_nodes_per_replica=1)
    with pytest.raises(NoFitError, match=r"quantization fp8: g6\.xlarge"):
        plan_serving(model, Workload(max_model_len=16384), one_l4)
    plan = plan_serving(model, Workload(max_model_len=16384, quantization="fp8"), one_l4)
    assert plan.quantization == "fp8" and plan.quantization_arg == "fp8"


@pytest.mark.parametrize(
    ("workload", "constraints", "key"),
    [
        (Workload(max_model_len=10**7), Constraints(), "max_model_len"),
        (Workload(concurrency=0), Constraints(), "concurrency"),
        (Workload(replicas=0), Constraints(), "replicas"),
        (Workload(gpu_memory_utilization=1.5), Constraints(), "gpu_memory_utilization"),
        (Workload(gpu_memory_utilization=0), Constraints(), "gpu_memory_utilization"),
        (Workload(), Constraints(tensor_parallel_size=3), "tensor_parallel_size"),
        (Workload(), Constraints(gpus=("Voodoo5",)), "gpus"),
        (Workload(), Constraints(instance_types=("g5.huge",)), "instance_types"),
        (Workload(), Constraints(capacity_type="reserved"), "capacity_type"),  # type: ignore[arg-type]
        (Workload(), Constraints(gpu_memory_gib=-1), "gpu_memory_gib"),
    ],
)
def test_bad_input_names_the_key(workload: Workload, constraints: Constraints, key: str) -> None:
    with pytest.raises(UserError) as error:
        plan_serving(load_model("Qwen/Qwen3-8B"), workload, constraints)
    assert error.value.key == key


def test_a_custom_gpu_serves_bf16_unless_its_compute_capability_says_otherwise() -> None:
    model = load_model("Qwen/Qwen3-8B")  # a bfloat16 checkpoint
    workload = Workload(max_model_len=8192, dtype="bfloat16")
    assert plan_serving(model, workload, Constraints(gpu_memory_gib=80)).dtype == "bfloat16"
    assert (
        plan_serving(model, Workload(max_model_len=8192), Constraints(gpu_memory_gib=80)).dtype == "bfloat16"
    )
    turing = Constraints(gpu_memory_gib=80, gpu_compute_capability=7.5)
    with pytest.raises(UserError, match="no bfloat16 support") as error:
        plan_serving(model, workload, turing)
    assert error.value.key == "dtype"


def test_a_zero_compute_capability_is_refused_not_defaulted() -> None:
    with pytest.raises(UserError) as error:
        plan_serving(
            load_model("Qwen/Qwen3-8B"), Workload(), Constraints(gpu_memory_gib=80, gpu_compute_capability=0)
        )
    assert error.value.key == "gpu_compute_capability"


def test_a_compute_capability_needs_a_custom_gpu() -> None:
    with pytest.raises(UserError, match="gpu_memory_gib") as error:
        plan_serving(load_model("Qwen/Qwen3-8B"), Workload(), Constraints(gpu_compute_capability=9.0))
    assert error.value.key == "gpu_compute_capability"


def test_custom_gpu_has_no_price_but_plans() -> None:
    plan = plan_serving(
        load_model("Qwen/Qwen3-8B"), Workload(max_model_len=8192), Constraints(gpu_memory_gib=32)
    )
    assert plan.cost_per_hour_usd is None and plan.gpu.memory_gib == 32


@pytest.mark.parametrize(
    ("heads", "kv_heads", "gpus", "expected"),
    [(32, 8, 8, [1, 2, 4, 8]), (40, 40, 8, [1, 2, 4, 8]), (40, 40, 4, [1, 2, 4]), (28, 4, 8, [1, 2, 4]),
     (64, 8, 1, [1]), (14, 2, 8, [1, 2])],
)  # fmt: skip
def test_tensor_parallel_options(heads: int, kv_heads: int, gpus: int, expected: list[int]) -> None:
    model = load_model("Qwen/Qwen3-8B")
    from dataclasses import replace

    assert (
        tensor_parallel_options(replace(model, num_attention_heads=heads, num_kv_heads=kv_heads), gpus)
        == expected
    )


def test_sliding_window_models_are_marked_approximate() -> None:
    plan = plan_serving(load_model("google/gemma-2-9b-it"), Workload(), Constraints())
    assert plan.approximate and any("sliding" in note for note in plan.notes)


def test_plan_dict_has_the_documented_keys() -> None:
    data = plan_serving(load_model("Qwen/Qwen3-8B"), Workload(max_model_len=8192), Constraints()).to_dict()
    for key in (
        "model", "params_billion", "dtype", "quantization", "instance_type", "gpu", "tensor_parallel_size",
        "pipeline_parallel_size", "nodes_per_replica", "gpus_per_replica", "max_model_len",
        "gpu_memory_utilization", "memory_per_gpu_gib", "kv_bytes_per_token_per_gpu", "kv_cache_tokens",
        "max_concurrency", "max_num_batched_tokens", "max_num_seqs", "quantization_arg", "cost_per_hour_usd",
        "estimated_cold_start_s", "estimated_load_s", "alternatives",
    ):  # fmt: skip
        assert key in data, key
    assert set(data["gpu"]) == {"name", "memory_gib", "count"}
    assert set(data["memory_per_gpu_gib"]) == {
        "budget",
        "weights",
        "activations",
        "cuda_graphs",
        "other",
        "kv_cache",
    }


def test_kv_tokens_are_whole_blocks_of_sixteen() -> None:
    plan = plan_serving(load_model("Qwen/Qwen2.5-7B-Instruct"), Workload(max_model_len=4000), Constraints())
    assert plan.kv_cache_tokens % 16 == 0
    blocks = plan.kv_cache_tokens // 16
    assert plan.max_concurrency == pytest.approx(blocks / mem.blocks_per_request(4000), abs=0.01)
