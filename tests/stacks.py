"""The stacks in stacks/ as a user deploys them: a stack that serves a gated model carries an hfToken.

A user runs `pulumi config set --secret hfToken hf_... -s prod`, which writes the encrypted value into the
stack file as `llm-serving:hfToken: {secure: v1:...}`. The committed prod stack has none (no real token is
ever committed), so tests that render the stacks read copies where the stacks whose model the catalog marks
gated get such an entry with a placeholder ciphertext; `infra.config.stack_file` redacts it, as it would a
real one. The committed files themselves must fail to render (tests/test_render.py checks it).
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from infra import render
from infra.config import PROJECT
from infra.sizing.models import gated_without_token

COMMITTED = Path(__file__).resolve().parent.parent / "stacks"
STACKS = sorted(p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in COMMITTED.glob("Pulumi.*.yaml"))
HF_TOKEN_KEY = f"{PROJECT}:hfToken"
# What `pulumi config set --secret` writes, with a ciphertext that is visibly not one (nor a token).
PLACEHOLDER_HF_TOKEN = {"secure": "v1:placeholder-for-tests-not-a-token"}


def models_of(config: dict) -> list[str]:
    """Every model a stack file's config serves: the stack-level one and each revision's own."""
    model = config.get(f"{PROJECT}:model", "Qwen/Qwen3-8B")
    return [model, *(r["model"] for r in config.get(f"{PROJECT}:revisions", []) if "model" in r)]


def needs_hf_token(stack: str) -> bool:
    config = yaml.safe_load((COMMITTED / f"Pulumi.{stack}.yaml").read_text())["config"]
    return HF_TOKEN_KEY not in config and any(
        gated_without_token(model, has_token=False, stack=stack) for model in models_of(config)
    )


@functools.cache
def deployable_stacks_dir() -> Path:
    """A stacks/ folder with the committed stack files, a placeholder hfToken added where one is needed."""
    directory = Path(tempfile.mkdtemp(prefix="llm-serving-")) / "stacks"
    atexit.register(shutil.rmtree, directory.parent, ignore_errors=True)
    directory.mkdir()
    for stack in STACKS:
        document = yaml.safe_load((COMMITTED / f"Pulumi.{stack}.yaml").read_text())
        if needs_hf_token(stack):
            document["config"][HF_TOKEN_KEY] = PLACEHOLDER_HF_TOKEN
        (directory / f"Pulumi.{stack}.yaml").write_text(yaml.safe_dump(document))
    return directory


@contextmanager
def as_deployed() -> Iterator[None]:
    """Render the stacks as deployed (tokens set where needed), offline (catalog models only)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(render, "STACKS_DIR", deployable_stacks_dir())
        patch.setenv("HF_HUB_OFFLINE", "1")
        yield
