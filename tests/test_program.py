"""The glue of __main__.py: user errors as one line, planner keys as config keys, args from settings."""

from __future__ import annotations

from typing import Any

import pulumi
import pytest

from infra import program
from infra.components.cluster import ClusterMode
from infra.components.gpu_node_pool import GpuNodePoolArgs
from infra.config import Revision, StackSettings, settings_from_values
from infra.errors import UserError
from infra.render import install_mocks
from infra.sizing.plan import ServingPlan
from tests.components.support import make_plan


def test_user_errors_become_one_logged_line_and_a_run_error() -> None:
    recorder = install_mocks(stack="test")
    with pytest.raises(pulumi.RunError) as raised, program.user_errors():
        raise UserError("does not fit.\n  closest: g6.xlarge\nWould fit: p5", key="model")
    assert str(raised.value) == "model: does not fit.; closest: g6.xlarge; Would fit: p5"
    assert isinstance(raised.value.__cause__, UserError)
    assert [m for m in recorder.logs if m.startswith("error")] == [
        "error: model: does not fit.; closest: g6.xlarge; Would fit: p5"
    ]


def test_other_errors_pass_through_untouched() -> None:
    with pytest.raises(KeyError), program.user_errors():
        raise KeyError("a bug, not the user's")


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("instance_types", "instanceTypes: x"),
        ("capacity_type", "capacityType: x"),
        ("gpus", "gpus: x"),
        ("model", "model: x"),
        ("cpu_offload_gib", "cpuOffloadGb: x"),
    ],
)
def test_planner_keys_are_named_as_config_keys(key: str, expected: str) -> None:
    (shorthand,) = settings_from_values({}, stack="t").revisions
    error = program.as_config_error(UserError("x", key=key), shorthand)
    assert str(error) == expected and error.key == expected.split(":")[0]


def test_a_listed_revisions_planner_errors_name_its_keys() -> None:
    settings = settings_from_values({"revisions": [{"name": "a", "weight": 100}]}, stack="t")
    (revision,) = settings.revisions
    assert str(program.as_config_error(UserError("x", key="gpus"), revision)) == "revisions[0].gpus: x"
    assert (
        str(program.as_config_error(UserError("no such model"), revision))
        == "revisions[0].model: no such model"
    )
    # capacityType is stack-wide
    assert str(program.as_config_error(UserError("x", key="capacity_type"), revision)) == "capacityType: x"


def test_plan_summary_and_description_carry_every_revision_its_weight_and_cost() -> None:
    settings = settings_from_values(
        {
            "replicas": {"min": 0, "max": 2},
            "maxCostPerHour": 5,
            "revisions": [
                {"name": "a", "weight": 80},
                {"name": "b", "weight": 20, "extraArgs": ["--enforce-eager"]},
            ],
        },
        stack="t",
    )
    plans = {"a": make_plan(), "b": make_plan()}
    summary = program.plan_summary(settings, plans, 0.96)
    assert summary["cost_per_hour_usd_at_max_replicas"] == 0.96 and summary["max_cost_per_hour_usd"] == 5
    a, b = summary["revisions"]["a"], summary["revisions"]["b"]
    assert a["replicas"] == {"min": 0, "max": 2} and (a["weight"], b["weight"]) == (80, 20)
    assert a["instance_type"] == "g6.xlarge" and a["vllm_args"][:2] == [
        "--served-model-name",
        "Qwen/Qwen3-8B",
    ]
    assert b["vllm_args"][-1] == "--enforce-eager"
    lines = program.describe_plans(settings, plans, 0.96).splitlines()
    assert "revision a (Qwen/Qwen3-8B@main, weight 80): 1 x L4 on g6.xlarge (spot)" in lines[0]
    assert lines[-1] == "GPU nodes at max replicas: $0.96/h"


def test_served_models_are_what_the_smoke_test_checks() -> None:
    settings = settings_from_values({"servedModelName": "chat"}, stack="t")
    assert program.served_models(settings, {"primary": make_plan()}) == {
        "primary": {"servedModelName": "chat", "maxModelLen": 8192, "kvCacheTokens": 22896, "weight": 100}
    }


def test_cluster_args_follow_the_settings() -> None:
    existing = settings_from_values(
        {
            "cluster": {"mode": "existing", "name": "shared", "kubeconfig": "/k", "nodeRole": "nodes"},
            "namespace": "serve",
        },
        stack="t",
    )
    args = program.cluster_args(existing)
    assert (args.mode, args.cluster_name, args.kubeconfig, args.karpenter_node_role) == (
        ClusterMode.EXISTING,
        "shared",
        "/k",
        "nodes",
    )
    assert args.workload_namespace == "serve" and args.tags["stack"] == "t"
    assert program.cluster_args(settings_from_values({}, stack="t")).cluster_name == "llm-serving-t"


def test_serving_image_args_build_unless_the_stack_names_an_image() -> None:
    assert program.serving_image_args(settings_from_values({}, stack="t")).prebuilt is None
    named = settings_from_values({"servingImage": "r.example.com/s:v1"}, stack="t")
    assert program.serving_image_args(named).prebuilt == "r.example.com/s:v1"
    assert program.serving_image_args(named).tags["stack"] == "t"


def test_cpu_offload_is_planned_per_revision_and_reaches_the_arguments() -> None:
    settings = settings_from_values(
        {
            "model": "Qwen/Qwen3-14B",
            "instanceTypes": ["g6.4xlarge"],
            "revisions": [
                {"name": "offload", "weight": 100, "cpuOffloadGb": 16},
                {"name": "pp", "weight": 0},
            ],
        },
        stack="t",
    )
    plans = program.build_plans(settings)
    offload, pipeline = plans["offload"], plans["pp"]
    assert (offload.cpu_offload_gib, offload.nodes_per_replica) == (16, 1)
    assert (pipeline.cpu_offload_gib, pipeline.nodes_per_replica) == (0, 3)  # what fits without offload
    args = program.vllm_args_preview(settings.revisions[0], offload)
    assert args[args.index("--cpu-offload-gb") + 1] == "16"
    assert "--cpu-offload-gb" not in program.vllm_args_preview(settings.revisions[1], pipeline)
    # the offloaded weights are still downloaded: the entry is as large as on one GPU that holds them all
    one_gpu = settings_from_values({"model": "Qwen/Qwen3-14B", "gpus": ["L40S"]}, stack="t")
    (whole,) = one_gpu.revisions
    assert program.build_plan(one_gpu, whole).gpus_per_replica == 1
    assert (
        program.revision_cache(settings, settings.revisions[0], offload).checkpoint_bytes
        == program.revision_cache(one_gpu, whole, program.build_plan(one_gpu, whole)).checkpoint_bytes
    )


def test_the_serving_pull_is_sized_for_the_planned_node_and_its_pods() -> None:
    """The init container's pull follows the planned instance's link, shared by the pods a node holds:
    packed replicas split it, spread ones (replicas.min >= 2) have it to themselves."""
    from infra.sizing.gpus import load_catalog
    from infra.sizing.model_pull import pull_settings
    from infra.sizing.plan import GpuShare

    big = load_catalog().by_name("p4d.24xlarge")  # 8 GPUs, 400 Gb/s
    packed = settings_from_values({"replicas": {"min": 1, "max": 8}}, stack="t")
    spread = settings_from_values({"replicas": {"min": 2, "max": 8}}, stack="t")
    plan = make_plan(instance_type=big.name, gpu=GpuShare(name="A100", memory_gib=40, count=8))
    assert program.revision_cache(packed, packed.revisions[0], plan).pull == pull_settings(
        big.network_gbps, big.vcpus, pods_per_node=8
    )
    alone = program.revision_cache(spread, spread.revisions[0], plan).pull
    assert alone is not None and alone == pull_settings(big.network_gbps, big.vcpus)
    assert alone.connections == 256


def test_a_revisions_cache_follows_the_settings_and_the_plan() -> None:
    from infra.kubernetes.model_cache import LoadMode

    commit = "0123456789abcdef0123456789abcdef01234567"
    settings = settings_from_values(
        {
            "modelLoadMode": "runai_streamer",
            "modelRevision": commit,
            "compileCache": False,
            "region": "eu-west-1",
        },
        stack="t",
    )
    (revision,) = settings.revisions
    cache = program.revision_cache(settings, revision, make_plan())
    assert cache.load_mode is LoadMode.RUNAI_STREAMER and cache.revision == commit
    assert cache.compile_cache is False and cache.region == "eu-west-1" and cache.gpu_type == "NVIDIA L4"
    fp8 = settings_from_values({"quantization": "fp8"}, stack="t")
    plain = settings_from_values({}, stack="t")
    assert (
        program.revision_cache(fp8, fp8.revisions[0], make_plan()).checkpoint_bytes
        == 2 * program.revision_cache(plain, plain.revisions[0], make_plan()).checkpoint_bytes
    )


def test_the_hf_token_secret_reaches_the_fill_job_only_when_the_stack_has_a_token() -> None:
    wiring = program.ServiceWiring("ns", "r/s:1", "bucket", "vllm", "model-cache-fill", "key", "tok")

    def args(settings: Any) -> Any:
        return program.vllm_service_args(
            settings,
            settings.revisions[0],
            make_plan(),
            wiring,
            node_selector={},
            tolerations=[],
            fill_cache=True,
            fill_after=[],
            serve_after=[],
        )

    with_token = settings_from_values({}, stack="t", hf_token=pulumi.Output.secret("x"))
    assert args(with_token).wiring.hf_token_secret_name == "tok"
    assert args(settings_from_values({}, stack="t")).wiring.hf_token_secret_name is None


def test_an_unpinned_streamed_model_is_a_user_error_naming_model_revision() -> None:
    """Config validation catches it first; the builder's own refusal is the second line, also one line."""
    settings = settings_from_values({}, stack="t").model_copy(update={"model_load_mode": "runai_streamer"})
    with pytest.raises(UserError) as raised:
        program.revision_cache(settings, settings.revisions[0], make_plan())
    assert str(raised.value).startswith("modelRevision: revision 'main' is not a 40-hex commit")
    assert raised.value.key == "modelRevision" and "\n" not in str(raised.value)


def pool_args(
    settings: StackSettings, plan: ServingPlan, revision: Revision | None = None
) -> GpuNodePoolArgs:
    """A revision's GPU pool args (the first's by default), as __main__ asks for them."""
    return program.gpu_pool_args(
        settings,
        revision or settings.revisions[0],
        plan,
        cluster_name="c",
        node_role="r",
        install_device_plugin=True,
        depends_on=[],
    )


def test_pools_leave_room_for_a_rollouts_surge_and_spread_replicas_take_a_node_each() -> None:
    settings = settings_from_values({"replicas": {"min": 2, "max": 3}}, stack="t")
    shared = make_plan(
        gpu=make_plan().gpu.__class__("A100-80GB", 80.0, 8), gpus_per_replica=4, instance_type="p4de.24xlarge"
    )
    args = pool_args(settings, shared)
    assert args.max_nodes == 4  # 3 replicas + 1 surging, one node each
    packed = settings_from_values({"replicas": {"min": 1, "max": 3}}, stack="t")
    args = pool_args(packed, shared)
    assert args.max_nodes == 2  # 4 replicas of half a node


def test_with_the_plan_system_nodes_get_disk_for_the_fill_job() -> None:
    from infra.kubernetes.serving_cache import cache_disk_gib

    settings = settings_from_values({}, stack="t")
    plan = make_plan()
    assert program.cluster_args(settings).system_disk_gib == 60
    disk = program.cluster_args(settings, {"primary": plan}).system_disk_gib
    assert disk >= 60 + cache_disk_gib(plan.weights_total_bytes)
    fp8 = settings_from_values({"quantization": "fp8"}, stack="t")
    assert program.cluster_args(fp8, {"primary": plan}).system_disk_gib > disk


def test_adapters_are_planned_from_their_configs_and_errors_name_the_revisions_key(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.sizing.test_adapters import hub_cache

    hub_cache(tmp_path, "org/sql-lora", {"peft_type": "LORA", "r": 8})
    hub_cache(tmp_path, "org/big-lora", {"peft_type": "LORA", "r": 640})
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    adapters = [{"name": "sql", "source": "org/sql-lora"}]

    def plan(**values: Any) -> Any:
        stack = settings_from_values({"maxModelLen": 8192, **values}, stack="t")
        return program.build_plan(stack, stack.revisions[0])

    planned = plan(loraAdapters=adapters)
    assert planned.lora is not None and (planned.lora.max_loras, planned.lora.max_lora_rank) == (1, 8)
    stack = settings_from_values({"maxModelLen": 8192, "loraAdapters": adapters}, stack="t")
    line = program.describe_plans(stack, {"primary": planned}, None)
    assert line.endswith(
        f"; LoRA adapters sql (max rank 8, {planned.lora.bytes_per_gpu / 1024**3:.2f} GiB per GPU)"
    )
    with pytest.raises(UserError) as too_large:
        plan(
            revisions=[
                {"name": "a", "weight": 100, "loraAdapters": [{"name": "b", "source": "org/big-lora"}]}
            ]
        )
    assert too_large.value.key == "revisions[0].loraAdapters[0].source" and "goes up to 512" in str(
        too_large.value
    )
    with pytest.raises(UserError) as moe:
        plan(model="Qwen/Qwen3-30B-A3B", loraAdapters=adapters)
    assert moe.value.key == "loraAdapters" and "mixture of experts" in str(moe.value)


# --- monitoring and autoscaling ---------------------------------------------------------------------------


def _monitoring(values: dict[str, Any], plan: Any = None) -> Any:
    settings = settings_from_values(values, stack="t")
    plans = {r.name: plan or make_plan() for r in settings.revisions}
    pools = {r.name: pool_args(settings, plans[r.name], r) for r in settings.revisions}
    return program.monitoring_args(settings, plans, pools, depends_on=[])


@pytest.mark.parametrize(
    ("replicas", "wakes"),
    [({"min": 0, "max": 1}, True), ({"min": 1, "max": 2}, False), ({"min": 2, "max": 4}, False)],
)
def test_each_revision_is_autoscaled_within_its_replicas_and_only_minimum_0_gets_a_wake_route(
    replicas: dict[str, int], wakes: bool
) -> None:
    args = _monitoring(
        {
            "replicas": replicas,
            "autoscaling": {"waitingPerReplica": 3, "gpuUtilizationPercent": 70},
            "monitoring": {"retention": "30d", "storageGiB": 200, "ttftP95SloSeconds": 3},
        }
    )
    (revision,) = args.revisions
    assert (revision.autoscaling.min_replicas, revision.autoscaling.max_replicas) == (
        replicas["min"],
        replicas["max"],
    )
    assert revision.autoscaling.thresholds.waiting_per_replica == 3
    assert revision.autoscaling.thresholds.gpu_utilization_percent == 70
    assert revision.scale_target.kind == "Deployment" and revision.scale_target.name == "vllm-primary"
    # the pool holds max replicas plus the surge, so the maximum always fits it
    assert revision.pool is not None and revision.pool.replicas() >= replicas["max"] + 1
    assert (revision.wake is not None) == wakes
    assert (args.storage.retention, args.storage.storage_gib) == ("30d", 200)
    assert args.storage.storage_class is None  # no class from the cluster or the stack: the cluster's default
    assert args.thresholds.ttft_p95_slo_seconds == 3
    triggers = revision.wake_triggers("http://prometheus:9090")
    assert [t["name"] for t in triggers] == (["wake-on-request"] if wakes else [])


@pytest.mark.parametrize(
    ("stack_class", "cluster_class", "expected"),
    [
        (None, "llm-serving-gp3", "llm-serving-gp3"),
        ("fast-ssd", "llm-serving-gp3", "fast-ssd"),
        (None, None, None),
    ],
)
def test_prometheus_volume_uses_the_stacks_class_else_the_clusters(
    stack_class: str | None, cluster_class: str | None, expected: str | None
) -> None:
    settings = settings_from_values(
        {"monitoring": {"storageClass": stack_class}} if stack_class else {}, stack="t"
    )
    plans = {r.name: make_plan() for r in settings.revisions}
    pools = {r.name: pool_args(settings, plans[r.name], r) for r in settings.revisions}
    args = program.monitoring_args(settings, plans, pools, depends_on=[], storage_class=cluster_class)
    assert args.storage.storage_class == expected


def _endpoint(settings: Any, plan: Any) -> Any:
    return program.endpoint_args(
        settings,
        {"primary": plan},
        cluster_name="c",
        vpc_id="v",
        namespace="llm-serving",
        load_balancer_cidrs=[],
        depends_on=[],
    )


def test_a_revision_at_zero_is_reached_through_the_interceptor_with_timeouts_above_its_cold_start() -> None:
    from infra.vllm.probes import startup_budget_s

    settings = settings_from_values({"replicas": {"min": 0, "max": 1}}, stack="t")
    plan = make_plan()
    route = program.wake_route(settings, settings.revisions[0], plan)
    assert route is not None and route.routed
    assert route.readiness_timeout_s > startup_budget_s(plan) + plan.estimated_cold_start_s
    assert route.concurrency_per_replica == plan.max_num_seqs
    endpoint = _endpoint(settings, plan)
    assert [(b.service, b.port) for b in endpoint.backends] == [("vllm-primary-wake", 8080)]
    assert endpoint.wakes_from_zero and endpoint.idle_timeout_s == route.readiness_timeout_s
    always = settings_from_values({"replicas": {"min": 1, "max": 1}}, stack="t")
    direct = _endpoint(always, plan)
    assert [(b.service, b.port) for b in direct.backends] == [("vllm-primary", 8000)]
    assert not direct.wakes_from_zero and direct.idle_timeout_s == 600


def test_only_one_revision_with_traffic_may_scale_to_zero() -> None:
    two = {
        "replicas": {"min": 0, "max": 1},
        "revisions": [{"name": "a", "weight": 50}, {"name": "b", "weight": 50}],
    }
    with pytest.raises(UserError) as raised:
        _monitoring(two)
    assert str(raised.value).startswith("revisions[1].replicas: revisions a, b all take traffic")
    # without traffic a revision at zero just stays there: no route, a trigger that reads 0
    parked = {**two, "revisions": [{"name": "a", "weight": 100}, {"name": "b", "weight": 0}]}
    a, b = _monitoring(parked).revisions
    assert a.wake is not None and a.wake.routed and b.wake is not None and not b.wake.routed


def test_a_multi_node_replica_is_scaled_as_its_leader_worker_set_paced_by_its_cold_start() -> None:
    settings = settings_from_values({}, stack="t")
    multi = make_plan(nodes_per_replica=2)
    target = program.scale_target(settings.revisions[0], multi)
    assert (target.api_version, target.kind, target.name) == (
        "leaderworkerset.x-k8s.io/v1",
        "LeaderWorkerSet",
        "vllm-primary",
    )
    # a new node and its image, then the plan's own cold start
    assert program.cold_start_s(make_plan(estimated_cold_start_s=900.5)) == 300 + 901


@pytest.mark.parametrize(
    ("replicas", "spread"),
    [({"min": 1, "max": 3}, False), ({"min": 2, "max": 3}, True), ({"min": 0, "max": 1}, False)],
)
def test_the_planner_prices_each_revisions_max_replicas_and_the_cost_check_reads_that(
    monkeypatch: pytest.MonkeyPatch, replicas: dict[str, int], spread: bool
) -> None:
    """One computation of the stack's cost: the planner gets replicas.max and whether replicas are spread,
    prices the whole nodes, and the ceiling check adds up exactly those figures; the GPU pool is sized
    by the same node arithmetic (plus the rollout's surge replica)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    settings = settings_from_values(
        {
            "model": "Qwen/Qwen3-14B",
            "quantization": "fp8",
            "instanceTypes": ["g6.12xlarge"],
            "replicas": replicas,
        },
        stack="t",
    )
    workload, _ = program.planner_inputs(settings, settings.revisions[0])
    assert (workload.replicas, workload.spread) == (replicas["max"], spread)
    plans = program.build_plans(settings)
    plan = plans["primary"]
    assert (plan.priced_for_replicas, plan.priced_spread) == (replicas["max"], spread)
    # two TP=2 replicas share a 4-GPU g6.12xlarge unless they are spread
    nodes = replicas["max"] if spread else -(-replicas["max"] // 2)
    assert plan.nodes_for_replicas == nodes and plan.stack_cost_per_hour_usd is not None
    assert program.check_plan_cost(settings, plans) == pytest.approx(plan.stack_cost_per_hour_usd, abs=0.01)
    pool = pool_args(settings, plan)
    surge = replicas["max"] + 1
    assert pool.max_nodes == (surge if spread else -(-surge // 2))
