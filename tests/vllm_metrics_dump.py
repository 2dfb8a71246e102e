# pyright: reportMissingImports=false
"""Runs inside .venv-vllm (vLLM 0.33.0, CPU torch), not the project venv: prints the Prometheus exposition
vLLM's own metrics logger registers with default options, as `GET /metrics` of a freshly started server
shows it before any request (counters and histograms at 0).

`make vllm-metrics` writes it to .schemas/vllm-<version>/metrics-default.prom (ignored by git); the tests
generate it there on first use (tests/vllm_facts.py). It replaces ../shared/vllm-0.33.0/metrics-default.prom,
which has no upstream URL to fetch it from.

The logger is vLLM's `PrometheusStatLogger` on its default `VllmConfig` (ObservabilityConfig, CacheConfig
and the rest as `vllm serve` defaults them); only the model is stood in for, since the logger reads nothing
of it but the served name, the context length and whether it is a diffusion model. The start-up calls
`vllm serve` makes are made too: the engine is awake and its cache config is published once the KV cache
is sized (`num_gpu_blocks`, here a placeholder of 27000 blocks).

    VLLM_TARGET_DEVICE=cpu .venv-vllm/bin/python tests/vllm_metrics_dump.py [--model NAME] > FILE
"""

from __future__ import annotations

import argparse
import os
import sys
from types import SimpleNamespace

os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")

import prometheus_client
from vllm.config import VllmConfig
from vllm.v1.metrics.loggers import PrometheusStatLogger

NUM_GPU_BLOCKS = 27000  # what the KV-cache sizing would publish; any positive count


def exposition(model: str, max_model_len: int) -> str:
    config = VllmConfig()
    # The model stand-in: PrometheusStatLogger reads these three attributes of ModelConfig and nothing else.
    config.model_config = SimpleNamespace(  # type: ignore[assignment]
        served_model_name=model, max_model_len=max_model_len, is_diffusion=False
    )
    config.cache_config.num_gpu_blocks = NUM_GPU_BLOCKS
    logger = PrometheusStatLogger(config, engine_indexes=[0])
    logger.record_sleep_state()  # the engine is awake
    logger.log_engine_initialized()  # publishes vllm:cache_config_info
    return prometheus_client.generate_latest(prometheus_client.REGISTRY).decode()


def main() -> None:
    parser = argparse.ArgumentParser(description="Print vLLM's default /metrics exposition.")
    parser.add_argument("--model", default="meta-llama/Llama-3.1-8B-Instruct")
    parser.add_argument("--max-model-len", type=int, default=8192)  # token buckets up to 5000
    args = parser.parse_args()
    sys.stdout.write(exposition(args.model, args.max_model_len))


if __name__ == "__main__":
    main()
