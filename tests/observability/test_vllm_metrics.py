"""infra/vllm/metrics.py against vLLM's own metric table: every name we read exists in the pinned version
and is always exposed, and no removed name is referenced anywhere in infra/ or images/. (It lives here, not in
tests/vllm/, because such a package would shadow the real vllm for tests/vllm_parser_check.py.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from infra.errors import UserError
from infra.vllm import metrics
from tests.conftest import REPO_ROOT
from tests.observability.support import read_vllm_tsv
from tests.vllm_facts import metrics_exposition, vllm_families

_KIND = {metrics.Gauge: "gauge", metrics.Counter: "counter", metrics.Histogram: "histogram"}


@pytest.mark.parametrize("metric", metrics.METRICS.all(), ids=lambda m: m.name)
def test_every_metric_we_read_is_current_always_exposed_and_typed_as_vllm_exposes_it(metric) -> None:
    tsv = read_vllm_tsv()
    assert metric.name in tsv.current, f"{metric.name} is not in vLLM's metrics.tsv"
    row = tsv.current[metric.name]
    assert row.type == _KIND[type(metric)]
    assert row.condition.startswith("always"), f"{metric.name} is only exposed {row.condition}"
    assert set(metric.series) == set(row.series)


def test_the_removed_list_is_exactly_vllms() -> None:
    """Equal to metrics.tsv's removed names where that table exists; in any case none is exposed by the
    real vLLM (tests/vllm_facts.py), which is all its exposition can tell."""
    removed = read_vllm_tsv().removed
    if removed is not None:
        assert set(metrics.REMOVED) == removed
    exposed = set(vllm_families(metrics_exposition().read_text()))
    assert "vllm:kv_cache_usage_perc" in exposed and not exposed & set(metrics.REMOVED)


def test_no_removed_name_is_used_by_the_metric_constants() -> None:
    used = {series for metric in metrics.METRICS.all() for series in metric.series}
    assert not used & set(metrics.REMOVED)


def removed_references(text: str) -> list[str]:
    # A removed name, also with the suffix a scrape adds (x_total, x_bucket), and not a longer current name.
    found = []
    for name in metrics.REMOVED:
        pattern = re.escape(name) + r"(?:_total|_bucket|_sum|_count|_created)?(?![A-Za-z0-9_:])"
        found += re.findall(pattern, text)
    return found


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("rate(vllm:gpu_prefix_cache_hits_total[5m])", ["vllm:gpu_prefix_cache_hits_total"]),
        ("vllm:gpu_cache_usage_perc > 0.9", ["vllm:gpu_cache_usage_perc"]),
        ("vllm:time_per_output_token_seconds_bucket", ["vllm:time_per_output_token_seconds_bucket"]),
        ("vllm:request_time_per_output_token_seconds_bucket", []),  # the per-request TPOT still exists
        ("vllm:iteration_tokens_total_bucket", []),
        ("vllm:request_max_num_generation_tokens_sum", []),
    ],
)
def test_removed_reference_finder(text: str, found: list[str]) -> None:
    assert removed_references(text) == found


def test_nothing_in_infra_or_images_references_a_removed_name() -> None:
    offenders = {}
    for root in ("infra", "images"):
        for path in sorted((REPO_ROOT / root).rglob("*")):
            if not path.is_file() or "__pycache__" in path.parts or path == Path(metrics.__file__):
                continue
            hits = removed_references(path.read_text(errors="replace"))
            if hits:
                offenders[str(path.relative_to(REPO_ROOT))] = hits
    assert offenders == {}


def test_an_unknown_vllm_version_is_refused_by_name() -> None:
    with pytest.raises(UserError, match=r"VLLM_VERSION: no metric names recorded for vLLM 0\.99\.0"):
        metrics.for_version("0.99.0")
