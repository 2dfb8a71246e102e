# pyright: reportMissingImports=false
"""The CrossGuard wiring of policy/rules.py: one mandatory stack policy per rule.

Runs in the policy pack's own virtualenv (policy/requirements.txt), where pulumi-policy pins an older
protobuf than the program's. Each policy converts the engine's resources to plain `rules.Resource`
values (unknown preview values become `rules.UNKNOWN_PREFIX` strings) and reports what the rule finds.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

from pulumi_policy import EnforcementLevel, ReportViolation, StackValidationArgs, StackValidationPolicy
from pulumi_policy import proxy as policy_proxy

from infra.sizing.gpus import load_catalog
from policy import rules

REPO = Path(__file__).resolve().parent.parent
NAME = "llm-serving-guardrails"
_UNKNOWN_SENTINELS = frozenset(
    getattr(policy_proxy, name)
    for name in dir(policy_proxy)
    if name.startswith("UNKNOWN_") and name.endswith("_VALUE")
)


def plain(value: Any) -> Any:
    """Engine properties as plain data: proxies unwrapped, unknowns as `rules.UNKNOWN_PREFIX` strings."""
    if isinstance(value, Mapping | Sequence) and not isinstance(value, dict | list | str | bytes):
        # the SDK's unknown-checking proxies: reading an unknown through them raises, so take the target
        value = cast(Any, value)["__target"]
    if isinstance(value, str) and value in _UNKNOWN_SENTINELS:
        return f"{rules.UNKNOWN_PREFIX}: preview>"
    if isinstance(value, Mapping):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


def to_resource(resource: Any) -> rules.Resource:
    return rules.Resource(
        type=resource.resource_type,
        name=resource.name,
        urn=resource.urn,
        props=plain(resource.props),
        dependencies=frozenset(d.urn for d in resource.dependencies or ()),
    )


@functools.cache
def _limits(stack: str) -> rules.StackLimits:
    return rules.stack_limits(stack, REPO, load_catalog())


def _validator(rule: rules.Rule):
    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        resources = [to_resource(resource) for resource in args.resources]
        if not resources:
            return
        limits = _limits(rules.stack_of(resources[0].urn))
        for violation in rule(resources, limits):
            report_violation(violation.message, violation.urn)

    return validate


def policies() -> list[StackValidationPolicy]:
    return [
        StackValidationPolicy(
            name=name,
            description=(rule.__doc__ or name).split("\n\n")[0].replace("\n", " "),
            enforcement_level=EnforcementLevel.MANDATORY,
            validate=_validator(rule),
        )
        for name, rule in rules.RULES.items()
    ]
