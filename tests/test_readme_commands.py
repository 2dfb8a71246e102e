"""The README's commands are runnable as written (issue 8): every `python -m infra ...` parses with the real
command line (the subcommand exists, each option is one it takes, values have its types), every
`python -m pytest` path exists and every `make` target is the Makefile's."""

from __future__ import annotations

import re
import shlex
from typing import Any

import pytest
import typer
from typer._click import ClickException  # typer 0.29 carries its own click
from typer.core import TyperGroup

from infra.cli import app
from tests.conftest import REPO_ROOT

README = REPO_ROOT / "README.md"


def commands(prefix: str, *, inline: bool = True) -> list[str]:
    """The arguments after `prefix` of every command in the README's code blocks (and its inline code, which
    prose also uses to name a command), continuation lines joined and trailing comments dropped."""
    text = README.read_text().replace("\\\n", " ")
    if not inline:
        text = "\n".join(re.findall(r"^```[a-z]*\n(.*?)^```", text, re.M | re.S))
    found = []
    for line in text.splitlines():
        for match in re.finditer(re.escape(prefix) + r" ([^`\n]*)", line):
            found.append(re.split(r"\s+#\s", match[1])[0].strip())
    return found


def parse(args: list[str]) -> Any:
    """The context the CLI makes of `args`, without running the command (click raises on any mistake)."""
    context = typer.main.get_command(app).make_context("infra", list(args))
    while isinstance(context.command, TyperGroup):  # resolve the subcommand, parse the rest with it
        rest = [*context._protected_args, *context.args]  # where click keeps a group's tail
        name, sub, rest = context.command.resolve_command(context, rest)
        assert sub is not None and name is not None
        context = sub.make_context(name, rest, parent=context)
    return context


INFRA = commands(".venv/bin/python -m infra", inline=False)  # prose names commands inline


def test_the_readme_shows_infra_commands() -> None:
    assert len(INFRA) >= 10 and any(c.startswith("render ") for c in INFRA)


@pytest.mark.parametrize("command", INFRA)
def test_every_infra_command_in_the_readme_parses(command: str) -> None:
    try:
        parse(shlex.split(command))
    except ClickException as error:
        pytest.fail(f"README: `python -m infra {command}`: {error.format_message()}")


def test_the_parser_check_refuses_what_the_cli_would() -> None:
    with pytest.raises(ClickException):
        parse(["plan", "Qwen/Qwen3-8B", "--no-such-option"])
    with pytest.raises(ClickException):
        parse(["cache", "nope"])


def test_every_pytest_path_in_the_readme_exists() -> None:
    paths = [arg for command in commands(".venv/bin/python -m pytest") for arg in shlex.split(command)]
    paths = [path for path in paths if not path.startswith("-")]
    assert paths and [path for path in paths if not (REPO_ROOT / path).exists()] == []


def test_every_make_target_in_the_readme_exists() -> None:
    targets = set(re.findall(r"^([a-z][\w-]*):", (REPO_ROOT / "Makefile").read_text(), re.M))
    named = set()
    for command in commands("make"):
        for word in shlex.split(command):
            if word in ("&&", "||", "|", ";"):  # what follows is another command
                break
            if re.fullmatch(r"[a-z][\w-]*", word):
                named.add(word)
    assert named and named <= targets, named - targets
