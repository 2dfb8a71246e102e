"""Shared by the monitoring tests: vLLM's metrics.tsv read as data, metric names pulled out of PromQL, and
the Debian Prometheus tools (skipping with the install command when they are missing)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from infra.versions import VLLM_VERSION
from tests.conftest import SHARED, free_port, stop_process, wait_for_port
from tests.vllm_facts import metrics_exposition, vllm_families

APT_INSTALL = "apt-get update && apt-get install -y prometheus"
_NAME = re.compile(r"^[A-Za-z_:][A-Za-z0-9_:]*$")
_SERIES_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("_sum", "_count"),
}


@dataclass(frozen=True)
class TsvMetric:
    name: str
    type: str
    condition: str

    @property
    def series(self) -> tuple[str, ...]:
        suffixes = _SERIES_SUFFIXES.get(self.type, ("",))
        # The table names counters by family (`x`); a few HTTP counters are already listed as `x_total`.
        if self.type == "counter" and self.name.endswith("_total"):
            return (self.name,)
        return tuple(self.name + suffix for suffix in suffixes)


@dataclass(frozen=True)
class VllmTsv:
    current: dict[str, TsvMetric]
    removed: frozenset[str] | None  # None: not known (the table was derived from the exposition)

    def series(self) -> dict[str, TsvMetric]:
        """Every exposed series name of a current metric (x_total, x_bucket, ...) -> its metric."""
        return {series: metric for metric in self.current.values() for series in metric.series}


def read_vllm_tsv(version: str = VLLM_VERSION) -> VllmTsv:
    """../shared's hand-made metrics.tsv where it exists (conditions and removed names included); else the
    table of what vLLM's default exposition registers, every metric there taken as always exposed."""
    path = SHARED / f"vllm-{version}" / "metrics.tsv"
    if not path.exists():
        return table_from_exposition(metrics_exposition(version))
    current: dict[str, TsvMetric] = {}
    removed: set[str] = set()
    for line in path.read_text().splitlines():
        if line.startswith("#") or line.startswith("name\t"):
            continue
        fields = line.split("\t")
        name, kind, status = fields[0], fields[1], fields[-1]
        if status.startswith("REMOVED"):
            removed.update(part.strip() for part in name.split(" / "))
        elif _NAME.match(name) and kind in ("gauge", "counter", "histogram", "summary"):
            current[name] = TsvMetric(name, kind, fields[3])
    return VllmTsv(current, frozenset(removed))


def table_from_exposition(path: Path) -> VllmTsv:
    """The metric families a real vLLM exposition registers (vllm:*, as metrics.tsv names them: counters
    without _total), typed as prometheus_client parses them. Removed names are history, not in it."""
    current = {
        name: TsvMetric(name, kind, "always (in vLLM's default exposition)")
        for name, kind in vllm_families(path.read_text()).items()
    }
    return VllmTsv(current, None)


_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
}


def metric_names(expr: str) -> set[str]:
    """The metric (or recorded series) names a PromQL expression reads: identifiers that are not functions,
    keywords, label names or numbers. Strings, label matchers and range selectors are removed first."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"'(?:[^'\\]|\\.)*'", "''", text)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![A-Za-z0-9_.:$])[A-Za-z_:][A-Za-z0-9_:]*", text):
        if text[match.end() :].lstrip().startswith("(") or match.group(0) in _KEYWORDS:
            continue
        names.add(match.group(0))
    return names


def leaf_metric_names(expr: str, recorded: dict[str, str]) -> set[str]:
    """metric_names with recorded series replaced, recursively, by what their rules read."""
    leaves: set[str] = set()
    for name in metric_names(expr):
        if name in recorded:
            leaves |= leaf_metric_names(recorded[name], recorded)
        else:
            leaves.add(name)
    return leaves


def prometheus_tool(name: str) -> Path:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed ({APT_INSTALL})")
    return Path(path)


class Prometheus:
    """The HTTP API of a Prometheus this test process started."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}/api/v1"

    def get(self, path: str, **params: str | list[str]) -> dict[str, object]:
        url = f"{self.base}/{path}?{urllib.parse.urlencode(params, doseq=True)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return json.load(response)
        except urllib.error.HTTPError as error:
            if error.code == 503:  # still starting: plain text "Service Unavailable"
                return {"status": "unavailable"}
            return json.load(error)  # 400/422 carry the parse or evaluation error as JSON

    def query(self, expr: str) -> dict[str, object]:
        return self.get("query", query=expr)


@contextmanager
def running_prometheus(config: dict[str, object], workdir: Path) -> Iterator[Prometheus]:
    """A real Prometheus on 127.0.0.1 with `config` (its data and log in `workdir`), stopped by its PID."""
    binary = prometheus_tool("prometheus")
    config_file = workdir / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port()
    process = subprocess.Popen(
        [
            str(binary),
            f"--config.file={config_file}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(workdir / "prometheus.log").open("w"),
    )
    try:
        wait_for_port(port, process)
        yield Prometheus(port)
    finally:
        stop_process(process)
