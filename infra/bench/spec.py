"""The in-cluster benchmark: `vllm bench serve` from the serving image, as a Kubernetes Job. Pure.

The Job runs next to the service (no load balancer or laptop network in the measurement), with the API key
from the stack's Secret as OPENAI_API_KEY (vLLM's benchmark client sends it as the Bearer token). By default
it replays ShareGPT conversations at 3 requests/s, the workload shape of the documents this project came
from; an init container downloads the dataset from the Hub into the pod, and the tokenizer comes from the
Hub too (the HF token Secret is mounted when the stack has one). vLLM prints its result table to stdout,
which `infra.bench.results` reads back from the Job's log.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from infra.errors import UserError
from infra.kubernetes.model_cache import SecretKeyRef

Dataset = Literal["sharegpt", "random"]
DATASETS: tuple[str, ...] = ("sharegpt", "random")
SHAREGPT_REPO = "anon8231489123/ShareGPT_Vicuna_unfiltered"
SHAREGPT_FILE = "ShareGPT_V3_unfiltered_cleaned_split.json"
DATA_DIR = "/data"
PERCENTILE_METRICS = ("ttft", "tpot", "itl", "e2el")
PERCENTILES = (50, 90, 99)
SERVICE_PORT = 8000
CONTAINER = "bench"
LABELS = {"app.kubernetes.io/part-of": "llm-serving", "app.kubernetes.io/component": "benchmark"}


@dataclass(frozen=True)
class BenchSettings:
    request_rate: float = 3.0  # requests per second (Poisson arrivals); inf sends everything at once
    dataset: Dataset = "sharegpt"
    num_prompts: int = 200
    random_input_len: int = 1024  # only for the random dataset
    random_output_len: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.request_rate > 0:
            raise UserError(
                f"{self.request_rate:g} is not a request rate; use a positive number", key="--rate"
            )
        if self.dataset not in DATASETS:
            raise UserError(f"unknown dataset {self.dataset!r}; use {' or '.join(DATASETS)}", key="--dataset")
        if self.num_prompts < 1:
            raise UserError("at least 1 prompt", key="--num-prompts")


def service_url(service: str, namespace: str) -> str:
    return f"http://{service}.{namespace}.svc.cluster.local:{SERVICE_PORT}"


def bench_args(*, model: str, served_model_name: str, base_url: str, settings: BenchSettings) -> list[str]:
    """The arguments after `vllm bench serve`, as vLLM 0.33.0's parser reads them."""
    args = [
        "--backend", "openai",
        "--base-url", base_url,
        "--endpoint", "/v1/completions",
        "--model", served_model_name,
        "--tokenizer", model,
        "--request-rate", f"{settings.request_rate:g}",
        "--num-prompts", str(settings.num_prompts),
        "--seed", str(settings.seed),
        "--percentile-metrics", ",".join(PERCENTILE_METRICS),
        "--metric-percentiles", ",".join(str(p) for p in PERCENTILES),
        "--dataset-name", settings.dataset,
    ]  # fmt: skip
    if settings.dataset == "sharegpt":
        args += ["--dataset-path", f"{DATA_DIR}/{SHAREGPT_FILE}"]
    else:
        args += [
            "--random-input-len", str(settings.random_input_len),
            "--random-output-len", str(settings.random_output_len),
        ]  # fmt: skip
    return args


def job_name(service: str, run_id: str) -> str:
    """A DNS-1123 Job name (at most 63 characters) per service and run."""
    name = re.sub(r"[^a-z0-9-]+", "-", f"bench-{service}-{run_id}".lower()).strip("-")
    return name[:63].rstrip("-")


_SECURITY = {
    "allowPrivilegeEscalation": False,
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "runAsGroup": 1000,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def _secret_env(name: str, ref: SecretKeyRef) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}


def bench_job(
    *,
    name: str,
    namespace: str,
    image: str,
    args: list[str],
    api_key_secret: SecretKeyRef,
    hf_token_secret: SecretKeyRef | None = None,
    dataset: Dataset = "sharegpt",
    timeout_s: int = 3600,
) -> dict[str, Any]:
    """The Job: an optional dataset download, then `vllm bench serve` on a system node; never retried (a
    second attempt would measure a warmed-up server twice)."""
    hub_env = [
        {"name": "HF_HOME", "value": "/tmp/hf-home"},
        {"name": "HF_HUB_DISABLE_TELEMETRY", "value": "1"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    if hf_token_secret:
        hub_env.append(_secret_env("HF_TOKEN", hf_token_secret))
    env = [*hub_env, _secret_env("OPENAI_API_KEY", api_key_secret)]
    mounts = [{"name": "tmp", "mountPath": "/tmp"}, {"name": "data", "mountPath": DATA_DIR}]
    resources = {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"memory": "4Gi"}}
    init_containers = []
    if dataset == "sharegpt":
        download = (
            "from huggingface_hub import hf_hub_download; "
            f"hf_hub_download({SHAREGPT_REPO!r}, {SHAREGPT_FILE!r}, repo_type='dataset', local_dir={DATA_DIR!r})"
        )
        init_containers.append(
            {
                "name": "dataset",
                "image": image,
                "command": ["python3", "-c", download],
                "env": hub_env,  # the Hub token if any, never the API key
                "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "1Gi"}},
                "securityContext": _SECURITY,
                "volumeMounts": mounts,
            }
        )
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "securityContext": {"fsGroup": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [
            {
                "name": CONTAINER,
                "image": image,
                "command": ["vllm", "bench", "serve"],
                "args": args,
                "env": env,
                "resources": resources,
                "securityContext": _SECURITY,
                "volumeMounts": mounts,
            }
        ],
        "volumes": [
            {"name": "tmp", "emptyDir": {"sizeLimit": "8Gi"}},
            {"name": "data", "emptyDir": {"sizeLimit": "4Gi"}},
        ],
    }
    if init_containers:
        pod["initContainers"] = init_containers
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(LABELS)},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": timeout_s,
            "ttlSecondsAfterFinished": 86400,
            "template": {"metadata": {"labels": dict(LABELS)}, "spec": pod},
        },
    }
