"""The stack config, in one package with one file per reason to change:

- `schema`: the `Pulumi.yaml` config schema (every key once, with its default);
- `stack_file`: what the Pulumi CLI does between a stack file and the program (for offline `render`);
- `settings`: the only reader of `pulumi.Config`; one frozen, validated `StackSettings` of model revisions;
- `reference`: the README's config reference (`python -m infra.config` rewrites it).
"""

from infra.config.reference import config_reference, readme_with_reference
from infra.config.schema import PROJECT, PROJECT_FILE, ConfigKey, load_schema
from infra.config.settings import (
    PRIMARY_REVISION,
    EndpointSettings,
    ReplicaRange,
    Revision,
    StackSettings,
    image_reference_problem,
    load_settings,
    settings_from_values,
)
from infra.config.stack_file import apply_project_config

__all__ = [
    "PRIMARY_REVISION",
    "PROJECT",
    "PROJECT_FILE",
    "ConfigKey",
    "EndpointSettings",
    "ReplicaRange",
    "Revision",
    "StackSettings",
    "apply_project_config",
    "config_reference",
    "image_reference_problem",
    "load_schema",
    "load_settings",
    "readme_with_reference",
    "settings_from_values",
]
