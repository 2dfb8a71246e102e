"""The benchmark: its Job validates and passes the policy pack's pod rules, its arguments parse with vLLM
0.33.0's own `vllm bench serve` parser, and the result parser reads what a real `vllm bench serve` prints
(a run of the real command against a fake OpenAI server on 127.0.0.1; its output is kept in
tests/bench/data/bench-serve-0.33.0.txt, produced by test_a_real_run_parses with the same arguments)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from infra.bench.results import BenchResult, cost_per_million_output_tokens, parse
from infra.bench.spec import BenchSettings, bench_args, bench_job, job_name, service_url
from infra.errors import UserError
from infra.kubernetes.model_cache import SecretKeyRef
from infra.versions import KUBERNETES_VERSIONS
from policy import rules
from tests.conftest import REPO_ROOT, free_port, stop_process, wait_for_port

VLLM = REPO_ROOT / ".venv-vllm" / "bin"
CHECK = REPO_ROOT / "tests" / "vllm_parser_check.py"
TOKENIZER = Path(__file__).parent / "tiny_tokenizer.py"
RECORDED = Path(__file__).parent / "data" / "bench-serve-0.33.0.txt"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/serving@sha256:" + "a" * 64
URL = service_url("vllm-main", "llm-serving")


def job(dataset: str = "sharegpt", hf_token: bool = True) -> dict[str, Any]:
    settings = BenchSettings(dataset=dataset)  # type: ignore[arg-type]
    return bench_job(
        name=job_name("vllm-main", "20261130-0600"),
        namespace="llm-serving",
        image=IMAGE,
        args=bench_args(
            model="Qwen/Qwen3-8B", served_model_name="Qwen/Qwen3-8B", base_url=URL, settings=settings
        ),
        api_key_secret=SecretKeyRef("llm-dev-secrets-api-key", "api-key"),
        hf_token_secret=SecretKeyRef("llm-dev-secrets-hf-token", "token") if hf_token else None,
        dataset=settings.dataset,
    )


@pytest.mark.parametrize("dataset", ["sharegpt", "random"])
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_job_validates(dataset: str, version: str) -> None:
    kubernetes_validate.validate(job(dataset), version, strict=True)


@pytest.mark.parametrize("dataset", ["sharegpt", "random"])
def test_the_job_passes_the_policy_packs_pod_rules(dataset: str) -> None:
    manifest = job(dataset)
    resource = rules.Resource(
        "kubernetes:batch/v1:Job", "bench", "urn:pulumi:dev::llm-serving::bench", manifest
    )
    limits = rules.StackLimits(stack="dev")
    for rule in (
        rules.no_floating_image_tags,
        rules.secrets_only_as_secrets,
        rules.resource_requests_on_every_container,
    ):
        assert rule([resource], limits) == [], rule.__name__


def test_the_job_shape() -> None:
    spec = job()["spec"]
    pod = spec["template"]["spec"]
    assert spec["backoffLimit"] == 0, "a retry would measure a warmed-up server twice"
    (bench,) = pod["containers"]
    assert bench["command"] == ["vllm", "bench", "serve"] and bench["image"] == IMAGE
    env = {e["name"]: e for e in bench["env"]}
    assert env["OPENAI_API_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "llm-dev-secrets-api-key",
        "key": "api-key",
    }
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == "token"
    (download,) = pod["initContainers"]
    assert "OPENAI_API_KEY" not in {e["name"] for e in download["env"]}, "the download never sees the API key"
    assert "ShareGPT_V3_unfiltered_cleaned_split.json" in download["command"][-1]
    assert "initContainers" not in job("random")["spec"]["template"]["spec"]
    assert "HF_TOKEN" not in {
        e["name"] for e in job(hf_token=False)["spec"]["template"]["spec"]["containers"][0]["env"]
    }


def test_job_names_are_dns_labels() -> None:
    name = job_name("vllm-" + "x" * 80, "Run_1")
    assert len(name) <= 63 and name.startswith("bench-vllm-") and not name.endswith("-")
    assert job_name("vllm-main", "Run_1") == "bench-vllm-main-run-1"


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"request_rate": 0}, "--rate"),
        ({"dataset": "alpaca"}, "--dataset"),
        ({"num_prompts": 0}, "--num-prompts"),
    ],
)
def test_bad_settings_name_the_option(settings: dict[str, Any], key: str) -> None:
    with pytest.raises(UserError) as error:
        BenchSettings(**settings)
    assert error.value.key == key


@pytest.fixture(scope="module")
def real_parser() -> dict[str, Any]:
    if not (VLLM / "python").exists():
        pytest.skip(f"needs vLLM's parser in {VLLM.parent}: run `make vllm-parser` (make test does)")
    cases = [
        {
            "name": dataset,
            "command": "bench serve",
            "args": bench_args(model="org/m", served_model_name="m", base_url=URL, settings=settings),
        }
        for dataset, settings in (
            ("sharegpt", BenchSettings()),
            ("random", BenchSettings(dataset="random", request_rate=0.5, num_prompts=7)),
        )
    ]
    cases.append({"name": "typo", "command": "bench serve", "args": ["--request-rte", "3"]})
    result = subprocess.run(
        [str(VLLM / "python"), str(CHECK)],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "VLLM_TARGET_DEVICE": "cpu"},
        check=True,
    )
    return json.loads(result.stdout)


def test_the_arguments_parse_with_vllms_bench_serve_parser(real_parser: dict[str, Any]) -> None:
    sharegpt, random = real_parser["sharegpt"], real_parser["random"]
    assert sharegpt["ok"] and random["ok"], (sharegpt["error"], random["error"])
    assert sharegpt["values"]["base_url"] == URL
    assert {key: sharegpt["values"][key] for key in ("backend", "endpoint", "model", "tokenizer")} == {
        "backend": "openai",
        "endpoint": "/v1/completions",
        "model": "m",
        "tokenizer": "org/m",
    }
    assert (sharegpt["values"]["request_rate"], sharegpt["values"]["dataset_name"]) == (3.0, "sharegpt")
    assert sharegpt["values"]["dataset_path"] == "/data/ShareGPT_V3_unfiltered_cleaned_split.json"
    assert sharegpt["values"]["percentile_metrics"] == "ttft,tpot,itl,e2el"
    assert sharegpt["values"]["metric_percentiles"] == "50,90,99"
    assert (random["values"]["request_rate"], random["values"]["num_prompts"]) == (0.5, 7)
    assert (random["values"]["random_input_len"], random["values"]["random_output_len"]) == (1024, 128)
    assert not real_parser["typo"]["ok"], "the parser refuses unknown flags, so the check can fail"


def check(result: BenchResult, *, completed: int, rate: float) -> None:
    assert (result.completed, result.failed, result.request_rate) == (completed, 0, rate)
    assert set(result.latency_ms) == {"ttft", "tpot", "itl", "e2el"}
    for metric, stats in result.latency_ms.items():
        assert set(stats) == {"mean", "median", "p50", "p90", "p99"}, metric
        assert 0 < stats["p50"] <= stats["p90"] <= stats["p99"], metric
    assert result.latency_ms["ttft"]["p50"] <= result.latency_ms["e2el"]["p50"]
    assert result.output_tokens == completed * 4 and result.output_throughput and result.output_throughput > 0


def test_the_parser_reads_a_recorded_real_run() -> None:
    result = parse(RECORDED.read_text())
    check(result, completed=6, rate=20.0)
    assert result.latency_ms["ttft"] == {
        "mean": 25.62,
        "median": 22.76,
        "p50": 22.76,
        "p90": 40.24,
        "p99": 40.41,
    }
    assert result.total_token_throughput == 191.03 and result.duration_s == 0.38


def test_output_without_a_result_table_is_one_clear_error() -> None:
    text = RECORDED.read_text()
    with pytest.raises(UserError, match="no 'Serving Benchmark Result' table"):
        parse(text.replace("Serving Benchmark Result", "Something Else"))
    with pytest.raises(UserError, match="no Successful requests line"):
        parse("\n".join(line for line in text.splitlines() if not line.startswith("Successful")))


def test_cost_per_million_tokens() -> None:
    result = parse(RECORDED.read_text())
    assert result.output_throughput == 63.68
    assert cost_per_million_output_tokens(result, 0.48) == pytest.approx(0.48 / (63.68 * 3600) * 1e6)
    assert cost_per_million_output_tokens(result, None) is None


@pytest.mark.integration
def test_a_real_run_parses(tmp_path: Path) -> None:
    """The real `vllm bench serve` (vLLM 0.33.0, in .venv-vllm) with this program's arguments, against a
    fake OpenAI server that insists on the API key; its printed table is what the parser reads."""
    if not (VLLM / "vllm").exists():
        pytest.skip(f"needs vLLM in {VLLM.parent}: run `make vllm-parser` (make test does)")
    tokenizer = tmp_path / "tokenizer"
    subprocess.run([str(VLLM / "python"), str(TOKENIZER), str(tokenizer)], check=True, timeout=300)
    port = free_port()
    server = subprocess.Popen(
        [
            str(REPO_ROOT / ".venv" / "bin" / "python"),
            str(Path(__file__).parent / "fake_openai.py"),
            str(port),
            "k",
            "tiny",
        ]
    )
    try:
        wait_for_port(port, server)
        settings = BenchSettings(
            dataset="random", request_rate=20, num_prompts=6, random_input_len=8, random_output_len=4
        )
        args = bench_args(
            model=str(tokenizer),
            served_model_name="tiny",
            base_url=f"http://127.0.0.1:{port}",
            settings=settings,
        )
        env = {**os.environ, "OPENAI_API_KEY": "k", "HF_HUB_OFFLINE": "1", "VLLM_TARGET_DEVICE": "cpu"}
        run = subprocess.run(
            [str(VLLM / "vllm"), "bench", "serve", *args],
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
            cwd=tmp_path,
            check=False,
        )
    finally:
        stop_process(server)
    assert run.returncode == 0, run.stderr[-2000:]
    check(parse(run.stdout), completed=6, rate=20.0)
