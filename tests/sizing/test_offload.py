"""CPU weight offload (`--cpu-offload-gb`): host-memory bounds, the size a layout needs, and the planner
choosing it only when asked or when nothing else fits, and otherwise listing it when it saves hardware."""

from __future__ import annotations

import pytest

from infra.errors import UserError
from infra.sizing import memory as mem
from infra.sizing import offload
from infra.sizing import vllm_constants as vc
from infra.sizing.gpus import load_catalog
from infra.sizing.models import load_model
from infra.sizing.plan import GIB, Constraints, Workload
from infra.sizing.planner import NoFitError, gpu_memory_of, plan_serving
from infra.vllm.args import plan_args

G6_4XLARGE = Constraints(instance_types=("g6.4xlarge",))


@pytest.mark.parametrize(
    ("instance_type", "node_gib", "gpus"),
    [("g6.4xlarge", 64, 1), ("g6.12xlarge", 192, 4), ("g4dn.xlarge", 16, 1), ("p5.48xlarge", 2048, 8)],
)
def test_host_memory_per_gpu_leaves_room_for_the_node_and_vllm(
    instance_type: str, node_gib: int, gpus: int
) -> None:
    instance = load_catalog().by_name(instance_type)
    assert instance.memory_mib == node_gib * 1024 and instance.gpu_count == gpus
    expected = node_gib * GIB * 0.8 / gpus - 2 * GIB - 4 * GIB
    assert offload.host_bytes_per_gpu(instance) == pytest.approx(expected, abs=1)


def test_the_largest_offload_the_planner_allows_fits_the_serving_pods_memory_limit() -> None:
    """For every catalog instance and every TP its pods can use: the most the planner lets each GPU pin,
    plus vLLM's own processes per GPU and /dev/shm, stays under the pod's memory limit."""
    from infra.kubernetes.vllm_workload import InstanceShape, pod_resources, shm_gib
    from tests.components.support import make_plan

    for instance in load_catalog().instance_types:
        host = offload.host_bytes_per_gpu(instance)
        assert host is not None and host >= 0
        shape = InstanceShape(
            vcpus=instance.vcpus, memory_gib=instance.memory_mib / 1024, gpus=instance.gpu_count
        )
        for tp in (n for n in (1, 2, 4, 8) if n <= instance.gpu_count):
            plan = make_plan(tensor_parallel_size=tp, gpus_per_replica=tp, cpu_offload_gib=host // GIB)
            limit_gib = int(
                pod_resources(plan, shape, ephemeral_gib=10)["limits"]["memory"].removesuffix("Gi")
            )
            needed = tp * (host / GIB + vc.VLLM_HOST_BYTES_PER_GPU / GIB) + shm_gib(plan)
            assert needed <= limit_gib + 1, (instance.name, tp)  # the limit is floored to whole GiB


@pytest.mark.parametrize(
    ("kv_cache_gib", "needed_gib", "offload_gib"),
    [(-1.0, 2.0, 3), (5.0, 4.0, 0), (0.5, 1.0, 1), (0.0, 6.25, 7), (-10.2, 0.0, 11)],
)
def test_offload_needed_is_the_shortfall_in_whole_gib(
    kv_cache_gib: float, needed_gib: float, offload_gib: int
) -> None:
    assert offload.offload_needed_gib(int(kv_cache_gib * GIB), int(needed_gib * GIB)) == offload_gib


def test_offloaded_weights_leave_the_gpu_budget_for_kv_cache() -> None:
    model = load_model("Qwen/Qwen3-14B")
    gpu = gpu_memory_of(load_catalog().by_name("g6.4xlarge").gpu)
    precision = mem.resolve_precision(model, gpu, dtype=None, quantization=None, kv_cache_dtype="auto")
    common = dict(tp=1, pp=1, gpu_memory_utilization=0.92, batched_tokens=2048, num_seqs=256)
    plain = mem.memory_per_gpu(model, precision, gpu, **common)  # type: ignore[arg-type]
    offloaded = mem.memory_per_gpu(model, precision, gpu, cpu_offload_bytes=16 * GIB, **common)  # type: ignore[arg-type]
    assert plain.weights - offloaded.weights == 16 * GIB
    assert offloaded.kv_cache - plain.kv_cache == 16 * GIB
    assert plain.kv_cache < 0 < offloaded.kv_cache  # 27.5 GiB of weights cannot fit one L4 without it
    # Only the decoder layers can go: their projections, not the embeddings and LM head.
    assert model.params is not None
    assert mem.offloadable_bytes_per_gpu(model, precision, 1, 1) == model.params.linear * 2
    assert mem.offloadable_bytes_per_gpu(model, precision, 2, 1) == model.params.linear


def test_qwen3_14b_on_g6_4xlarge_lists_a_one_node_offload_alternative() -> None:
    model = load_model("Qwen/Qwen3-14B")
    plan = plan_serving(model, Workload(), G6_4XLARGE)
    assert plan.cpu_offload_gib == 0 and "--cpu-offload-gb" not in plan_args(plan)
    assert plan.nodes_per_replica > 1  # pipeline stages: what fits without offload
    offloaded = [alt for alt in plan.alternatives if alt.cpu_offload_gib]
    assert len(offloaded) == 1
    alternative = offloaded[0]
    assert (alternative.instance_type, alternative.gpus_per_replica, alternative.pipeline_parallel_size) == (
        "g6.4xlarge",
        1,
        1,
    )
    host = offload.host_bytes_per_gpu(load_catalog().by_name("g6.4xlarge"))
    assert host is not None and 0 < alternative.cpu_offload_gib * GIB <= host
    assert alternative.kv_cache_tokens >= plan.max_model_len
    (cost,) = [note for note in plan.notes if "alternative, CPU offload" in note]  # its cost, in the notes
    assert cost.startswith(f"g6.4xlarge TP=1 alternative, CPU offload: {alternative.cpu_offload_gib:g} GiB")
    assert "x lower decode throughput" in cost

    # Asking for that offload gives that layout, with the flag and its cost in the notes.
    asked = plan_serving(model, Workload(cpu_offload_gib=alternative.cpu_offload_gib), G6_4XLARGE)
    assert (asked.nodes_per_replica, asked.gpus_per_replica) == (1, 1)
    assert asked.kv_cache_tokens == alternative.kv_cache_tokens
    args = plan_args(asked)
    assert float(args[args.index("--cpu-offload-gb") + 1]) == alternative.cpu_offload_gib
    assert any("PCIe" in note and "decode step" in note for note in asked.notes)
    # The node still downloads every weight: the GPU-resident part plus the offloaded part.
    gpu = gpu_memory_of(load_catalog().by_name("g6.4xlarge").gpu)
    precision = mem.resolve_precision(model, gpu, dtype=None, quantization=None, kv_cache_dtype="auto")
    assert asked.weights_total_bytes == mem.weight_bytes_per_gpu(model, precision, 1, 1)
    assert not any(alt.cpu_offload_gib for alt in asked.alternatives)


def test_offload_is_chosen_when_nothing_else_fits_the_allowed_gpus() -> None:
    one_node = Constraints(instance_types=("g6.4xlarge",), max_nodes_per_replica=1)
    plan = plan_serving(load_model("Qwen/Qwen3-14B"), Workload(), one_node)
    assert plan.cpu_offload_gib > 0 and "--cpu-offload-gb" in plan_args(plan)
    assert any("no layout of the allowed GPUs fits without it" in note for note in plan.notes)


def test_offload_is_not_listed_when_it_saves_nothing() -> None:
    plan = plan_serving(load_model("Qwen/Qwen3-8B"), Workload(max_model_len=8192), Constraints())
    assert plan.gpus_per_replica == 1
    assert not any(alt.cpu_offload_gib for alt in plan.alternatives)


def test_offload_beyond_the_nodes_host_memory_does_not_fit() -> None:
    """g6.xlarge has 16 GiB of host memory: about 6.8 GiB of the pod's 12.8 can hold offloaded weights."""
    one_small_node = Constraints(instance_types=("g6.xlarge",), max_nodes_per_replica=1)
    with pytest.raises(NoFitError, match="host memory per GPU left after the OS"):
        plan_serving(load_model("Qwen/Qwen3-14B"), Workload(cpu_offload_gib=16), one_small_node)


def test_offload_beyond_the_layer_weights_does_not_fit() -> None:
    with pytest.raises(NoFitError, match="decoder-layer weights per GPU vLLM can offload"):
        plan_serving(load_model("Qwen/Qwen3-8B"), Workload(cpu_offload_gib=100), G6_4XLARGE)


@pytest.mark.parametrize("value", [-1.0, float("inf"), float("nan")])
def test_bad_offload_names_the_key(value: float) -> None:
    with pytest.raises(UserError) as error:
        plan_serving(load_model("Qwen/Qwen3-8B"), Workload(cpu_offload_gib=value), Constraints())
    assert error.value.key == "cpu_offload_gib"


@pytest.mark.parametrize(
    ("gpu", "link"), [("T4", vc.PCIE_GEN3_BYTES_PER_S), ("L4", vc.PCIE_GEN4_BYTES_PER_S), ("H100", 50e9)]
)
def test_the_throughput_note_states_the_per_step_cost(gpu: str, link: float) -> None:
    model = load_catalog().find_gpu(gpu)
    note = offload.throughput_note(10 * GIB, 10 * GIB, model)
    assert f"{10 * GIB / link * 1000:,.0f} ms per decode step" in note
    slowdown = (10 * GIB / (model.memory_bandwidth_gbps * 1e9) + 10 * GIB / link) / (
        20 * GIB / (model.memory_bandwidth_gbps * 1e9)
    )
    assert f"about {slowdown:.0f}x lower decode throughput" in note
