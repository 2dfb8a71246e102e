"""Every flag and value the planner passes to vLLM is accepted by vLLM 0.33.0's own parser (.venv-vllm)."""

from __future__ import annotations

from typing import Any

import pytest

from infra.errors import UserError
from infra.sizing.models import load_model, load_model_catalog
from infra.sizing.plan import Constraints, ServingPlan, Workload
from infra.sizing.planner import plan_serving
from tests.vllm_real_parser import parse_with_vllm


@pytest.fixture(scope="module")
def parsed() -> dict[str, Any]:
    """Every planned argument list below, and two vLLM must refuse, through vLLM 0.33.0's real parser."""
    cases: dict[str, list[str]] = {
        name: [model_id, *plan.vllm_args] for name, (model_id, plan) in PLANNED.items()
    }
    cases["removed-flag"] = ["m", "--swap-space", "4"]  # removed before 0.33.0
    cases["bad-dtype"] = ["m", "--dtype", "fp4"]
    return parse_with_vllm(cases)


def test_the_parser_refuses_what_vllm_0_33_refuses(parsed: dict[str, Any]) -> None:
    assert not parsed["removed-flag"]["ok"] and "--swap-space" in " ".join(parsed["removed-flag"]["error"])
    assert not parsed["bad-dtype"]["ok"] and "fp4" in " ".join(parsed["bad-dtype"]["error"])


PLANS = [
    (model_id, workload)
    for model_id in sorted(entry.model_id for entry in load_model_catalog().values())
    for workload in (
        Workload(max_model_len=4096),
        Workload(max_model_len=4096, kv_cache_dtype="fp8", dtype="float16"),
        Workload(max_model_len=4096, quantization="fp8"),
    )
]


def _plan(model_id: str, workload: Workload) -> ServingPlan | None:
    """The plan, or None where the planner must refuse: a checkpoint quantized another way than fp8."""
    model = load_model(model_id)
    if workload.quantization and model.quantization is not None and model.quantization.method != "fp8":
        with pytest.raises(UserError, match="contradicts the checkpoint"):
            plan_serving(model, workload, Constraints())
        return None
    return plan_serving(model, workload, Constraints(max_nodes_per_replica=8))


PLANNED: dict[str, tuple[str, ServingPlan]] = {
    f"{model_id}-{index % 3}": (model_id, plan)
    for index, (model_id, workload) in enumerate(PLANS)
    if (plan := _plan(model_id, workload)) is not None
}
PLANNED["405B-multi-node"] = (
    "meta-llama/Llama-3.1-405B-Instruct",
    plan_serving(
        load_model("meta-llama/Llama-3.1-405B-Instruct"),
        Workload(max_model_len=8192),
        Constraints(gpus=("A100-80GB",)),
    ),
)


def test_some_plans_are_refused_and_one_is_multi_node() -> None:
    assert len(PLANNED) < len(PLANS) + 1 and PLANNED["405B-multi-node"][1].pipeline_parallel_size > 1


@pytest.mark.parametrize("name", sorted(PLANNED))
def test_planned_vllm_args_parse_as_vllm_0_33_0_flags(parsed: dict[str, Any], name: str) -> None:
    result = parsed[name]
    assert result["ok"], result["error"]
    assert result["values"]["model_tag"] == PLANNED[name][0]
