"""Helm values: every key we set exists in the pinned chart's default values (a renamed or misspelt key is
silently ignored by Helm, so this is the only place it shows), and the settings reach the values."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from infra import versions
from infra.errors import UserError
from infra.observability import charts
from tests.conftest import shared_path


def chart_values(chart: str, version: str) -> dict[str, Any]:
    return yaml.safe_load(shared_path("k8s-schemas", "charts", f"{chart}-{version}-values.yaml").read_text())


def unknown_keys(
    ours: dict[str, Any], defaults: Any, path: tuple[str, ...] = ()
) -> Iterator[tuple[str, ...]]:
    """Key paths of `ours` that the chart's defaults do not have. Below a default that is an empty map or a
    list (free-form, like storageSpec: {} or remoteWrite: []) anything goes."""
    for key, value in ours.items():
        here = (*path, key)
        if not isinstance(defaults, dict) or key not in defaults:
            yield here
            continue
        default = defaults[key]
        if isinstance(value, dict) and isinstance(default, dict) and default:
            yield from unknown_keys(value, default, here)


STACK_VALUES = {
    "default": charts.kube_prometheus_stack_values(
        charts.PrometheusStorage(), grafana_admin_secret="grafana-admin"
    ),
    "remote write and storage class": charts.kube_prometheus_stack_values(
        charts.PrometheusStorage(
            storage_class="gp3",
            remote_write_url="https://aps-workspaces.us-east-1.amazonaws.com/workspaces/ws-1/api/v1/remote_write",
            region="us-east-1",
        ),
        grafana_admin_secret="grafana-admin",
    ),
}


@pytest.mark.parametrize("name", sorted(STACK_VALUES))
def test_kube_prometheus_stack_keys_exist_in_the_pinned_chart(name: str) -> None:
    defaults = chart_values("kube-prometheus-stack", versions.KUBE_PROMETHEUS_STACK_VERSION)
    assert set(unknown_keys(STACK_VALUES[name], defaults)) == charts.SUBCHART_KEYS


def test_dcgm_exporter_keys_exist_in_the_pinned_chart() -> None:
    defaults = chart_values("dcgm-exporter", versions.DCGM_EXPORTER_VERSION)
    assert list(unknown_keys(charts.dcgm_exporter_values(), defaults)) == []


def test_keda_keys_exist_in_the_pinned_chart() -> None:
    assert list(unknown_keys(charts.keda_values(), chart_values("keda", versions.KEDA_VERSION))) == []


def test_http_add_on_keys_exist_in_the_pinned_chart() -> None:
    """Its values are not in ../shared: `make schemas` fetches them (else this skips)."""
    defaults = chart_values("keda-add-ons-http", versions.KEDA_HTTP_ADD_ON_VERSION)
    assert list(unknown_keys(charts.http_add_on_values(), defaults)) == []
    # the interceptor's ports our Service and PodMonitor name are the chart's
    from infra.kubernetes import wake

    assert defaults["interceptor"]["proxy"]["port"] == wake.INTERCEPTOR_PROXY_PORT
    assert defaults["interceptor"]["admin"]["port"] == wake.INTERCEPTOR_ADMIN_PORT


def test_the_key_check_catches_a_misspelt_key() -> None:
    defaults = chart_values("kube-prometheus-stack", versions.KUBE_PROMETHEUS_STACK_VERSION)
    bad = {"prometheus": {"prometheusSpec": {"retension": "1d"}}, "grafana": {"adminPasword": "x"}}
    assert set(unknown_keys(bad, defaults)) == {
        ("prometheus", "prometheusSpec", "retension"),
        ("grafana", "adminPasword"),
    }


def test_storage_settings_reach_the_prometheus_spec() -> None:
    spec = STACK_VALUES["remote write and storage class"]["prometheus"]["prometheusSpec"]  # type: ignore[index]
    assert spec["retention"] == "15d"
    assert spec["retentionSize"] == "40GiB"
    volume = spec["storageSpec"]["volumeClaimTemplate"]["spec"]
    assert volume["resources"]["requests"]["storage"] == "50Gi" and volume["storageClassName"] == "gp3"
    assert spec["remoteWrite"][0]["sigv4"] == {"region": "us-east-1"}
    assert "remoteWrite" not in STACK_VALUES["default"]["prometheus"]["prometheusSpec"]  # type: ignore[index]


def test_grafana_reads_its_admin_password_from_a_secret_and_loads_our_dashboards() -> None:
    grafana = STACK_VALUES["default"]["grafana"]
    assert grafana["admin"] == {  # type: ignore[index]
        "existingSecret": "grafana-admin",
        "userKey": "admin-user",
        "passwordKey": "admin-password",
    }
    assert "adminPassword" not in grafana
    assert grafana["sidecar"]["dashboards"]["label"] == "grafana_dashboard"  # type: ignore[index]


def test_dcgm_exporter_runs_on_gpu_nodes_and_keeps_the_gpu_pods_labels() -> None:
    values = charts.dcgm_exporter_values()
    assert values["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert values["serviceMonitor"]["honorLabels"] is True  # type: ignore[index]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"retention": "15 days"}, "retention: must be a Prometheus duration"),
        ({"scrape_interval": "1d"}, "scrapeInterval: must be a Prometheus duration"),
        ({"storage_gib": 0}, "storageGiB: must be at least 1 GiB"),
        ({"remote_write_url": "https://x"}, "region: remote write to Amazon Managed Prometheus needs"),
    ],
)
def test_bad_storage_settings_are_refused_by_name(kwargs: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        charts.PrometheusStorage(**kwargs)
