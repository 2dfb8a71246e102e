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
import typing
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from infra import render as render_module
from infra.config import KUBERNETES_VERSIONS as config_versions
from infra.config import StackSettings
from infra.errors import UserError
from infra.render import REDACTED, Rendered, render
from tests.components.support import takes_tags
from tests.kubernetes.crd_schemas import is_custom_resource, validate_custom_resource

REPO = Path(__file__).resolve().parent.parent
STACKS = sorted(
    p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in (REPO / "stacks").glob("Pulumi.*.yaml")
)
KUBERNETES_VERSIONS = ("1.31", "1.32", "1.33")


def test_every_kubernetes_version_a_stack_may_choose_is_validated() -> None:
    field = StackSettings.model_fields["kubernetes_version"]
    assert typing.get_args(field.annotation) == KUBERNETES_VERSIONS == config_versions


@pytest.fixture(autouse=True)
def _offline_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module", params=STACKS)
def rendered(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Path, Rendered]:
    stack = request.param
    out = tmp_path_factory.mktemp(f"render-{stack}")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        result = render(stack, out)
    return stack, out, result


def test_there_are_dev_staging_and_prod_stacks() -> None:
    assert {"dev", "staging", "prod"} <= set(STACKS)


def test_render_writes_manifests_resources_and_summary(rendered: tuple[str, Path, Rendered]) -> None:
    stack, out, result = rendered
    files = sorted((out / "kubernetes").rglob("*.yaml"))
    templates = [f for f in files if f.name.startswith(render_module.TEMPLATE_PREFIX)]
    assert [f.relative_to(out / "kubernetes").as_posix() for f in templates] == [
        f"modelcache-llm-{stack}-model-cache/pod-template-serving-cache.yaml"
    ]
    assert len(files) - len(templates) == len(result.kubernetes_objects()) >= 7
    assert {f.parent.name for f in files} >= {
        f"cluster-llm-{stack}",
        f"gpunodepool-llm-{stack}-gpu",
        f"modelcache-llm-{stack}-model-cache",
    }
    resources = json.loads((out / "resources.json").read_text())
    assert len(resources["resources"]) == len(result.registrations)
    assert all({"type", "name", "parent", "inputs"} <= entry.keys() for entry in resources["resources"])
    summary = (out / "summary.md").read_text()
    plan = result.outputs["plan"]
    assert plan["instance_type"] in summary and f"{plan['cost_per_hour_usd_at_max_replicas']:.2f}" in summary


def test_the_plan_is_logged_and_exported(rendered: tuple[str, Path, Rendered]) -> None:
    _, _, result = rendered
    plan = result.outputs["plan"]
    (line,) = [m for m in result.logs if m.startswith("info: serving plan for")]
    assert plan["instance_type"] in line and plan["model"] in line
    assert plan["vllm_args"] and plan["replicas"]["max"] >= plan["replicas"]["min"]


def test_every_kubernetes_object_validates(rendered: tuple[str, Path, Rendered]) -> None:
    _, out, _ = rendered
    for path in sorted((out / "kubernetes").rglob("*.yaml")):
        manifest = yaml.safe_load(path.read_text())
        if is_custom_resource(manifest):
            validate_custom_resource(manifest)
            continue
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(manifest, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                pytest.fail(f"{path.name} is invalid for Kubernetes {version}: {error.message}")


def _the(result: Rendered, type_: str) -> dict[str, Any]:
    (registration,) = result.of_type(type_)
    return render_module.redact(registration.inputs)


def test_gpu_pool_is_exactly_the_plan(rendered: tuple[str, Path, Rendered]) -> None:
    stack, _, result = rendered
    plan = result.outputs["plan"]
    pool = _the(result, "kubernetes:karpenter.sh/v1:NodePool")["spec"]
    requirements = {r["key"]: r["values"] for r in pool["template"]["spec"]["requirements"]}
    assert requirements["node.kubernetes.io/instance-type"] == [plan["instance_type"]]
    assert requirements["karpenter.sh/capacity-type"] == [plan["capacity_type"]]
    stack_file = yaml.safe_load((REPO / "stacks" / f"Pulumi.{stack}.yaml").read_text())["config"]
    assert plan["capacity_type"] == stack_file["llm-serving:capacityType"]
    replicas = stack_file["llm-serving:replicas"]
    per_node = (
        max(1, plan["gpu"]["count"] // plan["gpus_per_replica"]) if plan["nodes_per_replica"] == 1 else 0
    )
    nodes = -(-replicas["max"] // per_node) if per_node else replicas["max"] * plan["nodes_per_replica"]
    assert pool["limits"] == {"nvidia.com/gpu": str(nodes * plan["gpu"]["count"]), "nodes": str(nodes)}
    assert plan["cost_per_hour_usd_at_max_replicas"] <= stack_file["llm-serving:maxCostPerHour"]


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
    assert pod["serviceAccountName"] == result.outputs["modelCacheWriterServiceAccount"]
    assert job["metadata"]["name"] == result.outputs["modelCacheFillJob"]
    stack_file = yaml.safe_load((REPO / "stacks" / f"Pulumi.{stack}.yaml").read_text())["config"]
    assert container["args"][1] == stack_file["llm-serving:model"] == result.outputs["plan"]["model"]
    assert "tolerations" not in pod  # no GPU: the GPU nodes' taint keeps it on the system nodes
    assert int(job["metadata"]["annotations"]["pulumi.com/timeoutSeconds"]) > 600
    (registration,) = result.of_type("kubernetes:batch/v1:Job")
    assert registration.delete_before_replace
    scratch = int(container["resources"]["requests"]["ephemeral-storage"].removesuffix("Gi"))
    system_nodes = _the(result, "aws:eks/nodeGroup:NodeGroup")
    assert system_nodes["diskSize"] >= scratch + 40  # the Job's scratch next to the unpacked serving image


def test_the_serving_template_reads_the_cache_as_the_reader(rendered: tuple[str, Path, Rendered]) -> None:
    _, out, result = rendered
    (path,) = (out / "kubernetes").rglob(f"{render_module.TEMPLATE_PREFIX}serving-cache.yaml")
    pod = yaml.safe_load(path.read_text())
    assert pod["spec"]["serviceAccountName"] == result.outputs["modelCacheReaderServiceAccount"]
    names = [c["name"] for c in pod["spec"]["initContainers"]]
    assert names == ["model-pull", "compile-cache-restore"]  # every stack: local mode, compile cache on
    assert {c["image"] for c in pod["spec"]["initContainers"]} == {result.outputs["servingImage"]}
    assert result.outputs["servingCachePatch"]["init_containers"] == pod["spec"]["initContainers"]
    plan = result.outputs["plan"]
    restore = pod["spec"]["initContainers"][1]["args"]
    assert restore[restore.index("--tensor-parallel-size") + 1] == str(plan["tensor_parallel_size"])
    text = path.read_text()
    assert "AWS_SECRET_ACCESS_KEY" not in text and "HF_TOKEN" not in text and REDACTED not in text


def test_cache_pods_get_aws_access_only_through_pod_identity(rendered: tuple[str, Path, Rendered]) -> None:
    """Identities by reference: each cache pod's service account is the one its role is bound to, in the
    pod's namespace, and no manifest carries an AWS key."""
    _, out, result = rendered
    job = _fill_job(out)
    (template,) = (out / "kubernetes").rglob(f"{render_module.TEMPLATE_PREFIX}serving-cache.yaml")
    pod = yaml.safe_load(template.read_text())
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
    assert not result.of_type("random:index/randomPassword:RandomPassword")
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


def test_runai_streamer_renders_a_valid_streaming_template(stacks_dir: Path, tmp_path: Path) -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    stack = write_stack(
        stacks_dir,
        {**DEV_LIKE, "modelLoadMode": "runai_streamer", "modelRevision": commit, "compileCache": False},
    )
    out = tmp_path / "out"
    result = render(stack, out)
    (path,) = out.rglob(f"{render_module.TEMPLATE_PREFIX}serving-cache.yaml")
    pod = yaml.safe_load(path.read_text())
    assert [c["name"] for c in pod["spec"]["initContainers"]] == ["model-check"]
    args = pod["spec"]["containers"][0]["args"]
    assert args[args.index("--load-format") + 1] == "runai_streamer"
    assert args[args.index("--model") + 1].startswith("s3://") and commit in args[args.index("--model") + 1]
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(pod, version, strict=True)
    assert not any(r.name.endswith("reader-compile-cache") for r in result.registrations)
    assert _fill_job(out)["spec"]["template"]["spec"]["containers"][0]["args"][3] == commit


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
        ({"model": "meta-llama/Llama-3.1-405B-Instruct", "instanceTypes": ["g6.xlarge"]}, "model: "),
        ({**DEV_LIKE, "maxCostPerHour": 0.1}, "maxCostPerHour: the plan costs $0.48/h at max replicas"),
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
        stacks_dir, {"model": "meta-llama/Llama-3.1-405B-Instruct", "instanceTypes": ["g6.xlarge"]}
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
        ({**DEV_LIKE, "maxCostPerHour": 0.1}, "error: maxCostPerHour: the plan costs"),
        ({"model": "meta-llama/Llama-3.1-405B-Instruct", "instanceTypes": ["g6.xlarge"]}, "error: model: "),
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
    assert "| instance type |" in done.stdout and (tmp_path / "dev" / "resources.json").exists()
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
