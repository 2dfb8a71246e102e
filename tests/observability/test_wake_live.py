"""Scale from zero, against a real Prometheus on 127.0.0.1: a revision at minReplicas 0 has no vLLM pod, so
no vLLM series exists; a stand-in for the KEDA HTTP add-on's interceptor holds a request the way the
interceptor does while the revision has no ready pod, and exposes its in-flight count as the interceptor's
`interceptor_request_concurrency{route_name, route_namespace}` (upstream v0.15.0: its counting middleware
wraps the wait for a ready endpoint). Every trigger of the revision's rendered ScaledObject is evaluated the
way KEDA's prometheus scaler does (an empty result is 0 when ignoreNullValues, more than one series is an
error, active when the value exceeds activationThreshold, 0 by default): inactive before traffic, active
while the request waits, inactive again once it is answered."""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.kubernetes.wake import CONCURRENCY_METRIC, WakeRoute
from infra.observability import manifests, rules
from infra.observability.autoscaling import wake_trigger
from tests.observability.exporters import reply, serving
from tests.observability.support import Prometheus, running_prometheus

pytestmark = pytest.mark.integration

NAMESPACE, REVISION = "llm-serving", "dev"
ROUTE = WakeRoute(
    REVISION, NAMESPACE, readiness_timeout_s=900, response_header_timeout_s=600, concurrency_per_replica=8
)
DEADLINE_S = 45


@dataclass
class StandInInterceptor:
    """Holds `/v1` requests until `backend_ready` is set; counts them in flight per route meanwhile. Like
    the OpenTelemetry exporter, it has no series for a route until a first request."""

    port: int
    backend_ready: threading.Event
    in_flight: int = 0
    seen: bool = False

    def exposition(self) -> str:
        if not self.seen:
            return ""
        labels = f'otel_scope_name="keda-http-add-on",route_name="{ROUTE.name}",route_namespace="{NAMESPACE}"'
        return f"# TYPE {CONCURRENCY_METRIC} gauge\n{CONCURRENCY_METRIC}{{{labels}}} {self.in_flight}\n"


@contextmanager
def stand_in_interceptor() -> Iterator[StandInInterceptor]:
    lock = threading.Lock()
    state = StandInInterceptor(port=0, backend_ready=threading.Event())

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/metrics":
                self.send_error(404)
                return
            with lock:
                body = state.exposition().encode()
            reply(self, 200, body, "text/plain; version=0.0.4")

        def do_POST(self) -> None:
            with lock:
                state.in_flight += 1
                state.seen = True
            try:
                ready = state.backend_ready.wait(timeout=DEADLINE_S)  # the cold start
                reply(self, 200 if ready else 504, b"{}", "application/json")
            finally:
                with lock:
                    state.in_flight -= 1

        def log_message(self, format: str, *args: object) -> None:
            pass

    with serving(Handler) as port:
        state.port = port
        try:
            yield state
        finally:
            state.backend_ready.set()  # releases a held request before the server stops


def keda_value(prometheus: Prometheus, trigger: Mapping[str, Any]) -> float:
    """What KEDA's prometheus scaler reads for one trigger (pkg/scalers/prometheus_scaler.go)."""
    metadata = trigger["metadata"]
    answer = prometheus.query(metadata["query"])
    assert answer["status"] == "success", (trigger["name"], answer)
    result = answer["data"]["result"]  # type: ignore[index]
    if not result:
        assert metadata["ignoreNullValues"] == "true", f"{trigger['name']}: an empty result is an error"
        return 0.0
    assert len(result) == 1, f"{trigger['name']}: KEDA refuses more than one series"
    return float(result[0]["value"][1])


def active_triggers(prometheus: Prometheus, scaled_object: Mapping[str, Any]) -> dict[str, float]:
    """The triggers that would wake the ScaledObject, with their values."""
    values = {t["name"]: (keda_value(prometheus, t), t) for t in scaled_object["spec"]["triggers"]}
    return {
        name: value
        for name, (value, trigger) in values.items()
        if value > float(trigger["metadata"].get("activationThreshold", "0"))
    }


def wait_for(
    prometheus: Prometheus, scaled_object: Mapping[str, Any], expected: set[str]
) -> dict[str, float]:
    deadline = time.monotonic() + DEADLINE_S
    while (active := active_triggers(prometheus, scaled_object)).keys() != expected:
        assert time.monotonic() < deadline, f"active triggers {active}, expected {expected}"
        time.sleep(0.5)
    return active


@pytest.fixture
def scaled_object() -> dict[str, Any]:
    trigger = wake_trigger(NAMESPACE, ROUTE.name, ROUTE.concurrency_per_replica)
    return manifests.scaled_object(
        namespace=NAMESPACE,
        revision=REVISION,
        target=manifests.ScaleTarget("apps/v1", "Deployment", f"vllm-{REVISION}"),
        autoscaling=manifests.Autoscaling(min_replicas=0, max_replicas=1),
        prometheus_url="http://prometheus:9090",
        pod_regex=f"vllm-{REVISION}-.*",
        extra_triggers=[trigger.keda("http://prometheus:9090", ignore_null_values=True)],
    )


def test_a_request_wakes_a_revision_that_has_no_vllm_pod(
    tmp_path: Path, scaled_object: dict[str, Any]
) -> None:
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump({"groups": rules.rule_groups()}, sort_keys=False))
    with stand_in_interceptor() as interceptor:
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rules_file)],
            # no vLLM target: the revision is at zero
            "scrape_configs": [
                {
                    "job_name": "interceptor",
                    "static_configs": [{"targets": [f"127.0.0.1:{interceptor.port}"]}],
                }
            ],
        }
        with running_prometheus(config, tmp_path) as prometheus:
            deadline = time.monotonic() + DEADLINE_S
            while not prometheus.query('up{job="interceptor"} == 1').get("data", {}).get("result"):  # type: ignore[union-attr]
                assert time.monotonic() < deadline, "Prometheus did not scrape the stand-in in time"
                time.sleep(0.5)
            assert wait_for(prometheus, scaled_object, set()) == {}  # idle: stays at zero

            answers: list[int] = []
            request = urllib.request.Request(
                f"http://127.0.0.1:{interceptor.port}/v1/chat/completions", data=b"{}", method="POST"
            )
            client = threading.Thread(
                target=lambda: answers.append(urllib.request.urlopen(request, timeout=DEADLINE_S).status)
            )
            client.start()
            active = wait_for(prometheus, scaled_object, {"wake-on-request"})
            assert active == {"wake-on-request": 1.0}
            # the vLLM triggers read nothing (no pod), yet their queries are fine: empty counts as 0
            waiting = scaled_object["spec"]["triggers"][0]
            assert waiting["name"] == "vllm-waiting" and keda_value(prometheus, waiting) == 0.0
            assert prometheus.query(waiting["metadata"]["query"])["data"] == {
                "resultType": "vector",
                "result": [],
            }

            interceptor.backend_ready.set()  # the first pod is ready: the held request is answered
            client.join(timeout=DEADLINE_S)
            assert answers == [200]
            assert wait_for(prometheus, scaled_object, set()) == {}
