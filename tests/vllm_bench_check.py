# pyright: reportMissingImports=false
"""Runs inside .venv-vllm (vLLM 0.33.0, CPU torch), not the project venv: parses argument lists with the
parser `vllm bench serve` itself builds, and prints what it made of each as JSON. With `--tokenizer DIR`,
first writes a tiny word-level tokenizer there (for a real benchmark run against a local fake server).

stdin: [{"name": str, "args": [str, ...]}, ...]
stdout: {name: {"ok": bool, "error": str, "values": {dest: value}}}
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys

os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")

REPORTED = (
    "backend", "base_url", "endpoint", "model", "tokenizer", "request_rate", "num_prompts", "seed",
    "percentile_metrics", "metric_percentiles", "dataset_name", "dataset_path", "random_input_len",
    "random_output_len",
)  # fmt: skip


def write_tokenizer(path: str) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "[PAD]": 1, **{f"w{i}": i + 2 for i in range(200)}}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]").save_pretrained(
        path
    )


def parse(args: list[str]) -> dict:
    from vllm.benchmarks.serve import add_cli_args
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser(prog="vllm bench serve")
    add_cli_args(parser)
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            namespace = parser.parse_args(args)
    except SystemExit:
        return {"ok": False, "error": errors.getvalue().strip().splitlines()[-1:], "values": {}}
    values = {key: getattr(namespace, key) for key in REPORTED if hasattr(namespace, key)}
    return {"ok": True, "error": "", "values": json.loads(json.dumps(values, default=str))}


def main() -> None:
    if sys.argv[1:2] == ["--tokenizer"]:
        write_tokenizer(sys.argv[2])
        return
    cases = json.load(sys.stdin)
    json.dump({case["name"]: parse(case["args"]) for case in cases}, sys.stdout)


if __name__ == "__main__":
    main()
