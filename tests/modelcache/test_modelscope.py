"""ModelScope as a model source, end to end: `cache push modelscope://org/name` and `plan modelscope://...`
against a fake ModelScope hub on 127.0.0.1 (tests/modelcache/fake_modelscope.py) and moto, through the
real `modelscope_hub` client, which MODELSCOPE_ENDPOINT points at the fake."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.modelscope import RepoFile, snapshot_id
from tests.conftest import REPO_ROOT, stop_process
from tests.kubernetes.crd_schemas import validate_rendered
from tests.modelcache.conftest import BUCKET, run_cache, start_script, tree_digest
from tests.modelcache.fake_hub import generate_model
from tests.sizing.test_hub_loading import CONFIG  # a real architecture the planner can size

pytestmark = pytest.mark.integration

MODEL = "modelscope://test-org/tiny-ms"


@pytest.fixture(scope="module")
def ms_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("modelscope-model")
    generate_model(root, shards=3, shard_bytes=5 * 1024 * 1024)
    (root / "config.json").write_text(json.dumps(CONFIG))
    return root


@pytest.fixture(scope="module")
def fake_modelscope(ms_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    log = tmp_path_factory.mktemp("modelscope-log") / "requests.log"
    server = start_script(
        "fake_modelscope.py", "--root", str(ms_model), "--repo", MODEL.removeprefix("modelscope://"),
        "--log", str(log), "--max-seconds", "300",
    )  # fmt: skip
    try:
        yield server.url, log
    finally:
        stop_process(server.process)


def ms_env(endpoint: str, home: Path) -> dict[str, str]:
    return {"MODELSCOPE_ENDPOINT": endpoint, "MODELSCOPE_HOME": str(home), "MODELSCOPE_CACHE": str(home)}


def content_id(root: Path) -> str:
    """The entry key computed here from the files themselves, independently of the client's listing."""
    return snapshot_id(
        RepoFile(p.relative_to(root).as_posix(), p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in root.rglob("*")
        if p.is_file()
    )


def test_push_and_pull_round_trip_byte_for_byte(
    fake_modelscope: tuple[str, Path], ms_model: Path, moto_endpoint: str, bucket: str, tmp_path: Path
) -> None:
    endpoint, log = fake_modelscope
    root = f"s3://{bucket}/modelscope"
    env = ms_env(endpoint, tmp_path / "ms-home")
    push = run_cache("push", MODEL, "--to", root, "--scratch", str(tmp_path / "scratch"),
                     endpoint=moto_endpoint, extra_env=env)  # fmt: skip
    assert push.returncode == 0, push.stderr
    commit = content_id(ms_model)
    assert push.stdout.strip() == f"{root}/models/modelscope--test-org--tiny-ms/{commit}"
    requests = log.read_text().splitlines()
    assert "GET /api/v1/models/test-org/tiny-ms/repo/files" in requests  # the client's own routes
    assert sum(line == "GET /api/v1/models/test-org/tiny-ms/repo" for line in requests) >= 9

    again = run_cache("push", MODEL, "--to", root, "--scratch", str(tmp_path / "scratch2"),
                      endpoint=moto_endpoint, extra_env=env)  # fmt: skip
    assert again.returncode == 0 and "already complete" in again.stderr

    # Pulled by model id and ModelScope branch, as a serving pod's init container would.
    target = tmp_path / "pulled"
    pull = run_cache("pull", "--from", root, "--model", MODEL, "--revision", "master", "--to", str(target),
                     endpoint=moto_endpoint)  # fmt: skip
    assert pull.returncode == 0, pull.stderr
    assert tree_digest(target) == tree_digest(ms_model)
    verify = run_cache("verify", "--from", push.stdout.strip(), "--deep", endpoint=moto_endpoint)
    assert verify.returncode == 0 and f"{MODEL}@{commit} OK" in verify.stdout, verify.stderr
    listing = run_cache("ls", root, endpoint=moto_endpoint)
    assert f"{MODEL}\t{commit}\tcomplete" in listing.stdout and "refs=master" in listing.stdout


@pytest.mark.parametrize(
    ("model", "revision", "message"),
    [
        ("modelscope://nobody/nothing", "master", "error: model: modelscope://nobody/nothing is not on ModelScope at "),
        (MODEL, "v9", f"error: model: {MODEL}@v9: no such revision (branch or tag) on ModelScope"),
    ],
)  # fmt: skip
def test_missing_model_or_revision_is_one_clear_line(
    fake_modelscope: tuple[str, Path], moto_endpoint: str, bucket: str, tmp_path: Path,
    model: str, revision: str, message: str,
) -> None:  # fmt: skip
    endpoint, _ = fake_modelscope
    result = run_cache("push", model, "--revision", revision, "--to", f"s3://{bucket}/missing",
                       "--scratch", str(tmp_path), endpoint=moto_endpoint,
                       extra_env=ms_env(endpoint, tmp_path / "home"))  # fmt: skip
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith(message), result.stderr


def test_unreachable_endpoint_is_one_clear_line(moto_endpoint: str, tmp_path: Path) -> None:
    result = run_cache("push", MODEL, "--to", f"s3://{BUCKET}/x", "--scratch", str(tmp_path),
                       endpoint=moto_endpoint, extra_env=ms_env("http://127.0.0.1:9", tmp_path / "home"))  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: MODELSCOPE_ENDPOINT: {MODEL}@master: cannot reach ModelScope at http://127.0.0.1:9 "
        "([Errno 111] Connection refused)"
    )


def run_plan(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "infra", "plan", *args],
        cwd=REPO_ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_the_planner_reads_config_json_from_modelscope(
    fake_modelscope: tuple[str, Path], tmp_path: Path
) -> None:
    endpoint, _ = fake_modelscope
    result = run_plan(MODEL, "--max-model-len", "8192", "--json", env=ms_env(endpoint, tmp_path))
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["model"] == MODEL and plan["max_model_len"] == 8192
    # 16 layers x 8 KV heads x 64 x 2 (K and V) x 2 bytes: the config served by the fake, not a catalog entry.
    assert plan["kv_bytes_per_token_per_gpu"] == 16 * 8 * 64 * 2 * 2 // plan["tensor_parallel_size"]
    missing = run_plan("modelscope://nobody/nothing", env=ms_env(endpoint, tmp_path))
    assert missing.returncode == 2 and "is not on ModelScope" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1


def test_the_planner_names_an_unreachable_endpoint_in_one_line(tmp_path: Path) -> None:
    result = run_plan(MODEL, env=ms_env("http://127.0.0.1:9", tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: MODELSCOPE_ENDPOINT: {MODEL}@master: cannot reach ModelScope at http://127.0.0.1:9 "
        "([Errno 111] Connection refused)"
    )


def test_a_stack_serving_a_modelscope_model_renders_and_fills_its_cache_from_modelscope(
    fake_modelscope: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import yaml

    from infra import render as render_module

    endpoint, _ = fake_modelscope
    for name, value in ms_env(endpoint, tmp_path / "home").items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(render_module, "STACKS_DIR", tmp_path)
    config = {"model": MODEL, "modelRevision": "master", "maxModelLen": 8192, "gpus": ["L4"]}
    stack_file = {"config": {f"llm-serving:{key}": value for key, value in config.items()}}
    (tmp_path / "Pulumi.ms.yaml").write_text(yaml.safe_dump(stack_file))
    out = tmp_path / "out"
    result = render_module.render("ms", out)

    plan = result.outputs["plan"]["revisions"]["primary"]
    assert plan["model"] == MODEL  # sized from the config.json the fake serves, not a catalog entry
    assert plan["kv_bytes_per_token_per_gpu"] == 16 * 8 * 64 * 2 * 2 // plan["tensor_parallel_size"]
    manifests = [yaml.safe_load(path.read_text()) for path in sorted((out / "kubernetes").rglob("*.yaml"))]
    validate_rendered(out / "kubernetes")
    (job,) = [m for m in manifests if m["kind"] == "Job"]
    (fill,) = job["spec"]["template"]["spec"]["containers"]
    assert fill["args"][:4] == ["push", MODEL, "--revision", "master"]
    scratch = {m["mountPath"] for m in fill["volumeMounts"]}
    client_dirs = {e["value"] for e in fill["env"] if e["name"] in ("MODELSCOPE_CACHE", "MODELSCOPE_HOME")}
    assert client_dirs and all(d.startswith(tuple(f"{m}/" for m in scratch)) for d in client_dirs)
    (deployment,) = [
        m for m in manifests if m["kind"] == "Deployment" and m["metadata"]["name"] == "vllm-primary"
    ]
    pod = deployment["spec"]["template"]["spec"]
    pull = pod["initContainers"][0]["args"]
    assert pull[pull.index("--model") + 1] == MODEL and pull[pull.index("--revision") + 1] == "master"
    args = pod["containers"][0]["args"]
    model_dir = "/models/modelscope--test-org--tiny-ms/master"
    assert args[args.index("--model") + 1] == pull[pull.index("--to") + 1] == model_dir
    assert args[args.index("--served-model-name") + 1] == "test-org/tiny-ms"  # clients send the bare id
