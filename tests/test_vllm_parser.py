"""The arguments this program gives vLLM, parsed by vLLM 0.33.0's own `vllm serve` parser.

The parser runs in .venv-vllm (`make vllm-parser`: CPU torch, vLLM with --no-deps) through
tests/vllm_parser_check.py, once for all cases. This checks that the parser reads each value as the
plan means it; tests/sizing/test_vllm_args.py checks more plans only for being accepted.
"""

from __future__ import annotations

from typing import Any

import pytest

from infra.kubernetes.model_cache import LoadMode, ModelCacheRef, ServingCacheArgs, serving_pod_patch
from infra.sizing.models import load_model, load_model_catalog
from infra.sizing.plan import Constraints, ServingPlan, Workload
from infra.sizing.planner import plan_serving
from tests.vllm_real_parser import parse_with_vllm

WORKLOADS = {
    "bf16-4k": Workload(max_model_len=4096),
    "fp16-fp8kv": Workload(max_model_len=4096, kv_cache_dtype="fp8", dtype="float16"),
}


def planned() -> dict[str, tuple[str, ServingPlan]]:
    plans = {}
    for entry in sorted(load_model_catalog().values(), key=lambda e: e.model_id):
        for label, workload in WORKLOADS.items():
            model = load_model(entry.model_id)
            plans[f"{entry.model_id}-{label}"] = (
                entry.model_id,
                plan_serving(model, workload, Constraints()),
            )
    model = load_model("meta-llama/Llama-3.1-405B-Instruct")
    multi_node = plan_serving(model, Workload(max_model_len=8192), Constraints(gpus=("A100-80GB",)))
    plans["405B-multi-node"] = (model.model_id, multi_node)
    return plans


PLANS = planned()
CACHE = ModelCacheRef(bucket="cache-bucket", model="Qwen/Qwen3-8B", revision="a" * 40, prefix="llm")
PATCHES = {
    mode.value: serving_pod_patch(
        ServingCacheArgs(image="img@sha256:" + "0" * 64, cache=CACHE, service_account_name="vllm", mode=mode)
    )
    for mode in LoadMode
}


@pytest.fixture(scope="module")
def parsed() -> dict[str, Any]:
    cases = {name: [model_id, *plan.vllm_args] for name, (model_id, plan) in PLANS.items()}
    cases |= {f"patch-{mode}": patch.vllm_args for mode, patch in PATCHES.items()}
    cases["removed-flag"] = ["m", "--swap-space", "4"]
    return parse_with_vllm(cases)


def test_the_parser_refuses_what_vllm_refuses(parsed: dict[str, Any]) -> None:
    assert not parsed["removed-flag"]["ok"]
    assert "--swap-space" in " ".join(parsed["removed-flag"]["error"])


@pytest.mark.parametrize("name", sorted(PLANS))
def test_planned_arguments_mean_to_vllm_what_the_plan_says(parsed: dict[str, Any], name: str) -> None:
    model_id, plan = PLANS[name]
    result = parsed[name]
    assert result["ok"], result["error"]
    values = result["values"]
    assert values["model_tag"] == model_id
    assert values["tensor_parallel_size"] == plan.tensor_parallel_size
    assert values["pipeline_parallel_size"] == plan.pipeline_parallel_size
    assert values["max_model_len"] == plan.max_model_len
    assert values["gpu_memory_utilization"] == pytest.approx(plan.gpu_memory_utilization)
    assert values["dtype"] == plan.dtype
    assert values["kv_cache_dtype"] == plan.kv_cache_dtype
    args = plan.vllm_args
    assert values["max_num_seqs"] == int(args[args.index("--max-num-seqs") + 1])
    assert values["max_num_batched_tokens"] == int(args[args.index("--max-num-batched-tokens") + 1])
    if plan.nodes_per_replica > 1:
        assert values["nnodes"] == plan.nodes_per_replica and values["distributed_executor_backend"] == "mp"


@pytest.mark.parametrize("mode", sorted(PATCHES))
def test_model_cache_arguments_parse(parsed: dict[str, Any], mode: str) -> None:
    result = parsed[f"patch-{mode}"]
    assert result["ok"], result["error"]
    values = result["values"]
    assert values["served_model_name"] == [CACHE.model]
    if mode == LoadMode.RUNAI_STREAMER.value:
        assert values["load_format"] == "runai_streamer" and values["model"].startswith("s3://cache-bucket/")
    else:
        assert values["load_format"] == "auto" and values["model"].startswith("/models/")
