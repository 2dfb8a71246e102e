"""`python -m infra ...`: the offline command line of llm-serving."""

from __future__ import annotations

import sys

import typer

from infra.bench.cli import bench_command
from infra.diff_cli import diff_command
from infra.errors import UserError
from infra.modelcache.cli import cache_app
from infra.render_cli import render_command
from infra.sizing.gpus_cli import gpus_app
from infra.sizing.plan_cli import plan_command
from infra.smoke_cli import smoke_command

app = typer.Typer(
    help="llm-serving: plan, render and operate vLLM on AWS EKS.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("plan")(plan_command)
app.add_typer(gpus_app, name="gpus")
app.add_typer(cache_app, name="cache")
app.command("render")(render_command)
app.command("smoke")(smoke_command)
app.command("diff")(diff_command)
app.command("bench")(bench_command)


def main() -> None:
    """Entry point: user errors become one line on stderr and exit status 2, never a traceback."""
    try:
        app(standalone_mode=True)
    except UserError as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(2)
