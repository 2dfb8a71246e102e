"""Local stand-ins for what Prometheus scrapes in the cluster, served on 127.0.0.1 by one HTTP server:

- /vllm/metrics replays vLLM 0.33.0's real exposition (tests/vllm_facts.py: from vLLM's own logger) with its
  counters and histograms advanced on every scrape, so rates and quantiles have something to compute;
- /dcgm/metrics speaks like NVIDIA's dcgm-exporter (the five DCGM fields our panels and rules read, with its
  label set, the GPU's pod attribution included);
- /ksm/metrics speaks like kube-state-metrics for one serving pod (created, Ready, its revision label).
"""

from __future__ import annotations

import re
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

# One scrape's worth of traffic: requests finished and histogram observations per scrape.
OBSERVATIONS_PER_SCRAPE = 10
_SAMPLE = re.compile(r"^(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)(?P<labels>\{.*\})? (?P<value>\S+)$")
_LE = re.compile(r'le="([^"]+)"')


class VllmReplay:
    """The exposition text, sample lines parsed once; `render(n)` is the text of the n-th scrape."""

    def __init__(self, exposition: Path) -> None:
        self.lines = exposition.read_text().splitlines()
        self.types: dict[str, str] = {}
        for line in self.lines:
            if line.startswith("# TYPE "):
                _, _, family, kind = line.split(" ", 3)
                self.types[family] = kind
        # Cumulative share of observations at or below each bucket, per histogram series (its labels sans le).
        buckets: dict[tuple[str, str], list[tuple[float, str]]] = defaultdict(list)
        for line in self.lines:
            sample = _SAMPLE.match(line)
            if sample and sample["name"].endswith("_bucket"):
                le = _LE.search(sample["labels"])
                assert le is not None, line
                buckets[(sample["name"], _LE.sub("", sample["labels"]))].append((float(le[1]), line))
        self.bucket_share: dict[str, float] = {}
        for series in buckets.values():
            finite = sorted(bound for bound, _ in series if bound != float("inf"))
            for bound, line in series:
                # Spread observations evenly over the finite buckets; +Inf holds all of them.
                self.bucket_share[line] = (
                    1.0 if bound == float("inf") else (finite.index(bound) + 1) / len(finite)
                )

    def _kind(self, name: str) -> str:
        for suffix in ("_total", "_bucket", "_sum", "_count", ""):
            family = name.removesuffix(suffix) if suffix else name
            if suffix and not name.endswith(suffix):
                continue
            if family in self.types:
                return self.types[family]
        return "untyped"

    def render(self, scrape: int) -> str:
        out = []
        for line in self.lines:
            sample = _SAMPLE.match(line)
            if sample is None:
                out.append(line)
                continue
            name, kind = sample["name"], self._kind(sample["name"])
            if kind == "counter" and name.endswith("_total"):
                increase = OBSERVATIONS_PER_SCRAPE * scrape
            elif kind == "histogram" and name.endswith("_bucket"):
                increase = OBSERVATIONS_PER_SCRAPE * scrape * self.bucket_share[line]
            elif kind == "histogram" and name.endswith(("_sum", "_count")):
                increase = OBSERVATIONS_PER_SCRAPE * scrape
            else:
                out.append(line)
                continue
            out.append(f"{name}{sample['labels'] or ''} {float(sample['value']) + increase}")
        return "\n".join(out) + "\n"


GPU_POD = {"namespace": "llm", "pod": "vllm-r1-0", "container": "vllm"}
DCGM_FIELDS = {
    "DCGM_FI_DEV_GPU_UTIL": ("gauge", "GPU utilization (in %).", 63.0),
    "DCGM_FI_DEV_FB_USED": ("gauge", "Framebuffer memory used (in MiB).", 21100.0),
    "DCGM_FI_DEV_FB_FREE": ("gauge", "Framebuffer memory free (in MiB).", 1750.0),
    "DCGM_FI_DEV_POWER_USAGE": ("gauge", "Power draw (in W).", 187.5),
    "DCGM_FI_DEV_GPU_TEMP": ("gauge", "GPU temperature (in C).", 61.0),
}


def _labels(labels: dict[str, str]) -> str:
    return "{" + ",".join(f'{key}="{value}"' for key, value in labels.items()) + "}"


def dcgm_exposition(scrape: int) -> str:
    out = []
    for field, (kind, help_text, value) in DCGM_FIELDS.items():
        out += [f"# HELP {field} {help_text}", f"# TYPE {field} {kind}"]
        for gpu in (0, 1):
            labels = {
                "gpu": str(gpu),
                "UUID": f"GPU-0000000{gpu}-aaaa-bbbb-cccc-dddddddddddd",
                "pci_bus_id": f"00000000:00:1{gpu}.0",
                "device": f"nvidia{gpu}",
                "modelName": "NVIDIA L40S",
                "Hostname": "ip-10-0-1-23.ec2.internal",
                **GPU_POD,
            }
            out.append(f"{field}{_labels(labels)} {value + scrape % 3}")
    return "\n".join(out) + "\n"


def ksm_exposition(started: float) -> str:
    pod = {"namespace": "llm", "pod": "vllm-r1-0", "uid": "6f1c2f4e-0000-4000-8000-000000000001"}
    lines = [
        "# TYPE kube_pod_created gauge",
        f"kube_pod_created{_labels(pod)} {started - 300:.0f}",
        "# TYPE kube_pod_status_ready_time gauge",
        f"kube_pod_status_ready_time{_labels(pod)} {started - 180:.0f}",
        "# TYPE kube_pod_status_ready gauge",
        *(
            f"kube_pod_status_ready{_labels({**pod, 'condition': condition})} {value}"
            for condition, value in (("true", 1), ("false", 0), ("unknown", 0))
        ),
        "# TYPE kube_pod_labels gauge",
        f"kube_pod_labels{_labels({**pod, 'label_llm_serving_revision': 'r1'})} 1",
    ]
    return "\n".join(lines) + "\n"


@contextmanager
def serve_exporters(exposition: Path) -> Iterator[int]:
    """Serve the three endpoints on 127.0.0.1; yields the port. Stopped when the block ends."""
    replay = VllmReplay(exposition)
    started = time.time()
    scrapes: dict[str, int] = defaultdict(int)
    lock = threading.Lock()
    pages = {
        "/vllm/metrics": replay.render,
        "/dcgm/metrics": dcgm_exposition,
        "/ksm/metrics": lambda _scrape: ksm_exposition(started),
    }

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            page = pages.get(self.path)
            if page is None:
                self.send_error(404)
                return
            with lock:
                scrapes[self.path] += 1
                scrape = scrapes[self.path]
            reply(self, 200, page(scrape).encode(), "text/plain; version=0.0.4; charset=utf-8")

        def log_message(self, format: str, *args: object) -> None:
            pass

    with serving(Handler) as port:
        yield port


def reply(handler: BaseHTTPRequestHandler, status: int, body: bytes, content_type: str) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[int]:
    """A threaded HTTP server on 127.0.0.1 with `handler`; yields its port, stopped when the block ends."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
