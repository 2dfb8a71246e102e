"""infra/modelscope.py's pure parts: the content key of a ModelScope revision and the error text it keeps.
The client against a fake endpoint is tested in tests/modelcache/test_modelscope.py."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from infra.modelscope import RepoFile, _short, is_modelscope, repo_id, snapshot_id

FILES = [RepoFile("config.json", 62, "a" * 64), RepoFile("model.safetensors", 10**9, "b" * 64)]


def test_snapshot_id_has_a_commits_shape_and_ignores_listing_order() -> None:
    key = snapshot_id(FILES)
    assert re.fullmatch(r"[0-9a-f]{40}", key)
    assert snapshot_id(reversed(FILES)) == key


@pytest.mark.parametrize(
    "changed",
    [
        [replace(FILES[0], sha256="c" * 64), FILES[1]],
        [replace(FILES[0], size=63), FILES[1]],
        [replace(FILES[0], path="configs.json"), FILES[1]],
        FILES[:1],
    ],
)
def test_snapshot_id_changes_with_any_file(changed: list[RepoFile]) -> None:
    assert snapshot_id(changed) != snapshot_id(FILES)


def test_references() -> None:
    assert (
        is_modelscope("modelscope://Qwen/Qwen3-8B")
        and repo_id("modelscope://Qwen/Qwen3-8B") == "Qwen/Qwen3-8B"
    )
    assert not is_modelscope("Qwen/Qwen3-8B") and repo_id("Qwen/Qwen3-8B") == "Qwen/Qwen3-8B"


@pytest.mark.parametrize(
    ("text", "short"),
    [
        (
            "[E1020] Connection failed: Pool(host='127.0.0.1', port=9): Max retries exceeded with url: /x "
            '(Caused by NewConnectionError("Conn: Failed to establish a new connection: [Errno 111] Connection '
            'refused"))',
            "[Errno 111] Connection refused",
        ),
        ("[E3020] [500] boom\nbody: ...", "[E3020] [500] boom"),
    ],
)
def test_errors_keep_the_actionable_cause(text: str, short: str) -> None:
    assert _short(Exception(text)) == short
