"""infra/plandiff.py: the plan and object difference between two renders, as table tests on small inputs."""

from __future__ import annotations

from typing import Any

import pytest

from infra.plandiff import (
    NO_CHANGE,
    TOTAL,
    StackRender,
    compare,
    diff_stack,
    headline,
    markdown,
    revisions,
    table,
)


def revision(**overrides: Any) -> dict[str, Any]:
    base = {
        "model": "Qwen/Qwen3-8B",
        "instance_type": "g6.xlarge",
        "capacity_type": "spot",
        "gpus_per_replica": 1,
        "gpu": {"name": "L4"},
        "tensor_parallel_size": 1,
        "pipeline_parallel_size": 1,
        "max_model_len": 8192,
        "kv_cache_tokens": 22896,
        "replicas": {"min": 1, "max": 2},
        "cost_per_hour_usd": 0.48,
        "weight": 100,
    }
    return {**base, **overrides}


def plan(*, total: float = 0.96, ceiling: float = 1.5, **overrides: Any) -> dict[str, Any]:
    """The exported plan of a stack with one revision, `primary`."""
    return {
        "revisions": {"primary": revision(**overrides)},
        "cost_per_hour_usd_at_max_replicas": total,
        "max_cost_per_hour_usd": ceiling,
    }


def k8s(kind: str, name: str, namespace: str | None = None, **spec: Any) -> dict[str, Any]:
    metadata = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {
        "type": f"kubernetes:test/v1:{kind}",
        "name": f"res-{name}",
        "component": False,
        "inputs": {"apiVersion": "v1", "kind": kind, "metadata": metadata, "spec": spec},
    }


def aws(type_: str, name: str, **inputs: Any) -> dict[str, Any]:
    return {"type": type_, "name": name, "component": False, "inputs": inputs}


COMPONENT = {"type": "llm-serving:index:Cluster", "name": "llm-dev", "component": True, "inputs": {}}
HELM = {"type": "kubernetes:helm.sh/v3:Release", "name": "karpenter", "component": False, "inputs": {"x": 1}}
RESOURCES = (
    COMPONENT,
    HELM,
    k8s("NodePool", "gpu", replicas=1),
    k8s("Job", "fill-a", "llm-serving"),
    aws("aws:s3/bucket:Bucket", "cache"),
)


def test_identical_renders_are_no_change() -> None:
    render = StackRender(plan=plan(), resources=RESOURCES)
    diff = diff_stack("dev", render, render)
    assert diff.unchanged and headline(diff) == NO_CHANGE
    assert NO_CHANGE in markdown(diff)
    assert table([diff]).splitlines()[1].split() == ["dev", "no", "change"]


@pytest.mark.parametrize(
    ("head_plan", "scope", "label", "base_shown", "head_shown", "change"),
    [
        (
            plan(instance_type="g6.12xlarge"),
            "primary",
            "instance type",
            "g6.xlarge",
            "g6.12xlarge",
            "changed",
        ),
        (plan(gpus_per_replica=2), "primary", "GPUs per replica", "1 x L4", "2 x L4", "changed"),
        (plan(tensor_parallel_size=2), "primary", "tensor / pipeline parallel", "1 / 1", "2 / 1", "changed"),
        (plan(max_model_len=32768), "primary", "max model length", "8192", "32768", "changed"),
        (plan(kv_cache_tokens=1000), "primary", "KV-cache tokens", "22896", "1000", "changed"),
        (plan(weight=50), "primary", "weight", "100", "50", "changed"),
        (plan(cost_per_hour_usd=1.38), "primary", "$/h at min replicas", "$0.48", "$1.38", "+$0.90/h"),
        (plan(replicas={"min": 1, "max": 3}), "primary", "$/h at max replicas", "$0.96", "$1.44", "+$0.48/h"),
        (plan(replicas={"min": 0, "max": 2}), "primary", "$/h at min replicas", "$0.48", "$0.00", "-$0.48/h"),
        (plan(total=0.5), TOTAL, "$/h at max replicas", "$0.96", "$0.50", "-$0.46/h"),
        (plan(ceiling=4), TOTAL, "$/h ceiling", "$1.50", "$4.00", "+$2.50/h"),
    ],
)
def test_each_plan_figure_shows_base_head_and_change(
    head_plan: dict[str, Any], scope: str, label: str, base_shown: str, head_shown: str, change: str
) -> None:
    diff = diff_stack("dev", StackRender(plan=plan()), StackRender(plan=head_plan))
    assert not diff.unchanged and label in headline(diff)
    assert f"| {scope} | {label} | {base_shown} | **{head_shown}** | {change} |" in markdown(diff)
    (line,) = [line for line in table([diff]).splitlines() if f"{scope}: {label}" in line]
    assert line.split()[-1] == change.split()[-1] and head_shown in line and base_shown in line
    unchanged = [(row.scope, row.label) for row in diff.rows if not row.changed]
    assert (scope, label) not in unchanged and ("primary", "model") in unchanged


def test_revisions_added_and_removed_are_named_with_their_rows() -> None:
    base = plan()
    head = {**plan(total=2.34), "revisions": {"canary": revision(model="Qwen/Qwen3-14B", weight=10)}}
    diff = diff_stack("dev", StackRender(plan=base), StackRender(plan=head))
    assert headline(diff) == (
        "changed: revision `canary` added; revision `primary` removed; stack total $/h at max replicas"
    )
    text = markdown(diff)
    assert "| canary | model | - | **Qwen/Qwen3-14B** | changed |" in text
    assert "| primary | model | Qwen/Qwen3-8B | **-** | changed |" in text
    assert f"| {TOTAL} | $/h at max replicas | $0.96 | **$2.34** | +$1.38/h |" in text


def test_the_stack_total_at_min_replicas_sums_the_revisions() -> None:
    two = {**plan(), "revisions": {"a": revision(), "b": revision(cost_per_hour_usd=1.0)}}
    diff = diff_stack("dev", StackRender(plan=plan()), StackRender(plan=two))
    (row,) = [row for row in diff.rows if row.scope == TOTAL and row.label == "$/h at min replicas"]
    assert (row.base, row.head, row.delta) == (0.48, 1.48, 1.0)


def test_a_plan_exported_before_revisions_is_the_primary_revision() -> None:
    flat = {**revision(), "cost_per_hour_usd_at_max_replicas": 0.96}
    assert revisions(flat) == {"primary": flat}
    assert revisions({}) == {}
    assert not any(
        row.changed
        for row in diff_stack("dev", StackRender(plan=flat), StackRender(plan=plan())).rows
        if row.scope == "primary"
    )


def test_objects_added_changed_and_removed_by_kind_namespace_and_name() -> None:
    head = (
        COMPONENT,
        {**HELM, "inputs": {"x": 2}},
        k8s("NodePool", "gpu", replicas=2),
        k8s("Job", "fill-b", "llm-serving"),
        aws("aws:s3/bucket:Bucket", "cache"),
        aws("aws:iam/role:Role", "reader"),
    )
    diff = diff_stack(
        "dev", StackRender(plan=plan(), resources=RESOURCES), StackRender(plan=plan(), resources=head)
    )
    assert diff.kubernetes.added == ("Job llm-serving/fill-b",)
    assert diff.kubernetes.changed == ("NodePool gpu",)
    assert diff.kubernetes.removed == ("Job llm-serving/fill-a",)
    assert diff.cloud.added == ("aws:iam/role:Role reader",)
    assert diff.cloud.changed == ("kubernetes:helm.sh/v3:Release karpenter",)  # Helm releases are not objects
    assert diff.cloud.removed == ()
    text = markdown(diff)
    assert "Kubernetes objects: 1 added, 1 changed, 1 removed" in text
    assert "- added: `Job llm-serving/fill-b`" in text and "- removed: `Job llm-serving/fill-a`" in text
    assert "Other resources: 1 added, 1 changed, 0 removed" in text
    assert "Kubernetes objects" in headline(diff) and "changed:" in headline(diff)


def test_a_head_that_fails_to_render_says_why() -> None:
    failed = StackRender(error="maxCostPerHour: the plan costs $2.76/h at 1 replicas, over the ceiling 1.5")
    diff = diff_stack("dev", StackRender(plan=plan(), resources=RESOURCES), failed)
    assert headline(diff) == "render fails at head"
    text = markdown(diff)
    assert "**head**: render failed: maxCostPerHour:" in text
    assert "| primary | instance type | g6.xlarge | **-** | changed |" in text
    assert any("render failed: maxCostPerHour" in line for line in table([diff]).splitlines())


@pytest.mark.parametrize(
    ("base", "head", "expected"),
    [
        (StackRender(missing=True), StackRender(plan=plan()), "new stack"),
        (StackRender(plan=plan()), StackRender(missing=True), "stack removed"),
        (StackRender(missing=True), StackRender(missing=True), NO_CHANGE),
    ],
)
def test_stacks_added_or_removed(base: StackRender, head: StackRender, expected: str) -> None:
    assert headline(diff_stack("qa", base, head)) == expected


def test_compare_is_by_key_and_content() -> None:
    changes = compare({"a": 1, "b": 2, "c": 3}, {"b": 2, "c": 4, "d": 5})
    assert (changes.added, changes.changed, changes.removed) == (("d",), ("c",), ("a",))
    assert not compare({"a": 1}, {"a": 1})


def test_resources_json_is_read_as_render_writes_it() -> None:
    document = {
        "stack": "dev",
        "resources": list(RESOURCES),
        "outputs": {"plan": plan(), "apiKey": "[secret]"},
    }
    render = StackRender.from_resources_json(document)
    assert render.plan["revisions"]["primary"]["instance_type"] == "g6.xlarge"
    assert len(render.resources) == len(RESOURCES)


def test_table_columns_line_up() -> None:
    diffs = [
        diff_stack("dev", StackRender(plan=plan()), StackRender(plan=plan(instance_type="g5.xlarge"))),
        diff_stack("production", StackRender(plan=plan()), StackRender(plan=plan())),
    ]
    lines = table(diffs).splitlines()
    assert lines[0].split() == ["stack", "what", "base", "head", "change"]
    what_column = lines[0].index("what")
    assert all(line[what_column - 2 : what_column] == "  " for line in lines)
    assert lines[1][what_column:].startswith("primary: instance type") and lines[2][what_column:].startswith(
        NO_CHANGE
    )
