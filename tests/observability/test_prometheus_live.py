"""A real Prometheus on 127.0.0.1 scrapes vLLM 0.33.0's replayed exposition, a DCGM-style exporter and a
kube-state-metrics-style one, loads our recording and alert rules, and answers EVERY PromQL expression we
ship: each dashboard panel query and variable, each recording rule, each alert (its expression parses, its
signal has data) and each KEDA trigger query. A renamed metric anywhere shows up here as "no data"."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from infra.observability import autoscaling, dashboards, rules
from tests.observability.exporters import GPU_POD, serve_exporters
from tests.observability.support import Prometheus, running_prometheus
from tests.vllm_facts import metrics_exposition

pytestmark = pytest.mark.integration

NAMESPACE, REVISION, POD = GPU_POD["namespace"], "r1", GPU_POD["pod"]
# What Grafana puts in place of the variables: "All" is ".*" (allValue), the rate interval a short window.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$model_name": ".*",
    "$revision": ".*",
    "$Hostname": ".*",
    "$gpu": ".*",
}
DEADLINE_S = 45


def grafana_expand(expr: str) -> str:
    for variable, value in sorted(GRAFANA_VARIABLES.items(), key=lambda item: -len(item[0])):
        expr = expr.replace(variable, value)
    assert "$" not in re.sub(r'"\$1"', "", expr), f"unexpanded Grafana variable in {expr}"
    return expr


def prometheus_config(exporter_port: int, rules_file: Path) -> dict[str, object]:
    target = [f"127.0.0.1:{exporter_port}"]
    return {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules_file)],
        "scrape_configs": [
            # What the PodMonitor gives each vLLM target: namespace, pod and the relabelled revision.
            {
                "job_name": "vllm",
                "metrics_path": "/vllm/metrics",
                "static_configs": [
                    {"targets": target, "labels": {"namespace": NAMESPACE, "pod": POD, "revision": REVISION}}
                ],
            },
            # dcgm-exporter and kube-state-metrics report other pods' labels, kept with honor_labels.
            {
                "job_name": "dcgm",
                "metrics_path": "/dcgm/metrics",
                "honor_labels": True,
                "static_configs": [{"targets": target}],
            },
            {
                "job_name": "kube-state-metrics",
                "metrics_path": "/ksm/metrics",
                "honor_labels": True,
                "static_configs": [{"targets": target}],
            },
        ],
    }


def wait_for_first_scrapes(server: Prometheus) -> None:
    """Until all three targets are up and the rules have recorded from them (~6 s: targets sync every 5 s)."""
    deadline = time.monotonic() + DEADLINE_S
    ready = "count(up == 1) == 3 and on () count(revision_pod:cold_start_seconds) == 1"
    while not server.query(ready).get("data", {}).get("result"):  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "Prometheus did not scrape the exporters in time"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    exposition = metrics_exposition()
    workdir = tmp_path_factory.mktemp("prometheus")
    rules_file = workdir / "rules.yaml"
    rules_file.write_text(yaml.safe_dump({"groups": rules.rule_groups()}, sort_keys=False))
    with (
        serve_exporters(exposition) as port,
        running_prometheus(prometheus_config(port, rules_file), workdir) as server,
    ):
        wait_for_first_scrapes(server)
        yield server


def every_expression() -> dict[str, str]:
    """Every PromQL expression we ship that must return data, by where it comes from."""
    expressions: dict[str, str] = {}
    plans = [dashboards.CapacityPlan(REVISION, kv_cache_tokens=432_000, max_concurrency=52.7)]
    for file_name, model in dashboards.all_dashboards(plans).items():
        for index, (title, expr) in enumerate(dashboards.panel_expressions(model)):
            expressions[f"dashboard {file_name} / {title} #{index}"] = grafana_expand(expr)
    for rule in rules.recording_rules():
        expressions[f"recording rule {rule.record}"] = rule.expr
    for alert in rules.alert_rules():
        expressions[f"alert {alert.alert} signal"] = alert.signal
    with_gpu = autoscaling.ScalingThresholds(gpu_utilization=True)
    for trigger in autoscaling.trigger_queries(NAMESPACE, REVISION, f"vllm-{REVISION}-.*", with_gpu):
        expressions[f"KEDA trigger {trigger.name}"] = trigger.query
    return expressions


def test_every_expression_parses_and_returns_data(prometheus: Prometheus) -> None:
    pending = every_expression()
    assert len(pending) > 60
    answers: dict[str, dict[str, object]] = {}
    deadline = time.monotonic() + DEADLINE_S
    while pending and time.monotonic() < deadline:
        for where, expr in list(pending.items()):
            answers[where] = prometheus.query(expr)
            data = answers[where].get("data") or {}
            if answers[where]["status"] == "success" and data.get("result"):  # type: ignore[union-attr]
                del pending[where]
        time.sleep(0.5)
    failures = {where: (expr, answers[where]) for where, expr in pending.items()}
    assert failures == {}


def test_every_alert_expression_parses(prometheus: Prometheus) -> None:
    for alert in rules.alert_rules():
        answer = prometheus.query(alert.expr)
        assert answer["status"] == "success", (alert.alert, answer)


def test_prometheus_loaded_every_rule_healthy(prometheus: Prometheus) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        groups = prometheus.get("rules")["data"]["groups"]  # type: ignore[index]
        loaded = {rule["name"]: rule for group in groups for rule in group["rules"]}
        evaluated = all(rule.get("lastEvaluation", "").startswith("2") for rule in loaded.values())
        if evaluated or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    expected = {r.record for r in rules.recording_rules()} | {a.alert for a in rules.alert_rules()}
    assert set(loaded) == expected
    assert {name: rule.get("lastError") for name, rule in loaded.items() if rule["health"] != "ok"} == {}


def test_every_dashboard_variable_has_values(prometheus: Prometheus) -> None:
    """Grafana resolves label_values(selector, label) through the label-values API with match[]."""
    for model in dashboards.all_dashboards([dashboards.CapacityPlan(REVISION, 432_000, 52.7)]).values():
        for name, query in dashboards.variable_queries(model):
            match = re.fullmatch(r"label_values\((?P<selector>.+), (?P<label>\w+)\)", query)
            assert match, query
            answer = prometheus.get(
                f"label/{match['label']}/values", **{"match[]": grafana_expand(match["selector"])}
            )
            assert answer["status"] == "success" and answer["data"], (name, query, answer)


def test_a_removed_metric_returns_no_data(prometheus: Prometheus) -> None:
    """The check above can fail: the name vLLM removed (which broke other dashboards) has no data here."""
    answer = prometheus.query("vllm:gpu_cache_usage_perc")
    assert answer["status"] == "success"
    assert answer["data"]["result"] == []  # type: ignore[index]
    assert prometheus.query("vllm:kv_cache_usage_perc")["data"]["result"]  # type: ignore[index]
