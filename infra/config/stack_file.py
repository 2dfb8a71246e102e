"""What the Pulumi CLI does between a stack file and the program, for `render` and tests (there is no CLI
on the machines that render offline)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from infra.config.schema import PROJECT, ConfigKey, did_you_mean, load_schema
from infra.errors import UserError


def _check_type(key: ConfigKey, value: Any) -> bool:
    if key.type == "string":
        return isinstance(value, str)
    if key.type == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if key.type == "boolean":
        return isinstance(value, bool)
    if key.type == "array":
        return isinstance(value, list) and all(
            _check_type(ConfigKey("", key.items, None, "", None, False), v) for v in value
        )
    return True  # untyped keys are validated by StackSettings


def apply_project_config(stack_config: Mapping[str, Any], *, stack: str) -> tuple[dict[str, str], set[str]]:
    """Apply the `Pulumi.yaml` schema to a stack file's `config:` section, as the Pulumi CLI would.

    Checks each project key's type and that secret keys are encrypted (`{secure: ...}`), rejects keys the
    schema does not declare, applies the schema defaults, and returns the config as the program receives
    it: full key (`llm-serving:model`) -> string (JSON for arrays and objects), plus the set of secret keys.
    Encrypted values cannot be decrypted here; they are replaced by a redacted placeholder.
    """
    schema = load_schema()
    values: dict[str, str] = {}
    secret_keys: set[str] = set()
    seen: set[str] = set()
    for full_key, value in (stack_config or {}).items():
        namespace, _, name = str(full_key).rpartition(":")
        if namespace not in ("", PROJECT):
            values[str(full_key)] = value if isinstance(value, str) else json.dumps(value)
            continue
        key = schema.get(name)
        if key is None:
            raise UserError(
                f"unknown config key in stack {stack!r}; known keys: {', '.join(schema)}"
                + did_you_mean(name, schema),
                key=name,
            )
        seen.add(name)
        full = f"{PROJECT}:{name}"
        if isinstance(value, dict) and set(value) == {"secure"}:
            if key.type_label != "string":
                raise UserError(f"an encrypted value must be a {key.type_label}", key=name)
            values[full] = f"[secret {name}: encrypted in the stack file, redacted]"
            secret_keys.add(full)
            continue
        if key.secret:
            raise UserError(
                f"is a secret and must be encrypted: pulumi config set --secret {name} VALUE", key=name
            )
        if not _check_type(key, value) or (
            key.type is None and key.type_label == "string" and not isinstance(value, str)
        ):
            hint = " (quote it)" if key.type == "string" and isinstance(value, int | float) else ""
            raise UserError(f"must be of type {key.type_label}, got {value!r}{hint}", key=name)
        values[full] = value if isinstance(value, str) else json.dumps(value)
    for name, key in schema.items():
        if name in seen:
            continue
        if key.default is None:
            raise UserError(f"stack {stack!r} is missing this configuration value", key=name)
        full = f"{PROJECT}:{name}"
        values[full] = key.default if isinstance(key.default, str) else json.dumps(key.default)
        if key.secret:
            secret_keys.add(full)
    return values, secret_keys
