"""What the policy tests check against: each stack's resources as the recording mocks record them."""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from infra.render import Rendered, redact, run_program
from infra.sizing.gpus import load_catalog
from policy import rules
from tests.stacks import as_deployed

REPO = Path(__file__).resolve().parents[2]


def as_resources(rendered: Rendered) -> list[rules.Resource]:
    """Recorded registrations as the policy pack sees resources (secrets redacted, unknowns as placeholders)."""
    return [
        rules.Resource(
            type=r.type,
            name=r.name,
            urn=r.urn,
            props=redact(r.inputs),
            dependencies=frozenset(r.dependencies),
        )
        for r in rendered.registrations
        if r.custom
    ]


@functools.cache
def recorded(stack: str) -> tuple[tuple[rules.Resource, ...], dict[str, Any]]:
    """The stack's resources and its exported plan (run once per test session)."""
    with as_deployed():  # catalog models (the Hub is not reachable in tests), tokens where needed
        rendered = run_program(stack)
    return tuple(as_resources(rendered)), rendered.outputs["plan"]


def limits(stack: str) -> rules.StackLimits:
    return rules.stack_limits(stack, REPO, load_catalog())


def mutated(
    resources: tuple[rules.Resource, ...], type_: str, change: Callable[[dict[str, Any]], Any]
) -> list[rules.Resource]:
    """A copy of the resources where `change` edits the inputs of every resource of `type_` in place."""
    result = []
    for resource in resources:
        props = copy.deepcopy(dict(resource.props))
        if resource.type == type_:
            change(props)
        result.append(
            rules.Resource(resource.type, resource.name, resource.urn, props, resource.dependencies)
        )
    return result


def with_object(
    resources: tuple[rules.Resource, ...], stack: str, manifest: dict[str, Any]
) -> list[rules.Resource]:
    """The resources plus one Kubernetes object, as the program would register it."""
    kind = manifest["kind"]
    group = {"Deployment": "apps/v1", "ConfigMap": "core/v1"}[kind]
    name = manifest["metadata"]["name"]
    urn = f"urn:pulumi:{stack}::llm-serving::kubernetes:{group}:{kind}::{name}"
    return [*resources, rules.Resource(f"kubernetes:{group}:{kind}", name, urn, manifest)]


def deployment(image: str = "vllm/vllm-openai:v0.33.0", **container: Any) -> dict[str, Any]:
    pod: dict[str, Any] = {
        "containers": [
            {
                "name": "vllm",
                "image": image,
                "resources": {"requests": {"cpu": "4", "memory": "16Gi"}},
                **container,
            }
        ]
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "vllm", "namespace": "llm-serving"},
        "spec": {"selector": {"matchLabels": {"app": "vllm"}}, "template": {"spec": pod}},
    }
