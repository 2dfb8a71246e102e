"""`python -m infra smoke` against an OpenAI-compatible fake vLLM on 127.0.0.1, and its pure parts."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from openai.types.chat import ChatCompletionChunk

from infra.cli import main
from infra.errors import UserError
from infra.smoke import (
    NO_PULUMI,
    RevisionPlan,
    Target,
    api_base_url,
    delta_text,
    kv_cache_tokens_from_metrics,
    metrics_endpoint,
    planned_kv_tokens,
    planner_error_percent,
    target_from_outputs,
)
from tests.conftest import REPO_ROOT, free_port, run_infra, stop_process, wait_for_port
from tests.vllm_facts import metrics_exposition

MODEL = "Qwen/Qwen3-8B"
KEY = "sk-smoke-test"
MAX_MODEL_LEN = 32768
FIRST_TOKEN_DELAY_S = 0.3
# the exposition (tests/vllm_metrics_dump.py): vllm:cache_config_info{block_size="16", num_gpu_blocks="27000"}.
VLLM_KV_TOKENS = 27000 * 16


SmokeRunner = Callable[..., subprocess.CompletedProcess[str]]


def metrics_file() -> Path:
    return metrics_exposition()


def start_fake_server(*extra: str) -> tuple[str, subprocess.Popen]:
    """The fake vLLM, replaying vLLM 0.33.0's real /metrics; the caller stops it by its PID."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            str(REPO_ROOT / "tests" / "fake_openai_server.py"),
            *("--port", str(port), "--api-key", KEY, "--model", MODEL),
            *("--max-model-len", str(MAX_MODEL_LEN), "--metrics", str(metrics_file())),
            *("--first-token-delay", str(FIRST_TOKEN_DELAY_S), "--max-seconds", "300", *extra),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, process)
    except BaseException:
        stop_process(process)
        raise
    return f"http://127.0.0.1:{port}", process


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    url, process = start_fake_server()
    try:
        yield url
    finally:
        stop_process(process)


def run_smoke_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "220"}
    env.pop("LLM_SERVING_API_KEY", None)
    return run_infra("smoke", *args, env=env)


@pytest.fixture
def smoke(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> SmokeRunner:
    """`python -m infra smoke ARGS` in this process through the same main(), which is much faster than
    a new interpreter per case; run_smoke_cli proves the real subprocess path."""

    def run(*args: str, path: str | None = None) -> subprocess.CompletedProcess[str]:
        monkeypatch.setenv("COLUMNS", "220")
        monkeypatch.delenv("LLM_SERVING_API_KEY", raising=False)
        if path is not None:
            monkeypatch.setenv("PATH", path)
        monkeypatch.setattr(sys, "argv", ["infra", "smoke", *args])
        capsys.readouterr()
        try:
            main()
            status = 0
        except SystemExit as exited:
            status = exited.code if isinstance(exited.code, int) else 1
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(list(args), status, out, err)

    return run


def url_args(
    url: str, *, key: str = KEY, model: str = MODEL, max_model_len: str = str(MAX_MODEL_LEN)
) -> list[str]:
    return ["--url", url, "--api-key", key, "--model", model, "--max-model-len", max_model_len]


def assert_one_line_failure(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


# --- end to end against the fake server -------------------------------------------------------------


def test_success_prints_every_check_with_the_planner_error(server: str) -> None:
    result = run_smoke_cli(*url_args(server), "--kv-cache-tokens", "440000", "--metrics-url", server)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # within tolerance: no warning
    out = result.stdout
    assert f"'{MODEL}', max_model_len 32,768 as planned" in out
    assert "7 tokens: 'Hello! How can I help?'" in out
    ttft = re.search(r"time to first token (\d+) ms, 7 text chunks", out)
    assert ttft is not None, out
    assert int(ttft.group(1)) >= FIRST_TOKEN_DELAY_S * 1000
    expected_error = (440000 - VLLM_KV_TOKENS) / VLLM_KV_TOKENS * 100
    assert f"27,000 blocks x 16 = 432,000 tokens; plan 440,000, planner error {expected_error:+.1f}%" in out
    assert len(re.findall(r"│ +\d+ ms │", out)) == 4  # the time column, one per check


def test_kv_error_beyond_tolerance_is_a_warning_not_a_failure(server: str, smoke: SmokeRunner) -> None:
    result = smoke(*url_args(server), "--kv-cache-tokens", "600000", "--metrics-url", f"{server}/metrics")
    assert result.returncode == 0, result.stderr
    assert "planner error +38.9%" in result.stdout
    warnings = result.stderr.strip().splitlines()
    assert len(warnings) == 1 and warnings[0].startswith("warning: "), result.stderr
    assert "+38.9% off what vLLM allocated (432,000)" in warnings[0]


def test_without_metrics_url_the_kv_check_is_skipped_with_a_hint(server: str, smoke: SmokeRunner) -> None:
    result = smoke(*url_args(server))
    assert result.returncode == 0, result.stderr
    assert "KV cache" not in result.stdout
    assert "kubectl port-forward svc/vllm-REVISION 8000" in result.stderr


def test_metrics_that_cannot_be_read_only_warn(server: str, smoke: SmokeRunner) -> None:
    # A metrics URL answering 404 (the fake serves /metrics only at that path) skips the check with a reason.
    result = smoke(*url_args(server), "--metrics-url", f"{server}/not-metrics")
    assert result.returncode == 0, result.stderr
    assert "KV-cache check skipped" in result.stderr and "Not Found" in result.stderr


def test_wrong_key_is_a_401_line(server: str) -> None:
    assert_one_line_failure(run_smoke_cli(*url_args(server, key="sk-wrong")), "--api-key", "401")


def test_unreachable_endpoint(smoke: SmokeRunner) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    assert_one_line_failure(
        smoke(*url_args(url), "--timeout", "5"), f"connection to {url} failed", "Connection refused"
    )


def test_model_name_mismatch(server: str, smoke: SmokeRunner) -> None:
    result = smoke(*url_args(server, model="meta-llama/Llama-3.1-8B-Instruct"))
    assert_one_line_failure(result, "servedModelName", f"'{MODEL}'", "'meta-llama/Llama-3.1-8B-Instruct'")


def test_context_length_mismatch(server: str, smoke: SmokeRunner) -> None:
    result = smoke(*url_args(server, max_model_len="8K"))  # read as vLLM reads it: 8192
    assert_one_line_failure(result, "maxModelLen", "serves max_model_len 32768, the plan says 8192")


def test_a_stream_cut_off_mid_body_is_one_line(smoke: SmokeRunner) -> None:
    url, process = start_fake_server("--break-stream")
    try:
        result = smoke(*url_args(url))
    finally:
        stop_process(process)
    assert_one_line_failure(result, "--url", f"connection to {url} failed", "incomplete chunked read")


def test_a_server_slower_than_the_timeout_is_one_line(smoke: SmokeRunner) -> None:
    url, process = start_fake_server("--first-token-delay", "3")  # the last option wins
    try:
        result = smoke(*url_args(url), "--timeout", "0.5")
    finally:
        stop_process(process)
    assert_one_line_failure(result, "--url", f"{url} did not answer within 0.5 s")


def test_missing_options_name_what_is_needed(smoke: SmokeRunner) -> None:
    assert_one_line_failure(smoke("--url", "http://127.0.0.1:1"), "--api-key", "--stack NAME")


# --- --stack through the Pulumi CLI --------------------------------------------------------------------


def fake_pulumi(tmp_path: Path, outputs: dict[str, object], status: int = 0) -> str:
    """A `pulumi` on PATH that records its arguments and prints the given stack outputs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (tmp_path / "outputs.json").write_text(json.dumps(outputs))
    script = bin_dir / "pulumi"
    # Python, not sh: PATH holds only this directory, so the script may not call other programs.
    script.write_text(
        f"#!{sys.executable}\n"
        "import pathlib, sys\n"
        f"here = pathlib.Path({str(tmp_path)!r})\n"
        "(here / 'args').write_text(' '.join(sys.argv[1:]))\n"
        f"if {status}:\n"
        "    print('error: no stack named dev found', file=sys.stderr)\n"
        f"    sys.exit({status})\n"
        "print((here / 'outputs.json').read_text())\n"
    )
    script.chmod(0o755)
    return str(bin_dir)


def stack_outputs(url: str) -> dict[str, object]:
    return {
        "endpointUrl": url,
        "apiKey": KEY,
        "servedModels": {
            "qwen3-8b-v1": {
                "servedModelName": MODEL,
                "maxModelLen": MAX_MODEL_LEN,
                "kvCacheTokens": 420000,
                "weight": 100,
            },
            # No traffic: its other context length must not be what the endpoint is checked against.
            "qwen3-8b-v2": {
                "servedModelName": MODEL,
                "maxModelLen": 8192,
                "kvCacheTokens": 90000,
                "weight": 0,
            },
        },
    }


def test_stack_outputs_drive_the_checks(tmp_path: Path, server: str, smoke: SmokeRunner) -> None:
    path = fake_pulumi(tmp_path, stack_outputs(server))
    result = smoke("--stack", "dev", "--metrics-url", server, path=path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "args").read_text().split() == [
        "stack",
        "output",
        "--json",
        "--show-secrets",
        "--stack",
        "dev",
    ]
    assert "max_model_len 32,768 as planned" in result.stdout
    expected_error = (420000 - VLLM_KV_TOKENS) / VLLM_KV_TOKENS * 100
    assert f"plan 420,000, planner error {expected_error:+.1f}%" in result.stdout


def test_stack_key_can_be_overridden_and_is_checked(tmp_path: Path, server: str, smoke: SmokeRunner) -> None:
    path = fake_pulumi(tmp_path, stack_outputs(server))
    result = smoke("--stack", "dev", "--api-key", "sk-wrong", path=path)
    assert_one_line_failure(result, "401")


def test_stack_without_the_pulumi_cli(tmp_path: Path, smoke: SmokeRunner) -> None:
    result = smoke("--stack", "dev", path=str(tmp_path))  # an empty PATH: no pulumi
    assert_one_line_failure(result, NO_PULUMI)


def test_pulumi_failure_is_reported_in_one_line(tmp_path: Path, smoke: SmokeRunner) -> None:
    path = fake_pulumi(tmp_path, {}, status=255)
    assert_one_line_failure(smoke("--stack", "dev", path=path), "no stack named dev found")


# --- pure parts ---------------------------------------------------------------------------------------


def test_kv_cache_tokens_from_real_vllm_metrics() -> None:
    assert kv_cache_tokens_from_metrics(metrics_file().read_text()) == (27000, 16, VLLM_KV_TOKENS)


def test_several_engines_report_the_smallest_kv_cache() -> None:
    text = (
        "# TYPE vllm:cache_config_info gauge\n"
        'vllm:cache_config_info{block_size="16",engine="0",num_gpu_blocks="1000"} 1.0\n'
        'vllm:cache_config_info{block_size="32",engine="1",num_gpu_blocks="400"} 1.0\n'
    )
    assert kv_cache_tokens_from_metrics(text) == (400, 32, 12800)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running 0.0\n",
            "no vllm:cache_config_info",
        ),
        ('vllm:cache_config_info{block_size="16",num_gpu_blocks="None"} 1.0\n', "no integer num_gpu_blocks"),
        ("vllm:cache_config_info{block_size=16} 1\n", "not Prometheus exposition text"),
    ],
)
def test_metrics_without_a_usable_kv_cache(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        kv_cache_tokens_from_metrics(text)


@pytest.mark.parametrize(
    ("planned", "actual", "percent"), [(432000, 432000, 0.0), (440000, 400000, 10.0), (300000, 400000, -25.0)]
)
def test_planner_error_is_relative_to_what_vllm_allocated(planned: int, actual: int, percent: float) -> None:
    assert planner_error_percent(planned, actual) == pytest.approx(percent)


@pytest.mark.parametrize(
    ("url", "base", "metrics"),
    [
        ("http://alb.example", "http://alb.example/v1", "http://alb.example/metrics"),
        ("http://127.0.0.1:8000/", "http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/metrics"),
        ("https://host/v1/", "https://host/v1", "https://host/v1/"),
    ],
)
def test_urls(url: str, base: str, metrics: str) -> None:
    assert api_base_url(url) == base
    assert metrics_endpoint(url) == metrics


def test_a_url_without_scheme_names_the_option() -> None:
    with pytest.raises(UserError, match=r"^--url: 'alb\.example' is not an http"):
        api_base_url("alb.example")
    with pytest.raises(UserError, match=r"^--metrics-url: 'localhost:8000' is not an http"):
        metrics_endpoint("localhost:8000")


def test_outputs_keep_only_revisions_with_traffic() -> None:
    target = target_from_outputs(stack_outputs("http://alb"))
    assert target == Target(
        url="http://alb",
        api_key=KEY,
        revisions=(RevisionPlan("qwen3-8b-v1", MODEL, MAX_MODEL_LEN, 420000, 100),),
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda o: o.pop("apiKey"), "no str output apiKey"),
        (lambda o: o.update(servedModels=[]), "no dict output servedModels"),
        (
            lambda o: o["servedModels"]["qwen3-8b-v1"].update(maxModelLen="32k"),
            "servedModels.qwen3-8b-v1.maxModelLen",
        ),
        (lambda o: o["servedModels"]["qwen3-8b-v1"].update(weight=0), "no revision .* weight above 0"),
        (
            lambda o: o["servedModels"]["qwen3-8b-v2"].update(weight=50, servedModelName="other"),
            "serve different names",
        ),
    ],
)
def test_bad_outputs_name_what_is_wrong(change, message: str) -> None:
    outputs = json.loads(json.dumps(stack_outputs("http://alb")))
    change(outputs)
    with pytest.raises(UserError, match=message):
        target_from_outputs(outputs)


def test_kv_comparison_with_several_weighted_revisions_needs_a_choice() -> None:
    outputs = stack_outputs("http://alb")
    outputs["servedModels"]["qwen3-8b-v2"].update(weight=50, maxModelLen=MAX_MODEL_LEN)  # type: ignore[index]
    target = target_from_outputs(outputs)
    assert len(target.revisions) == 2
    planned, warning = planned_kv_tokens(target, None)
    assert planned is None and warning is not None and "--revision" in warning
    assert planned_kv_tokens(target, "qwen3-8b-v2") == (90000, None)
    with pytest.raises(UserError, match="--revision"):
        planned_kv_tokens(target, "qwen3-8b-v9")


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        ({"content": "Hi"}, "Hi"),
        ({"role": "assistant", "content": ""}, ""),
        ({"content": None, "reasoning": "Let me"}, "Let me"),
        ({"content": None, "reasoning_content": "Okay,"}, "Okay,"),
    ],
)
def test_a_reasoning_model_streams_thinking_first_and_that_is_its_first_token(
    delta: dict[str, object], text: str
) -> None:
    chunk = ChatCompletionChunk.model_validate(
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": MODEL,
            "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
        }
    )
    assert delta_text(chunk.choices[0].delta) == text


# --- LoRA adapters ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lora_server() -> Iterator[str]:
    url, process = start_fake_server("--lora", "sql", "--lora", "chat-de")
    try:
        yield url
    finally:
        stop_process(process)


def test_adapters_are_listed_and_one_answers(lora_server: str, tmp_path: Path, smoke: SmokeRunner) -> None:
    outputs = stack_outputs(lora_server)
    for entry in outputs["servedModels"].values():  # type: ignore[union-attr]
        entry["loraAdapters"] = ["sql", "chat-de"]
    result = smoke("--stack", "dev", path=fake_pulumi(tmp_path, outputs))
    assert result.returncode == 0, result.stderr
    assert "max_model_len 32,768 as planned, LoRA adapters sql, chat-de" in result.stdout
    assert "LoRA 'sql' completion" in result.stdout and "7 tokens: 'Hello! How can I help?'" in result.stdout


def test_an_adapter_the_endpoint_does_not_list_is_one_line(lora_server: str, smoke: SmokeRunner) -> None:
    result = smoke(*url_args(lora_server), "--lora-adapter", "sql", "--lora-adapter", "fr")
    assert_one_line_failure(result, "loraAdapters:", "no LoRA adapter 'fr'", "['chat-de', 'sql']")
    # without adapters to check, the smoke test asks nothing of them (the fake lists two)
    assert smoke(*url_args(lora_server)).returncode == 0


def test_revisions_with_traffic_must_serve_the_same_adapters() -> None:
    outputs = stack_outputs("http://127.0.0.1:1")
    served = outputs["servedModels"]
    served["qwen3-8b-v1"]["loraAdapters"] = ["sql"]  # type: ignore[index]
    served["qwen3-8b-v2"].update(weight=50, maxModelLen=MAX_MODEL_LEN)  # type: ignore[index]
    with pytest.raises(UserError, match="different LoRA adapters"):
        target_from_outputs(outputs)
    served["qwen3-8b-v2"]["loraAdapters"] = ["sql"]  # type: ignore[index]
    assert target_from_outputs(outputs).lora_adapters == ("sql",)
    served["qwen3-8b-v2"]["loraAdapters"] = "sql"  # type: ignore[index]
    with pytest.raises(UserError, match="loraAdapters is not a list of names"):
        target_from_outputs(outputs)
