"""`python -m infra bench --stack NAME`: run the benchmark Job in a deployed stack and print its result
next to the planner's expectations.

Reads the stack's outputs with the Pulumi CLI (kubeconfig, namespace, serving image, Secret names, plan),
creates the Job with kubectl, waits for it, and parses `vllm bench serve`'s table from its log. The Job is
started on demand, not kept by `pulumi up`: a benchmark is a run, not desired state.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from infra.bench.results import parse, report
from infra.bench.spec import CONTAINER, DATASETS, BenchSettings, bench_args, bench_job, job_name, service_url
from infra.errors import UserError
from infra.kubernetes.model_cache import SecretKeyRef

POLL_S = 5.0


def _tool(name: str, hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise UserError(f"needs {name} on PATH ({hint})")
    return path


def stack_outputs(stack: str) -> dict[str, Any]:
    pulumi = _tool("pulumi", "the Pulumi CLI, logged in to the stack's backend")
    result = subprocess.run(
        [pulumi, "stack", "output", "--json", "--show-secrets", "--stack", stack],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        detail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"cannot read the outputs of stack {stack!r}: {detail}", key="--stack")
    return json.loads(result.stdout or "{}")


def _required(outputs: dict[str, Any], key: str, stack: str) -> Any:
    value = outputs.get(key)
    if not value:
        raise UserError(f"stack {stack!r} has no {key} output; run `pulumi up` for it first", key="--stack")
    return value


@contextmanager
def _kubeconfig(content: Any) -> Iterator[Path]:
    """The stack's kubeconfig in a private temporary file, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="llm-serving-bench-") as folder:
        path = Path(folder) / "kubeconfig"
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(content if isinstance(content, str) else json.dumps(content))
        yield path


def _kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    kubectl = _tool("kubectl", "to reach the stack's cluster")
    result = subprocess.run(
        [kubectl, "--kubeconfig", str(kubeconfig), *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise UserError(
            f"kubectl {args[0]} failed: {(result.stderr.strip().splitlines() or ['no output'])[-1]}"
        )
    return result.stdout


def wait_for(kubeconfig: Path, name: str, namespace: str, timeout_s: float) -> bool:
    """True when the Job succeeded, False when it failed; UserError when it is still running at the end."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = json.loads(_kubectl(kubeconfig, "get", "job", name, "-n", namespace, "-o", "json")).get(
            "status", {}
        )
        if status.get("succeeded"):
            return True
        if status.get("failed"):
            return False
        time.sleep(POLL_S)
    raise UserError(
        f"job {name} still running after {timeout_s:.0f} s; see kubectl logs -n {namespace} job/{name}"
    )


def target_revision(
    plan: dict[str, Any], services: dict[str, str], revision: str | None, service: str | None
) -> tuple[str, dict[str, Any], str]:
    """(revision, its plan, its Service): the named revision, else the one with the largest weight (the one
    most traffic reaches); the Service from the stack's `services` output unless --service names one."""
    revisions: dict[str, dict[str, Any]] = plan.get("revisions") or {}
    if not revisions:
        raise UserError(
            "the plan output has no revisions; run `pulumi up` with this version first", key="--stack"
        )
    chosen = revision or max(revisions, key=lambda name: revisions[name].get("weight") or 0)
    if chosen not in revisions:
        raise UserError(
            f"no revision {revision!r}; the stack serves {', '.join(sorted(revisions))}", key="--revision"
        )
    target = service or services.get(chosen)
    if not target:
        raise UserError(
            f"the stack exports no Service for revision {chosen!r}; name one with --service",
            key="--service",
        )
    return chosen, revisions[chosen], target


def bench_command(
    stack: Annotated[str, typer.Option("--stack", help="A deployed stack (stacks/Pulumi.<stack>.yaml)")],
    rate: Annotated[float, typer.Option("--rate", help="Requests per second (Poisson arrivals)")] = 3.0,
    dataset: Annotated[str, typer.Option("--dataset", help=f"{' or '.join(DATASETS)}")] = "sharegpt",
    num_prompts: Annotated[int, typer.Option("--num-prompts", help="Requests to send")] = 200,
    service: Annotated[
        str | None,
        typer.Option(
            "--service",
            help="The vLLM Service to measure (default: the revision's, from the services output)",
        ),
    ] = None,
    revision: Annotated[
        str | None,
        typer.Option(
            "--revision", help="The model revision to measure (default: the one with the largest weight)"
        ),
    ] = None,
    timeout_s: Annotated[int, typer.Option("--timeout", help="Seconds the Job may run")] = 3600,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the Job instead of running it")] = False,
) -> None:
    """Benchmark a deployed stack's endpoint from inside its cluster with `vllm bench serve`."""
    from infra.components.serving_secrets import API_KEY_SECRET_KEY, HF_TOKEN_SECRET_KEY

    settings = BenchSettings(request_rate=rate, dataset=dataset, num_prompts=num_prompts)  # type: ignore[arg-type]
    outputs = stack_outputs(stack)
    namespace = _required(outputs, "namespace", stack)
    revision, plan, target = target_revision(
        _required(outputs, "plan", stack), outputs.get("services") or {}, revision, service
    )
    name = job_name(target, datetime.now(UTC).strftime("%Y%m%d-%H%M%S"))
    hf_token = outputs.get("hfTokenSecretName")
    job = bench_job(
        name=name,
        namespace=namespace,
        image=_required(outputs, "servingImage", stack),
        args=bench_args(
            model=plan["model"],
            served_model_name=plan.get("served_model_name") or plan["model"],
            base_url=service_url(target, namespace),
            settings=settings,
        ),
        api_key_secret=SecretKeyRef(_required(outputs, "apiKeySecretName", stack), API_KEY_SECRET_KEY),
        hf_token_secret=SecretKeyRef(hf_token, HF_TOKEN_SECRET_KEY) if hf_token else None,
        dataset=settings.dataset,
        timeout_s=timeout_s,
    )
    if dry_run:
        typer.echo(yaml.safe_dump(job, sort_keys=False), nl=False)
        return
    with _kubeconfig(_required(outputs, "kubeconfig", stack)) as kubeconfig:
        _kubectl(kubeconfig, "apply", "-f", "-", stdin=yaml.safe_dump(job, sort_keys=False))
        typer.echo(
            f"started job {name} in {namespace}; waiting (kubectl logs -n {namespace} -f job/{name})",
            err=True,
        )
        succeeded = wait_for(kubeconfig, name, namespace, timeout_s + 120)
        log = _kubectl(kubeconfig, "logs", "-n", namespace, f"job/{name}", "-c", CONTAINER)
    if not succeeded:
        tail = " | ".join(log.strip().splitlines()[-3:])
        raise UserError(f"benchmark job {name} failed: {tail or 'no log'}")
    title = (
        f"benchmark of {stack} revision {revision} ({plan['model']}, Service {target}): "
        f"{settings.dataset} at {rate:g} req/s, {num_prompts} prompts"
    )
    typer.echo(report(parse(log), plan, title=title), nl=False)
