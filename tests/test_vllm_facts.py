"""The /metrics exposition the monitoring tests replay is vLLM 0.33.0's own (tests/vllm_facts.py generates
it with vLLM's metrics logger in .venv-vllm): it registers what infra/vllm/metrics.py reads, and, where
../shared's hand-made table and capture exist, exactly their always-present vllm:* families."""

from __future__ import annotations

from infra.versions import VLLM_VERSION
from infra.vllm import metrics
from tests.conftest import SHARED
from tests.observability.support import read_vllm_tsv
from tests.vllm_facts import metrics_exposition, vllm_families

_KIND = {metrics.Gauge: "gauge", metrics.Counter: "counter", metrics.Histogram: "histogram"}


def test_the_exposition_is_vllms_own_and_matches_the_shared_table_where_present() -> None:
    exposed = vllm_families(metrics_exposition().read_text())
    # what the dashboards, rules and autoscaler read is registered, with the type they assume
    for metric in metrics.METRICS.all():
        assert exposed.get(metric.name) == _KIND[type(metric)], metric.name
    assert len(exposed) >= 30 and set(exposed.values()) == {"gauge", "counter", "histogram"}
    table = SHARED / f"vllm-{VLLM_VERSION}" / "metrics.tsv"
    if table.exists():  # CI: the hand-made table names the same always-present families
        always = {
            name: row.type
            for name, row in read_vllm_tsv().current.items()
            if row.condition.startswith("always")
        }
        assert exposed == {name: kind for name, kind in always.items() if name.startswith("vllm:")}
    capture = SHARED / f"vllm-{VLLM_VERSION}" / "metrics-default.prom"
    if capture.exists() and capture != metrics_exposition():
        assert exposed == vllm_families(capture.read_text())
