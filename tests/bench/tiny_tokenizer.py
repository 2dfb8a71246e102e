# pyright: reportMissingImports=false
"""Runs inside .venv-vllm: writes a word-level tokenizer of 200 words (w0 ... w199) to the folder given,
enough for `vllm bench serve --dataset-name random` against tests/bench/fake_openai.py."""

from __future__ import annotations

import sys

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

vocab = {"[UNK]": 0, "[PAD]": 1, **{f"w{i}": i + 2 for i in range(200)}}
tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]").save_pretrained(
    sys.argv[1]
)
