"""What a change does to a stack, from two renders: the plan's numbers and the Kubernetes objects.

Pure: reads what `python -m infra render` writes (`resources.json` with the exported plan), compares a base
and a head, and formats the difference as Markdown (the pull-request comment) or a plain table (the
terminal). `infra/diff_cli.py` produces the renders from git refs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

NO_CHANGE = "no change"


@dataclass(frozen=True)
class StackRender:
    """One stack at one ref: its exported plan and its resources, or the one-line error its render gave."""

    plan: Mapping[str, Any] = field(default_factory=dict)
    resources: tuple[Mapping[str, Any], ...] = ()
    error: str | None = None
    missing: bool = False  # the stack file does not exist at this ref

    @classmethod
    def from_resources_json(cls, document: Mapping[str, Any]) -> StackRender:
        return cls(
            plan=(document.get("outputs") or {}).get("plan") or {},
            resources=tuple(document.get("resources") or ()),
        )


TOTAL = "stack total"


def revisions(plan: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """Each revision's exported plan; a plan exported before revisions existed is the one `primary`."""
    if "revisions" in plan:
        return dict(plan.get("revisions") or {})
    return {"primary": plan} if plan else {}


def _cost_at(end: str) -> Callable[[Mapping[str, Any]], float | None]:
    """A revision's per-replica $/h times its `min` or `max` replicas."""

    def cost(plan: Mapping[str, Any]) -> float | None:
        per_replica = plan.get("cost_per_hour_usd")
        replicas = (plan.get("replicas") or {}).get(end)
        if per_replica is None or replicas is None:
            return None
        return round(per_replica * replicas, 2)

    return cost


def _gpus(plan: Mapping[str, Any]) -> str | None:
    return f"{plan.get('gpus_per_replica')} x {(plan.get('gpu') or {}).get('name')}"


def _replicas(plan: Mapping[str, Any]) -> str | None:
    replicas = plan.get("replicas")
    return f"{replicas.get('min')}-{replicas.get('max')}" if replicas else None


def _pair(plan: Mapping[str, Any], first: str, second: str) -> str | None:
    if first not in plan:
        return None
    return f"{plan.get(first)} / {plan.get(second)}"


Reader = Callable[[Mapping[str, Any]], Any]

# (label, how to read it from one revision's exported plan, whether it is a $/h figure that gets a delta)
REVISION_ROWS: tuple[tuple[str, Reader, bool], ...] = (
    ("model", lambda plan: plan.get("model"), False),
    ("instance type", lambda plan: plan.get("instance_type"), False),
    ("capacity", lambda plan: plan.get("capacity_type"), False),
    ("GPUs per replica", _gpus, False),
    (
        "tensor / pipeline parallel",
        lambda plan: _pair(plan, "tensor_parallel_size", "pipeline_parallel_size"),
        False,
    ),
    ("max model length", lambda plan: plan.get("max_model_len"), False),
    ("KV-cache tokens", lambda plan: plan.get("kv_cache_tokens"), False),
    ("replicas", _replicas, False),
    ("weight", lambda plan: plan.get("weight"), False),
    ("$/h at min replicas", _cost_at("min"), True),
    ("$/h at max replicas", _cost_at("max"), True),
)


def _total_at_min(plan: Mapping[str, Any]) -> float | None:
    costs = [_cost_at("min")(revision) for revision in revisions(plan).values()]
    return None if not costs or None in costs else round(sum(c for c in costs if c is not None), 2)


# The stack's figures: the program's own total at max replicas (whole nodes, as AWS bills them) and ceiling.
TOTAL_ROWS: tuple[tuple[str, Reader, bool], ...] = (
    ("$/h at min replicas", _total_at_min, True),
    ("$/h at max replicas", lambda plan: plan.get("cost_per_hour_usd_at_max_replicas"), True),
    ("$/h ceiling", lambda plan: plan.get("max_cost_per_hour_usd"), True),
)


@dataclass(frozen=True)
class PlanRow:
    scope: str  # a revision's name, or TOTAL
    label: str
    base: Any
    head: Any
    money: bool

    @property
    def changed(self) -> bool:
        return self.base != self.head

    @property
    def delta(self) -> float | None:
        """head - base for $/h rows where both are known."""
        if not self.money or not _is_number(self.base) or not _is_number(self.head):
            return None
        return round(self.head - self.base, 2)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_kubernetes_object(resource: Mapping[str, Any]) -> bool:
    inputs = resource.get("inputs") or {}
    type_ = str(resource.get("type", ""))
    return (
        not resource.get("component")
        and type_.startswith("kubernetes:")
        and not type_.startswith("kubernetes:helm.sh/")
        and "apiVersion" in inputs
        and "kind" in inputs
    )


def kubernetes_key(resource: Mapping[str, Any]) -> str:
    """`Kind namespace/name` of a Kubernetes object, as a reader finds it with kubectl."""
    inputs = resource.get("inputs") or {}
    metadata = inputs.get("metadata") or {}
    name = metadata.get("name") or resource.get("name")
    namespace = metadata.get("namespace")
    return f"{inputs['kind']} {namespace + '/' if namespace else ''}{name}"


def cloud_key(resource: Mapping[str, Any]) -> str:
    """`type name` of any other resource (AWS, Helm releases, providers), as Pulumi names it."""
    return f"{resource.get('type')} {resource.get('name')}"


@dataclass(frozen=True)
class Changes:
    added: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.changed or self.removed)

    def counts(self) -> str:
        return f"{len(self.added)} added, {len(self.changed)} changed, {len(self.removed)} removed"


def compare(base: Mapping[str, Any], head: Mapping[str, Any]) -> Changes:
    """Keys added, changed (different content) and removed between two keyed collections."""
    return Changes(
        added=tuple(sorted(head.keys() - base.keys())),
        changed=tuple(sorted(key for key in base.keys() & head.keys() if base[key] != head[key])),
        removed=tuple(sorted(base.keys() - head.keys())),
    )


def _keyed(
    resources: Iterable[Mapping[str, Any]], keep: Callable[[Mapping[str, Any]], bool], key: Callable
) -> dict[str, Any]:
    return {key(resource): resource.get("inputs") for resource in resources if keep(resource)}


def _is_cloud_resource(resource: Mapping[str, Any]) -> bool:
    return not resource.get("component") and not _is_kubernetes_object(resource)


@dataclass(frozen=True)
class StackDiff:
    stack: str
    base: StackRender
    head: StackRender
    rows: tuple[PlanRow, ...]
    kubernetes: Changes
    cloud: Changes  # every other resource: AWS, Helm releases, providers

    @property
    def unchanged(self) -> bool:
        return (
            self.base.error == self.head.error
            and self.base.missing == self.head.missing
            and not any(row.changed for row in self.rows)
            and not self.kubernetes
            and not self.cloud
        )


def plan_rows(base: Mapping[str, Any], head: Mapping[str, Any]) -> tuple[PlanRow, ...]:
    """Per revision (in head's order, then those only at base), then the stack total; a revision only on
    one side reads None on the other."""
    base_revisions, head_revisions = revisions(base), revisions(head)
    names = [*head_revisions, *(name for name in base_revisions if name not in head_revisions)]
    rows = [
        PlanRow(
            name,
            label,
            read(base_revisions[name]) if name in base_revisions else None,
            read(head_revisions[name]) if name in head_revisions else None,
            money,
        )
        for name in names
        for label, read, money in REVISION_ROWS
    ]
    rows += [
        PlanRow(TOTAL, label, read(base) if base else None, read(head) if head else None, money)
        for label, read, money in TOTAL_ROWS
    ]
    return tuple(rows)


def diff_stack(stack: str, base: StackRender, head: StackRender) -> StackDiff:
    rows = plan_rows(base.plan, head.plan)
    return StackDiff(
        stack=stack,
        base=base,
        head=head,
        rows=rows,
        kubernetes=compare(
            _keyed(base.resources, _is_kubernetes_object, kubernetes_key),
            _keyed(head.resources, _is_kubernetes_object, kubernetes_key),
        ),
        cloud=compare(
            _keyed(base.resources, _is_cloud_resource, cloud_key),
            _keyed(head.resources, _is_cloud_resource, cloud_key),
        ),
    )


# ---------------------------------------------------------------------------------------------------------
# Formatting


def _show(value: Any, money: bool) -> str:
    if value is None:
        return "-"
    if money and _is_number(value):
        return f"${value:.2f}"
    return str(value)


def _delta(row: PlanRow) -> str:
    if row.delta is not None:
        return f"{'+' if row.delta >= 0 else '-'}${abs(row.delta):.2f}/h"
    return "changed" if row.changed else ""


def _state(render: StackRender) -> str | None:
    if render.missing:
        return "no such stack"
    if render.error:
        return f"render failed: {render.error}"
    return None


def _revision_changes(diff: StackDiff) -> list[str]:
    """`revision `x` added`, `... removed`, or `revision `x`: model, instance type` for each changed one."""
    base, head = revisions(diff.base.plan), revisions(diff.head.plan)
    parts = []
    for name in dict.fromkeys(row.scope for row in diff.rows if row.scope != TOTAL):
        if name not in base:
            parts.append(f"revision `{name}` added")
        elif name not in head:
            parts.append(f"revision `{name}` removed")
        else:
            labels = [row.label for row in diff.rows if row.scope == name and row.changed]
            if labels:
                parts.append(f"revision `{name}`: {', '.join(labels)}")
    return parts


def headline(diff: StackDiff) -> str:
    if diff.unchanged:
        return NO_CHANGE
    if diff.base.missing:
        return "new stack"
    if diff.head.missing:
        return "stack removed"
    if diff.head.error:
        return "render fails at head"
    parts = _revision_changes(diff) + [
        f"{TOTAL} {row.label}" for row in diff.rows if row.scope == TOTAL and row.changed
    ]
    if diff.kubernetes:
        parts.append(f"Kubernetes objects {diff.kubernetes.counts()}")
    if diff.cloud:
        parts.append(f"other resources {diff.cloud.counts()}")
    return "changed: " + "; ".join(parts)


def markdown(diff: StackDiff, *, marker: str = "") -> str:
    """One stack's difference for a pull-request comment (a `marker` line first lets CI find and edit it)."""
    lines = [marker] if marker else []
    lines += [f"### Plan difference for stack `{diff.stack}`: {headline(diff)}", ""]
    for side, render in (("base", diff.base), ("head", diff.head)):
        state = _state(render)
        if state:
            lines += [f"**{side}**: {state}", ""]
    if diff.base.plan or diff.head.plan:
        lines += ["| revision | | base | head | change |", "|---|---|---|---|---|"]
        for row in diff.rows:
            change = _delta(row)
            head = _show(row.head, row.money)
            lines.append(
                f"| {row.scope} | {row.label} | {_show(row.base, row.money)} | "
                f"{f'**{head}**' if row.changed else head} | {change} |"
            )
        lines.append("")
    for title, changes in (("Kubernetes objects", diff.kubernetes), ("Other resources", diff.cloud)):
        if not changes:
            continue
        lines.append(f"{title}: {changes.counts()}")
        for verb, keys in (
            ("added", changes.added),
            ("changed", changes.changed),
            ("removed", changes.removed),
        ):
            lines += [f"- {verb}: `{key}`" for key in keys]
        lines.append("")
    if diff.unchanged:
        lines += [f"The plan and every rendered resource are the same: {NO_CHANGE}.", ""]
    return "\n".join(lines)


def table(diffs: Iterable[StackDiff]) -> str:
    """A plain aligned table for the terminal: one row per changed figure, and the object counts."""
    rows: list[tuple[str, str, str, str, str]] = [("stack", "what", "base", "head", "change")]
    for diff in diffs:
        if diff.unchanged:
            rows.append((diff.stack, NO_CHANGE, "", "", ""))
            continue
        for side, render in (("base", diff.base), ("head", diff.head)):
            state = _state(render)
            if state:
                rows.append((diff.stack, side, state, "", ""))
        for row in diff.rows:
            if row.changed:
                base, head = _show(row.base, row.money), _show(row.head, row.money)
                rows.append((diff.stack, f"{row.scope}: {row.label}", base, head, _delta(row)))
        for title, changes in (("Kubernetes objects", diff.kubernetes), ("other resources", diff.cloud)):
            if changes:
                rows.append((diff.stack, title, "", "", changes.counts()))
    widths = [max(len(row[column]) for row in rows) for column in range(5)]
    return (
        "\n".join(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            for row in rows
        )
        + "\n"
    )
