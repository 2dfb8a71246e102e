"""House rules every component follows (notes/style.md), checked on the source of infra/components/."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
from pathlib import Path

import pulumi
import pytest

from tests.components.support import takes_tags

COMPONENTS_DIR = Path(__file__).resolve().parents[2] / "infra" / "components"
MODULES = sorted(p.stem for p in COMPONENTS_DIR.glob("*.py") if p.stem != "__init__")


def component_classes(module_name: str) -> list[type[pulumi.ComponentResource]]:
    module = importlib.import_module(f"infra.components.{module_name}")
    return [
        cls
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if issubclass(cls, pulumi.ComponentResource) and cls.__module__ == module.__name__
    ]


@pytest.mark.parametrize("module_name", MODULES)
def test_one_component_per_module_with_a_frozen_args_dataclass(module_name: str) -> None:
    (component,) = component_classes(module_name)
    module = importlib.import_module(f"infra.components.{module_name}")
    args = getattr(module, f"{component.__name__}Args")
    assert dataclasses.is_dataclass(args) and args.__dataclass_params__.frozen  # type: ignore[attr-defined]
    parameters = list(inspect.signature(component.__init__).parameters)
    assert parameters == ["self", "name", "args", "opts"]


@pytest.mark.parametrize("module_name", MODULES)
def test_register_outputs_is_the_constructors_last_statement(module_name: str) -> None:
    tree = ast.parse((COMPONENTS_DIR / f"{module_name}.py").read_text())
    constructors = [
        node
        for cls in tree.body
        if isinstance(cls, ast.ClassDef)
        for node in cls.body
        if isinstance(node, ast.FunctionDef)
        and node.name == "__init__"
        and any(isinstance(b, ast.Attribute) and b.attr == "ComponentResource" for b in cls.bases)
    ]
    assert constructors
    for constructor in constructors:
        last = constructor.body[-1]
        assert isinstance(last, ast.Expr) and isinstance(last.value, ast.Call)
        assert isinstance(last.value.func, ast.Attribute) and last.value.func.attr == "register_outputs"


def callers_opts_uses(source: str) -> list[int]:
    """Lines where a component constructor uses its `opts` for anything but `super().__init__(...)`:
    passing it on (`opts=opts`, `merge(opts, ...)`, `child = opts`), which style.md forbids."""
    misuses = []
    for cls in ast.parse(source).body:
        if not isinstance(cls, ast.ClassDef):
            continue
        for constructor in (n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"):
            allowed = {
                id(arg)
                for call in ast.walk(constructor)
                if isinstance(call, ast.Call)
                and isinstance(call.func, ast.Attribute)
                and call.func.attr == "__init__"
                and isinstance(call.func.value, ast.Call)
                and isinstance(call.func.value.func, ast.Name)
                and call.func.value.func.id == "super"
                for arg in call.args
            }
            misuses += [
                node.lineno
                for node in ast.walk(constructor)
                if isinstance(node, ast.Name) and node.id == "opts" and id(node) not in allowed
            ]
    return misuses


@pytest.mark.parametrize("module_name", MODULES)
def test_children_never_get_the_callers_opts(module_name: str) -> None:
    source = (COMPONENTS_DIR / f"{module_name}.py").read_text()
    assert callers_opts_uses(source) == []


@pytest.mark.parametrize(
    ("body", "misused"),
    [
        ("super().__init__('t', name, None, opts)\n        X(name, opts=opts)", True),
        ("super().__init__('t', name, None, opts)\n        child = opts", True),
        ("super().__init__('t', name, None, opts)\n        X(opts=ResourceOptions.merge(opts, o))", True),
        (
            "super().__init__('t', name, None, opts)\n        X(opts=pulumi.ResourceOptions(parent=self))",
            False,
        ),
    ],
)
def test_the_opts_check_catches_every_way_of_passing_them_on(body: str, misused: bool) -> None:
    source = f"class C(pulumi.ComponentResource):\n    def __init__(self, name, args, opts=None):\n        {body}\n"
    assert bool(callers_opts_uses(source)) == misused


@pytest.mark.parametrize(
    ("type_token", "expected"),
    [
        ("aws:s3/bucket:Bucket", True),
        ("aws:eks/cluster:Cluster", True),
        ("aws:iam/rolePolicy:RolePolicy", False),
        ("kubernetes:core/v1:Secret", False),
    ],
)
def test_which_aws_types_take_tags_comes_from_pulumi_aws(type_token: str, expected: bool) -> None:
    assert takes_tags(type_token) is expected
