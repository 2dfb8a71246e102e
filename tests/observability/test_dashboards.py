"""Dashboards and every other query we ship, checked without a server: each metric a query reads (through
the recording rules it uses) is a series vLLM 0.33.0 exposes per metrics.tsv, or one of the few DCGM,
kube-state-metrics and Prometheus names we know; the dashboard models are complete and self-consistent."""

from __future__ import annotations

import importlib.metadata
import json
import re

import pytest
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as grafana_model

from infra.errors import UserError
from infra.observability import autoscaling, dashboards, rules
from tests.conftest import REPO_ROOT
from tests.observability.support import leaf_metric_names, metric_names, read_vllm_tsv

PLANS = [dashboards.CapacityPlan("r1", 432_000, 52.7), dashboards.CapacityPlan("r2", 1_234_567, 9)]
# Names outside vLLM: dcgm-exporter's default counters, kube-state-metrics v2, Prometheus' own `up`.
EXTERNAL = {
    "DCGM_FI_DEV_GPU_UTIL",
    "DCGM_FI_DEV_FB_USED",
    "DCGM_FI_DEV_FB_FREE",
    "DCGM_FI_DEV_POWER_USAGE",
    "DCGM_FI_DEV_GPU_TEMP",
    "kube_pod_created",
    "kube_pod_status_ready_time",
    "kube_pod_status_ready",
    "kube_pod_labels",
    "up",
}
GRAFANA_BUILTINS = {"__rate_interval", "__interval", "__range"}


def shipped_queries() -> dict[str, str]:
    queries: dict[str, str] = {}
    for file_name, model in dashboards.all_dashboards(PLANS).items():
        for index, (title, expr) in enumerate(dashboards.panel_expressions(model)):
            queries[f"{file_name} / {title} #{index}"] = expr
        for name, query in dashboards.variable_queries(model):
            queries[f"{file_name} / variable {name}"] = query.removeprefix("label_values(").rsplit(",", 1)[0]
    for rule in rules.recording_rules():
        queries[rule.record] = rule.expr
    for alert in rules.alert_rules():
        queries[alert.alert] = alert.expr
    gpu = autoscaling.ScalingThresholds(gpu_utilization=True)
    for trigger in autoscaling.trigger_queries("llm", "r1", "vllm-r1-.*", gpu):
        queries[f"KEDA {trigger.name}"] = trigger.query
    return queries


def unknown_names(queries: dict[str, str]) -> dict[str, set[str]]:
    vllm_series = set(read_vllm_tsv().series())
    recorded = {rule.record: rule.expr for rule in rules.recording_rules()}
    unknown = {}
    for where, expr in queries.items():
        names = {n for n in leaf_metric_names(expr, recorded) if n not in vllm_series and n not in EXTERNAL}
        if names:
            unknown[where] = names
    return unknown


def test_every_query_reads_only_series_vllm_0_33_exposes_or_known_exporters_do() -> None:
    assert unknown_names(shipped_queries()) == {}


@pytest.mark.parametrize(
    "bad",
    [
        "vllm:gpu_cache_usage_perc",  # removed in 0.33.0
        "rate(vllm:time_per_output_token_seconds_bucket[5m])",  # removed
        "vllm:num_requests_running_total",  # a gauge has no _total series
        "DCGM_FI_DEV_MEM_CLOCK",  # not one of the exporter names we checked
    ],
)
def test_a_query_naming_an_absent_metric_is_caught(bad: str) -> None:
    assert unknown_names({"panel": bad}) == {"panel": metric_names(bad)}


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (revision, le) (rate(a:b_bucket{x="y:z"}[5m]))', {"a:b_bucket"}),
        ('label_replace(vector(1e+06), "revision", "r1", "", "")', set()),
        ("x / on (namespace, pod) group_left (revision) y > 0.9", {"x", "y"}),
        ("deriv(w[5m]) > 0 and w > 10", {"w"}),
        ("histogram_quantile(0.95, b) offset 5m", {"b"}),
    ],
)
def test_metric_names_from_promql(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


@pytest.mark.parametrize("file_name", sorted(dashboards.all_dashboards(PLANS)))
def test_dashboard_models_are_complete(file_name: str) -> None:
    model = dashboards.all_dashboards(PLANS)[file_name]
    json.dumps(model)  # what the ConfigMap carries
    assert model["uid"] and model["title"] and model["schemaVersion"]
    defined = {name for name, _ in dashboards.variable_queries(model)}
    panels = model["panels"]
    assert isinstance(panels, list) and panels
    for panel in panels:
        assert panel["targets"], panel["title"]
        assert panel["description"], panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": dashboards.DEFAULT_DATASOURCE_UID}
        for target in panel["targets"]:
            used = set(re.findall(r"\$(\w+)", target["expr"]))
            assert used <= defined | GRAFANA_BUILTINS, (panel["title"], used - defined)


def test_dashboard_uids_and_panel_titles_are_unique() -> None:
    models = dashboards.all_dashboards(PLANS).values()
    uids = [model["uid"] for model in models]
    assert len(uids) == len(set(uids))
    for model in models:
        titles = [panel["title"] for panel in model["panels"]]  # type: ignore[union-attr]
        assert len(titles) == len(set(titles))


def test_the_capacity_dashboard_plots_each_plan_exactly() -> None:
    exprs = [e for _, e in dashboards.panel_expressions(dashboards.capacity_dashboard(PLANS))]
    assert 'label_replace(vector(1234567), "revision", "r2", "", "")' in exprs
    assert 'label_replace(vector(52.7), "revision", "r1", "", "")' in exprs


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"revision": "r1", "kv_cache_tokens": 0, "max_concurrency": 1}, "kv_cache_tokens: must be positive"),
        (
            {"revision": "r1", "kv_cache_tokens": 1, "max_concurrency": -2},
            "max_concurrency: must be positive",
        ),
    ],
)
def test_bad_plans_are_refused_by_name(kwargs: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        dashboards.CapacityPlan(**kwargs)


def test_capacity_needs_a_plan() -> None:
    with pytest.raises(UserError, match="plans: needs at least one"):
        dashboards.capacity_dashboard([])


def test_the_sdk_flavour_is_pinned_and_installed() -> None:
    pins = [
        line
        for line in (REPO_ROOT / "requirements.txt").read_text().splitlines()
        if line.startswith("grafana-foundation-sdk==")
    ]
    assert pins == ["grafana-foundation-sdk==1769699379!11.6.0"]
    assert importlib.metadata.version("grafana-foundation-sdk") == "1769699379!11.6.0"


@pytest.mark.parametrize("file_name", sorted(dashboards.all_dashboards(PLANS)))
def test_dashboards_round_trip_through_the_sdks_typed_model(file_name: str) -> None:
    """Decoding drops fields the Grafana 11.6 schema does not know, so a round trip that changes nothing
    means every dashboard, panel and variable field is one Grafana reads."""
    model = dashboards.all_dashboards(PLANS)[file_name]
    decoded = json.loads(json.dumps(grafana_model.Dashboard.from_json(model), cls=JSONEncoder))
    assert decoded == model


def test_the_round_trip_would_catch_an_unknown_panel_field() -> None:
    model = dashboards.gpu_dashboard()
    model["panels"][0]["legendd"] = {}  # type: ignore[index]
    assert json.loads(json.dumps(grafana_model.Dashboard.from_json(model), cls=JSONEncoder)) != model


def test_without_a_plan_there_is_no_capacity_dashboard() -> None:
    assert sorted(dashboards.all_dashboards([])) == ["gpu.json", "vllm-cold-start.json", "vllm-serving.json"]
