"""The GPU instance catalog: lookups, aliases, filters, errors, costs, and the data against EC2's own."""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from moto import mock_aws
from typer.testing import CliRunner

from infra.errors import UserError
from infra.sizing.gpus import (
    CATALOG_PATH,
    MIB,
    SPOT_PRICE_FACTOR,
    GpuCatalog,
    catalog_from_document,
    custom_gpu,
    load_catalog,
)
from infra.sizing.gpus_cli import gpus_app


@pytest.fixture(scope="module")
def catalog() -> GpuCatalog:
    return load_catalog()


def _document() -> dict[str, Any]:
    return yaml.safe_load(CATALOG_PATH.read_text(encoding="utf-8"))


# --- lookups -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "gpu", "count"),
    [
        ("g5.12xlarge", "A10G", 4),
        (" G5.XLARGE ", "A10G", 1),
        ("g4dn.metal", "T4", 8),
        ("g6.48xlarge", "L4", 8),
        ("g6e.xlarge", "L40S", 1),
        ("p4d.24xlarge", "A100-40GB", 8),
        ("p4de.24xlarge", "A100-80GB", 8),
        ("p5.4xlarge", "H100", 1),
        ("p5e.48xlarge", "H200", 8),
        ("p5en.48xlarge", "H200", 8),
        ("p6-b200.48xlarge", "B200", 8),
        ("g7e.12xlarge", "RTX-PRO-6000", 2),
    ],
)
def test_by_name(catalog: GpuCatalog, name: str, gpu: str, count: int) -> None:
    found = catalog.by_name(name)
    assert (found.gpu.name, found.gpu_count) == (gpu, count)


@pytest.mark.parametrize(
    ("name", "must_mention"),
    [
        ("g5.3xlarge", ["'g5.3xlarge'", "g5.2xlarge", "g5.4xlarge"]),  # close sizes of the same family
        ("z9.large", ["'z9.large'", "g6e", "p5en"]),  # unknown family: list the families
    ],
)
def test_by_name_unknown_names_the_value_and_what_works(
    catalog: GpuCatalog, name: str, must_mention: list[str]
) -> None:
    with pytest.raises(UserError) as raised:
        catalog.by_name(name)
    for text in must_mention:
        assert text in str(raised.value)
    assert raised.value.key == "instance_types"


@pytest.mark.parametrize(
    ("alias", "model"),
    [
        ("A10G", "A10G"),
        ("a10g", "A10G"),
        ("A10", "A10G"),
        ("NVIDIA L4", "L4"),
        ("l40s", "L40S"),
        ("L40-S", "L40S"),
        ("t4", "T4"),
        ("Tesla-T4", "T4"),
        ("h100", "H100"),
        ("H100-80GB", "H100"),
        ("h200", "H200"),
        ("A100-80G", "A100-80GB"),
        ("a100 80gb", "A100-80GB"),
        ("A100-80GiB", "A100-80GB"),
        ("A100-40GB", "A100-40GB"),
        ("a100", "A100-40GB"),  # fits both sizes: the smaller, so a plan never assumes 80 GB
        ("b200", "B200"),
        ("RTX PRO Server 6000", "RTX-PRO-6000"),
        ("rtx pro 6000", "RTX-PRO-6000"),
    ],
)
def test_find_gpu_aliases(catalog: GpuCatalog, alias: str, model: str) -> None:
    assert catalog.find_gpu(alias).name == model


@pytest.mark.parametrize("name", ["v100", "a100-120gb", ""])
def test_find_gpu_unknown_lists_valid_names(catalog: GpuCatalog, name: str) -> None:
    with pytest.raises(UserError) as raised:
        catalog.find_gpu(name)
    message = str(raised.value)
    assert repr(name) in message
    assert all(model in message for model in ("A10G", "L40S", "A100-80GB", "H200"))
    assert raised.value.key == "gpus"


def test_gpu_models_are_unique_and_smallest_first(catalog: GpuCatalog) -> None:
    models = catalog.gpu_models()
    assert len({model.name for model in models}) == len(models) == 11
    assert [model.memory_mib for model in models] == sorted(model.memory_mib for model in models)
    assert models[0].name == "T4"


@pytest.mark.parametrize(
    ("gpus", "types", "expected"),
    [
        (["a100"], [], {"p4d.24xlarge", "p4de.24xlarge"}),
        (["A100-80G"], [], {"p4de.24xlarge"}),
        (["H200"], [], {"p5e.48xlarge", "p5en.48xlarge"}),
        (["h100", "b200"], [], {"p5.4xlarge", "p5.48xlarge", "p6-b200.48xlarge"}),
        ([], ["p5"], {"p5.4xlarge", "p5.48xlarge"}),
        ([], ["p5.*", "p5en.48xlarge"], {"p5.4xlarge", "p5.48xlarge", "p5en.48xlarge"}),
        (["L4"], ["g6.xlarge", "g5.xlarge"], {"g6.xlarge"}),
        (
            ["l40s"],
            ["g6e"],
            {f"g6e.{size}" for size in ("xlarge", "2xlarge", "4xlarge", "8xlarge")}
            | {f"g6e.{size}" for size in ("12xlarge", "16xlarge", "24xlarge", "48xlarge")},
        ),
    ],
)
def test_filter(catalog: GpuCatalog, gpus: list[str], types: list[str], expected: set[str]) -> None:
    assert {it.name for it in catalog.filter(gpus=gpus, instance_types=types)} == expected


def test_filter_without_constraints_is_the_whole_catalog(catalog: GpuCatalog) -> None:
    assert catalog.filter() == catalog.instance_types


@pytest.mark.parametrize(
    ("gpus", "types", "key", "must_mention"),
    [
        (["v100"], [], "gpus", "'v100'"),
        ([], ["g5.3xlarge"], "instance_types", "'g5.3xlarge'"),
        (["H100"], ["g5.xlarge"], "gpus", "H100"),  # both valid, but nothing satisfies both
    ],
)
def test_filter_errors(
    catalog: GpuCatalog, gpus: list[str], types: list[str], key: str, must_mention: str
) -> None:
    with pytest.raises(UserError) as raised:
        catalog.filter(gpus=gpus, instance_types=types)
    assert raised.value.key == key
    assert must_mention in str(raised.value)


# --- cost --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "capacity_type", "expected"),
    [
        ("g5.xlarge", "on-demand", 1.006),
        ("g5.xlarge", "spot", round(1.006 * SPOT_PRICE_FACTOR, 6)),
        ("p5.48xlarge", "on-demand", 55.04),
        ("p5e.48xlarge", "on-demand", None),  # Capacity Blocks only: no on-demand price
        ("p5e.48xlarge", "spot", None),
    ],
)
def test_hourly_cost(catalog: GpuCatalog, name: str, capacity_type: str, expected: float | None) -> None:
    assert catalog.by_name(name).hourly_cost(capacity_type) == expected


def test_spot_estimate_is_a_discount() -> None:
    assert 0 < SPOT_PRICE_FACTOR < 1


def test_catalog_spot_price_wins_over_the_estimate() -> None:
    document = _document()
    document["families"]["g5"]["instance_types"]["g5.xlarge"]["spot_usd_per_hour"] = 0.3
    g5 = catalog_from_document(document).by_name("g5.xlarge")
    assert (g5.hourly_cost("spot"), g5.hourly_cost("on-demand")) == (0.3, 1.006)


@pytest.mark.parametrize("capacity_type", ["reserved", "On-Demand", ""])
def test_hourly_cost_rejects_unknown_capacity_type(catalog: GpuCatalog, capacity_type: str) -> None:
    with pytest.raises(UserError) as raised:
        catalog.by_name("g5.xlarge").hourly_cost(capacity_type)
    assert raised.value.key == "capacity_type"
    assert "on-demand, spot" in str(raised.value)


# --- custom GPUs -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("gib", "mib"), [(24, 24576), (22.35, 22886), (0.5, 512)])
def test_custom_gpu(gib: float, mib: int) -> None:
    gpu = custom_gpu(gib, name="my-gpu")
    assert (gpu.name, gpu.memory_mib, gpu.memory_bytes) == ("my-gpu", mib, mib * MIB)
    assert not gpu.is_a100


@pytest.mark.parametrize(
    ("capability", "bf16", "fp8", "shown"),
    [
        (None, True, True, "8.9"),
        (7.5, False, False, "7.5"),
        (8.0, True, False, "8.0"),
        (9.0, True, True, "9.0"),
    ],
)
def test_custom_gpu_capabilities_follow_its_compute_capability(
    capability: float | None, bf16: bool, fp8: bool, shown: str
) -> None:
    gpu = custom_gpu(80) if capability is None else custom_gpu(80, compute_capability=capability)
    assert (gpu.bf16, gpu.fp8, gpu.compute_capability) == (bf16, fp8, shown)


@pytest.mark.parametrize("capability", [0.0, 2.1, 89.0])
def test_custom_gpu_rejects_what_is_not_a_compute_capability(capability: float) -> None:
    with pytest.raises(UserError, match="not a CUDA compute capability") as raised:
        custom_gpu(24, compute_capability=capability)
    assert raised.value.key == "gpu_compute_capability"


@pytest.mark.parametrize("gib", [0, -4, float("nan")])
def test_custom_gpu_rejects_non_positive_memory(gib: float) -> None:
    with pytest.raises(UserError) as raised:
        custom_gpu(gib)
    assert raised.value.key == "gpu_memory_gib"


# --- the data ----------------------------------------------------------------------------------------


def test_every_family_shares_one_gpu_model(catalog: GpuCatalog) -> None:
    by_family: dict[str, set[str]] = {}
    for it in catalog.instance_types:
        by_family.setdefault(it.family, set()).add(it.gpu.name)
    assert all(len(models) == 1 for models in by_family.values()), by_family
    assert set(by_family) >= {"g4dn", "g5", "g6", "g6e", "p4d", "p4de", "p5", "p5e", "p5en"}


@pytest.mark.parametrize(
    ("name", "gpu_name", "count", "mib_per_gpu", "vcpus", "memory_mib"),
    [
        # What EC2 DescribeInstanceTypes reports (GpuInfo.Gpus[].MemoryInfo.SizeInMiB, VCpuInfo, MemoryInfo).
        ("g4dn.xlarge", "T4", 1, 16384, 4, 16384),
        ("g5.xlarge", "A10G", 1, 22888, 4, 16384),
        ("g5.48xlarge", "A10G", 8, 22888, 192, 786432),
        ("g6.xlarge", "L4", 1, 22888, 4, 16384),
        ("g6e.xlarge", "L40S", 1, 45776, 4, 32768),
        ("p4d.24xlarge", "A100-40GB", 8, 40960, 96, 1179648),
        ("p4de.24xlarge", "A100-80GB", 8, 81920, 96, 1179648),
        ("p5.48xlarge", "H100", 8, 81920, 192, 2097152),
        ("p5en.48xlarge", "H200", 8, 144384, 192, 2097152),
    ],
)
def test_known_types_match_ec2(
    catalog: GpuCatalog, name: str, gpu_name: str, count: int, mib_per_gpu: int, vcpus: int, memory_mib: int
) -> None:
    it = catalog.by_name(name)
    assert (it.gpu.name, it.gpu_count, it.gpu.memory_mib, it.vcpus, it.memory_mib) == (
        gpu_name,
        count,
        mib_per_gpu,
        vcpus,
        memory_mib,
    )


def test_every_type_matches_moto_recorded_ec2_data(catalog: GpuCatalog) -> None:
    """moto ships a recording of the real DescribeInstanceTypes: every hardware value must agree."""
    names = [it.name for it in catalog.instance_types]
    with mock_aws():
        ec2 = boto3.client("ec2", region_name="us-east-1")
        pages = ec2.get_paginator("describe_instance_types").paginate(InstanceTypes=names)
        described = {item["InstanceType"]: item for page in pages for item in page["InstanceTypes"]}
    assert set(described) == set(names)
    for it in catalog.instance_types:
        item = described[it.name]
        (gpu,) = item["GpuInfo"]["Gpus"]
        storage = item.get("InstanceStorageInfo", {})
        assert (gpu["Count"], gpu["MemoryInfo"]["SizeInMiB"]) == (it.gpu_count, it.gpu.memory_mib), it.name
        assert (item["VCpuInfo"]["DefaultVCpus"], item["MemoryInfo"]["SizeInMiB"]) == (
            it.vcpus,
            it.memory_mib,
        )
        assert storage.get("TotalSizeInGB", 0) == it.local_nvme_gb, it.name
        assert item["NetworkInfo"]["EfaSupported"] == it.efa, it.name


@pytest.mark.parametrize(
    ("model", "bf16", "fp8", "compute_capability", "is_a100"),
    [
        ("T4", False, False, "7.5", False),
        ("A10G", True, False, "8.6", False),
        ("L4", True, True, "8.9", False),
        ("L40S", True, True, "8.9", False),
        ("A100-40GB", True, False, "8.0", True),
        ("A100-80GB", True, False, "8.0", True),
        ("H100", True, True, "9.0", False),
        ("H200", True, True, "9.0", False),
        ("B200", True, True, "10.0", False),
    ],
)
def test_gpu_capabilities(
    catalog: GpuCatalog, model: str, bf16: bool, fp8: bool, compute_capability: str, is_a100: bool
) -> None:
    gpu = catalog.find_gpu(model)
    assert (gpu.bf16, gpu.fp8, gpu.compute_capability, gpu.is_a100) == (
        bf16,
        fp8,
        compute_capability,
        is_a100,
    )
    assert gpu.memory_bandwidth_gbps > 0


def test_network_takes_the_stated_or_up_to_value(catalog: GpuCatalog) -> None:
    assert catalog.by_name("g5.xlarge").network_gbps == 10  # "Up to 10 Gigabit"
    assert catalog.by_name("p4d.24xlarge").network_gbps == 400  # "4x 100 Gigabit"
    assert catalog.by_name("p5.48xlarge").network_gbps == 3200


def test_prices_are_sourced_and_dated(catalog: GpuCatalog) -> None:
    unpriced = {it.name for it in catalog.instance_types if it.on_demand_usd_per_hour is None}
    assert unpriced == {"p5e.48xlarge"}
    assert dt.date.fromisoformat(catalog.prices_read_on) <= dt.date.today()
    for family, block in _document()["families"].items():
        assert block["price_source"] and block["hardware_source"], family


def test_more_vcpus_never_cost_less_for_the_same_gpus(catalog: GpuCatalog) -> None:
    """A cheap net for typos in prices: within a family and GPU count, price rises with vCPUs."""
    groups: dict[tuple[str, int], list[Any]] = {}
    for it in catalog.instance_types:
        if it.on_demand_usd_per_hour is not None:
            groups.setdefault((it.family, it.gpu_count), []).append(it)
    for group, types in groups.items():
        prices = [it.on_demand_usd_per_hour for it in sorted(types, key=lambda it: it.vcpus)]
        assert prices == sorted(prices), group


# --- loading -----------------------------------------------------------------------------------------


def test_load_catalog_is_cached_until_the_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    shutil.copy(CATALOG_PATH, path)
    first = load_catalog(path)
    assert load_catalog(path) is first
    document = _document()
    document["families"]["g5"]["instance_types"]["g5.xlarge"]["on_demand_usd_per_hour"] = 9.99
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert load_catalog(path).by_name("g5.xlarge").on_demand_usd_per_hour == 9.99


def test_load_catalog_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_catalog(tmp_path / "nope.yaml")


def test_catalog_rejects_memory_that_disagrees_with_its_gpu_model() -> None:
    document = _document()
    document["families"]["g5"]["instance_types"]["g5.xlarge"]["gpu_memory_mib"] = 24576
    with pytest.raises(UserError, match=re.escape("g5.xlarge reports 24576 MiB")):
        catalog_from_document(document)


def test_catalog_rejects_malformed_documents() -> None:
    document = _document()
    del document["families"]["g5"]["instance_types"]["g5.xlarge"]["vcpus"]
    with pytest.raises(UserError, match="malformed"):
        catalog_from_document(document)
    with pytest.raises(UserError, match="not a YAML mapping"):
        catalog_from_document(["not", "a", "mapping"])


# --- CLI ---------------------------------------------------------------------------------------------


def test_cli_ls_prints_the_filtered_table() -> None:
    result = CliRunner().invoke(gpus_app, ["ls", "--gpu", "l40s"])
    assert result.exit_code == 0, result.output
    assert "g6e.48xlarge" in result.output and "30.1312" in result.output
    assert "g5.xlarge" not in result.output


def test_cli_ls_unknown_gpu_is_a_user_error() -> None:
    result = CliRunner().invoke(gpus_app, ["ls", "--gpu", "v100"])
    assert isinstance(result.exception, UserError)
    assert "'v100'" in str(result.exception)
