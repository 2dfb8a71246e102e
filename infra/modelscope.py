"""ModelScope as a model source, through its official client library `modelscope_hub` (what the
`modelscope` package itself delegates every Hub call to, without its ML framework).

A model is named `modelscope://org/name`; its revisions are ModelScope branches and tags (`master` by
default). `MODELSCOPE_ENDPOINT` points the client at another site (modelscope.ai, a mirror, a test
server) and `MODELSCOPE_API_TOKEN` authenticates private models; both are read by the client itself.
ModelScope names no commit for a revision, so a cache entry is keyed by a digest of the revision's
content (every file's path, size and sha256, as the listing states them), which never moves either.
Used by the planner (config.json) and the model cache (push); the client is imported only when needed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.errors import UserError

PREFIX = "modelscope://"
DEFAULT_REVISION = "master"
_ERRNO = re.compile(r"\[Errno -?\d+\] [^'\")]+")


def is_modelscope(model: str) -> bool:
    return model.startswith(PREFIX)


def repo_id(model: str) -> str:
    """`modelscope://org/name` -> `org/name`, the id the ModelScope client takes."""
    return model.removeprefix(PREFIX)


@dataclass(frozen=True)
class RepoFile:
    path: str
    size: int
    sha256: str


def snapshot_id(files: Iterable[RepoFile]) -> str:
    """40 hex digits (the shape of a commit) naming exactly these files' contents."""
    digest = hashlib.sha256()
    for file in sorted(files, key=lambda f: f.path):
        digest.update(f"{file.path}\0{file.size}\0{file.sha256}\n".encode())
    return digest.hexdigest()[:40]


def _client() -> Any:
    from modelscope_hub import HubApi

    if not os.environ.get("MODELSCOPE_LOG_LEVEL"):
        # Failures reach the user as one UserError line; the client's retry chatter would bury it.
        logging.getLogger("modelscope_hub").setLevel(logging.CRITICAL)
    return HubApi()


def endpoint() -> str:
    from modelscope_hub import HubConfig

    return HubConfig().endpoint or ""


@contextmanager
def modelscope_errors(model: str, revision: str) -> Iterator[None]:
    """ModelScope failures -> one-line UserError naming what to fix (never the token, never a traceback)."""
    from modelscope_hub.errors import (
        AuthenticationError,
        FileDownloadError,
        HubError,
        NetworkError,
        NotExistError,
        PermissionDeniedError,
        RequestTimeoutError,
    )

    where = f"{model}@{revision}"
    try:
        yield
    except FileDownloadError as error:
        failed = getattr(error, "failed_files", None) or {}
        path, cause = next(iter(failed.items()), ("?", error))
        raise UserError(
            f"{where}: downloading {path} from ModelScope failed: {_short(cause)}", key="model"
        ) from None
    except NotExistError:
        raise UserError(_missing(model, revision), key="model") from None
    except (AuthenticationError, PermissionDeniedError):
        raise UserError(
            f"{where}: ModelScope refused access; set MODELSCOPE_API_TOKEN to a token that can read it",
            key="MODELSCOPE_API_TOKEN",
        ) from None
    except (NetworkError, RequestTimeoutError) as error:
        raise UserError(
            f"{where}: cannot reach ModelScope at {endpoint()} ({_short(error)})", key="MODELSCOPE_ENDPOINT"
        ) from None
    except HubError as error:
        raise UserError(f"{where}: ModelScope answered {_short(error)}", key="model") from None


def _missing(model: str, revision: str) -> str:
    """Which of the two is missing: the model, or only the revision."""
    from modelscope_hub.errors import HubError

    try:
        _client().legacy.get_repo_info(repo_id(model), "model")
    except HubError:
        return (
            f"{model} is not on ModelScope at {endpoint()} (or is private and MODELSCOPE_API_TOKEN is unset)"
        )
    return (
        f"{model}@{revision}: no such revision (branch or tag) on ModelScope; its default branch is "
        f"{DEFAULT_REVISION}"
    )


def _short(error: BaseException) -> str:
    """The cause a person can act on ("[Errno 111] Connection refused"), not the client's URL dump."""
    text = str(error)
    found = _ERRNO.search(text)
    return found.group(0).strip() if found else text.splitlines()[0][:300]


def list_files(model: str, revision: str) -> list[RepoFile]:
    """Every file of the revision with the size and sha256 ModelScope states for it."""
    with modelscope_errors(model, revision):
        listed = _client().list_repo_files(repo_id(model), "model", revision=revision)
    files = [RepoFile(f.path, f.size, f.sha256 or "") for f in listed if f.type != "tree"]
    unhashed = [f.path for f in files if not f.sha256]
    if unhashed:
        raise UserError(
            f"{model}@{revision}: ModelScope lists {unhashed[0]} without a sha256, so the revision cannot be "
            "keyed by its content; download it yourself and push the folder with --from DIR",
            key="model",
        )
    if not files:
        raise UserError(f"{model}@{revision}: ModelScope lists no files", key="model")
    return files


def download(
    model: str,
    revision: str,
    files: Sequence[RepoFile],
    target: Path,
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    workers: int = 8,
) -> Path:
    """Download exactly `files` into `target`; the client checks each against its listed sha256 and size,
    so a revision that moved since the listing fails instead of mixing two versions."""
    listing = [{"Path": f.path, "Size": f.size, "Sha256": f.sha256, "Type": "blob"} for f in files]
    with modelscope_errors(model, revision):
        _client().download_repo(
            repo_id(model),
            "model",
            revision=revision,
            local_dir=target,
            allow_patterns=list(include) or None,
            ignore_patterns=list(exclude) or None,
            max_workers=workers,
            file_list=listing,
        )
    return target


def download_config(model: str, revision: str | None, cache_dir: Path | None = None) -> Path:
    """The model's config.json, for the planner."""
    revision = revision or DEFAULT_REVISION
    with modelscope_errors(model, revision):
        return _client().download_file(
            repo_id(model), "model", "config.json", revision=revision, cache_dir=cache_dir
        )
