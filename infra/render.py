"""`python -m infra render --stack NAME --out DIR`: what a stack would create, offline, without credentials.

Runs the real program (`__main__.py`) for `stacks/Pulumi.<stack>.yaml` under Pulumi's mock runtime, after
applying the `Pulumi.yaml` config schema to the stack file the way the Pulumi CLI would. A recording mock
monitor captures every registered resource (type, name, parent, inputs). Then:

- every Kubernetes object becomes one YAML file under `DIR/kubernetes/<component>/`;
- `DIR/resources.json` lists every resource with its inputs, secrets redacted; values a real deployment
  computes (ARNs, IDs, endpoints, autonamed names) appear as `<known after deploy: ...>` placeholders;
- `DIR/summary.md` (also printed) gives the plan, the resource counts and the estimated $/h.

The same `RecordingMocks` (infra/mock_runtime.py, which holds every use of Pulumi's private runtime API)
serve the component tests, so tests and render see identical resources.
"""

from __future__ import annotations

import json
import re
import runpy
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import yaml

from infra import mock_runtime
from infra.config import PROJECT, apply_project_config
from infra.errors import UserError
from infra.mock_runtime import (  # re-exported: tests and tools import them from here
    SECRET_SIG,
    SECRET_VALUE,
    UNKNOWN,
    RecordingMocks,
    Registration,
    known_after_deploy,
    run_pulumi_func,
    sync_await,
)
from infra.mock_runtime import (
    STACK_TYPE as STACK_TYPE,
)
from infra.mock_runtime import (
    RecordingMonitor as RecordingMonitor,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
STACKS_DIR = REPO_ROOT / "stacks"
PROGRAM = REPO_ROOT / "__main__.py"
REDACTED = "[secret]"


def install_mocks(*, stack: str, region: str = "us-east-1", preview: bool = False) -> RecordingMocks:
    """Recording mocks for this project's stacks (infra.mock_runtime.install_mocks)."""
    return mock_runtime.install_mocks(project=PROJECT, stack=stack, region=region, preview=preview)


# ---------------------------------------------------------------------------------------------------------
# Redaction and manifests


def redact(value: Any) -> Any:
    """Replace every secret value (as it travels on the wire) with a marker, keeping the keys of a secret
    map (a Secret's stringData stays a map); unknowns become placeholders; whole floats become ints again
    (numbers travel as doubles)."""
    if isinstance(value, Mapping):
        if value.get(SECRET_SIG) == SECRET_VALUE:
            inner = value.get("value")
            if isinstance(inner, Mapping):
                return {key: REDACTED for key in inner}
            return REDACTED
        return {key: redact(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact(item) for item in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if value == UNKNOWN:
        return known_after_deploy("a value")
    return value


def is_kubernetes_object(registration: Registration) -> bool:
    return (
        registration.custom
        and registration.type.startswith("kubernetes:")
        and not registration.type.startswith("kubernetes:helm.sh/")
        and "apiVersion" in registration.inputs
        and "kind" in registration.inputs
    )


def manifest(registration: Registration) -> dict[str, Any]:
    """The Kubernetes object a `kubernetes:*` resource applies, as a plain manifest."""
    inputs = redact(registration.inputs)
    ordered = {key: inputs[key] for key in ("apiVersion", "kind", "metadata") if key in inputs}
    ordered.update({key: value for key, value in inputs.items() if key not in ordered})
    return ordered


@dataclass(frozen=True)
class Rendered:
    registrations: list[Registration]
    outputs: dict[str, Any]
    logs: tuple[str, ...] = ()

    def by_urn(self) -> dict[str, Registration]:
        return {r.urn: r for r in self.registrations}

    def component_of(self, registration: Registration) -> Registration | None:
        """The nearest ancestor component of a resource (None for resources at the top of the stack)."""
        urns = self.by_urn()
        parent = urns.get(registration.parent or "")
        while parent is not None and parent.custom:
            parent = urns.get(parent.parent or "")
        return parent

    def kubernetes_objects(self) -> list[tuple[Registration, dict[str, Any]]]:
        return [(r, manifest(r)) for r in self.registrations if is_kubernetes_object(r)]

    def of_type(self, type_: str) -> list[Registration]:
        return [r for r in self.registrations if r.type == type_]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.-]+", "-", text.lower()).strip("-")


def _component_dir(rendered: Rendered, registration: Registration) -> str:
    component = rendered.component_of(registration)
    if component is None:
        return "stack"
    return _slug(f"{component.type.rsplit(':', 1)[-1]}-{component.name}")


# ---------------------------------------------------------------------------------------------------------
# Running the program


def stack_file(stack: str) -> Path:
    path = STACKS_DIR / f"Pulumi.{stack}.yaml"
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", stack) or not path.is_file():
        known = sorted(
            p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in STACKS_DIR.glob("Pulumi.*.yaml")
        )
        raise UserError(
            f"unknown stack {stack!r}; stacks in {STACKS_DIR.name}/: {', '.join(known) or 'none'}"
        )
    return path


def load_stack_config(stack: str) -> tuple[dict[str, str], set[str]]:
    """The stack file's config with the project schema applied, as the program would receive it."""
    path = stack_file(stack)
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise UserError(f"{path.name} is not valid YAML: {error}".replace("\n", " ")) from None
    if not isinstance(document, dict) or not isinstance(document.get("config", {}), dict):
        raise UserError(f"{path.name} must be a mapping with a config: section")
    return apply_project_config(document.get("config") or {}, stack=stack)


def run_program(stack: str, *, preview: bool = False) -> Rendered:
    """Run `__main__.py` for the stack under recording mocks; UserErrors surface as themselves.
    Render runs it as an update (every apply runs); `preview=True` runs it as `pulumi preview` would."""
    config, secret_keys = load_stack_config(stack)
    region = config.get(f"{PROJECT}:region", "us-east-1")
    recorder = install_mocks(stack=stack, region=region, preview=preview)
    pulumi.runtime.set_all_config(config, list(secret_keys))
    outputs: dict[str, Any] = {}

    def program() -> None:
        runpy.run_path(str(PROGRAM), run_name="__pulumi_program__")

    try:
        sync_await(run_pulumi_func(program))
        outputs = _resolve_exports()
    except pulumi.RunError as error:
        cause = error.__cause__
        if isinstance(cause, UserError):
            raise cause from None
        raise
    finally:
        pulumi.runtime.set_all_config({}, [])
    return Rendered(registrations=list(recorder.registrations), outputs=outputs, logs=tuple(recorder.logs))


def _resolve_exports() -> dict[str, Any]:
    root = mock_runtime.root_resource()
    exported = getattr(root, "outputs", {}) or {}
    resolved: dict[str, Any] = {}
    for key, value in exported.items():
        output = pulumi.Output.from_input(value)
        secret = sync_await(output.is_secret())
        resolved[key] = REDACTED if secret else sync_await(output.future(with_unknowns=True))
    return resolved


# ---------------------------------------------------------------------------------------------------------
# Writing


def resource_entries(rendered: Rendered) -> list[dict[str, Any]]:
    urns = rendered.by_urn()
    entries = []
    for registration in rendered.registrations:
        parent = urns.get(registration.parent or "")
        entries.append(
            {
                "type": registration.type,
                "name": registration.name,
                "parent": f"{parent.type}::{parent.name}" if parent else None,
                "component": not registration.custom,
                "inputs": redact(registration.inputs),
            }
        )
    return entries


def summary(stack: str, rendered: Rendered) -> str:
    plan = rendered.outputs.get("plan") or {}
    counts = Counter(r.type for r in rendered.registrations if r.custom)
    kubernetes = len(rendered.kubernetes_objects())
    lines = [f"# render of stack {stack}", ""]
    revisions = plan.get("revisions") or {}
    if revisions:
        lines += [
            "| revision | model | weight | instance type | GPUs per replica | TP / PP | max_model_len | "
            "KV cache tokens | replicas | $/h per replica |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, rev in revisions.items():
            cost = rev.get("cost_per_hour_usd")
            replicas = rev.get("replicas") or {}
            lines.append(
                f"| {name} | {rev.get('model')}@{rev.get('model_revision')} | {rev.get('weight')} | "
                f"{rev.get('instance_type')} ({rev.get('capacity_type')}) | {rev.get('gpus_per_replica')} x "
                f"{(rev.get('gpu') or {}).get('name')} | {rev.get('tensor_parallel_size')} / "
                f"{rev.get('pipeline_parallel_size')} | {rev.get('max_model_len')} | {rev.get('kv_cache_tokens')} | "
                f"{replicas.get('min')}-{replicas.get('max')} | {'unknown' if cost is None else f'{cost:.2f}'} |"
            )
        total = plan.get("cost_per_hour_usd_at_max_replicas")
        lines += ["", f"Estimated $/h at max replicas: {'unknown' if total is None else f'{total:.2f}'}", ""]
    lines += ["| resource type | count |", "|---|---|"]
    lines += [f"| {type_} | {count} |" for type_, count in sorted(counts.items())]
    lines += [
        f"| **total** | **{sum(counts.values())}** ({kubernetes} Kubernetes objects) |",
        "",
        "Estimated cost covers the GPU nodes only (catalog list prices), not the EKS control plane, "
        "system nodes, NAT gateway, load balancer or traffic.",
    ]
    return "\n".join(lines) + "\n"


def write(stack: str, rendered: Rendered, out: Path) -> list[Path]:
    """Write manifests, resources.json and summary.md under `out`; return the manifest paths."""
    out.mkdir(parents=True, exist_ok=True)
    kubernetes_dir = out / "kubernetes"
    written: list[Path] = []
    for registration, document in rendered.kubernetes_objects():
        metadata = document.get("metadata") or {}
        name = metadata.get("name") or registration.name
        namespace = metadata.get("namespace")
        file_name = _slug(f"{document['kind']}-{namespace + '-' if namespace else ''}{name}") + ".yaml"
        path = kubernetes_dir / _component_dir(rendered, registration) / file_name
        if path in written:
            raise RuntimeError(f"two Kubernetes objects render to {path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        written.append(path)
    (out / "resources.json").write_text(
        json.dumps(
            {"stack": stack, "resources": resource_entries(rendered), "outputs": rendered.outputs},
            indent=2,
            default=str,
        )
        + "\n"
    )
    (out / "summary.md").write_text(summary(stack, rendered))
    return written


def render(stack: str, out: Path) -> Rendered:
    """Run the program for `stack` and write everything under `out`."""
    rendered = run_program(stack)
    write(stack, rendered, out)
    return rendered
