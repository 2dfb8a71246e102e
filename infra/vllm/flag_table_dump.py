# pyright: reportMissingImports=false
"""Writes the `vllm serve` flag table from vLLM's own parser: `make vllm-flags` runs this in .venv-vllm.

The program checks user arguments against the table at `pulumi preview`, where vLLM (and torch) are not
installed; tests/vllm/test_flags.py regenerates it with the real parser and fails when it drifts.
One line per option: dest, nargs (0 for a switch), then every spelling, TAB-separated.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")

from vllm.entrypoints.common.cli_args import make_arg_parser
from vllm.utils.argparse_utils import FlexibleArgumentParser


def table() -> str:
    parser = make_arg_parser(FlexibleArgumentParser(prog="vllm serve"))
    lines = []
    for action in parser._actions:
        if not action.option_strings or action.dest == "help":
            continue
        nargs = "1" if action.nargs is None else str(action.nargs)
        lines.append("\t".join([action.dest, nargs, *action.option_strings]))
    return "\n".join(sorted(lines)) + "\n"


if __name__ == "__main__":
    sys.stdout.write(table())
