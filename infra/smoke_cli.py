"""`python -m infra smoke`: check a deployed endpoint against its plan (infra/smoke.py does the work)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from infra.errors import UserError
from infra.sizing.plan import parse_token_count
from infra.smoke import RevisionPlan, SmokeReport, Target, read_stack_outputs, run_smoke, target_from_outputs


def _target(
    stack: str | None,
    url: str | None,
    api_key: str | None,
    model: str | None,
    max_model_len: str | None,
    kv_cache_tokens: int | None,
    lora_adapters: tuple[str, ...] = (),
) -> Target:
    if stack is not None:
        for option, value in (
            ("--model", model),
            ("--max-model-len", max_model_len),
            ("--kv-cache-tokens", kv_cache_tokens),
            ("--lora-adapter", lora_adapters or None),
        ):
            if value is not None:
                raise UserError("comes from the stack outputs with --stack; drop one of them", key=option)
        target = target_from_outputs(read_stack_outputs(stack))
        # --url/--api-key override the outputs, e.g. for a port-forwarded Service when the ALB is internal.
        return Target(url=url or target.url, api_key=api_key or target.api_key, revisions=target.revisions)
    missing = [
        option
        for option, value in (
            ("--url", url),
            ("--api-key", api_key),
            ("--model", model),
            ("--max-model-len", max_model_len),
        )
        if value is None
    ]
    if missing:
        raise UserError(
            "give --stack NAME, or all of --url, --api-key, --model and --max-model-len "
            f"(missing {', '.join(missing)})",
            key=missing[0],
        )
    assert url is not None and api_key is not None and model is not None and max_model_len is not None
    revision = RevisionPlan(
        name="--url",
        served_model_name=model,
        max_model_len=parse_token_count(max_model_len, "--max-model-len"),
        kv_cache_tokens=kv_cache_tokens,
        lora_adapters=lora_adapters,
    )
    return Target(url=url, api_key=api_key, revisions=(revision,))


def _print_report(report: SmokeReport, target: Target) -> None:
    table = Table(title=f"smoke test of {target.url}")
    table.add_column("check")
    table.add_column("result")
    table.add_column("time", justify="right")
    for check in report.checks:
        seconds = "" if check.seconds is None else f"{check.seconds * 1000:.0f} ms"
        table.add_row(check.name, check.detail, seconds)
    Console().print(table)
    for warning in report.warnings:
        typer.echo(f"warning: {warning}", err=True)


def smoke_command(
    stack: Annotated[
        str | None, typer.Option(help="Deployed stack whose outputs name the endpoint, key and plan")
    ] = None,
    url: Annotated[str | None, typer.Option(help="Endpoint URL, with or without /v1")] = None,
    api_key: Annotated[
        str | None, typer.Option(envvar="LLM_SERVING_API_KEY", help="Bearer key (or LLM_SERVING_API_KEY)")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Served model name the plan expects")] = None,
    max_model_len: Annotated[
        str | None, typer.Option(help="max_model_len the plan expects: 32768, 32k or 32K")
    ] = None,
    kv_cache_tokens: Annotated[
        int | None, typer.Option(help="KV-cache tokens the plan expects (compared with /metrics)")
    ] = None,
    metrics_url: Annotated[
        str | None,
        typer.Option(
            help="vLLM's /metrics, e.g. http://127.0.0.1:8000 after kubectl port-forward svc/vllm-REV 8000"
        ),
    ] = None,
    revision: Annotated[
        str | None, typer.Option(help="Revision whose planned KV cache /metrics is compared with")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each request")] = 120.0,
    lora_adapter: Annotated[
        list[str] | None,
        typer.Option(
            help="A LoRA adapter the endpoint must list; the first answers one request (repeatable)"
        ),
    ] = None,
) -> None:
    """Check a deployed endpoint against its plan: models, a chat and a streamed completion, the KV cache."""
    if timeout <= 0:
        raise UserError(f"must be positive, got {timeout:g}", key="--timeout")
    target = _target(stack, url, api_key, model, max_model_len, kv_cache_tokens, tuple(lora_adapter or ()))
    report = run_smoke(target, metrics_url=metrics_url, revision=revision, timeout_s=timeout)
    _print_report(report, target)
