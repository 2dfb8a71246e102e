"""VllmService under recording mocks: the revision's fill Job (as the writer, the HF token by reference,
replaced delete-first), its workload waiting for the filled cache and the reader identity, its Service and
PodDisruptionBudget; and a revision that shares another's cache entry runs no second Job."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import kubernetes_validate
import pulumi
import pytest

from infra.components.vllm_service import ServiceWiring, VllmService, VllmServiceArgs, workload_options
from infra.errors import UserError
from infra.kubernetes.serving_cache import GIB, AdapterCache, RevisionCache, fill_job_name
from infra.kubernetes.vllm_workload import InstanceShape
from infra.sizing.plan import LoraSlots
from infra.versions import KUBERNETES_VERSIONS
from tests.components.support import Recorded, make_plan, run

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/serving@sha256:" + "a" * 64
TAGS = {"project": "llm-serving", "stack": "test"}
HF_TOKEN_LITERAL = "hf_literal_must_never_show"
JOB = "kubernetes:batch/v1:Job"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"


def args(**changes: Any) -> VllmServiceArgs:
    base = VllmServiceArgs(
        revision="primary",
        plan=make_plan(),
        cache=RevisionCache("Qwen/Qwen3-8B", "main", 16 * GIB, "NVIDIA L4", region="us-east-1"),
        instance=InstanceShape(vcpus=4, memory_gib=16, gpus=1),
        served_name="Qwen/Qwen3-8B",
        wiring=ServiceWiring(
            namespace="serving",
            image=IMAGE,
            bucket="cache-bucket",
            reader_service_account="vllm",
            writer_service_account="model-cache-fill",
            api_key_secret_name="s-api-key",
            hf_token_secret_name="s-hf-token",
        ),
        node_selector={"llm-serving/pool": "gpu"},
        tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        replicas=2,
        min_replicas=2,
        tags=TAGS,
    )
    return replace(base, **changes)


@pytest.fixture(scope="module")
def recorded() -> Recorded:
    return run(lambda: VllmService("svc", args()))


def test_children_are_the_fill_job_workload_service_and_budget(recorded: Recorded) -> None:
    assert sorted(recorded.names()) == sorted(
        [
            ("llm-serving:index:VllmService", "svc"),
            (JOB, "svc-fill"),
            (DEPLOYMENT, "svc-workload"),
            ("kubernetes:core/v1:Service", "svc-service"),
            ("kubernetes:policy/v1:PodDisruptionBudget", "svc-pdb"),
        ]
    )
    component = recorded.one("llm-serving:index:VllmService", "svc")
    assert len(recorded.children_of(component)) == 4


def test_the_fill_job_runs_as_the_writer_with_the_token_by_reference(recorded: Recorded) -> None:
    job = recorded.inputs(JOB, "svc-fill")
    assert job["metadata"]["name"] == fill_job_name("Qwen/Qwen3-8B", "main")
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "model-cache-fill" and "tolerations" not in pod
    (push,) = pod["containers"]
    assert push["args"][:6] == ["push", "Qwen/Qwen3-8B", "--revision", "main", "--to", "s3://cache-bucket"]
    (token,) = [e for e in push["env"] if e["name"] == "HF_TOKEN"]
    assert token["valueFrom"] == {"secretKeyRef": {"name": "s-hf-token", "key": "token"}}
    assert recorded.one(JOB, "svc-fill").delete_before_replace
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate({"apiVersion": "batch/v1", "kind": "Job", **job}, version, strict=True)


def test_the_workload_waits_for_the_filled_cache(recorded: Recorded) -> None:
    workload = recorded.one(DEPLOYMENT, "svc-workload")
    assert recorded.one(JOB, "svc-fill").urn in workload.dependencies


def test_the_serving_pods_get_the_pool_the_key_by_reference_and_no_hf_token(recorded: Recorded) -> None:
    deployment = recorded.inputs(DEPLOYMENT, "svc-workload")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"llm-serving/pool": "gpu"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    (vllm,) = pod["containers"]
    env = {e["name"]: e for e in vllm["env"]}
    assert env["VLLM_API_KEY"]["valueFrom"] == {"secretKeyRef": {"name": "s-api-key", "key": "api-key"}}
    assert "HF_TOKEN" not in env and "s-hf-token" not in json.dumps(deployment)
    assert deployment["spec"]["replicas"] == 2
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(
            {"apiVersion": "apps/v1", "kind": "Deployment", **deployment}, version, strict=True
        )


def test_a_revision_sharing_a_cache_entry_runs_no_second_job() -> None:
    recorded = run(lambda: VllmService("svc", args(fill_cache=False, min_replicas=0, replicas=1)))
    assert not recorded.of_type(JOB)
    assert not recorded.of_type("kubernetes:policy/v1:PodDisruptionBudget")  # nothing to protect at min 0


def test_a_secret_token_output_never_leaks_a_literal() -> None:
    recorded = run(
        lambda: VllmService(
            "svc",
            args(wiring=replace(args().wiring, hf_token_secret_name=pulumi.Output.secret(HF_TOKEN_LITERAL))),
        )
    )
    assert HF_TOKEN_LITERAL not in json.dumps([recorded.inputs(t, n) for t, n in recorded.names()])


def test_a_bad_extra_argument_fails_at_construction_naming_its_key() -> None:
    with pytest.raises(
        UserError, match=r"^revisions\[2\]\.extraArgs: --swap-space is not a `vllm serve` flag"
    ):
        args(extra_args=("--swap-space", "4"), extra_args_key="revisions[2].extraArgs")


def test_adapters_get_a_fill_job_each_unless_another_revision_fills_it() -> None:
    adapters = (
        AdapterCache("sql", "org/sql-lora", "main", GIB, "us-east-1"),
        AdapterCache("de", "org/de-lora", "v2", GIB, "us-east-1"),
    )
    recorded = run(
        lambda: VllmService(
            "svc",
            args(
                plan=replace(make_plan(), lora=LoraSlots(2, 16)),
                cache=replace(args().cache, adapters=adapters),
                adapters_filled_elsewhere=frozenset({("org/de-lora", "v2")}),
            ),
        )
    )
    assert sorted(name for type_, name in recorded.names() if type_ == JOB) == [
        "svc-fill",
        "svc-fill-lora-sql",
    ]
    (push,) = recorded.inputs(JOB, "svc-fill-lora-sql")["spec"]["template"]["spec"]["containers"]
    assert push["args"][:4] == ["push", "org/sql-lora", "--revision", "main"]
    assert {
        "name": "HF_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "s-hf-token", "key": "token"}},
    } in push["env"]
    workload = recorded.one(DEPLOYMENT, "svc-workload")
    assert {recorded.one(JOB, "svc-fill").urn, recorded.one(JOB, "svc-fill-lora-sql").urn} <= set(
        workload.dependencies
    )
    pod = recorded.inputs(DEPLOYMENT, "svc-workload")["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]][:3] == ["model-pull", "lora-pull-0", "lora-pull-1"]
    vllm_args = pod["containers"][0]["args"]
    assert vllm_args[vllm_args.index("--lora-modules") + 1 :][:2] == [
        "sql=/models/org--sql-lora/main",
        "de=/models/org--de-lora/v2",
    ]


def test_under_keda_pulumi_sets_replicas_only_when_it_creates_the_workload() -> None:
    autoscaled = workload_options(args(autoscaled=True), parent=None, depends_on=[])
    assert autoscaled.ignore_changes == ["spec.replicas"]
    assert workload_options(args(), parent=None, depends_on=[]).ignore_changes is None
