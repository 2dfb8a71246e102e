"""The flag table the preview checks user arguments against, and the check itself.

The table is written by vLLM 0.33.0's own parser (`make vllm-flags`); the first test regenerates it with the
real parser in .venv-vllm and fails when the committed copy drifts (a vLLM bump without `make vllm-flags`).
"""

from __future__ import annotations

import os
import subprocess

import pytest

from infra.errors import UserError
from infra.vllm import flags
from infra.vllm.flags import check_extra_args, serve_flags, table_path
from tests.conftest import REPO_ROOT

VLLM_PYTHON = REPO_ROOT / ".venv-vllm" / "bin" / "python"


def test_the_committed_table_is_what_vllms_own_parser_prints() -> None:
    if not VLLM_PYTHON.exists():
        pytest.skip(f"needs vLLM's parser in {VLLM_PYTHON.parent.parent}: run `make vllm-parser`")
    result = subprocess.run(
        [str(VLLM_PYTHON), str(REPO_ROOT / "infra" / "vllm" / "flag_table_dump.py")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "VLLM_TARGET_DEVICE": "cpu"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout == table_path().read_text(), "flag table drifted: run `make vllm-flags`"


def test_the_table_knows_aliases_switches_and_lists() -> None:
    table = serve_flags()
    assert table["-tp"] is table["--tensor-parallel-size"]
    assert table["--enforce-eager"].nargs == "0"
    assert table["--served-model-name"].nargs == "+"
    assert "--swap-space" not in table and "--max-seq-len-to-capture" not in table


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--enable-prefix-caching"],
        ["--enforce-eager", "--max-logprobs", "5"],
        ["--max_logprobs=5", "--generation-config", "vllm"],
        ["--enable-auto-tool-choice", "--tool-call-parser", "hermes"],
        ["--override-generation-config", '{"temperature": 0.6}'],
        ["--seed", "-1"],  # a negative number is a value, not a flag
        ["--allowed-media-domains", "a.example", "b.example"],  # a list flag takes several values
    ],
)
def test_valid_user_arguments_pass(args: list[str]) -> None:
    assert check_extra_args(args, key="extraArgs") == tuple(args)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--swap-space", "4"], "extraArgs: --swap-space is not a `vllm serve` flag of vLLM 0.33.0"),
        (
            ["--max-seq-len-to-capture", "8192"],
            "extraArgs: --max-seq-len-to-capture is not a `vllm serve` flag of vLLM 0.33.0; nearest valid flag: ",
        ),
        (["--enable-prefix-cachng"], "nearest valid flag: --enable-prefix-caching"),
        (["-tp", "2"], "extraArgs: --tensor-parallel-size cannot be set here: the planner picks it"),
        (["--tensor-parallel-size=2"], "--tensor-parallel-size cannot be set here"),
        (["--tensor-parallel", "2"], "--tensor-parallel-size cannot be set here"),  # argparse's abbreviation
        (["--max_model_len", "4096"], "--max-model-len cannot be set here: set maxModelLen"),
        (["--gpu-memory-utilization", "0.95"], "--gpu-memory-utilization cannot be set here"),
        (["--device-memory-utilization", "0.95"], "--gpu-memory-utilization cannot be set here"),
        (["--max-num-seqs", "64"], "--max-num-seqs cannot be set here"),
        (["--max-num-batched-tokens", "4096"], "--max-num-batched-tokens cannot be set here"),
        (["-pp", "2"], "--pipeline-parallel-size cannot be set here"),
        (
            ["--api-key", "sk-literal"],
            "--api-key cannot be set here: the key reaches vLLM only as VLLM_API_KEY",
        ),
        (["--port", "9000"], "--port cannot be set here"),
        (["--disable-log-stats"], "--disable-log-stats cannot be set here: it removes every vllm:* metric"),
        (["4096"], "extraArgs: '4096' is not a flag and follows no flag that takes a value"),
        (["--enforce-eager", "yes"], "'yes' is not a flag and follows no flag that takes a value"),
    ],
)
def test_bad_user_arguments_fail_naming_the_key(args: list[str], expected: str) -> None:
    with pytest.raises(UserError) as raised:
        check_extra_args(args, key="extraArgs")
    assert str(raised.value).startswith("extraArgs: ") and expected in str(raised.value)
    assert raised.value.key == "extraArgs"


def test_every_planned_or_owned_flag_exists_in_the_table() -> None:
    dests = {flag.dest for flag in serve_flags().values()}
    assert set(flags.PLANNED) <= dests and set(flags.OWNED) <= dests
