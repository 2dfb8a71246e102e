"""`python -m infra plan` end to end, in a subprocess: exit codes, JSON, and no tracebacks on bad input."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import run_infra


def run_plan(*args: str, columns: str = "200") -> subprocess.CompletedProcess[str]:
    return run_infra("plan", *args, env={**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": columns})


def test_json_plan_for_llama_70b_at_32k() -> None:
    result = run_plan("meta-llama/Llama-3.1-70B-Instruct", "--max-model-len", "32K", "--json")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["max_model_len"] == 32768
    assert plan["gpus_per_replica"] == plan["tensor_parallel_size"] * plan["pipeline_parallel_size"]
    assert plan["kv_cache_tokens"] >= 32768
    assert "--max-model-len" in plan["vllm_args"]


def test_table_output_names_the_instance_and_cost() -> None:
    result = run_plan("Qwen/Qwen3-8B", "--max-model-len", "8192", "--gpu", "L4")
    assert result.returncode == 0, result.stderr
    assert "g6." in result.stdout and "$" in result.stdout and "KV cache" in result.stdout


@pytest.mark.parametrize("columns", ["80", "60"])
def test_tables_never_cut_instance_names(columns: str) -> None:
    args = ("meta-llama/Llama-3.1-70B-Instruct", "--max-model-len", "32K", "--replicas", "2")
    result = run_plan(*args, columns=columns)
    plan = json.loads(run_plan(*args, "--json").stdout)
    assert result.returncode == 0, result.stderr
    assert "…" not in result.stdout
    names = [plan["instance_type"]] + [alt["instance_type"] for alt in plan["alternatives"]]
    assert len(names) > 3 and all(name in result.stdout for name in names)
    assert "for 2 replica(s)" in result.stdout and "us-east-1 list prices" in result.stdout


def test_config_file_and_repeated_gpu_options(tmp_path: Path) -> None:
    config = {
        "architectures": ["MistralForCausalLM"],
        "model_type": "mistral",
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "vocab_size": 32000,
        "max_position_embeddings": 32768,
        "torch_dtype": "bfloat16",
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    result = run_plan("my/model", "--config", str(path), "--gpu", "L4", "--gpu", "A10G", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["gpu"]["name"] in {"L4", "A10G"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("meta-llama/Llama-3.1-405B-Instruct", "--gpu", "L4", "--max-model-len", "128K"), "does not fit"),
        (("nobody/nothing",), "not in the built-in catalog"),
        (("/etc/passwd",), "is a file, not a model directory"),
        (("../../no/such/../../passwd-dir/x",), "no such model directory"),
        (("Qwen/Qwen3-8B", "--gpu-memory-gib", "24", "--gpu", "L4"), "--gpu-memory-gib"),
        (("Qwen/Qwen3-8B", "--max-model-len", "lots"), "--max-model-len"),
        (
            ("Qwen/Qwen3-8B", "--gpu-memory-utilization", "0"),
            "gpu_memory_utilization: must be in (0, 1], got 0",
        ),
        (("Qwen/Qwen3-8B", "--capacity-type", "reserved"), "--capacity-type"),
        (("Qwen/Qwen3-8B", "--dtype", "int4"), "dtype"),
        (
            (
                "Qwen/Qwen3-8B",
                "--gpu-memory-gib",
                "80",
                "--gpu-compute-capability",
                "7.5",
                "--dtype",
                "bfloat16",
            ),
            "custom has no bfloat16 support (compute capability 7.5)",
        ),
        (("Qwen/Qwen3-8B", "--tensor-parallel-size", "3"), "tensor_parallel_size"),
        (("Qwen/Qwen3-8B", "--gpu", "Voodoo5"), "unknown GPU"),
        (("Qwen/Qwen3-8B", "--config", "/nonexistent/config.json"), "does not exist"),
        (("Qwen/Qwen3-8B", "--cpu-offload-gb", "-2"), "cpu_offload_gib: must be 0 (no offload)"),
    ],
)
def test_bad_input_exits_2_with_one_clear_message(args: tuple[str, ...], message: str) -> None:
    result = run_plan(*args)
    assert result.returncode == 2, result.stdout
    assert message in result.stderr
    assert "Traceback" not in result.stderr and result.stderr.startswith("error: ")


def test_malformed_config_json_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text("{ nope")
    result = run_plan("x/y", "--config", str(path))
    assert result.returncode == 2 and "not valid JSON" in result.stderr and "Traceback" not in result.stderr


def test_cpu_offload_alternative_and_plan() -> None:
    """The issue's case: Qwen3-14B in bf16 on g6.4xlarge (one L4, 64 GiB of host memory)."""
    table = run_plan("Qwen/Qwen3-14B", "--instance-type", "g6.4xlarge")
    assert table.returncode == 0, table.stderr
    assert "CPU offload" in table.stdout and "16 GiB/GPU" in table.stdout
    result = run_plan("Qwen/Qwen3-14B", "--instance-type", "g6.4xlarge", "--cpu-offload-gb", "16", "--json")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["cpu_offload_gib"] == 16 and plan["nodes_per_replica"] == 1
    assert plan["vllm_args"][-2:] == ["--cpu-offload-gb", "16"]
    assert any("PCIe" in note for note in plan["notes"])
