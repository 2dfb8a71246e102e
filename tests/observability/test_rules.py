"""Recording and alert rules: promtool `check rules`, and promtool `test rules` with, for every alert, a case
where it fires and one where it stays quiet. Inputs are raw vLLM, DCGM and kube-state-metrics series, so the
recording rules the alerts read are evaluated too."""

from __future__ import annotations

import dataclasses
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from infra.errors import UserError
from infra.observability import rules
from tests.observability.support import prometheus_tool

VLLM = 'namespace="llm", revision="r1", model_name="m", pod="vllm-r1-0", engine="0"'
BY_REVISION = {"namespace": "llm", "revision": "r1", "model_name": "m"}
GPU = 'Hostname="node-1", gpu="0", UUID="GPU-1", modelName="NVIDIA A10G"'
GPU_LABELS = {"Hostname": "node-1", "gpu": "0", "UUID": "GPU-1", "modelName": "NVIDIA A10G"}
POD = 'namespace="llm", pod="vllm-r1-0", uid="u1"'


@dataclass(frozen=True)
class Case:
    alert: str
    name: str
    series: dict[str, str]
    eval_time: str
    fires_with: dict[str, str] | None = None  # the alert's labels besides alertname and severity; None: quiet
    extra: dict[str, str] = field(default_factory=dict)


def ksm(ready: bool) -> dict[str, str]:
    """A pod created at t=0 (promtool's clock starts at the epoch), Ready or not ever since."""
    return {
        f"kube_pod_created{{{POD}}}": "0x40",
        f'kube_pod_status_ready{{{POD}, condition="true"}}': ("1x40" if ready else "0x40"),
        f'kube_pod_status_ready{{{POD}, condition="false"}}': ("0x40" if ready else "1x40"),
        f'kube_pod_labels{{{POD}, label_llm_serving_revision="r1"}}': "1x40",
    }


def ttft(bucket_1s_per_min: int, bucket_5s_per_min: int) -> dict[str, str]:
    return {
        f'vllm:time_to_first_token_seconds_bucket{{{VLLM}, le="1.0"}}': f"0+{bucket_1s_per_min}x40",
        f'vllm:time_to_first_token_seconds_bucket{{{VLLM}, le="5.0"}}': f"0+{bucket_5s_per_min}x40",
        f'vllm:time_to_first_token_seconds_bucket{{{VLLM}, le="+Inf"}}': f"0+{bucket_5s_per_min}x40",
    }


def errors(error_per_min: int, stop_per_min: int) -> dict[str, str]:
    return {
        f'vllm:request_success_total{{{VLLM}, finished_reason="error"}}': f"0+{error_per_min}x40",
        f'vllm:request_success_total{{{VLLM}, finished_reason="stop"}}': f"0+{stop_per_min}x40",
    }


NOT_READY_LABELS = {"namespace": "llm", "pod": "vllm-r1-0", "revision": "r1"}
CASES = [
    Case(
        "VllmKvCacheNearFull", "full", {f"vllm:kv_cache_usage_perc{{{VLLM}}}": "0.95x40"}, "15m", BY_REVISION
    ),
    Case("VllmKvCacheNearFull", "half", {f"vllm:kv_cache_usage_perc{{{VLLM}}}": "0.5x40"}, "15m"),
    Case(
        "VllmKvCacheNearFull",
        "full only briefly",
        {f"vllm:kv_cache_usage_perc{{{VLLM}}}": "0.5x10 0.95x5 0.5x25"},
        "15m",
    ),
    Case(
        "VllmQueueGrowing", "growing", {f"vllm:num_requests_waiting{{{VLLM}}}": "0+2x40"}, "20m", BY_REVISION
    ),
    Case("VllmQueueGrowing", "long but steady", {f"vllm:num_requests_waiting{{{VLLM}}}": "50x40"}, "20m"),
    Case(
        "VllmQueueGrowing", "growing but short", {f"vllm:num_requests_waiting{{{VLLM}}}": "0+1x8 8x32"}, "20m"
    ),
    Case("VllmTtftP95AboveSlo", "slow", ttft(0, 10), "25m", BY_REVISION),
    Case("VllmTtftP95AboveSlo", "fast", ttft(10, 10), "25m"),
    Case("VllmErrorRate", "10% errors", errors(1, 9), "15m", BY_REVISION),
    Case("VllmErrorRate", "no errors", errors(0, 10), "15m"),
    Case("VllmErrorRate", "no traffic", errors(0, 0), "15m"),
    Case("VllmPreempting", "1/s", {f"vllm:num_preemptions_total{{{VLLM}}}": "0+60x40"}, "20m", BY_REVISION),
    Case("VllmPreempting", "0.05/s", {f"vllm:num_preemptions_total{{{VLLM}}}": "0+3x40"}, "20m"),
    Case(
        "VllmEngineDown",
        "target down",
        {f'up{{{VLLM}, job="llm/vllm-r1"}}': "0x40"},
        "5m",
        {**BY_REVISION, "pod": "vllm-r1-0", "engine": "0", "job": "llm/vllm-r1"},
    ),
    Case("VllmEngineDown", "target up", {f'up{{{VLLM}, job="llm/vllm-r1"}}': "1x40"}, "5m"),
    Case("VllmEngineDown", "other targets are not vLLM", {'up{job="node-exporter"}': "0x40"}, "5m"),
    Case("VllmPodNotReady", "not ready after 25 min", ksm(ready=False), "25m", NOT_READY_LABELS),
    Case("VllmPodNotReady", "not ready, 10 min old", ksm(ready=False), "10m"),
    Case("VllmPodNotReady", "ready", ksm(ready=True), "25m"),
    Case(
        "GpuMemoryNearFull",
        "full",
        {f"DCGM_FI_DEV_FB_USED{{{GPU}}}": "22800x40", f"DCGM_FI_DEV_FB_FREE{{{GPU}}}": "50x40"},
        "15m",
        GPU_LABELS,
    ),
    Case(
        "GpuMemoryNearFull",
        "vLLM's reservation",
        {f"DCGM_FI_DEV_FB_USED{{{GPU}}}": "21000x40", f"DCGM_FI_DEV_FB_FREE{{{GPU}}}": "1850x40"},
        "15m",
    ),
    Case("GpuTemperatureHigh", "hot", {f"DCGM_FI_DEV_GPU_TEMP{{{GPU}}}": "90x40"}, "10m", GPU_LABELS),
    Case("GpuTemperatureHigh", "normal", {f"DCGM_FI_DEV_GPU_TEMP{{{GPU}}}": "70x40"}, "10m"),
]


def write_rules(directory: Path, *, annotations: bool) -> Path:
    groups = rules.rule_groups()
    if not annotations:
        for group in groups:
            for rule in group["rules"]:  # type: ignore[union-attr]
                rule.pop("annotations", None)
    path = directory / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    return path


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(prometheus_tool("promtool")), *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_promtool_checks_the_rules(tmp_path: Path) -> None:
    result = promtool("check", "rules", str(write_rules(tmp_path, annotations=True)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules.recording_rules()) + len(rules.alert_rules())} rules found" in result.stdout


def test_every_alert_has_a_firing_case_and_a_quiet_case() -> None:
    alerts = {alert.alert for alert in rules.alert_rules()}
    assert {case.alert for case in CASES if case.fires_with is not None} == alerts
    assert {case.alert for case in CASES if case.fires_with is None} == alerts


def _unit_test(case: Case) -> dict[str, object]:
    severity = next(a.severity for a in rules.alert_rules() if a.alert == case.alert)
    expected = [] if case.fires_with is None else [{"exp_labels": {**case.fires_with, "severity": severity}}]
    return {
        "name": f"{case.alert}: {case.name}",
        "interval": "1m",
        "input_series": [{"series": series, "values": values} for series, values in case.series.items()],
        "alert_rule_test": [{"eval_time": case.eval_time, "alertname": case.alert, "exp_alerts": expected}],
    }


def test_promtool_unit_tests_every_alert(tmp_path: Path) -> None:
    rules_file = write_rules(tmp_path, annotations=False)
    tests = {
        "rule_files": [rules_file.name],
        "evaluation_interval": "1m",
        "tests": [_unit_test(case) for case in CASES],
    }
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests, sort_keys=False))
    result = promtool("test", "rules", str(tmp_path / "tests.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_a_wrong_expectation_fails_promtool(tmp_path: Path) -> None:
    """The unit tests above can fail: the same machinery with a quiet case expected to fire."""
    rules_file = write_rules(tmp_path, annotations=False)
    wrong = Case(
        "GpuTemperatureHigh",
        "normal, wrongly expected",
        {f"DCGM_FI_DEV_GPU_TEMP{{{GPU}}}": "70x40"},
        "10m",
        GPU_LABELS,
    )
    tests = {"rule_files": [rules_file.name], "evaluation_interval": "1m", "tests": [_unit_test(wrong)]}
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests, sort_keys=False))
    result = promtool("test", "rules", str(tmp_path / "tests.yaml"))
    assert result.returncode == 1
    assert "FAILED" in result.stdout + result.stderr


def test_alert_annotations_render(tmp_path: Path) -> None:
    rules_file = write_rules(tmp_path, annotations=True)
    alert = next(a for a in rules.alert_rules() if a.alert == "VllmKvCacheNearFull")
    tests = {
        "rule_files": [rules_file.name],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": f"vllm:kv_cache_usage_perc{{{VLLM}}}", "values": "0.95x40"}],
                "alert_rule_test": [
                    {
                        "eval_time": "15m",
                        "alertname": alert.alert,
                        "exp_alerts": [
                            {
                                "exp_labels": {**BY_REVISION, "severity": "warning"},
                                "exp_annotations": {
                                    "summary": "vLLM KV cache of r1 is 95% full",
                                    "description": alert.description.replace("{{ $labels.revision }}", "r1"),
                                },
                            }
                        ],
                    }
                ],
            }
        ],
    }
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests, sort_keys=False))
    result = promtool("test", "rules", str(tmp_path / "tests.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_thresholds_reach_the_expressions() -> None:
    alerts = {
        a.alert: a
        for a in rules.alert_rules(
            rules.AlertThresholds(ttft_p95_slo_seconds=0.75, not_ready_after_seconds=2400)
        )
    }
    assert alerts["VllmTtftP95AboveSlo"].expr == "revision:vllm_ttft_seconds:p95 > 0.75"
    assert alerts["VllmPodNotReady"].expr.endswith("> 2400")


@pytest.mark.parametrize(
    ("field_name", "value", "message"),
    [
        ("kv_cache_usage", 1.5, r"kv_cache_usage: must be a fraction in \(0, 1\], got 1.5"),
        ("error_ratio", 0, r"error_ratio: must be a fraction"),
        ("ttft_p95_slo_seconds", -1, r"ttft_p95_slo_seconds: must be positive, got -1"),
        ("gpu_temperature_celsius", 0, r"gpu_temperature_celsius: must be positive"),
        ("queue_for", "5 minutes", r"queue_for: must be a Prometheus duration such as 5m, got '5 minutes'"),
    ],
)
def test_bad_thresholds_are_refused_by_name(field_name: str, value: float, message: str) -> None:
    with pytest.raises(UserError, match=message):
        dataclasses.replace(rules.AlertThresholds(), **{field_name: value})


def test_rule_names_are_unique_and_every_alert_expr_compares_its_signal() -> None:
    records = [rule.record for rule in rules.recording_rules()]
    assert len(records) == len(set(records))
    alerts = rules.alert_rules()
    assert len({a.alert for a in alerts}) == len(alerts)
    for alert in alerts:
        assert alert.expr.startswith(alert.signal + " "), alert.alert
