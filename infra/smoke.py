"""Smoke test of a deployed endpoint against its plan: `python -m infra smoke`.

It closes the loop between the planner and a real vLLM server: the served name and `max_model_len` on
`/v1/models` must equal the plan's, one chat completion and one streamed completion must answer, and,
where vLLM's `/metrics` is reachable, the KV cache vLLM allocated (`num_gpu_blocks` x `block_size`) is
compared with the plan's KV-cache tokens. Mismatches a user must fix raise UserError (one line, exit 2);
the KV comparison only warns, because the planner's memory constants are estimates.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from infra.errors import UserError

PROJECT_DIR = Path(__file__).resolve().parent.parent
# vLLM 0.33.0's info-style gauge whose labels copy the engine's CacheConfig (../shared/vllm-0.33.0/README.md).
CACHE_CONFIG_INFO = "vllm:cache_config_info"
# Beyond this the planner's KV estimate is reported as a warning: its GPU-only constants need a look.
KV_WARN_PERCENT = 10.0
SMOKE_PROMPT = "Reply with one word: hello."
SMOKE_MAX_TOKENS = 16
NO_PULUMI = (
    "the Pulumi CLI is not on PATH, so --stack cannot read the stack outputs; "
    "pass --url, --api-key, --model and --max-model-len [--kv-cache-tokens] instead"
)


@dataclass(frozen=True)
class RevisionPlan:
    """What one model revision's plan promises a client."""

    name: str
    served_model_name: str
    max_model_len: int
    kv_cache_tokens: int | None = None
    weight: int = 100
    lora_adapters: tuple[str, ...] = ()  # LoRA adapters it serves by name


@dataclass(frozen=True)
class Target:
    """An endpoint and the revisions that take its traffic (weight > 0; they share one served name and
    the LoRA adapters)."""

    url: str
    api_key: str
    revisions: tuple[RevisionPlan, ...]

    @property
    def served_model_name(self) -> str:
        return self.revisions[0].served_model_name

    @property
    def lora_adapters(self) -> tuple[str, ...]:
        return self.revisions[0].lora_adapters


@dataclass(frozen=True)
class Check:
    name: str
    detail: str
    seconds: float | None = None


@dataclass
class SmokeReport:
    checks: list[Check] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


# --- the deployed stack's outputs -------------------------------------------------------------------


PulumiRunner = Callable[[list[str]], subprocess.CompletedProcess[str]]


def _run_pulumi(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, cwd=PROJECT_DIR, timeout=120, check=False)


def read_stack_outputs(stack: str, run: PulumiRunner = _run_pulumi) -> dict[str, Any]:
    """`pulumi stack output --json --show-secrets` of a deployed stack, as a dict."""
    pulumi = shutil.which("pulumi")
    if pulumi is None:
        raise UserError(NO_PULUMI, key="--stack")
    result = run([pulumi, "stack", "output", "--json", "--show-secrets", "--stack", stack])
    if result.returncode != 0:
        last_line = (result.stderr.strip().splitlines() or ["no message"])[-1]
        raise UserError(f"pulumi stack output failed for stack {stack!r}: {last_line}", key="--stack")
    try:
        outputs = json.loads(result.stdout)
    except json.JSONDecodeError:
        raise UserError(f"pulumi stack output for {stack!r} is not JSON", key="--stack") from None
    if not isinstance(outputs, dict):
        raise UserError(f"pulumi stack output for {stack!r} is not a JSON object", key="--stack")
    return outputs


def target_from_outputs(outputs: Mapping[str, Any]) -> Target:
    """The endpoint and the weighted revisions, from the stack outputs `endpointUrl`, `apiKey` and
    `servedModels` ({revision: {servedModelName, maxModelLen, kvCacheTokens, weight}})."""

    def need(mapping: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
        value = mapping.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise UserError(
                f"the stack has no {kind.__name__} output {where}{key} (was it deployed with the endpoint?)",
                key="--stack",
            )
        return value

    url = need(outputs, "endpointUrl", str, "")
    api_key = need(outputs, "apiKey", str, "")
    served = need(outputs, "servedModels", dict, "")
    revisions = []
    for name, entry in served.items():
        where = f"servedModels.{name}."
        if not isinstance(entry, dict):
            raise UserError(f"the stack output servedModels.{name} is not an object", key="--stack")
        kv = entry.get("kvCacheTokens")
        adapters = entry.get("loraAdapters", [])
        if not isinstance(adapters, list) or not all(isinstance(a, str) for a in adapters):
            raise UserError(f"the stack output {where}loraAdapters is not a list of names", key="--stack")
        revisions.append(
            RevisionPlan(
                name=name,
                served_model_name=need(entry, "servedModelName", str, where),
                max_model_len=need(entry, "maxModelLen", int, where),
                kv_cache_tokens=kv if isinstance(kv, int) and not isinstance(kv, bool) else None,
                weight=need(entry, "weight", int, where),
                lora_adapters=tuple(adapters),
            )
        )
    live = tuple(revision for revision in revisions if revision.weight > 0)
    if not live:
        raise UserError("no revision in the stack output servedModels has a weight above 0", key="--stack")
    names = sorted({revision.served_model_name for revision in live})
    if len(names) > 1:
        raise UserError(
            f"the revisions taking traffic serve different names {names}; one endpoint serves one name",
            key="--stack",
        )
    if len({revision.lora_adapters for revision in live}) > 1:
        raise UserError(
            "the revisions taking traffic serve different LoRA adapters; one endpoint serves one set",
            key="--stack",
        )
    return Target(url=url, api_key=api_key, revisions=live)


# --- the checks -------------------------------------------------------------------------------------


def _require_http_url(url: str, key: str, example: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UserError(f"{url!r} is not an http(s) URL, e.g. {example}", key=key)


def api_base_url(url: str) -> str:
    """The OpenAI base URL of an endpoint given with or without its /v1."""
    _require_http_url(url, "--url", "http://HOST or http://127.0.0.1:8000")
    base = url.rstrip("/")
    return base if base.endswith("/v1") else f"{base}/v1"


def metrics_endpoint(url: str) -> str:
    """vLLM's metrics URL from `--metrics-url`: the server's root (port-forwarded) or its /metrics."""
    _require_http_url(url, "--metrics-url", "http://127.0.0.1:8000/metrics")
    return url if urlsplit(url).path.strip("/") else f"{url.rstrip('/')}/metrics"


@contextmanager
def _api_errors(url: str, timeout_s: float) -> Iterator[None]:
    """The OpenAI client's errors as one line a user can act on."""
    import openai

    try:
        yield
    except openai.AuthenticationError:
        raise UserError(
            f"{url} refused the API key (401 Unauthorized); use the stack's apiKey output or the right --api-key",
            key="--api-key",
        ) from None
    except openai.APITimeoutError:
        raise UserError(
            f"{url} did not answer within {timeout_s:g} s (raise --timeout?)", key="--url"
        ) from None
    except openai.APIConnectionError as error:  # refused, unresolvable, or cut off mid-stream
        cause = error.__cause__ or error
        raise UserError(f"connection to {url} failed: {cause}", key="--url") from None
    except openai.APIStatusError as error:
        raise UserError(f"{url} answered {error.status_code}: {error.message}", key="--url") from None
    except openai.APIError as error:  # e.g. an error event inside the stream
        raise UserError(f"{url} failed the request: {error.message}", key="--url") from None


def check_models(client: Any, target: Target) -> Check:
    """The served name is listed and its base card's max_model_len is one the plan promises."""
    started = time.perf_counter()
    cards = list(client.models.list())
    elapsed = time.perf_counter() - started
    wanted = target.served_model_name
    served = [card.id for card in cards]
    # LoRA adapters are listed too, with `parent` set; the base model's card has none.
    base = next((card for card in cards if card.id == wanted and not getattr(card, "parent", None)), None)
    if base is None:
        raise UserError(
            f"the endpoint serves {served}, not {wanted!r} as the plan says; "
            "call it with one of those names or redeploy the revision",
            key="servedModelName",
        )
    reported = (base.model_extra or {}).get("max_model_len")
    planned = sorted({revision.max_model_len for revision in target.revisions})
    if reported not in planned:
        plan_text = " or ".join(str(length) for length in planned)
        raise UserError(
            f"{wanted!r} serves max_model_len {reported}, the plan says {plan_text}; "
            "the server was started with other arguments than the plan's",
            key="maxModelLen",
        )
    adapters = {card.id for card in cards if getattr(card, "parent", None) == wanted}
    missing = [name for name in target.lora_adapters if name not in adapters]
    if missing:
        raise UserError(
            f"the endpoint lists no LoRA adapter {missing[0]!r} of {wanted!r} (it lists {sorted(adapters)}); "
            "check the revision's lora-pull init containers and vLLM's log",
            key="loraAdapters",
        )
    listed = f", LoRA adapters {', '.join(target.lora_adapters)}" if target.lora_adapters else ""
    return Check("/v1/models", f"{wanted!r}, max_model_len {reported:,} as planned{listed}", elapsed)


def check_chat(client: Any, model: str, name: str = "chat completion") -> Check:
    started = time.perf_counter()
    completion = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": SMOKE_PROMPT}],
        max_tokens=SMOKE_MAX_TOKENS,
        temperature=0,
    )
    elapsed = time.perf_counter() - started
    text = delta_text(completion.choices[0].message) if completion.choices else ""
    tokens = completion.usage.completion_tokens if completion.usage else None
    if not text and not tokens:
        raise UserError(f"the chat completion from {model!r} came back empty", key="--url")
    return Check(name, f"{tokens if tokens is not None else '?'} tokens: {text.strip()[:40]!r}", elapsed)


def delta_text(delta: Any) -> str:
    """A streamed delta's text: the answer, or a reasoning model's thinking, which vLLM streams first
    and apart (`reasoning`, `reasoning_content` before it) when a reasoning parser is on."""
    extra = delta.model_extra or {}
    return delta.content or extra.get("reasoning") or extra.get("reasoning_content") or ""


def check_stream(client: Any, model: str) -> Check:
    """A streamed completion; time to first token counts to the first chunk carrying text."""
    started = time.perf_counter()
    first_token_s = None
    chunks = 0
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": SMOKE_PROMPT}],
        max_tokens=SMOKE_MAX_TOKENS,
        temperature=0,
        stream=True,
    )
    for chunk in stream:
        if chunk.choices and delta_text(chunk.choices[0].delta):
            chunks += 1
            if first_token_s is None:
                first_token_s = time.perf_counter() - started
    elapsed = time.perf_counter() - started
    if first_token_s is None:
        raise UserError(f"the streamed completion from {model!r} carried no text", key="--url")
    return Check(
        "streamed completion",
        f"time to first token {first_token_s * 1000:.0f} ms, {chunks} text chunks",
        elapsed,
    )


def kv_cache_tokens_from_metrics(text: str) -> tuple[int, int, int]:
    """(num_gpu_blocks, block_size, tokens) from vLLM's exposition; several engines report the smallest."""
    from prometheus_client.parser import text_string_to_metric_families

    found = []
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError as error:
        raise ValueError(f"the metrics are not Prometheus exposition text ({error})") from None
    for family in families:
        if family.name != CACHE_CONFIG_INFO:
            continue
        for sample in family.samples:
            try:
                blocks = int(sample.labels["num_gpu_blocks"])
                block_size = int(sample.labels["block_size"])
            except (KeyError, ValueError):
                raise ValueError(
                    f"{CACHE_CONFIG_INFO} has no integer num_gpu_blocks and block_size labels: {sample.labels}"
                ) from None
            found.append((blocks * block_size, blocks, block_size))
    if not found:
        raise ValueError(f"no {CACHE_CONFIG_INFO} in the metrics (is vLLM running with --disable-log-stats?)")
    tokens, blocks, block_size = min(found)
    return blocks, block_size, tokens


def planner_error_percent(planned: int, actual: int) -> float:
    """How far the plan's KV tokens are from what vLLM allocated, relative to vLLM's figure."""
    return (planned - actual) / actual * 100


def check_kv_cache(metrics_url: str, planned: int | None, timeout_s: float, report: SmokeReport) -> Check:
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(metrics_url, timeout=timeout_s) as response:
            text = response.read().decode()
        blocks, block_size, tokens = kv_cache_tokens_from_metrics(text)
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        report.warnings.append(f"KV-cache check skipped: {metrics_url}: {reason}")
        return Check("KV cache (/metrics)", "skipped, see the warning", time.perf_counter() - started)
    elapsed = time.perf_counter() - started
    allocated = f"{blocks:,} blocks x {block_size} = {tokens:,} tokens"
    if planned is None:
        return Check("KV cache (/metrics)", f"{allocated}; no planned figure to compare", elapsed)
    error_percent = planner_error_percent(planned, tokens)
    if abs(error_percent) > KV_WARN_PERCENT:
        report.warnings.append(
            f"the plan's KV cache ({planned:,} tokens) is {error_percent:+.1f}% off what vLLM allocated "
            f"({tokens:,}), beyond {KV_WARN_PERCENT:g}%: the planner's constants "
            "(infra/sizing/vllm_constants.py) need a look for this GPU and model"
        )
    return Check(
        "KV cache (/metrics)", f"{allocated}; plan {planned:,}, planner error {error_percent:+.1f}%", elapsed
    )


def planned_kv_tokens(target: Target, revision: str | None) -> tuple[int | None, str | None]:
    """The plan's KV tokens to compare /metrics with, and a warning when that is ambiguous."""
    if revision is not None:
        chosen = [candidate for candidate in target.revisions if candidate.name == revision]
        if not chosen:
            names = [candidate.name for candidate in target.revisions]
            raise UserError(
                f"{revision!r} is not a revision taking traffic; use one of {names}", key="--revision"
            )
        return chosen[0].kv_cache_tokens, None
    figures = {candidate.kv_cache_tokens for candidate in target.revisions}
    if len(figures) == 1:
        return figures.pop(), None
    return None, "the revisions taking traffic plan different KV caches; pass --revision NAME to compare one"


def run_smoke(
    target: Target,
    *,
    metrics_url: str | None = None,
    revision: str | None = None,
    timeout_s: float = 120.0,
) -> SmokeReport:
    """Every check against the endpoint, in order; the first hard failure raises UserError."""
    import openai

    report = SmokeReport()
    planned_kv, ambiguity = planned_kv_tokens(target, revision)
    base_url = api_base_url(target.url)
    # No retries: a smoke test reports the first failure as it is, and fast.
    client = openai.OpenAI(base_url=base_url, api_key=target.api_key, timeout=timeout_s, max_retries=0)
    with client, _api_errors(target.url, timeout_s):
        report.checks.append(check_models(client, target))
        report.checks.append(check_chat(client, target.served_model_name))
        report.checks.append(check_stream(client, target.served_model_name))
        if target.lora_adapters:  # one adapter answers: its weights loaded and vLLM routes by its name
            adapter = target.lora_adapters[0]
            report.checks.append(check_chat(client, adapter, f"LoRA {adapter!r} completion"))
    if metrics_url is None:
        report.warnings.append(
            "KV-cache check skipped: the endpoint exposes only /v1; port-forward a revision's Service "
            "(kubectl port-forward svc/vllm-REVISION 8000) and pass --metrics-url http://127.0.0.1:8000"
        )
        return report
    if ambiguity:
        report.warnings.append(ambiguity)
    report.checks.append(check_kv_cache(metrics_endpoint(metrics_url), planned_kv, timeout_s, report))
    return report
