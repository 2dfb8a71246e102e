# pyright: reportMissingImports=false
"""Runs inside .venv-vllm (vLLM 0.33.0, CPU torch), not the project venv: for each architecture name on
stdin, whether vLLM's class supports LoRA and which of its modules LoRA wraps besides the linear layers.

stdin: ["LlamaForCausalLM", ...]
stdout: {architecture: {"supports_lora": bool, "embedding_modules": [str, ...]}}
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")

from vllm.model_executor.models.registry import ModelRegistry


def main() -> None:
    found = {}
    for architecture in json.load(sys.stdin):
        model_class = ModelRegistry._try_load_model_cls(architecture)
        found[architecture] = {
            "supports_lora": bool(getattr(model_class, "supports_lora", False)),
            "embedding_modules": sorted(getattr(model_class, "embedding_modules", None) or {}),
        }
    json.dump(found, sys.stdout)


if __name__ == "__main__":
    main()
