"""The `vllm serve` command line and probe timings, from plans (the real parser checks them too:
tests/test_vllm_parser.py)."""

from __future__ import annotations

import pytest

from infra.errors import UserError
from infra.sizing.models import load_model
from infra.sizing.plan import Constraints, Workload
from infra.sizing.planner import plan_serving
from infra.vllm.args import API_KEY_ENV, api_key_env, node_args, plan_args, serve_args
from infra.vllm.probes import STARTUP_PERIOD_S, probes, startup_budget_s
from tests.components.support import make_plan


def _value(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


@pytest.mark.parametrize(
    ("changes", "present", "absent"),
    [
        (
            {},
            {"--max-model-len": "8192", "--max-num-seqs": "256", "--dtype": "bfloat16"},
            ["-tp", "--nnodes"],
        ),
        ({"tensor_parallel_size": 4, "gpus_per_replica": 4}, {"--tensor-parallel-size": "4"}, ["--nnodes"]),
        (
            {
                "pipeline_parallel_size": 2,
                "nodes_per_replica": 2,
                "tensor_parallel_size": 8,
                "gpus_per_replica": 16,
            },
            {"--pipeline-parallel-size": "2", "--nnodes": "2", "--distributed-executor-backend": "mp"},
            [],
        ),
        (
            {"quantization_arg": "fp8", "kv_cache_dtype": "fp8"},
            {"--quantization": "fp8", "--kv-cache-dtype": "fp8"},
            [],
        ),
    ],
)
def test_plan_args_carry_exactly_what_the_plan_decides(
    changes: dict, present: dict[str, str], absent: list[str]
) -> None:
    args = plan_args(make_plan(**changes))
    for flag, value in present.items():
        assert _value(args, flag) == value
    for flag in absent:
        assert flag not in args


def test_serve_args_put_the_source_first_the_users_last_and_never_the_key() -> None:
    args = serve_args(
        make_plan(), model_args=["--model", "/models/x"], served_name="chat", extra_args=["--enforce-eager"]
    )
    assert args[:4] == ["--model", "/models/x", "--served-model-name", "chat"]
    assert args[-1] == "--enforce-eager"
    assert _value(args, "--port") == "8000" and int(_value(args, "--shutdown-timeout")) > 0
    assert "--api-key" not in args


def test_a_conflicting_layout_flag_names_the_revisions_key() -> None:
    with pytest.raises(UserError, match=r"^revisions\[1\]\.extraArgs: --tensor-parallel-size cannot be set"):
        serve_args(
            make_plan(),
            model_args=[],
            served_name="m",
            extra_args=["-tp", "2"],
            extra_args_key="revisions[1].extraArgs",
        )


def test_multi_node_ranks_and_headless_workers() -> None:
    leader = node_args(rank="0", leader_address="$(LWS_LEADER_ADDRESS)", leader=True)
    worker = node_args(rank="$(LWS_WORKER_INDEX)", leader_address="$(LWS_LEADER_ADDRESS)", leader=False)
    assert _value(leader, "--node-rank") == "0" and "--headless" not in leader
    assert _value(worker, "--master-addr") == "$(LWS_LEADER_ADDRESS)" and worker[-1] == "--headless"


def test_the_api_key_is_an_environment_variable_from_the_secret() -> None:
    assert api_key_env("s", "k") == {
        "name": API_KEY_ENV,
        "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}},
    }


def test_a_70b_plan_gets_a_longer_startup_budget_than_an_8b_plan() -> None:
    small = plan_serving(load_model("Qwen/Qwen3-8B"), Workload(max_model_len=8192), Constraints(gpus=("L4",)))
    large = plan_serving(
        load_model("meta-llama/Llama-3.3-70B-Instruct"),
        Workload(max_model_len=32768),
        Constraints(gpus=("A100-80GB",)),
    )
    assert large.estimated_load_s > small.estimated_load_s
    assert startup_budget_s(large) > startup_budget_s(small) > large.estimated_cold_start_s
    startup = probes(large)["startupProbe"]
    assert startup["failureThreshold"] * startup["periodSeconds"] == startup_budget_s(large)
    assert startup["periodSeconds"] == STARTUP_PERIOD_S
    assert probes(large)["livenessProbe"]["httpGet"]["path"] == "/health"
