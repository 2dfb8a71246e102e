"""`python -m infra diff --base REF [--head REF]`: what a change does to each stack's plan, cost and objects.

Each ref is checked out as a git worktree in a temporary folder and rendered by its own code
(`python -m infra render`, run by this same Python), so the base is rendered as the base branch would
render it. Without `--head` the working tree itself is the head, uncommitted changes included.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from infra.errors import UserError
from infra.plandiff import StackDiff, StackRender, diff_stack, markdown, table

REPO_ROOT = Path(__file__).resolve().parent.parent
RENDER_TIMEOUT_S = 600


class Format(StrEnum):
    markdown = "markdown"
    table = "table"


def _git(repo: Path, *args: str) -> str:
    result = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout.strip()


def resolve(repo: Path, ref: str, option: str) -> str:
    """The commit a ref names, or a UserError naming the option."""
    result = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise UserError(f"{ref!r} is not a commit in {repo}; use a branch, tag or sha", key=option)
    return result.stdout.strip()


@contextmanager
def checkout(repo: Path, commit: str, parent: Path) -> Iterator[Path]:
    """A detached worktree of `commit` under `parent`, removed afterwards."""
    tree = parent / commit[:12]
    _git(repo, "worktree", "add", "--detach", "--quiet", str(tree), commit)
    try:
        yield tree
    finally:
        _git(repo, "worktree", "remove", "--force", str(tree))


def stacks_in(tree: Path) -> set[str]:
    return {
        p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in (tree / "stacks").glob("Pulumi.*.yaml")
    }


def render_stack(tree: Path, stack: str, out: Path) -> StackRender:
    """Render one stack with the tree's own code; a failed render is kept as its one-line error."""
    if stack not in stacks_in(tree):
        return StackRender(missing=True)
    result = subprocess.run(
        [sys.executable, "-m", "infra", "render", "--stack", stack, "--out", str(out)],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=RENDER_TIMEOUT_S,
        check=False,
    )
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        errors = [line.removeprefix("error: ") for line in lines if line.startswith("error: ")]
        return StackRender(error=(errors or lines or [f"exit status {result.returncode}"])[-1])
    return StackRender.from_resources_json(json.loads((out / "resources.json").read_text()))


def diff_refs(repo: Path, base: str, head: str | None, stack: str | None) -> list[StackDiff]:
    """The difference per stack between `base` and `head` (None: the working tree)."""
    base_commit = resolve(repo, base, "--base")
    head_commit = resolve(repo, head, "--head") if head is not None else None
    with tempfile.TemporaryDirectory(prefix="llm-serving-diff-") as temporary:
        work = Path(temporary)
        with checkout(repo, base_commit, work / "trees") as base_tree:
            if head_commit is None:
                return _diff_trees(base_tree, repo, stack, work)
            with checkout(repo, head_commit, work / "trees-head") as head_tree:
                return _diff_trees(base_tree, head_tree, stack, work)


def _diff_trees(base_tree: Path, head_tree: Path, stack: str | None, work: Path) -> list[StackDiff]:
    stacks = stacks_in(base_tree) | stacks_in(head_tree)
    if stack is not None:
        if stack not in stacks:
            raise UserError(
                f"no stack {stack!r} at either ref; stacks: {', '.join(sorted(stacks))}", key="--stack"
            )
        stacks = {stack}
    return [
        diff_stack(
            name,
            render_stack(base_tree, name, work / "base" / name),
            render_stack(head_tree, name, work / "head" / name),
        )
        for name in sorted(stacks)
    ]


def diff_command(
    base: Annotated[str, typer.Option("--base", help="Base git ref (branch, tag or sha), e.g. origin/main")],
    head: Annotated[
        str | None,
        typer.Option("--head", help="Head git ref; default: the working tree, uncommitted changes too"),
    ] = None,
    stack: Annotated[
        str | None, typer.Option("--stack", help="Only this stack; default: every stack")
    ] = None,
    output_format: Annotated[
        Format, typer.Option("--format", help="markdown (pull-request comment) or table (terminal)")
    ] = Format.table,
) -> None:
    """Offline plan difference between two refs: instance, GPUs, TP/PP, context, KV cache, $/h, objects.

    Exits 1 when a stack fails to render at the head (the output still says why)."""
    diffs = diff_refs(REPO_ROOT, base, head, stack)
    if output_format is Format.markdown:
        typer.echo("\n".join(markdown(diff) for diff in diffs), nl=False)
    else:
        typer.echo(table(diffs), nl=False)
    if any(diff.head.error for diff in diffs):
        raise typer.Exit(1)
