"""Helpers for component tests: a plan built by hand, and a run of Pulumi code under recording mocks.

The mocks are `infra.render.RecordingMocks`, the very ones `python -m infra render` uses, so a component
test sees exactly the resources (type, name, parent, inputs) a render shows.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from infra.mock_runtime import run_pulumi_func, sync_await
from infra.render import Registration, Rendered, install_mocks, redact
from infra.sizing.plan import GpuShare, MemoryPerGpu, ServingPlan

GIB = 1024**3

BASE_PLAN = ServingPlan(
    model="Qwen/Qwen3-8B",
    params_billion=8.2,
    dtype="bfloat16",
    quantization=None,
    kv_cache_dtype="auto",
    instance_type="g6.xlarge",
    gpu=GpuShare(name="L4", memory_gib=22.35, count=1),
    tensor_parallel_size=1,
    pipeline_parallel_size=1,
    nodes_per_replica=1,
    gpus_per_replica=1,
    max_model_len=8192,
    gpu_memory_utilization=0.92,
    memory_per_gpu=MemoryPerGpu(
        budget=20 * GIB, weights=16 * GIB, activations=GIB, cuda_graphs=GIB, other=GIB, kv_cache=GIB
    ),
    kv_bytes_per_token_per_gpu=147456,
    kv_cache_tokens=22896,
    max_concurrency=2.8,
    max_num_batched_tokens=2048,
    max_num_seqs=256,
    quantization_arg=None,
    capacity_type="spot",
    cost_per_hour_usd=0.48,
    estimated_cold_start_s=100.0,
    estimated_load_s=80.0,
    approximate=False,
)


def takes_tags(type_token: str) -> bool:
    """Whether an AWS resource type (aws:s3/bucket:Bucket) has a `tags` input, from pulumi_aws's own class."""
    import pulumi_aws

    provider, module_and_file, class_name = type_token.split(":")
    if provider != "aws":
        return False
    resource_class = getattr(getattr(pulumi_aws, module_and_file.split("/")[0]), class_name)
    return "tags" in inspect.signature(resource_class._internal_init).parameters


def make_plan(**changes: Any) -> ServingPlan:
    return replace(BASE_PLAN, **changes)


class Recorded(Rendered):
    """What a run registered, with lookups by type and name."""

    def one(self, type_: str, name: str) -> Registration:
        found = [r for r in self.registrations if r.type == type_ and r.name == name]
        assert len(found) == 1, f"expected one {type_} named {name}, found {len(found)}"
        return found[0]

    def inputs(self, type_: str, name: str) -> dict[str, Any]:
        return redact(self.one(type_, name).inputs)

    def children_of(self, component: Registration) -> list[Registration]:
        return [r for r in self.registrations if r.parent == component.urn]

    def names(self) -> list[tuple[str, str]]:
        return [(r.type, r.name) for r in self.registrations]


def run(build: Callable[[], Any], *, stack: str = "test") -> Recorded:
    """Run `build` (which creates resources) to completion under recording mocks, with applies run."""
    recorder = install_mocks(stack=stack)
    sync_await(run_pulumi_func(lambda: build() and None))
    return Recorded(registrations=list(recorder.registrations), outputs={})


def resolve(output: Any) -> Any:
    """The value of an Output once a `run` has completed."""
    return sync_await(output.future())
