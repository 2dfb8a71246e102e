"""`python -m infra render` for every stack: the real program under mocks, every object validated.

For each stack in stacks/: render succeeds; every Kubernetes object passes kubernetes-validate (strict) for
1.31, 1.32 and 1.33, every custom resource its CRD, and so does the serving-cache pod template (the model
cache's init containers around a placeholder vLLM container); the GPU pool is exactly the plan; the
model-cache bucket blocks public access and is encrypted; the fill Job runs the stack's image as the
writer; no resource name is used twice. Then the failures: unknown stacks, bad config files, unknown
models, models that cannot fit, a cost ceiling exceeded, an unpinned image or an unpinned streamed model.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from infra import render as render_module
from infra.errors import UserError
from infra.render import REDACTED, Rendered, render
from infra.versions import KUBERNETES_VERSIONS
from tests.components.support import takes_tags
from tests.conftest import run_infra, shared_path
from tests.kubernetes.crd_schemas import (
    is_custom_resource,
    validate_custom_resource,
    validate_rendered,
)
from tests.stacks import PLACEHOLDER_HF_TOKEN, STACKS, as_deployed, needs_hf_token

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _offline_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module", params=STACKS)
def rendered(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Path, Rendered]:
    stack = request.param
    out = tmp_path_factory.mktemp(f"render-{stack}")
    with as_deployed():
        result = render(stack, out)
    return stack, out, result


def test_there_are_dev_staging_and_prod_stacks() -> None:
    assert {"dev", "staging", "prod"} <= set(STACKS)


def test_render_writes_manifests_resources_and_summary(rendered: tuple[str, Path, Rendered]) -> None:
    stack, out, result = rendered
    files = sorted((out / "kubernetes").rglob("*.yaml"))
    assert len(files) == len(result.kubernetes_objects()) >= 10
    assert {f.parent.name for f in files} >= {
        f"cluster-llm-{stack}",
        f"gpunodepool-llm-{stack}-gpu-primary",
        f"modelcache-llm-{stack}-model-cache",
        f"vllmservice-llm-{stack}-primary",
        f"servingendpoint-llm-{stack}-endpoint",
    }
    resources = json.loads((out / "resources.json").read_text())
    assert len(resources["resources"]) == len(result.registrations)
    assert all({"type", "name", "parent", "inputs"} <= entry.keys() for entry in resources["resources"])
    summary = (out / "summary.md").read_text()
    plan = _plan(result)
    assert plan["instance_type"] in summary
    assert f"{result.outputs['plan']['cost_per_hour_usd_at_max_replicas']:.2f}" in summary


def _plan(result: Rendered, revision: str = "primary") -> dict[str, Any]:
    return result.outputs["plan"]["revisions"][revision]


def test_the_plan_is_logged_and_exported(rendered: tuple[str, Path, Rendered]) -> None:
    _, _, result = rendered
    plan = _plan(result)
    (line,) = [m for m in result.logs if m.startswith("info: serving plan for revision primary")]
    assert plan["instance_type"] in line and plan["model"] in line
    assert plan["vllm_args"] and plan["replicas"]["max"] >= plan["replicas"]["min"]
    served = result.outputs["servedModels"]["primary"]
    assert served == {
        "servedModelName": plan["served_model_name"],
        "maxModelLen": plan["max_model_len"],
        "kvCacheTokens": plan["kv_cache_tokens"],
        "weight": 100,
    }


def test_every_kubernetes_object_validates(rendered: tuple[str, Path, Rendered]) -> None:
    _, out, _ = rendered
    validate_rendered(out / "kubernetes")


def _the(result: Rendered, type_: str) -> dict[str, Any]:
    (registration,) = result.of_type(type_)
    return render_module.redact(registration.inputs)


def test_gpu_pool_is_exactly_the_plan(rendered: tuple[str, Path, Rendered]) -> None:
    stack, _, result = rendered
    plan = _plan(result)
    pool = _the(result, "kubernetes:karpenter.sh/v1:NodePool")["spec"]
    requirements = {r["key"]: r["values"] for r in pool["template"]["spec"]["requirements"]}
    assert requirements["node.kubernetes.io/instance-type"] == [plan["instance_type"]]
    assert requirements["karpenter.sh/capacity-type"] == [plan["capacity_type"]]
    stack_file = yaml.safe_load((REPO / "stacks" / f"Pulumi.{stack}.yaml").read_text())["config"]
    assert plan["capacity_type"] == stack_file["llm-serving:capacityType"]
    replicas = stack_file["llm-serving:replicas"]
    # room for max replicas and a rollout's surge replica; spread replicas (min >= 2) take a node each
    wanted = replicas["max"] + 1
    spread = replicas["min"] >= 2
    per_node = 1 if spread else max(1, plan["gpu"]["count"] // plan["gpus_per_replica"])
    nodes = -(-wanted // per_node) if plan["nodes_per_replica"] == 1 else wanted * plan["nodes_per_replica"]
    assert pool["limits"] == {"nvidia.com/gpu": str(nodes * plan["gpu"]["count"]), "nodes": str(nodes)}
    total = result.outputs["plan"]["cost_per_hour_usd_at_max_replicas"]
    assert total <= stack_file["llm-serving:maxCostPerHour"]


def test_model_cache_bucket_is_private_and_encrypted(rendered: tuple[str, Path, Rendered]) -> None:
    _, _, result = rendered
    block = _the(result, "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock")
    assert [
        block[k]
        for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
    ] == [True] * 4
    sse = _the(
        result, "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
    )
    assert sse["rules"][0]["applyServerSideEncryptionByDefault"]["sseAlgorithm"] in ("AES256", "aws:kms")
    (bucket,) = result.of_type("aws:s3/bucket:Bucket")
    assert block["bucket"] == sse["bucket"] == f"<known after deploy: {bucket.name}.id>"


def _fill_job(out: Path) -> dict[str, Any]:
    (path,) = (out / "kubernetes").rglob("job-*model-cache-fill-*.yaml")
    return yaml.safe_load(path.read_text())


def test_the_fill_job_runs_the_stacks_image_as_the_writer(rendered: tuple[str, Path, Rendered]) -> None:
    stack, out, result = rendered
    job = _fill_job(out)
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == result.outputs["servingImage"]
    assert "@" in result.outputs["servingImage"]  # built: run by digest
    assert pod["serviceAccountName"] == "model-cache-fill"
    stack_file = yaml.safe_load((REPO / "stacks" / f"Pulumi.{stack}.yaml").read_text())["config"]
    assert container["args"][1] == stack_file["llm-serving:model"] == _plan(result)["model"]
    assert "tolerations" not in pod  # no GPU: the GPU nodes' taint keeps it on the system nodes
    assert int(job["metadata"]["annotations"]["pulumi.com/timeoutSeconds"]) > 600
    (registration,) = result.of_type("kubernetes:batch/v1:Job")
    assert registration.delete_before_replace
    scratch = int(container["resources"]["requests"]["ephemeral-storage"].removesuffix("Gi"))
    (root_volume,) = _the(result, "aws:ec2/launchTemplate:LaunchTemplate")["blockDeviceMappings"]
    assert root_volume["ebs"]["volumeSize"] >= scratch + 40  # the Job's scratch next to the unpacked image


def _workload(out: Path, revision: str = "primary") -> dict[str, Any]:
    (path,) = [
        p
        for p in (out / "kubernetes").rglob(f"*-vllm-{revision}.yaml")
        if p.name.startswith(("deployment-", "leaderworkerset-"))
    ]
    return yaml.safe_load(path.read_text())


def _pod(workload: dict[str, Any]) -> dict[str, Any]:
    if workload["kind"] == "Deployment":
        return workload["spec"]["template"]["spec"]
    return workload["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["spec"]


def test_the_workload_runs_the_plan_on_the_pool(rendered: tuple[str, Path, Rendered]) -> None:
    """GPU requests are the plan's GPUs per pod; node selection and tolerations are the pool's."""
    _, out, result = rendered
    plan = _plan(result)
    pod = _pod(_workload(out))
    (vllm,) = pod["containers"]
    gpus = plan["gpus_per_replica"] // plan["nodes_per_replica"]
    assert vllm["resources"]["requests"]["nvidia.com/gpu"] == vllm["resources"]["limits"]["nvidia.com/gpu"]
    assert int(vllm["resources"]["limits"]["nvidia.com/gpu"]) == gpus
    pool = _the(result, "kubernetes:karpenter.sh/v1:NodePool")
    assert pod["nodeSelector"].items() <= pool["spec"]["template"]["metadata"]["labels"].items()
    assert pod["nodeSelector"] == {"llm-serving/pool": pool["metadata"]["name"]}
    taints = pool["spec"]["template"]["spec"]["taints"]
    assert [(t["key"], t["effect"]) for t in taints] == [(t["key"], t["effect"]) for t in pod["tolerations"]]
    assert int(vllm["resources"]["requests"]["cpu"]) >= 1


def test_the_workload_reads_the_cache_as_the_reader_and_never_sees_a_secret(
    rendered: tuple[str, Path, Rendered],
) -> None:
    _, out, result = rendered
    workload = _workload(out)
    pod = _pod(workload)
    assert pod["serviceAccountName"] == "vllm" and pod["automountServiceAccountToken"] is False
    assert [c["name"] for c in pod["initContainers"]] == ["model-pull", "compile-cache-restore"]
    assert {c["image"] for c in [*pod["initContainers"], *pod["containers"]]} == {
        result.outputs["servingImage"]
    }
    (vllm,) = pod["containers"]
    env = {e["name"]: e for e in vllm["env"]}
    secret = yaml.safe_load(next((out / "kubernetes").rglob("secret-*api-key.yaml")).read_text())
    assert env["VLLM_API_KEY"] == {
        "name": "VLLM_API_KEY",
        "valueFrom": {"secretKeyRef": {"name": secret["metadata"]["name"], "key": "api-key"}},
    }
    assert env["HF_HUB_OFFLINE"]["value"] == "1" and "HF_TOKEN" not in env
    assert "--api-key" not in vllm["args"]
    text = yaml.safe_dump(workload)
    assert "hf-token" not in text and REDACTED not in text
    plan = _plan(result)
    restore = pod["initContainers"][1]["args"]
    assert restore[restore.index("--tensor-parallel-size") + 1] == str(plan["tensor_parallel_size"])


def test_the_workload_is_locked_down_and_rolls_out_without_losing_capacity(
    rendered: tuple[str, Path, Rendered],
) -> None:
    stack, out, _ = rendered
    workload = _workload(out)
    pod = _pod(workload)
    (vllm,) = pod["containers"]
    context = vllm["securityContext"]
    assert context["readOnlyRootFilesystem"] and context["runAsNonRoot"]
    assert (
        context["capabilities"] == {"drop": ["ALL"]} and context["seccompProfile"]["type"] == "RuntimeDefault"
    )
    writable = {m["mountPath"] for m in vllm["volumeMounts"] if not m.get("readOnly")}
    assert writable == {"/tmp", "/home/vllm", "/dev/shm", "/vllm-cache"}
    assert vllm["startupProbe"]["httpGet"]["path"] == "/health"
    assert vllm["livenessProbe"]["httpGet"]["path"] == vllm["readinessProbe"]["httpGet"]["path"] == "/health"
    assert workload["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    grace = pod["terminationGracePeriodSeconds"]
    args = vllm["args"]
    assert grace > vllm["lifecycle"]["preStop"]["sleep"]["seconds"] + int(
        args[args.index("--shutdown-timeout") + 1]
    )
    replicas = _replicas(stack)
    budgets = list((out / "kubernetes").rglob("poddisruptionbudget-*.yaml"))
    if replicas["min"] >= 1:
        (budget,) = budgets
        assert yaml.safe_load(budget.read_text())["spec"]["minAvailable"] == replicas["min"]
    else:
        assert not budgets
    spread = "affinity" in pod
    assert spread == (replicas["min"] >= 2)


def _monitoring(out: Path, kind: str) -> list[dict[str, Any]]:
    return [
        yaml.safe_load(path.read_text())
        for path in sorted((out / "kubernetes").rglob(f"monitoring-*/{kind.lower()}-*.yaml"))
    ]


def test_every_revision_is_scraped_and_autoscaled_within_its_replicas_and_pool(
    rendered: tuple[str, Path, Rendered],
) -> None:
    stack, out, result = rendered
    replicas = _replicas(stack)
    (scaled,) = _monitoring(out, "ScaledObject")
    spec = scaled["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "vllm-primary"}
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (replicas["min"], replicas["max"])
    triggers = {t["name"]: t["metadata"] for t in spec["triggers"]}
    assert {"vllm-waiting", "vllm-kv-cache"} <= set(triggers)
    assert ("wake-on-request" in triggers) == (replicas["min"] == 0)
    # the Karpenter pool holds maxReplicas plus a rollout's surge
    nodepool = next(o for _, o in result.kubernetes_objects() if o["kind"] == "NodePool")
    assert int(nodepool["spec"]["limits"]["nodes"]) >= replicas["max"] + 1
    monitors = {m["metadata"]["name"]: m["spec"] for m in _monitoring(out, "PodMonitor")}
    assert monitors["vllm-primary"]["selector"] == {"matchLabels": {"llm-serving/revision": "primary"}}
    assert ("http-add-on-interceptor" in monitors) == (replicas["min"] == 0)
    (rule,) = _monitoring(out, "PrometheusRule")
    configured = yaml.safe_load((REPO / "stacks" / f"Pulumi.{stack}.yaml").read_text())["config"]
    slo = configured.get("llm-serving:monitoring", {}).get("ttftP95SloSeconds", 2)
    (ttft,) = [
        r for g in rule["spec"]["groups"] for r in g["rules"] if r.get("alert") == "VllmTtftP95AboveSlo"
    ]
    assert float(ttft["expr"].rpartition(">")[2]) == slo


def test_scale_from_zero_objects_validate(rendered: tuple[str, Path, Rendered]) -> None:
    """A stack at minimum 0 (dev): its InterceptorRoute against the HTTP add-on's CRD, which only
    `make schemas` brings (../shared lacks it, so CI skips this)."""
    _, out, _ = rendered
    routes = sorted((out / "kubernetes").rglob("interceptorroute-*.yaml"))
    if not routes:
        pytest.skip("this stack has no revision at minimum 0")
    shared_path("k8s-schemas", "http.keda.sh_interceptorroutes.yaml")  # skips, naming `make schemas`
    for path in routes:
        validate_custom_resource(yaml.safe_load(path.read_text()))


def _replicas(stack: str) -> dict[str, int]:
    return yaml.safe_load((REPO / "stacks" / f"Pulumi.{stack}.yaml").read_text())["config"][
        "llm-serving:replicas"
    ]


def test_the_endpoint_sends_only_the_openai_api_to_the_revisions_by_weight(
    rendered: tuple[str, Path, Rendered],
) -> None:
    """A revision that keeps a replica is the ALB's target itself; one at minimum 0 (dev) is reached through
    the HTTP add-on's interceptor, which holds requests while it wakes: ALB -> interceptor -> Service."""
    stack, out, _ = rendered
    scales_to_zero = _replicas(stack)["min"] == 0
    (path,) = (out / "kubernetes").rglob("ingress-*.yaml")
    ingress = yaml.safe_load(path.read_text())
    annotations = ingress["metadata"]["annotations"]
    assert annotations["alb.ingress.kubernetes.io/scheme"] == "internal"
    action = json.loads(annotations["alb.ingress.kubernetes.io/actions.vllm-revisions"])
    (target_group,) = action["forwardConfig"]["targetGroups"]
    (rule,) = ingress["spec"]["rules"]
    assert [(p["path"], p["pathType"]) for p in rule["http"]["paths"]] == [("/v1", "Prefix")]
    service = yaml.safe_load(next((out / "kubernetes").rglob("service-*-vllm-primary.yaml")).read_text())
    assert service["spec"]["ports"][0]["port"] == 8000
    (policy_path,) = (out / "kubernetes").rglob("networkpolicy-*.yaml")
    policy = yaml.safe_load(policy_path.read_text())
    serving = next(rule["from"] for rule in policy["spec"]["ingress"] if rule["ports"][0]["port"] == 8000)
    idle_timeout = int(annotations["alb.ingress.kubernetes.io/load-balancer-attributes"].rpartition("=")[2])
    routes = list((out / "kubernetes").rglob("interceptorroute-*.yaml"))
    if not scales_to_zero:
        assert target_group == {"serviceName": "vllm-primary", "servicePort": "8000", "weight": 100}
        assert routes == [] and not any("podSelector" in source for source in serving)
        assert idle_timeout == 600
        return
    assert target_group == {"serviceName": "vllm-primary-wake", "servicePort": "8080", "weight": 100}
    wake = yaml.safe_load(next((out / "kubernetes").rglob("service-*-vllm-primary-wake.yaml")).read_text())
    assert wake["spec"]["selector"] == {
        "app.kubernetes.io/component": "interceptor",
        "app.kubernetes.io/name": "http-add-on",
    }
    assert wake["spec"]["ports"][0]["port"] == 8080
    (route_path,) = routes
    route = yaml.safe_load(route_path.read_text())["spec"]
    assert route["target"] == {"service": "vllm-primary", "port": 8000}
    assert route["rules"] == [{"hosts": ["*"], "paths": [{"value": "/v1"}]}]
    # the interceptor may hold a request through a cold start, and the ALB keeps the silent connection as long
    readiness_s = int(route["timeouts"]["readiness"].removesuffix("s"))
    startup = _workload(out)["spec"]["template"]["spec"]["containers"][0]["startupProbe"]
    assert readiness_s > startup["periodSeconds"] * startup["failureThreshold"]
    assert idle_timeout >= readiness_s
    assert {"podSelector": {"matchLabels": wake["spec"]["selector"]}} in serving


def test_cache_pods_get_aws_access_only_through_pod_identity(rendered: tuple[str, Path, Rendered]) -> None:
    """Identities by reference: each cache pod's service account is the one its role is bound to, in the
    pod's namespace, and no manifest carries an AWS key."""
    _, out, result = rendered
    job = _fill_job(out)
    workload = _workload(out)
    pod = {"metadata": workload["metadata"], "spec": _pod(workload)}
    bindings = {
        (a["namespace"], a["serviceAccount"]): a["roleArn"]
        for a in (
            render_module.redact(r.inputs)
            for r in result.of_type("aws:eks/podIdentityAssociation:PodIdentityAssociation")
        )
    }
    writer = bindings[(job["metadata"]["namespace"], job["spec"]["template"]["spec"]["serviceAccountName"])]
    reader = bindings[(pod["metadata"]["namespace"], pod["spec"]["serviceAccountName"])]
    assert "model-cache-writer" in writer and "model-cache-reader" in reader
    for path in (out / "kubernetes").rglob("*.yaml"):
        text = path.read_text()
        for forbidden in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AKIA"):
            assert forbidden not in text, f"{path.name} carries {forbidden}"


def test_a_preview_registers_the_same_resources(rendered: tuple[str, Path, Rendered]) -> None:
    """Under `pulumi preview` applies on unknown values do not run: the program must not depend on them
    for its shape."""
    stack, _, result = rendered
    with as_deployed():
        previewed = render_module.run_program(stack, preview=True)
    assert sorted((r.type, r.name) for r in previewed.registrations) == sorted(
        (r.type, r.name) for r in result.registrations
    )


def test_no_resource_name_is_used_twice(rendered: tuple[str, Path, Rendered]) -> None:
    _, _, result = rendered
    names = [r.name for r in result.registrations]
    assert len(names) == len(set(names)), sorted({n for n in names if names.count(n) > 1})


def test_every_aws_resource_carries_the_stack_tags(rendered: tuple[str, Path, Rendered]) -> None:
    stack, _, result = rendered
    taggable = [r for r in result.registrations if r.custom and takes_tags(r.type)]
    assert len(taggable) > 5
    for registration in taggable:  # a resource that takes tags and has none fails too
        tags = registration.inputs.get("tags") or {}
        assert tags.get("stack") == stack and tags.get("project") == "llm-serving", registration.name


def test_secrets_are_redacted(rendered: tuple[str, Path, Rendered]) -> None:
    _, out, result = rendered
    assert result.outputs["apiKey"] == REDACTED and result.outputs["kubeconfig"] == REDACTED
    secret = yaml.safe_load(next((out / "kubernetes").rglob("secret-*api-key.yaml")).read_text())
    assert secret["stringData"] == {"api-key": REDACTED}


# --- stacks from a temporary stacks/ directory ------------------------------------------------------------------


@pytest.fixture
def stacks_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(render_module, "STACKS_DIR", tmp_path)
    return tmp_path


def write_stack(stacks_dir: Path, config: dict[str, Any], name: str = "t") -> str:
    namespaced = {k if ":" in k else f"llm-serving:{k}": v for k, v in config.items()}
    (stacks_dir / f"Pulumi.{name}.yaml").write_text(yaml.safe_dump({"config": namespaced}))
    return name


DEV_LIKE = {
    "model": "Qwen/Qwen3-8B",
    "maxModelLen": 8192,
    "gpus": ["L4"],
    "capacityType": "spot",
    "replicas": {"min": 0, "max": 1},
}


def test_secrets_from_the_stack_file_never_appear(stacks_dir: Path, tmp_path: Path) -> None:
    stack = write_stack(
        stacks_dir, {**DEV_LIKE, "hfToken": {"secure": "v1:HFCIPHER"}, "apiKey": {"secure": "v1:KEYCIPHER"}}
    )
    out = tmp_path / "out"
    result = render(stack, out)
    text = (out / "resources.json").read_text() + "".join(p.read_text() for p in out.rglob("*.yaml"))
    assert "HFCIPHER" not in text and "KEYCIPHER" not in text and "encrypted in the stack file" not in text
    # the API key is the stack's; only Grafana's admin password is generated
    generated = [r.name for r in result.of_type("random:index/randomPassword:RandomPassword")]
    assert generated == [f"llm-{stack}-monitoring-grafana-password"]
    token = yaml.safe_load(next(out.rglob("secret-*hf-token.yaml")).read_text())
    assert token["stringData"] == {"token": REDACTED}


def test_the_hf_token_reaches_the_fill_job_only_by_reference(stacks_dir: Path, tmp_path: Path) -> None:
    stack = write_stack(stacks_dir, {**DEV_LIKE, "hfToken": {"secure": "v1:HFCIPHER"}})
    out = tmp_path / "out"
    render(stack, out)
    token_secret = yaml.safe_load(next(out.rglob("secret-*hf-token.yaml")).read_text())
    (container,) = _fill_job(out)["spec"]["template"]["spec"]["containers"]
    (token,) = [e for e in container["env"] if e["name"] == "HF_TOKEN"]
    assert token == {
        "name": "HF_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": token_secret["metadata"]["name"], "key": "token"}},
    }


def test_a_prebuilt_image_is_run_as_named_and_nothing_is_built(stacks_dir: Path, tmp_path: Path) -> None:
    reference = "registry.example.com/llm/serving:v0.33.0-1"
    stack = write_stack(stacks_dir, {**DEV_LIKE, "servingImage": reference})
    out = tmp_path / "out"
    result = render(stack, out)
    assert not result.of_type("docker-build:index:Image") and not result.of_type(
        "aws:ecr/repository:Repository"
    )
    assert result.outputs["servingImage"] == reference
    assert _fill_job(out)["spec"]["template"]["spec"]["containers"][0]["image"] == reference


def test_runai_streamer_renders_a_streaming_workload(stacks_dir: Path, tmp_path: Path) -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    stack = write_stack(
        stacks_dir,
        {**DEV_LIKE, "modelLoadMode": "runai_streamer", "modelRevision": commit, "compileCache": False},
    )
    out = tmp_path / "out"
    render(stack, out)
    workload = _workload(out)
    pod = _pod(workload)
    assert [c["name"] for c in pod["initContainers"]] == ["model-check"]
    args = pod["containers"][0]["args"]
    assert args[args.index("--load-format") + 1] == "runai_streamer"
    assert args[args.index("--model") + 1].startswith("s3://") and commit in args[args.index("--model") + 1]
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(workload, version, strict=True)
    assert _fill_job(out)["spec"]["template"]["spec"]["containers"][0]["args"][3] == commit


TWO_REVISIONS = {
    **DEV_LIKE,
    "maxCostPerHour": 5,
    "revisions": [
        {"name": "stable", "weight": 70},
        {
            "name": "canary",
            "weight": 30,
            "modelRevision": "0123456789abcdef0123456789abcdef01234567",
            "replicas": {"min": 1, "max": 1},  # one revision with traffic may scale to zero
        },
        {"name": "shadow", "weight": 0, "extraArgs": ["--enforce-eager"]},
    ],
}


def test_revisions_get_their_own_workload_and_the_endpoint_splits_by_the_configured_weights(
    stacks_dir: Path, tmp_path: Path
) -> None:
    stack = write_stack(stacks_dir, TWO_REVISIONS)
    out = tmp_path / "out"
    result = render(stack, out)
    (path,) = out.rglob("ingress-*.yaml")
    annotations = yaml.safe_load(path.read_text())["metadata"]["annotations"]
    groups = json.loads(annotations["alb.ingress.kubernetes.io/actions.vllm-revisions"])["forwardConfig"]
    assert {g["serviceName"]: g["weight"] for g in groups["targetGroups"]} == {
        "vllm-stable-wake": 70,  # minimum 0: through the interceptor that wakes it
        "vllm-canary": 30,
        "vllm-shadow": 0,  # minimum 0 without traffic: stays at zero, nothing to wake it
    }
    (route,) = out.rglob("interceptorroute-*.yaml")
    assert yaml.safe_load(route.read_text())["spec"]["target"]["service"] == "vllm-stable"
    for revision in ("stable", "canary", "shadow"):
        assert _workload(out, revision)["spec"]["replicas"] == 1  # each starts with one; then KEDA decides
    assert "--enforce-eager" in _pod(_workload(out, "shadow"))["containers"][0]["args"]
    # stable and shadow read the same cache entry: one fill Job; canary's commit gets its own
    assert len(result.of_type("kubernetes:batch/v1:Job")) == 2
    assert len(result.of_type("kubernetes:karpenter.sh/v1:NodePool")) == 3
    # Karpenter, the device plugin once, the LBC; monitoring's stack, DCGM exporter, KEDA and its HTTP add-on
    assert len(result.of_type("kubernetes:helm.sh/v3:Release")) == 7
    for manifest_path in out.rglob("*.yaml"):
        manifest = yaml.safe_load(manifest_path.read_text())
        if not is_custom_resource(manifest):
            for version in KUBERNETES_VERSIONS:
                kubernetes_validate.validate(manifest, version, strict=True)


def test_a_cpu_offload_revision_renders_one_node_next_to_the_pipeline_revision(
    stacks_dir: Path, tmp_path: Path
) -> None:
    """cpuOffloadGb per revision: Qwen3-14B in 16 bits on one L4 with 16 GiB of weights in host memory,
    next to the revision that needs three nodes without offload; both validate."""
    stack = write_stack(
        stacks_dir,
        {
            "model": "Qwen/Qwen3-14B",
            "instanceTypes": ["g6.4xlarge"],
            "revisions": [
                {"name": "offload", "weight": 100, "cpuOffloadGb": 16},
                {"name": "pipeline", "weight": 0},
            ],
        },
    )
    out = tmp_path / "out"
    result = render(stack, out)
    offload, pipeline = _plan(result, "offload"), _plan(result, "pipeline")
    assert (offload["cpu_offload_gib"], offload["nodes_per_replica"]) == (16, 1)
    assert (pipeline["cpu_offload_gib"], pipeline["nodes_per_replica"]) == (0, 3)
    assert any("PCIe" in note for note in offload["notes"])
    workload = _workload(out, "offload")
    assert workload["kind"] == "Deployment"
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(workload, version, strict=True)
    (vllm,) = _pod(workload)["containers"]
    assert vllm["args"][vllm["args"].index("--cpu-offload-gb") + 1] == "16"
    # the pinned weights, vLLM's own processes and /dev/shm fit under the pod's memory limit
    limit_gib = int(vllm["resources"]["limits"]["memory"].removesuffix("Gi"))
    (shm,) = [v for v in _pod(workload)["volumes"] if v["name"] == "dshm"]
    assert limit_gib >= 16 + 4 + int(shm["emptyDir"]["sizeLimit"].removesuffix("Gi"))
    leader_worker_set = _workload(out, "pipeline")
    validate_custom_resource(leader_worker_set)
    leader = leader_worker_set["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["spec"]["containers"][0]
    assert "--cpu-offload-gb" not in leader["args"]


def test_a_multi_node_plan_renders_a_leader_worker_set_that_validates(
    stacks_dir: Path, tmp_path: Path
) -> None:
    stack = write_stack(
        stacks_dir,
        {
            "model": "meta-llama/Llama-3.1-405B-Instruct",
            "maxModelLen": 8192,
            "gpus": ["A100-80GB"],
            "hfToken": PLACEHOLDER_HF_TOKEN,
        },
    )
    out = tmp_path / "out"
    result = render(stack, out)
    plan = _plan(result)
    assert plan["nodes_per_replica"] == 2
    workload = _workload(out)
    assert workload["kind"] == "LeaderWorkerSet"
    validate_custom_resource(workload)
    template = workload["spec"]["leaderWorkerTemplate"]
    assert template["size"] == 2 and workload["spec"]["startupPolicy"] == "LeaderCreated"
    leader = template["leaderTemplate"]["spec"]["containers"][0]
    worker = template["workerTemplate"]["spec"]["containers"][0]
    assert leader["args"][leader["args"].index("--node-rank") + 1] == "0"
    assert worker["args"][worker["args"].index("--node-rank") + 1] == "$(LWS_WORKER_INDEX)"
    assert worker["args"][worker["args"].index("--master-addr") + 1] == "$(LWS_LEADER_ADDRESS)"
    assert "--headless" in worker["args"] and "startupProbe" not in worker and "startupProbe" in leader
    per_node = str(plan["gpus_per_replica"] // 2)
    assert (
        leader["resources"]["limits"]["nvidia.com/gpu"]
        == worker["resources"]["limits"]["nvidia.com/gpu"]
        == per_node
    )
    service = yaml.safe_load(next(out.rglob("service-*-vllm-primary.yaml")).read_text())
    assert service["spec"]["selector"]["llm-serving/role"] == "leader"


def test_the_api_endpoint_opens_only_to_the_listed_networks(stacks_dir: Path, tmp_path: Path) -> None:
    stack = write_stack(
        stacks_dir, {**DEV_LIKE, "cluster": {"mode": "new", "publicAccessCidrs": ["203.0.113.7/32"]}}
    )
    vpc = _the(render(stack, tmp_path / "out"), "aws:eks/cluster:Cluster")["vpcConfig"]
    assert vpc["endpointPublicAccess"] is True and vpc["publicAccessCidrs"] == ["203.0.113.7/32"]
    bad = write_stack(
        stacks_dir, {**DEV_LIKE, "cluster": {"mode": "new", "publicAccessCidrs": ["203.0.113.7/24"]}}, "bad"
    )
    with pytest.raises(
        UserError, match=r"^cluster\.publicAccessCidrs: '203\.0\.113\.7/24' is not an IPv4 network"
    ):
        render(bad, tmp_path / "bad")


def test_an_existing_cluster_renders_without_creating_one(stacks_dir: Path, tmp_path: Path) -> None:
    stack = write_stack(stacks_dir, {**DEV_LIKE, "cluster": {"mode": "existing", "name": "shared-gpu"}})
    result = render(stack, tmp_path / "out")
    assert not result.of_type("aws:eks/cluster:Cluster") and not result.of_type("aws:ec2/vpc:Vpc")
    node_class = _the(result, "kubernetes:karpenter.k8s.aws/v1:EC2NodeClass")["spec"]
    assert node_class["role"] == "KarpenterNodeRole-shared-gpu"
    assert node_class["subnetSelectorTerms"] == [{"tags": {"karpenter.sh/discovery": "shared-gpu"}}]
    validate_custom_resource(
        yaml.safe_load(next((tmp_path / "out").rglob("ec2nodeclass-*.yaml")).read_text())
    )


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({**DEV_LIKE, "capacityType": "spott"}, "capacityType: must be 'spot' or 'on-demand', got 'spott'"),
        ({**DEV_LIKE, "replicas": {"min": 2, "max": 1}}, "replicas: min (2) must not exceed max (1)"),
        ({**DEV_LIKE, "maxModelLen": "8k"}, "maxModelLen: must be of type integer, got '8k'"),
        ({**DEV_LIKE, "gpu": ["L4"]}, "gpu: unknown config key in stack 't'"),
        (
            {**DEV_LIKE, "model": "nobody/NoSuchModel-7B"},
            "model: model 'nobody/NoSuchModel-7B' is not in the built-in",
        ),
        (
            {
                "model": "meta-llama/Llama-3.1-405B-Instruct",
                "instanceTypes": ["g6.xlarge"],
                "hfToken": PLACEHOLDER_HF_TOKEN,
            },
            "model: ",
        ),
        ({**DEV_LIKE, "maxCostPerHour": 0.1}, "maxCostPerHour: the plans cost $0.48/h at max replicas"),
        (
            {**DEV_LIKE, "revisions": [{"name": "a", "weight": 60}, {"name": "b", "weight": 30}]},
            "revisions: traffic weights must sum to 100, got 90",
        ),
        (
            {**DEV_LIKE, "revisions": [{"name": "a", "weight": 100, "extraArgs": ["-tp", "2"]}]},
            "revisions[0].extraArgs: --tensor-parallel-size cannot be set here",
        ),
        (
            {**DEV_LIKE, "extraArgs": ["--swap-space", "4"]},
            "extraArgs: --swap-space is not a `vllm serve` flag",
        ),
        ({**DEV_LIKE, "extraArgs": ["--max-model-len", "4096"]}, "extraArgs: --max-model-len cannot be set"),
        ({**DEV_LIKE, "gpus": ["L5"]}, "gpus: unknown GPU 'L5'"),
        (
            {**DEV_LIKE, "instanceTypes": ["g9.xlarge"]},
            "instanceTypes: unknown GPU instance type 'g9.xlarge'",
        ),
        ({**DEV_LIKE, "servingImage": "vllm/vllm-openai"}, "servingImage: names no tag or digest"),
        ({**DEV_LIKE, "servingImage": "x/serving:latest"}, "servingImage: uses the floating tag latest"),
        ({**DEV_LIKE, "modelLoadMode": "s3"}, "modelLoadMode: must be 'local' or 'runai_streamer'"),
        (
            {**DEV_LIKE, "modelLoadMode": "runai_streamer"},
            "modelRevision: 'main' is not a 40-hex commit sha",
        ),
    ],
)
def test_bad_stacks_fail_with_one_line_naming_the_key(
    stacks_dir: Path, tmp_path: Path, config: dict, expected: str
) -> None:
    stack = write_stack(stacks_dir, config)
    with pytest.raises(UserError) as raised:
        render(stack, tmp_path / "out")
    message = str(raised.value)
    assert message.startswith(expected), message
    assert "\n" not in message


def test_a_model_that_cannot_fit_says_why(stacks_dir: Path, tmp_path: Path) -> None:
    stack = write_stack(
        stacks_dir,
        {
            "model": "meta-llama/Llama-3.1-405B-Instruct",
            "instanceTypes": ["g6.xlarge"],
            "hfToken": PLACEHOLDER_HF_TOKEN,
        },
    )
    with pytest.raises(UserError) as raised:
        render(stack, tmp_path / "out")
    assert type(raised.value).__name__ == "NoFitError"
    assert "g6.xlarge" in str(raised.value)


def test_a_stack_file_that_is_not_yaml_is_refused(stacks_dir: Path, tmp_path: Path) -> None:
    (stacks_dir / "Pulumi.broken.yaml").write_text("config: [unclosed\n")
    with pytest.raises(UserError, match=r"^Pulumi.broken.yaml is not valid YAML"):
        render("broken", tmp_path / "out")


def test_unknown_stack_is_refused_naming_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(UserError) as raised:
        render("nope", tmp_path / "out")
    assert str(raised.value) == "unknown stack 'nope'; stacks in stacks/: " + ", ".join(STACKS)


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({**DEV_LIKE, "concurrency": 0}, "error: concurrency: Input should be greater than or equal to 1"),
        ({**DEV_LIKE, "maxCostPerHour": 0.1}, "error: maxCostPerHour: the plans cost"),
        (
            {
                "model": "meta-llama/Llama-3.1-405B-Instruct",
                "instanceTypes": ["g6.xlarge"],
                "hfToken": PLACEHOLDER_HF_TOKEN,
            },
            "error: model: ",
        ),
    ],
)
def test_cli_prints_one_line_and_exits_2(
    stacks_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    config: dict,
    expected: str,
) -> None:
    from infra import cli

    stack = write_stack(stacks_dir, config)
    monkeypatch.setattr(sys, "argv", ["infra", "render", "--stack", stack, "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    assert exited.value.code == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(expected) and captured.err.count("\n") == 1, captured.err
    assert captured.out == ""


def test_cli_renders_a_stack_end_to_end(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "infra", "render", "--stack", "dev", "--out", str(tmp_path / "dev")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    assert "| revision | model |" in done.stdout and (tmp_path / "dev" / "resources.json").exists()
    unknown = subprocess.run(
        [sys.executable, "-m", "infra", "render", "--stack", "nope", "--out", str(tmp_path / "x")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    assert unknown.returncode == 2 and unknown.stderr.startswith("error: unknown stack 'nope'")
    assert unknown.stderr.count("\n") == 1


LORA_COMMIT = "c" * 40
TWO_ADAPTERS = {
    **DEV_LIKE,
    "hfToken": {"secure": "v1:HFCIPHER"},
    "maxCostPerHour": 5,
    "revisions": [
        {
            "name": "stable",
            "weight": 100,
            "loraAdapters": [
                {"name": "sql", "source": "someorg/sql-lora"},
                {"name": "chat-de", "source": "someorg/de-lora", "revision": LORA_COMMIT},
            ],
        },
        {"name": "canary", "weight": 0, "loraAdapters": [{"name": "sql", "source": "someorg/sql-lora"}]},
    ],
}


def test_a_revision_with_two_adapters_fills_pulls_and_serves_them(
    stacks_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Adapters go through the cache like the model: a fill Job per entry (shared between revisions, with
    the stack's HF token by reference), a verified pull per adapter onto the model volume, and vLLM serves
    them by name with the slots the plan sized; every object validates strictly."""
    from tests.sizing.test_adapters import hub_cache

    hub = tmp_path / "hf-cache"
    hub_cache(hub, "someorg/sql-lora", {"peft_type": "LORA", "r": 8})
    hub_cache(hub, "someorg/de-lora", {"peft_type": "LORA", "r": 48}, commit=LORA_COMMIT)
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    out = tmp_path / "out"
    result = render(write_stack(stacks_dir, TWO_ADAPTERS), out)

    pod = _pod(_workload(out, "stable"))
    inits = {c["name"]: c for c in pod["initContainers"]}
    assert list(inits)[:3] == ["model-pull", "lora-pull-0", "lora-pull-1"]
    model_dir = "/models/someorg--sql-lora/main"
    pull = inits["lora-pull-0"]["args"]
    assert pull[:7] == [
        "pull",
        "--from",
        inits["model-pull"]["args"][2],
        "--model",
        "someorg/sql-lora",
        "--revision",
        "main",
    ]
    assert pull[pull.index("--to") + 1] == model_dir
    assert inits["lora-pull-1"]["args"][inits["lora-pull-1"]["args"].index("--revision") + 1] == LORA_COMMIT
    assert inits["lora-pull-0"]["volumeMounts"][0] == inits["model-pull"]["volumeMounts"][0]
    args = pod["containers"][0]["args"]
    assert args[args.index("--lora-modules") + 1 : args.index("--lora-modules") + 3] == [
        f"sql={model_dir}",
        f"chat-de=/models/someorg--de-lora/{LORA_COMMIT}",
    ]
    assert "--enable-lora" in args
    assert args[args.index("--max-loras") + 1] == "2" and args[args.index("--max-lora-rank") + 1] == "64"
    canary = _pod(_workload(out, "canary"))
    assert [c["name"] for c in canary["initContainers"]][:2] == ["model-pull", "lora-pull-0"]
    assert _plan(result, "canary")["lora"]["max_lora_rank"] == 8

    # one Job per cache entry: the model (both revisions), sql (both), de; each with the token by reference
    jobs = [yaml.safe_load(p.read_text()) for p in (out / "kubernetes").rglob("job-*model-cache-fill-*.yaml")]
    pushed = sorted(tuple(j["spec"]["template"]["spec"]["containers"][0]["args"][1:4]) for j in jobs)
    assert pushed == [
        ("Qwen/Qwen3-8B", "--revision", "main"),
        ("someorg/de-lora", "--revision", LORA_COMMIT),
        ("someorg/sql-lora", "--revision", "main"),
    ]
    for job in jobs:
        (token,) = [
            e for e in job["spec"]["template"]["spec"]["containers"][0]["env"] if e["name"] == "HF_TOKEN"
        ]
        assert token["valueFrom"]["secretKeyRef"]["key"] == "token"
    assert result.outputs["servedModels"]["stable"]["loraAdapters"] == ["sql", "chat-de"]
    validate_rendered(out)


def test_an_adapter_the_planner_cannot_read_fails_naming_its_key(
    stacks_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(UserError) as error:
        render(write_stack(stacks_dir, TWO_ADAPTERS), tmp_path / "out")
    assert error.value.key == "revisions[0].loraAdapters[0].source"
    assert "someorg/sql-lora@main" in str(error.value) and "\n" not in str(error.value)


# --- gated models ----------------------------------------------------------------------------------------


def test_only_prod_serves_a_gated_model() -> None:
    """The stacks the render tests give a placeholder token (tests/stacks.py) are exactly the gated ones."""
    assert [stack for stack in STACKS if needs_hf_token(stack)] == ["prod"]


def test_a_gated_stack_without_a_token_fails_naming_the_command(tmp_path: Path) -> None:
    """The committed prod stack serves a gated Llama and carries no token: render (and the preview, which
    runs the same program) exits 2 with one line that says how to set it."""
    done = run_infra(
        "render",
        "--stack",
        "prod",
        "--out",
        str(tmp_path / "prod"),
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith(
        "error: hfToken: meta-llama/Llama-3.3-70B-Instruct is gated on the Hugging Face Hub and stack 'prod' has "
        "no token"
    ), done.stderr
    assert "`pulumi config set --secret hfToken hf_... -s prod`" in done.stderr
    assert not (tmp_path / "prod").exists()  # nothing rendered


def test_a_gated_revision_without_a_token_is_named(stacks_dir: Path, tmp_path: Path) -> None:
    gated = "meta-llama/Llama-3.1-8B-Instruct"
    config = {
        **DEV_LIKE,
        "revisions": [{"name": "stable", "weight": 100}, {"name": "llama", "weight": 0, "model": gated}],
    }
    with pytest.raises(UserError) as raised:
        render(write_stack(stacks_dir, config), tmp_path / "out")
    assert str(raised.value).startswith(f"hfToken: {gated} (revisions[1].model) is gated"), raised.value
    assert "-s t`" in str(raised.value)
    tokened = write_stack(stacks_dir, {**config, "hfToken": PLACEHOLDER_HF_TOKEN}, "tokened")
    render(tokened, tmp_path / "tokened")
    jobs = [
        yaml.safe_load(p.read_text()) for p in (tmp_path / "tokened").rglob("job-*model-cache-fill-*.yaml")
    ]
    (container,) = [
        c for job in jobs for c in job["spec"]["template"]["spec"]["containers"] if gated in c["args"]
    ]
    assert [e["valueFrom"]["secretKeyRef"]["key"] for e in container["env"] if e["name"] == "HF_TOKEN"] == [
        "token"
    ]


def test_the_gated_stacks_fill_job_gets_the_token_by_reference(rendered: tuple[str, Path, Rendered]) -> None:
    stack, out, _ = rendered
    (container,) = _fill_job(out)["spec"]["template"]["spec"]["containers"]
    token = [e for e in container.get("env", []) if e["name"] == "HF_TOKEN"]
    if needs_hf_token(stack):
        (secret,) = out.rglob("secret-*hf-token.yaml")
        assert yaml.safe_load(secret.read_text())["stringData"] == {"token": REDACTED}
        assert token[0]["valueFrom"]["secretKeyRef"]["key"] == "token"
    else:
        assert not token and not list(out.rglob("secret-*hf-token.yaml"))


# --- the model cache's encryption -------------------------------------------------------------------------


def _kms_statements(result: Rendered, role: str) -> list[dict[str, Any]]:
    """The statements of a model-cache identity's policy that allow any kms: action."""
    (policy,) = [
        json.loads(_policy["policy"])
        for _policy in (
            render_module.redact(r.inputs) for r in result.of_type("aws:iam/rolePolicy:RolePolicy")
        )
        if _policy["role"] == f"<known after deploy: llm-t-model-cache-{role}.id>"
    ]
    return [s for s in policy["Statement"] if any(a.startswith("kms:") for a in s["Action"])]


def test_model_cache_sse_kms_grants_the_identities_that_key_only(stacks_dir: Path, tmp_path: Path) -> None:
    result = render(
        write_stack(stacks_dir, {**DEV_LIKE, "modelCache": {"encryption": "kms"}}), tmp_path / "out"
    )
    keys = {r.name: render_module.redact(r.inputs) for r in result.of_type("aws:kms/key:Key")}
    # the cluster's secrets key and the cache's own key, both rotating
    assert "llm-t-model-cache-key" in keys and len(keys) == 2
    assert all(key["enableKeyRotation"] is True for key in keys.values())
    cache_key = "<known after deploy: llm-t-model-cache-key.arn>"
    sse = _the(
        result, "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
    )
    assert sse["rules"][0]["applyServerSideEncryptionByDefault"] == {
        "sseAlgorithm": "aws:kms",
        "kmsMasterKeyId": cache_key,
    }
    via_s3 = {"StringEquals": {"kms:ViaService": "s3.us-east-1.amazonaws.com"}}
    (reader,) = _kms_statements(result, "reader")
    (writer,) = _kms_statements(result, "writer")
    assert (reader["Action"], reader["Resource"], reader["Condition"]) == (["kms:Decrypt"], cache_key, via_s3)
    assert (sorted(writer["Action"]), writer["Resource"], writer["Condition"]) == (
        ["kms:Decrypt", "kms:GenerateDataKey"],
        cache_key,
        via_s3,
    )


def test_model_cache_sse_kms_with_the_users_key_creates_none(stacks_dir: Path, tmp_path: Path) -> None:
    given = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    stack = write_stack(stacks_dir, {**DEV_LIKE, "modelCache": {"encryption": "kms", "kmsKeyArn": given}})
    result = render(stack, tmp_path / "out")
    assert [r.name for r in result.of_type("aws:kms/key:Key")] == ["llm-t-secrets-key"]
    for role in ("reader", "writer"):
        (statement,) = _kms_statements(result, role)
        assert statement["Resource"] == given


def test_model_cache_without_kms_grants_no_key(rendered: tuple[str, Path, Rendered]) -> None:
    _, _, result = rendered
    for role in ("reader", "writer"):
        policies = [
            json.loads(render_module.redact(r.inputs)["policy"])
            for r in result.of_type("aws:iam/rolePolicy:RolePolicy")
            if r.name.endswith(f"model-cache-{role}-policy")
        ]
        assert len(policies) == 1 and not [
            a for p in policies for s in p["Statement"] for a in s["Action"] if a.startswith("kms:")
        ]


@pytest.mark.integration
def test_an_s3_adapter_renders_its_fill_pull_and_the_writers_read_grant(
    stacks_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, moto_endpoint: str
) -> None:
    """An s3:// adapter, its adapter_config.json read at plan time from a real S3 stand-in (moto_server on
    127.0.0.1): the fill Job pushes the folder, the pod pulls the entry under its cache id, the writer gets
    read on that folder only, and every object validates strictly."""
    import boto3

    from infra.modelcache.s3_source import parse_s3_source, source_model_id

    source = "s3://render-adapters/qwen3/sql"
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket="render-adapters")
    s3.put_object(
        Bucket="render-adapters", Key="qwen3/sql/adapter_config.json", Body=b'{"peft_type": "LORA", "r": 24}'
    )
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_endpoint)
    stack = {**DEV_LIKE, "maxCostPerHour": 5, "loraAdapters": [{"name": "sql", "source": source}]}
    out = tmp_path / "out"
    result = render(write_stack(stacks_dir, stack), out)

    model = source_model_id(parse_s3_source(source, key="k"))
    pod = _pod(_workload(out, "primary"))
    (pull,) = [c for c in pod["initContainers"] if c["name"] == "lora-pull-0"]
    assert pull["args"][pull["args"].index("--model") + 1] == model
    args = pod["containers"][0]["args"]
    assert args[args.index("--lora-modules") + 1] == f"sql=/models/{model.replace('/', '--')}/main"
    assert args[args.index("--max-lora-rank") + 1] == "32"
    jobs = [yaml.safe_load(p.read_text()) for p in (out / "kubernetes").rglob("job-*model-cache-fill-*.yaml")]
    pushed = sorted(j["spec"]["template"]["spec"]["containers"][0]["args"][1] for j in jobs)
    assert pushed == ["Qwen/Qwen3-8B", source]
    policies = [
        json.loads(r["inputs"]["policy"])
        for r in json.loads((out / "resources.json").read_text())["resources"]
        if r["type"] == "aws:iam/rolePolicy:RolePolicy" and r["name"].endswith("-writer-sources")
    ]
    assert [s["Resource"] for p in policies for s in p["Statement"]] == [
        "arn:aws:s3:::render-adapters",
        ["arn:aws:s3:::render-adapters/qwen3/sql/*"],
    ]
    assert result.outputs["servedModels"]["primary"]["loraAdapters"] == ["sql"]
    validate_rendered(out)
