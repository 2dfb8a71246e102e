"""Where things live: S3 keys of a cache entry and the local directory layouts a pull can produce. Pure.

One cache entry is one (model, commit). Its model files sit under a prefix of their own, so that
vLLM's `--load-format runai_streamer` can be pointed straight at it; the manifest and the completion
marker are siblings of that prefix, not inside it:

    <prefix>/models/<org>--<name>/<commit>/<path in repo>    the files, exactly as on the Hub
    <prefix>/models/<org>--<name>/<commit>.manifest.json     every file: path, size, sha256
    <prefix>/models/<org>--<name>/<commit>.complete          written last; no marker, no pull
    <prefix>/models/<org>--<name>/refs/<revision>            the commit a branch or tag resolved to

A ModelScope model (`modelscope://org/name`, see infra/modelscope.py) lives under
`models/modelscope--<org>--<name>/`: three parts, which no Hub id can produce (the Hub forbids '--').
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import PurePosixPath

from infra import modelscope
from infra.errors import UserError

# Hub rules: letters, digits, '-', '_', '.'; no '--' or '..' (the Hub forbids both, and '--' is our separator).
_REPO_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
_COMMIT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_REVISION = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_./-]{0,254}$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_HEX40 = re.compile(r"^[0-9a-f]{40}$")

_MODELSCOPE_SLUG = "modelscope"
MANIFEST_SUFFIX = ".manifest.json"
MARKER_SUFFIX = ".complete"


class LocalLayout(StrEnum):
    """How a pull lays files out on disk."""

    PLAIN = "plain"  # DIR/<files>: `vllm serve DIR`
    HF_CACHE = "hf-cache"  # DIR/models--org--name/snapshots/<commit>/: HF_HUB_CACHE=DIR HF_HUB_OFFLINE=1


def validate_model_id(model: str) -> str:
    """A Hub repo id, `org/name` or `name`, or `modelscope://org/name`; returned unchanged when valid."""
    parts = modelscope.repo_id(model).split("/")
    counts = (2,) if modelscope.is_modelscope(model) else (1, 2)
    if len(parts) not in counts or not all(
        _REPO_PART.match(part) and "--" not in part and ".." not in part for part in parts
    ):
        raise UserError(
            f"{model!r} is not a model id such as 'Qwen/Qwen3-8B' (Hugging Face) or "
            f"'{modelscope.PREFIX}Qwen/Qwen3-8B' (ModelScope)",
            key="model",
        )
    return model


def validate_revision(revision: str) -> str:
    """A branch, tag or commit; returned unchanged when valid."""
    if not _REVISION.match(revision) or ".." in revision or revision.endswith("/") or "//" in revision:
        raise UserError(f"{revision!r} is not a valid revision (branch, tag or commit)", key="revision")
    return revision


def validate_commit(commit: str) -> str:
    """The key segment of an entry: a Hub commit, or the revision given with `push --from DIR`."""
    if not _COMMIT.match(commit) or ".." in commit:
        raise UserError(f"{commit!r} is not a valid commit id", key="revision")
    return commit


def is_commit_hash(revision: str) -> bool:
    return bool(_HEX40.match(revision))


def model_slug(model: str) -> str:
    """`org/name` -> `org--name`, the separator the Hub's own cache uses; ModelScope's get a source part."""
    slug = validate_model_id(model).removeprefix(modelscope.PREFIX).replace("/", "--")
    return f"{_MODELSCOPE_SLUG}--{slug}" if modelscope.is_modelscope(model) else slug


def model_from_slug(slug: str) -> str:
    """The inverse of model_slug."""
    parts = slug.split("--")
    if len(parts) == 3 and parts[0] == _MODELSCOPE_SLUG:
        return validate_model_id(f"{modelscope.PREFIX}{parts[1]}/{parts[2]}")
    return validate_model_id("/".join(parts))


def validate_relative_path(path: str) -> str:
    """A file path inside a model repo. Rejects anything that could escape the target directory."""
    pure = PurePosixPath(path)
    if (
        not path
        or path.startswith("/")
        or "\\" in path
        or "\x00" in path
        or any(part in ("", ".", "..") for part in path.split("/"))
        or pure.is_absolute()
    ):
        raise UserError(f"{path!r} is not a safe relative file path", key="manifest")
    return path


@dataclass(frozen=True)
class S3Location:
    """`s3://bucket/prefix` with the prefix normalised to no leading or trailing slash."""

    bucket: str
    prefix: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def key(self, *parts: str) -> str:
        return "/".join(part for part in (self.prefix, *parts) if part)


def parse_s3_uri(uri: str, *, key: str = "uri") -> S3Location:
    """Parse `s3://bucket[/prefix]`."""
    if not uri.startswith("s3://"):
        raise UserError(f"{uri!r} is not an s3:// URI (expected s3://BUCKET/PREFIX)", key=key)
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise UserError(f"{bucket!r} in {uri!r} is not a valid S3 bucket name", key=key)
    prefix = prefix.strip("/")
    if "//" in prefix:
        raise UserError(f"{uri!r} has an empty path segment", key=key)
    return S3Location(bucket=bucket, prefix=prefix)


@dataclass(frozen=True)
class CacheEntry:
    """One (model, commit) in the cache under `root`."""

    root: S3Location
    model: str
    commit: str

    def __post_init__(self) -> None:
        validate_model_id(self.model)
        validate_commit(self.commit)

    @property
    def model_prefix(self) -> str:
        return self.root.key("models", model_slug(self.model))

    @property
    def files_prefix(self) -> str:
        """Ends with '/': the model directory, as vLLM's runai_streamer expects it."""
        return f"{self.model_prefix}/{self.commit}/"

    @property
    def files_uri(self) -> str:
        return f"s3://{self.root.bucket}/{self.files_prefix}"

    def file_key(self, path: str) -> str:
        return self.files_prefix + validate_relative_path(path)

    @property
    def manifest_key(self) -> str:
        return f"{self.model_prefix}/{self.commit}{MANIFEST_SUFFIX}"

    @property
    def marker_key(self) -> str:
        return f"{self.model_prefix}/{self.commit}{MARKER_SUFFIX}"

    @property
    def uri(self) -> str:
        return f"s3://{self.root.bucket}/{self.model_prefix}/{self.commit}"


def ref_key(root: S3Location, model: str, revision: str) -> str:
    """Where push records the commit a branch or tag resolved to."""
    return root.key("models", model_slug(model), "refs", validate_revision(revision))


def split_entry_uri(location: S3Location) -> tuple[S3Location, str, str] | None:
    """If `location` names an entry (`.../models/<org>--<name>/<commit>`), return (root, model, commit)."""
    parts = location.prefix.split("/") if location.prefix else []
    if len(parts) < 3 or parts[-3] != "models" or parts[-1] == "refs":
        return None
    slug, commit = parts[-2], parts[-1]
    root = S3Location(location.bucket, "/".join(parts[:-3]))
    return root, model_from_slug(slug), validate_commit(commit)


def local_model_dir(dest: str, layout: LocalLayout, model: str, commit: str) -> PurePosixPath:
    """The directory vLLM is pointed at after a pull into `dest`."""
    if layout is LocalLayout.PLAIN:
        return PurePosixPath(dest)
    return PurePosixPath(dest) / f"models--{model_slug(model)}" / "snapshots" / validate_commit(commit)


def local_ref_path(dest: str, model: str, revision: str) -> PurePosixPath:
    """HF cache layout: `refs/<revision>` holds the commit, so `--revision main` resolves offline."""
    return PurePosixPath(dest) / f"models--{model_slug(model)}" / "refs" / validate_revision(revision)


def local_manifest_path(dest: str, layout: LocalLayout, model: str, commit: str) -> PurePosixPath:
    """A pull's own completion record: the manifest, written last, beside (not among) the model files."""
    if layout is LocalLayout.PLAIN:
        return PurePosixPath(dest) / ".modelcache-manifest.json"
    return (
        PurePosixPath(dest) / f"models--{model_slug(model)}" / f".modelcache-{validate_commit(commit)}.json"
    )


def plan_ranges(size: int, chunk_size: int) -> list[tuple[int, int]]:
    """Byte ranges (first, last inclusive, as in an HTTP Range header) covering `size` bytes."""
    if chunk_size <= 0:
        raise ValueError("chunk_size must be positive")
    return [(start, min(start + chunk_size, size) - 1) for start in range(0, size, chunk_size)]


# ----- vLLM's torch.compile cache (compile_cache.py moves the data) -----------------------------------


def gpu_slug(gpu_type: str) -> str:
    """`NVIDIA A10G` -> `nvidia-a10g`; `H100 80GB HBM3` -> `h100-80gb-hbm3`."""
    slug = re.sub(r"[^a-z0-9]+", "-", gpu_type.lower()).strip("-")
    if not slug:
        raise UserError(f"{gpu_type!r} is not a GPU type such as 'NVIDIA L40S'", key="--gpu")
    return slug


def compile_cache_key(vllm_version: str, model: str, tensor_parallel_size: int, gpu_type: str) -> str:
    """The key segment (below the cache root) for one serving shape."""
    if tensor_parallel_size < 1:
        raise UserError("must be at least 1", key="--tensor-parallel-size")
    if not re.fullmatch(r"[0-9A-Za-z.+_-]+", vllm_version):
        raise UserError(f"{vllm_version!r} is not a version", key="--vllm-version")
    return (
        f"compile-cache/vllm-{vllm_version}/{model_slug(model)}/tp{tensor_parallel_size}/{gpu_slug(gpu_type)}"
    )
