"""The config schema of `Pulumi.yaml`: every key once, with its type, default, description and secrecy.

Everything else in `infra.config` reads defaults and descriptions from here, so no default is repeated in
code.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

PROJECT = "llm-serving"
PROJECT_FILE = Path(__file__).resolve().parent.parent.parent / "Pulumi.yaml"


@dataclass(frozen=True)
class ConfigKey:
    """One key of the `Pulumi.yaml` config schema."""

    name: str
    type: str | None  # string, integer, boolean, array; None: untyped (objects, numbers), validated here
    items: str | None  # the item type of an array
    description: str
    default: Any
    secret: bool

    @property
    def type_label(self) -> str:
        if self.type == "array":
            return f"array<{self.items}>"
        if self.type is None:
            if isinstance(self.default, str):
                return "string"
            if isinstance(self.default, list):
                return "array<object>"
            return "number" if isinstance(self.default, int | float) else "object"
        return self.type


@cache
def load_schema(path: Path = PROJECT_FILE) -> dict[str, ConfigKey]:
    """The config schema of `Pulumi.yaml`, in declaration order."""
    project = yaml.safe_load(path.read_text())
    keys: dict[str, ConfigKey] = {}
    for name, spec in (project.get("config") or {}).items():
        if ":" in name:  # another package's value (aws:region: ...), not part of our schema
            continue
        keys[name] = ConfigKey(
            name=name,
            type=spec.get("type"),
            items=(spec.get("items") or {}).get("type"),
            description=" ".join(str(spec.get("description", "")).split()),
            default=spec.get("default"),
            secret=bool(spec.get("secret", False)),
        )
    return keys


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """ " (did you mean X?)" for the closest choice, or ""."""
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]}?)" if close else ""
