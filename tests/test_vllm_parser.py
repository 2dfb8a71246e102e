"""The arguments this program gives vLLM, parsed by vLLM 0.33.0's own `vllm serve` parser.

The parser runs in .venv-vllm (`make vllm-parser`: CPU torch, vLLM with --no-deps) through
tests/vllm_parser_check.py, once for all cases: every catalog model's planned flags, every stack's full
`vllm serve` argument list as its pods get it (user extra arguments included), a multi-node leader and
worker, and the flags the preview refuses (which the real parser must refuse too).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from infra import program
from infra.config import PROJECT, load_schema, settings_from_values
from infra.kubernetes.model_cache import LoadMode, ModelCacheRef, ServingCacheArgs, serving_pod_patch
from infra.kubernetes.vllm_workload import vllm_arguments
from infra.render import STACKS_DIR, load_stack_config
from infra.sizing.models import load_model, load_model_catalog
from infra.sizing.plan import Constraints, ServingPlan, Workload
from infra.sizing.planner import plan_serving
from infra.vllm.args import plan_args
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
    # CPU offload: asked for, and chosen because one node holds the model no other way.
    qwen14b = load_model("Qwen/Qwen3-14B")
    one_l4 = Constraints(instance_types=("g6.4xlarge",), max_nodes_per_replica=1)
    plans["offload-asked"] = (qwen14b.model_id, plan_serving(qwen14b, Workload(cpu_offload_gib=16), one_l4))
    plans["offload-chosen"] = (qwen14b.model_id, plan_serving(qwen14b, Workload(max_model_len=8192), one_l4))
    return plans


PLANS = planned()
STACKS = sorted(
    p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in STACKS_DIR.glob("Pulumi.*.yaml")
)
# A stack with two revisions and user arguments, as a user would write it.
TWO_REVISIONS = {
    "model": "Qwen/Qwen3-8B",
    "maxModelLen": 8192,
    "gpus": ["L4", "A10G"],
    "extraArgs": ["--enable-prefix-caching", "--max-logprobs", "5"],
    "revisions": [
        {"name": "stable", "weight": 50},
        {
            "name": "canary",
            "weight": 50,
            "modelRevision": "0123456789abcdef0123456789abcdef01234567",
            "extraArgs": ["--enable-auto-tool-choice", "--tool-call-parser", "hermes", "--enforce-eager"],
        },
    ],
}
# CPU offload per revision: one L4 holds Qwen3-14B with 16 GiB of it in host memory.
OFFLOAD_REVISION = {
    "model": "Qwen/Qwen3-14B",
    "instanceTypes": ["g6.4xlarge"],
    "revisions": [{"name": "offload", "weight": 100, "cpuOffloadGb": 16}],
}
REFUSED = {  # flags the preview refuses: the real parser must refuse them too (or they are ours to own)
    "removed-swap-space": ["--swap-space", "4"],
    "removed-max-seq-len-to-capture": ["--max-seq-len-to-capture", "8192"],
    "misspelt-prefix-caching": ["--enable-prefix-cachng"],
}


def pod_arguments(values: dict[str, Any], stack: str) -> dict[str, tuple[ServingPlan, list[str]]]:
    """Each revision's vLLM container arguments, built the way VllmService builds them."""
    from infra.kubernetes.model_cache import SecretKeyRef
    from infra.kubernetes.serving_cache import revision_cache_patch
    from infra.kubernetes.vllm_workload import InstanceShape, WorkloadSpec

    settings = settings_from_values(values, stack=stack)
    plans = program.build_plans(settings)
    result = {}
    for revision in settings.revisions:
        plan = plans[revision.name]
        cache = program.revision_cache(settings, revision, plan)
        spec = WorkloadSpec(
            name=f"vllm-{revision.name}",
            namespace="ns",
            revision=revision.name,
            image="repo/serving:1",
            plan=plan,
            instance=InstanceShape(vcpus=8, memory_gib=64, gpus=plan.gpu.count),
            cache_patch=revision_cache_patch(
                cache, bucket="bucket", image="i:1", reader_service_account="vllm"
            ),
            checkpoint_bytes=cache.checkpoint_bytes,
            served_name=revision.served_name,
            api_key_secret=SecretKeyRef("key", "api-key"),
            replicas=1,
            min_available=1,
            extra_args=revision.extra_args,
        )
        role = "leader" if plan.nodes_per_replica > 1 else "server"
        result[f"{stack}-{revision.name}"] = (plan, vllm_arguments(spec, role))
    return result


def stack_values(stack: str) -> dict[str, Any]:
    """The stack file's values as the program reads them (strings stay strings, the rest is JSON)."""
    config, secret_keys = load_stack_config(stack)
    schema = load_schema()
    values = {}
    for key, value in config.items():
        name = key.removeprefix(f"{PROJECT}:")
        if name not in schema or schema[name].secret or key in secret_keys:
            continue
        values[name] = value if schema[name].type == "string" else json.loads(value)
    return values


POD_ARGS: dict[str, tuple[ServingPlan, list[str]]] = {}
for _stack in STACKS:
    POD_ARGS |= pod_arguments(stack_values(_stack), _stack)
POD_ARGS |= pod_arguments(TWO_REVISIONS, "two-revisions")
POD_ARGS |= pod_arguments(OFFLOAD_REVISION, "offload-revision")
CACHE = ModelCacheRef(bucket="cache-bucket", model="Qwen/Qwen3-8B", revision="a" * 40, prefix="llm")
PATCHES = {
    mode.value: serving_pod_patch(
        ServingCacheArgs(image="img@sha256:" + "0" * 64, cache=CACHE, service_account_name="vllm", mode=mode)
    )
    for mode in LoadMode
}


# A revision serving two LoRA adapters; their adapter_config.json comes from a local Hub cache (offline).
LORA_COMMIT = "c" * 40
TWO_ADAPTERS = {
    "model": "Qwen/Qwen3-8B",
    "maxModelLen": 8192,
    "gpus": ["L4"],
    "loraAdapters": [
        {"name": "sql", "source": "someorg/sql-lora"},
        {"name": "chat-de", "source": "someorg/de-lora", "revision": LORA_COMMIT},
    ],
}


def lora_pod_arguments(hub: Path) -> dict[str, tuple[ServingPlan, list[str]]]:
    from tests.sizing.test_adapters import hub_cache

    hub_cache(hub, "someorg/sql-lora", {"peft_type": "LORA", "r": 8})
    hub_cache(hub, "someorg/de-lora", {"peft_type": "LORA", "r": 48}, commit=LORA_COMMIT)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_CACHE", str(hub))
        patch.setenv("HF_HUB_OFFLINE", "1")
        return pod_arguments(TWO_ADAPTERS, "lora")


@pytest.fixture(scope="module")
def lora_args(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[ServingPlan, list[str]]]:
    return lora_pod_arguments(tmp_path_factory.mktemp("hf-cache"))


@pytest.fixture(scope="module")
def parsed(lora_args: dict[str, tuple[ServingPlan, list[str]]]) -> dict[str, Any]:
    cases = {name: [model_id, *plan_args(plan)] for name, (model_id, plan) in PLANS.items()}
    cases |= {name: args for name, (_, args) in lora_args.items()}
    cases |= {f"patch-{mode}": patch.model_args for mode, patch in PATCHES.items()}
    cases |= {name: args for name, (_, args) in POD_ARGS.items()}
    cases |= {name: ["m", *args] for name, args in REFUSED.items()}
    cases |= {case["name"]: case["args"] for case in multi_node_cases()}
    return parse_with_vllm(cases)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_what_the_preview_refuses_vllm_refuses_too(parsed: dict[str, Any], name: str) -> None:
    from infra.errors import UserError
    from infra.vllm.flags import check_extra_args

    assert not parsed[name]["ok"], f"vLLM accepts {REFUSED[name]}"
    with pytest.raises(UserError, match="is not a `vllm serve` flag"):
        check_extra_args(REFUSED[name], key="extraArgs")


@pytest.mark.parametrize("name", sorted(POD_ARGS))
def test_every_stacks_full_argument_list_parses_as_planned(parsed: dict[str, Any], name: str) -> None:
    plan, _ = POD_ARGS[name]
    result = parsed[name]
    assert result["ok"], result["error"]
    values = result["values"]
    assert values["tensor_parallel_size"] == plan.tensor_parallel_size
    assert values["max_model_len"] == plan.max_model_len
    assert values["max_num_seqs"] == plan.max_num_seqs
    assert values["gpu_memory_utilization"] == pytest.approx(plan.gpu_memory_utilization)
    assert values["port"] == 8000 and values["model"].startswith("/models/")
    assert len(values["served_model_name"]) == 1
    assert values["cpu_offload_gb"] == plan.cpu_offload_gib


def test_a_revisions_cpu_offload_reaches_vllm(parsed: dict[str, Any]) -> None:
    assert parsed["offload-revision-offload"]["values"]["cpu_offload_gb"] == 16


def test_a_revision_with_two_adapters_serves_them_with_the_planned_slots(
    parsed: dict[str, Any], lora_args: dict[str, tuple[ServingPlan, list[str]]]
) -> None:
    """vLLM's own parser reads --enable-lora, one slot per adapter at the largest rank rounded to its
    choices (48 -> 64), and both adapters by name at the paths their init containers pull to."""
    (name,) = lora_args
    plan, _ = lora_args[name]
    result = parsed[name]
    assert result["ok"], result["error"]
    values = result["values"]
    assert plan.lora is not None and (plan.lora.max_loras, plan.lora.max_lora_rank) == (2, 64)
    assert values["enable_lora"] is True
    assert (values["max_loras"], values["max_lora_rank"]) == (2, 64)
    modules = values["lora_modules"]
    assert len(modules) == 2
    assert "name='sql'" in modules[0] and "path='/models/someorg--sql-lora/main'" in modules[0]
    assert "name='chat-de'" in modules[1] and f"path='/models/someorg--de-lora/{LORA_COMMIT}'" in modules[1]
    assert values["served_model_name"] == ["Qwen/Qwen3-8B"] and values["model"].startswith("/models/")


def multi_node_cases() -> list[dict[str, Any]]:
    """A 405B plan over two nodes, as the LeaderWorkerSet's leader and worker run it (LWS's variables
    replaced by what the controller would inject)."""
    from infra.kubernetes.vllm_workload import vllm_arguments

    spec = multi_node_spec()
    cases = []
    for role in ("leader", "worker"):
        args = [
            a.replace("$(LWS_LEADER_ADDRESS)", "vllm-big-0.vllm-big.ns").replace("$(LWS_WORKER_INDEX)", "1")
            for a in vllm_arguments(spec, role)
        ]
        cases.append({"name": f"multi-node-{role}", "args": args})
    return cases


def multi_node_spec() -> Any:
    from infra.kubernetes.model_cache import SecretKeyRef
    from infra.kubernetes.serving_cache import RevisionCache, revision_cache_patch
    from infra.kubernetes.vllm_workload import InstanceShape, WorkloadSpec

    _, plan = PLANS["405B-multi-node"]
    cache = RevisionCache(plan.model, "main", plan.weights_total_bytes, "NVIDIA A100-SXM4-80GB", 8)
    return WorkloadSpec(
        name="vllm-big",
        namespace="ns",
        revision="big",
        image="i:1",
        plan=plan,
        instance=InstanceShape(vcpus=96, memory_gib=1152, gpus=8),
        cache_patch=revision_cache_patch(cache, bucket="b", image="i:1", reader_service_account="vllm"),
        checkpoint_bytes=cache.checkpoint_bytes,
        served_name="big",
        api_key_secret=SecretKeyRef("key", "api-key"),
        replicas=1,
        min_available=1,
    )


@pytest.mark.parametrize("role", ["leader", "worker"])
def test_multi_node_leader_and_worker_get_their_rank_and_the_leaders_address(
    parsed: dict[str, Any], role: str
) -> None:
    result = parsed[f"multi-node-{role}"]
    assert result["ok"], result["error"]
    values = result["values"]
    _, plan = PLANS["405B-multi-node"]
    assert values["nnodes"] == plan.nodes_per_replica == 2
    assert values["node_rank"] == (0 if role == "leader" else 1)
    assert values["master_addr"] == "vllm-big-0.vllm-big.ns"
    assert values["headless"] is (role == "worker")


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
    assert values["max_num_seqs"] == plan.max_num_seqs
    assert values["max_num_batched_tokens"] == plan.max_num_batched_tokens
    if plan.nodes_per_replica > 1:
        assert values["nnodes"] == plan.nodes_per_replica and values["distributed_executor_backend"] == "mp"
    assert values["cpu_offload_gb"] == plan.cpu_offload_gib


def test_offload_plans_are_parsed(parsed: dict[str, Any]) -> None:
    for name in ("offload-asked", "offload-chosen"):
        assert parsed[name]["values"]["cpu_offload_gb"] > 0, name


@pytest.mark.parametrize("mode", sorted(PATCHES))
def test_model_cache_arguments_parse(parsed: dict[str, Any], mode: str) -> None:
    result = parsed[f"patch-{mode}"]
    assert result["ok"], result["error"]
    values = result["values"]
    if mode == LoadMode.RUNAI_STREAMER.value:
        assert values["load_format"] == "runai_streamer" and values["model"].startswith("s3://cache-bucket/")
    else:
        assert values["load_format"] == "auto" and values["model"].startswith("/models/")
