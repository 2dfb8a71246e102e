"""The pinned upstream files: the table matches the files CI has, and the fetcher refuses a wrong hash."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import shared_path
from tests.upstream_files import K8S_SCHEMAS, RAW, UpstreamFile, fetch, sha256_of

USED_BY_TESTS = {
    "karpenter.sh_nodepools.yaml",
    "karpenter.k8s.aws_ec2nodeclasses.yaml",
    "charts/karpenter-1.14.1-values.yaml",
}


def test_every_entry_is_a_pinned_raw_file_with_a_sha256() -> None:
    paths = [file.path for file in K8S_SCHEMAS]
    assert len(paths) == len(set(paths)) and set(paths) >= USED_BY_TESTS
    for file in K8S_SCHEMAS:
        assert file.url.startswith(f"{RAW}/") and len(file.sha256) == 64, file.path
        commit = file.url.removeprefix(f"{RAW}/").split("/")[2]
        assert len(commit) == 40 and int(commit, 16) >= 0, file.url  # a commit, never a branch


@pytest.mark.parametrize("file", K8S_SCHEMAS, ids=lambda file: file.path)
def test_the_hash_is_that_of_the_file_the_tests_read(file: UpstreamFile) -> None:
    """../shared's copies (CI) were taken upstream at the pinned commits: the table's hashes must be theirs."""
    assert sha256_of(shared_path("k8s-schemas", file.path)) == file.sha256


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[str]:
    """A local HTTP server on 127.0.0.1 serving tmp_path/www, stopped at the end."""
    (tmp_path / "www").mkdir()
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path / "www"))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        thread.join(timeout=5)


def test_fetch_checks_the_hash_and_writes_only_good_files(upstream: str, tmp_path: Path) -> None:
    (tmp_path / "www" / "crd.yaml").write_text("kind: CustomResourceDefinition\n")
    good = hashlib.sha256(b"kind: CustomResourceDefinition\n").hexdigest()
    into = tmp_path / "fetched"
    bad = UpstreamFile("x.yaml", f"{upstream}/crd.yaml", "0" * 64)
    with pytest.raises(ValueError, match="sha256"):
        fetch(bad, into)
    assert not (into / "k8s-schemas" / "x.yaml").exists()
    right = UpstreamFile("charts/x.yaml", f"{upstream}/crd.yaml", good)
    assert fetch(right, into) is True
    assert sha256_of(into / "k8s-schemas" / "charts" / "x.yaml") == good
    assert fetch(right, into) is False  # already there with the right hash: not downloaded again


def test_missing_upstream_files_skip_naming_make_schemas() -> None:
    with pytest.raises(pytest.skip.Exception, match="run `make schemas`"):
        shared_path("k8s-schemas", "no-such-crd.yaml")
