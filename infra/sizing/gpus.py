"""The AWS GPU instance catalog: what each EC2 GPU instance type offers and what it costs.

The data lives in `catalog/gpu_instances.yaml` (every value there names its source); this module turns it
into frozen dataclasses and answers lookups for the planner. Pure Python: no Pulumi, no AWS calls
(`gpu_refresh.py` re-reads the data from AWS).
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from infra.errors import UserError

CATALOG_PATH = Path(__file__).resolve().parent / "catalog" / "gpu_instances.yaml"
MIB = 1024**2
CAPACITY_TYPES = ("on-demand", "spot")

# Spot price as a fraction of on-demand, used only when the catalog carries no spot price for a type.
# AWS advertises Spot "at up to 90% off" on-demand (aws.amazon.com/ec2/spot/pricing), which is a floor, not a
# planning number. The one current GPU quote we read (dstack PR #4110, Aug 2026: p5en.48xlarge in us-east-1
# at $27.20 spot vs $63.30 on-demand) is 0.43. GPU spot prices move a lot, so we plan with 0.6: a spot plan
# should never look cheaper than it is likely to be.
SPOT_PRICE_FACTOR = 0.6


@dataclass(frozen=True)
class GpuModel:
    """One GPU model, with memory as EC2 DescribeInstanceTypes reports it (GpuInfo.Gpus[].MemoryInfo)."""

    name: str  # "A10G", "L4", "L40S", "T4", "A100-40GB", "A100-80GB", "H100", "H200", ...
    memory_mib: int  # per GPU, as EC2 reports it
    memory_bandwidth_gbps: float  # GB/s; 0.0 when unknown (custom GPUs)
    bf16: bool
    fp8: bool
    compute_capability: str  # "8.6"
    is_a100: bool  # vLLM's batch-size defaults single out A100
    aliases: tuple[str, ...] = ()  # other names users type; matched case- and punctuation-insensitively

    @property
    def memory_bytes(self) -> int:
        return self.memory_mib * MIB

    @property
    def memory_gib(self) -> float:
        return self.memory_mib / 1024


@dataclass(frozen=True)
class GpuInstanceType:
    """One EC2 instance type with GPUs. Prices are us-east-1 Linux, shared tenancy, USD per hour."""

    name: str  # "g5.12xlarge"
    gpu: GpuModel
    gpu_count: int
    vcpus: int
    memory_mib: int
    local_nvme_gb: int  # total over all disks; 0 when EBS only
    network_gbps: float  # the "Up to" value when that is what AWS states
    efa: bool
    on_demand_usd_per_hour: float | None  # None: AWS publishes no on-demand price (e.g. Capacity Blocks only)
    spot_usd_per_hour: float | None = None  # None: estimate from on-demand with SPOT_PRICE_FACTOR
    local_nvme_count: int = 0

    @property
    def family(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def total_gpu_memory_bytes(self) -> int:
        return self.gpu.memory_bytes * self.gpu_count

    def hourly_cost(self, capacity_type: str) -> float | None:
        """USD per hour for "on-demand" or "spot"; None when no price is known for this type."""
        if capacity_type == "on-demand":
            return self.on_demand_usd_per_hour
        if capacity_type == "spot":
            if self.spot_usd_per_hour is not None:
                return self.spot_usd_per_hour
            if self.on_demand_usd_per_hour is None:
                return None
            return round(self.on_demand_usd_per_hour * SPOT_PRICE_FACTOR, 6)
        raise UserError(
            f"unknown capacity type {capacity_type!r}; use one of {', '.join(CAPACITY_TYPES)}",
            key="capacity_type",
        )


def _normalize(name: str) -> str:
    """Lowercase, drop "nvidia" and punctuation, and treat "80G", "80GB", "80GiB" alike."""
    key = re.sub(r"[^a-z0-9]", "", name.lower().replace("nvidia", ""))
    return re.sub(r"(\d+)g(i?b)?$", r"\1g", key)


@dataclass(frozen=True)
class GpuCatalog:
    instance_types: tuple[GpuInstanceType, ...]
    prices_read_on: str  # ISO date; the oldest date any price in the catalog was read
    region: str = "us-east-1"  # the region the prices are for

    def by_name(self, name: str) -> GpuInstanceType:
        """The instance type called `name` (case-insensitive); UserError listing close or valid names."""
        wanted = name.strip().lower()
        for instance_type in self.instance_types:
            if instance_type.name == wanted:
                return instance_type
        raise UserError(self._unknown_type_message(name), key="instance_types")

    def gpu_models(self) -> tuple[GpuModel, ...]:
        """Every GPU model in the catalog, smallest memory first."""
        models = {it.gpu.name: it.gpu for it in self.instance_types}
        return tuple(sorted(models.values(), key=lambda model: (model.memory_mib, model.name)))

    def find_gpu(self, name: str) -> GpuModel:
        """The GPU model a user means by `name` ("a10g", "A100-80G", "h100", ...).

        A name that fits several models ("a100" fits both A100 sizes) resolves to the one with the least
        memory, so a plan made from it never assumes memory the real GPU may not have. `filter` instead
        keeps every model such a name fits.
        """
        matches = self._matching_gpus(name)
        if not matches:
            valid = ", ".join(model.name for model in self.gpu_models())
            raise UserError(f"unknown GPU {name!r}; use one of {valid}", key="gpus")
        return matches[0]

    def filter(
        self, gpus: Iterable[str] = (), instance_types: Iterable[str] = ()
    ) -> tuple[GpuInstanceType, ...]:
        """The catalog's types allowed by both constraints; an empty constraint allows everything.

        `gpus` are GPU names or aliases; `instance_types` are type names or whole families ("g6e" or
        "g6e.*"). Unknown names, and constraints that together exclude every type, are UserErrors.
        """
        gpu_names = list(gpus)
        type_names = list(instance_types)
        allowed = self.instance_types
        if gpu_names:
            models: set[str] = set()
            for name in gpu_names:
                matches = self._matching_gpus(name)
                if not matches:
                    valid = ", ".join(model.name for model in self.gpu_models())
                    raise UserError(f"unknown GPU {name!r}; use one of {valid}", key="gpus")
                models.update(model.name for model in matches)
            allowed = tuple(it for it in allowed if it.gpu.name in models)
        if type_names:
            chosen: set[str] = set()
            families = {it.family for it in self.instance_types}
            for name in type_names:
                family = name.strip().lower().removesuffix(".*")
                if family in families:
                    chosen.update(it.name for it in self.instance_types if it.family == family)
                else:
                    chosen.add(self.by_name(name).name)
            allowed = tuple(it for it in allowed if it.name in chosen)
        if not allowed:
            raise UserError(
                f"no catalog instance type has one of the GPUs {', '.join(gpu_names)} and is one of "
                f"{', '.join(type_names)}; drop one of the two constraints or make them agree",
                key="gpus",
            )
        return allowed

    def _matching_gpus(self, name: str) -> list[GpuModel]:
        key = _normalize(name)
        matches = [
            model
            for model in self.gpu_models()
            if key == _normalize(model.name) or key in {_normalize(alias) for alias in model.aliases}
        ]
        return sorted(matches, key=lambda model: (model.memory_mib, model.name))

    def _unknown_type_message(self, name: str) -> str:
        names = [it.name for it in self.instance_types]
        close = difflib.get_close_matches(name.strip().lower(), names, n=4, cutoff=0.6)
        family = name.strip().lower().split(".", 1)[0]
        same_family = [n for n in names if n.split(".", 1)[0] == family]
        if same_family:
            hint = f"{family} sizes in the catalog: {', '.join(same_family)}"
        else:
            families = sorted({it.family for it in self.instance_types})
            hint = f"catalog families: {', '.join(families)}"
        did_you_mean = f"did you mean {', '.join(close)}? " if close else ""
        return f"unknown GPU instance type {name!r}; {did_you_mean}{hint}"


# A GPU outside the catalog is assumed to be what AWS's data-center GPUs since 2023 are (L4, L40S: 8.9;
# H100, H200: 9.0; B200: 10.0), all with bf16 and fp8 tensor cores, unless the user says otherwise.
DEFAULT_CUSTOM_COMPUTE_CAPABILITY = 8.9
BF16_MIN_COMPUTE_CAPABILITY = 8.0  # Ampere
FP8_MIN_COMPUTE_CAPABILITY = 8.9  # Ada, Hopper and newer


def custom_gpu(
    memory_gib: float, name: str = "custom", compute_capability: float = DEFAULT_CUSTOM_COMPUTE_CAPABILITY
) -> GpuModel:
    """A GPU outside the catalog (`--gpu-memory-gib`, `--gpu-compute-capability`): bf16 and fp8 follow from
    the compute capability; bandwidth is unknown and it is never treated as an A100."""
    if not memory_gib > 0:
        raise UserError(
            f"GPU memory must be a positive number of GiB, got {memory_gib!r} (e.g. 24 for a 24 GiB GPU)",
            key="gpu_memory_gib",
        )
    if not 3.0 <= compute_capability < 20.0:
        raise UserError(
            f"{compute_capability!r} is not a CUDA compute capability; use e.g. 8.0 (A100), 8.9 (L4, L40S), "
            "9.0 (H100) or 10.0 (B200)",
            key="gpu_compute_capability",
        )
    return GpuModel(
        name=name,
        memory_mib=int(memory_gib * 1024),
        memory_bandwidth_gbps=0.0,
        bf16=compute_capability >= BF16_MIN_COMPUTE_CAPABILITY,
        fp8=compute_capability >= FP8_MIN_COMPUTE_CAPABILITY,
        compute_capability=f"{compute_capability:.1f}",
        is_a100=False,
    )


def load_catalog(path: Path | None = None) -> GpuCatalog:
    """The catalog in `path` (default: the packaged YAML). Cached until the file changes."""
    resolved = (path or CATALOG_PATH).resolve()
    try:
        mtime_ns = resolved.stat().st_mtime_ns
    except FileNotFoundError:
        raise UserError(f"GPU catalog {resolved} does not exist; pass an existing YAML file") from None
    return _load_cached(resolved, mtime_ns)


@functools.lru_cache(maxsize=8)
def _load_cached(path: Path, mtime_ns: int) -> GpuCatalog:
    del mtime_ns  # part of the cache key only: a rewritten file is read again
    with path.open(encoding="utf-8") as handle:
        document = yaml.safe_load(handle)
    return catalog_from_document(document, source=str(path))


def catalog_from_document(document: Any, source: str = "<catalog>") -> GpuCatalog:
    """Build and check a catalog from the parsed YAML document (see catalog/gpu_instances.yaml)."""
    if not isinstance(document, Mapping):
        raise UserError(f"GPU catalog {source} is not a YAML mapping")
    try:
        models = {name: _gpu_model(name, spec) for name, spec in document["gpu_models"].items()}
        instance_types: list[GpuInstanceType] = []
        for family, block in document["families"].items():
            model = models.get(block["gpu"])
            if model is None:
                raise UserError(f"GPU catalog {source}: family {family} names unknown GPU {block['gpu']!r}")
            for name, spec in block["instance_types"].items():
                if name.split(".", 1)[0] != family:
                    raise UserError(f"GPU catalog {source}: {name} is listed under family {family}")
                if spec["gpu_memory_mib"] != model.memory_mib:
                    raise UserError(
                        f"GPU catalog {source}: {name} reports {spec['gpu_memory_mib']} MiB per GPU but "
                        f"{model.name} has {model.memory_mib} MiB"
                    )
                instance_types.append(_instance_type(name, model, spec))
        prices_read_on = str(document["prices_read_on"])
        region = str(document.get("region", "us-east-1"))
    except (KeyError, TypeError, AttributeError) as error:
        raise UserError(f"GPU catalog {source} is malformed ({type(error).__name__}: {error})") from None
    names = [it.name for it in instance_types]
    if len(names) != len(set(names)):
        raise UserError(f"GPU catalog {source} lists an instance type twice")
    return GpuCatalog(instance_types=tuple(instance_types), prices_read_on=prices_read_on, region=region)


def _gpu_model(name: str, spec: Mapping[str, Any]) -> GpuModel:
    return GpuModel(
        name=name,
        memory_mib=int(spec["memory_mib"]),
        memory_bandwidth_gbps=float(spec["memory_bandwidth_gbps"]),
        bf16=bool(spec["bf16"]),
        fp8=bool(spec["fp8"]),
        compute_capability=str(spec["compute_capability"]),
        is_a100=bool(spec["is_a100"]),
        aliases=tuple(str(alias) for alias in spec.get("aliases", ())),
    )


def _instance_type(name: str, model: GpuModel, spec: Mapping[str, Any]) -> GpuInstanceType:
    on_demand = spec["on_demand_usd_per_hour"]
    spot = spec.get("spot_usd_per_hour")
    return GpuInstanceType(
        name=name,
        gpu=model,
        gpu_count=int(spec["gpu_count"]),
        vcpus=int(spec["vcpus"]),
        memory_mib=int(spec["memory_mib"]),
        local_nvme_gb=int(spec["local_nvme_gb"]),
        network_gbps=float(spec["network_gbps"]),
        efa=bool(spec["efa"]),
        on_demand_usd_per_hour=None if on_demand is None else float(on_demand),
        spot_usd_per_hour=None if spot is None else float(spot),
        local_nvme_count=int(spec["local_nvme_count"]),
    )
