"""`python -m infra cache ...` (and `python -m infra.modelcache ...` in the serving image, no Pulumi needed).

Errors a user can fix are raised as UserError and printed by the caller's main() as one line, exit 2.
`push`, `verify`, `ls` and `compile-cache` import their modules (huggingface_hub, s3transfer, tarfile)
when they run: `pull` starts every serving pod, and those imports would add ~0.5 CPU s to it for nothing.
No `from __future__ import annotations` here: typer would then evaluate every option's string annotation
twice per command on every run, 16 ms of a pull's start-up against 5 (docs/benchmarks.md, ninth pass).
"""

import gc
import sys
from pathlib import Path
from typing import Annotated

import typer

from infra import modelscope
from infra.errors import UserError
from infra.modelcache.layout import LocalLayout, parse_s3_uri
from infra.modelcache.pull import pull, resolve_entry
from infra.modelcache.s3_reads import PullReads
from infra.modelcache.transfer import MiB, RetryMode, TransferSettings, make_s3_client, s3_errors
from infra.versions import VLLM_VERSION

cache_app = typer.Typer(
    help="S3-backed Hugging Face model cache: push once per model revision, pull fast and verified.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
compile_app = typer.Typer(
    help="vLLM's torch.compile cache in S3, keyed by vLLM version, model, TP size and GPU type.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
cache_app.add_typer(compile_app, name="compile-cache")

Concurrency = Annotated[int, typer.Option(help="Parallel ranged GETs / part uploads.")]
ChunkMiB = Annotated[int, typer.Option("--chunk-size-mib", help="MiB per ranged GET / multipart part.")]
MaxAttempts = Annotated[int, typer.Option(help="Attempts per request on throttling and dropped connections.")]
RetryModeOption = Annotated[
    str, typer.Option(help="botocore retry mode: standard, or adaptive (client-side rate limiting).")
]
EndpointUrl = Annotated[
    str | None,
    typer.Option(help="S3-compatible endpoint (default: AWS, or AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL)."),
]

_defaults = TransferSettings()


def _settings(
    concurrency: int,
    chunk_size_mib: int,
    max_attempts: int,
    retry_mode: str,
    fsync: bool = True,
    direct_io: bool = True,
    processes: int = _defaults.processes,
) -> TransferSettings:
    if retry_mode not in ("standard", "adaptive"):
        raise UserError("must be 'standard' or 'adaptive'", key="--retry-mode")
    mode: RetryMode = "adaptive" if retry_mode == "adaptive" else "standard"
    return TransferSettings(
        concurrency=concurrency,
        chunk_size=chunk_size_mib * MiB,
        max_attempts=max_attempts,
        retry_mode=mode,
        fsync=fsync,
        direct_io=direct_io,
        processes=processes,
    )


def _say(message: str) -> None:
    typer.echo(message, err=True)


@cache_app.command("push")
def push_command(
    model: Annotated[
        str,
        typer.Argument(
            help="Hub model id, e.g. Qwen/Qwen3-8B, modelscope://Qwen/Qwen3-8B, or an S3 folder "
            "s3://BUCKET/PREFIX (a LoRA adapter)."
        ),
    ],
    to: Annotated[str, typer.Option("--to", help="Cache root, s3://BUCKET/PREFIX.")],
    revision: Annotated[
        str | None,
        typer.Option(help="Branch, tag or commit (resolved to a commit); default main, ModelScope's master."),
    ] = None,
    source: Annotated[
        Path | None, typer.Option("--from", help="Push this local directory instead of downloading.")
    ] = None,
    scratch: Annotated[
        Path, typer.Option(help="Where the Hub snapshot is downloaded first (resumable).")
    ] = Path(".modelcache-scratch"),
    include: Annotated[
        list[str] | None, typer.Option(help="Only these Hub files (glob, repeatable).")
    ] = None,
    exclude: Annotated[
        list[str] | None, typer.Option(help="Skip these Hub files (glob, repeatable), e.g. 'original/*'.")
    ] = None,
    force: Annotated[bool, typer.Option(help="Rewrite a complete entry (e.g. after corruption).")] = False,
    concurrency: Concurrency = _defaults.concurrency,
    chunk_size_mib: ChunkMiB = 64,
    max_attempts: MaxAttempts = _defaults.max_attempts,
    retry_mode: RetryModeOption = _defaults.retry_mode,
    endpoint_url: EndpointUrl = None,
) -> None:
    """Download MODEL at REVISION from the Hub (HF_TOKEN from the environment) or from ModelScope
    (MODELSCOPE_ENDPOINT, MODELSCOPE_API_TOKEN), or the objects of an S3 folder (REVISION then names the
    entry), and upload it to S3."""
    from infra.modelcache.push import push

    revision = revision or (modelscope.DEFAULT_REVISION if modelscope.is_modelscope(model) else "main")
    root = parse_s3_uri(to, key="--to")
    settings = _settings(concurrency, chunk_size_mib, max_attempts, retry_mode)
    if not sys.stderr.isatty():
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()  # a container log gets our plain lines, not tqdm redraws
    with s3_errors(f"push {model}@{revision} to {root.uri}"):
        result = push(
            make_s3_client(settings, endpoint_url),
            root,
            model,
            revision,
            source_dir=source,
            scratch=scratch,
            include=include or (),
            exclude=exclude or (),
            force=force,
            settings=settings,
        )
    if result.skipped:
        _say(f"push: {result.entry.uri} is already complete; nothing to do")
    else:
        _say(
            f"push: {result.entry.uri} complete: uploaded {result.uploaded_files} files "
            f"({result.uploaded_bytes / 2**30:.2f} GiB), reused {result.reused_files}, in {result.seconds:.1f} s"
        )
    typer.echo(result.entry.uri)


@cache_app.command("pull")
def pull_command(
    source: Annotated[str, typer.Option("--from", help="Entry URI, or cache root with --model/--revision.")],
    to: Annotated[Path, typer.Option("--to", help="Local directory (node-local NVMe in a pod).")],
    model: Annotated[str | None, typer.Option(help="Hub model id, when --from is a cache root.")] = None,
    revision: Annotated[
        str | None, typer.Option(help="Branch, tag or commit; checked against the entry when given.")
    ] = None,
    layout: Annotated[
        LocalLayout, typer.Option(help="plain: DIR is the model directory; hf-cache: DIR is HF_HUB_CACHE.")
    ] = LocalLayout.PLAIN,
    concurrency: Concurrency = _defaults.concurrency,
    chunk_size_mib: ChunkMiB = _defaults.chunk_size // MiB,
    max_attempts: MaxAttempts = _defaults.max_attempts,
    retry_mode: RetryModeOption = _defaults.retry_mode,
    fsync: Annotated[
        bool,
        typer.Option(
            help="fsync each file before its rename (without it, the next pull after a crash re-checks files)."
        ),
    ] = _defaults.fsync,
    direct_io: Annotated[
        bool, typer.Option(help="Write with O_DIRECT where the filesystem allows (no page-cache copy).")
    ] = _defaults.direct_io,
    processes: Annotated[
        int,
        typer.Option(help="Worker processes, each one event loop over its share of the connections (Linux)."),
    ] = _defaults.processes,
    endpoint_url: EndpointUrl = None,
) -> None:
    """Pull a complete entry: parallel ranged GETs, sha256-verified, atomic renames, resumable.

    Prints the model directory on stdout (for `vllm serve "$(... pull ...)"`); progress goes to stderr.
    """
    location = parse_s3_uri(source, key="--from")
    settings = _settings(concurrency, chunk_size_mib, max_attempts, retry_mode, fsync, direct_io, processes)
    client = PullReads.for_bucket(
        lambda: make_s3_client(settings, endpoint_url),
        endpoint_url,
        location.bucket,
        settings.connect_timeout_s,
    )
    gc.freeze()  # what the imports made lives as long as the pull: keep the collector off it
    with s3_errors(f"pull {location.uri}"):
        entry = resolve_entry(client, location, model, revision)
        result = pull(client, entry, to, layout=layout, revision=revision, settings=settings)
    rate = result.downloaded_bytes / 2**20 / result.seconds if result.seconds else 0.0
    _say(
        f"pull: {result.manifest.model}@{result.manifest.commit}: downloaded {result.downloaded_files} files "
        f"({result.downloaded_bytes / 2**30:.2f} GiB, {rate:.0f} MiB/s), skipped {result.skipped_files} "
        f"already complete, {result.retries} retries, in {result.seconds:.1f} s"
    )
    typer.echo(str(result.model_dir))


@cache_app.command("verify")
def verify_command(
    source: Annotated[str | None, typer.Option("--from", help="Entry URI or cache root in S3.")] = None,
    local: Annotated[Path | None, typer.Option(help="A directory a pull finished in.")] = None,
    model: Annotated[str | None, typer.Option(help="Hub model id, when --from is a cache root.")] = None,
    revision: Annotated[str | None, typer.Option(help="Branch, tag or commit.")] = None,
    deep: Annotated[bool, typer.Option(help="Also download and sha256 every object (S3 only).")] = False,
    concurrency: Concurrency = _defaults.concurrency,
    endpoint_url: EndpointUrl = None,
) -> None:
    """Check an entry in S3 (marker, manifest, sizes; --deep: hashes) or a local pull (hashes)."""
    from infra.modelcache.verify import verify_local, verify_remote

    if (source is None) == (local is None):
        raise UserError("give exactly one of --from s3://... or --local DIR", key="--from")
    if local is not None:
        manifest, problems = verify_local(local)
        where = str(local)
    else:
        assert source is not None
        settings = _settings(concurrency, 16, _defaults.max_attempts, _defaults.retry_mode)
        client = make_s3_client(settings, endpoint_url)
        with s3_errors(f"verify {source}"):
            entry = resolve_entry(client, parse_s3_uri(source, key="--from"), model, revision)
            manifest, problems = verify_remote(client, entry, deep=deep, settings=settings)
        where = entry.uri
    for problem in problems:
        _say(f"verify: {problem.path}: {problem.reason}")
    if problems:
        raise UserError(f"{where}: {len(problems)} of {len(manifest.files)} files are wrong", key="integrity")
    what = "sizes and sha256" if (deep or local is not None) else "marker, manifest and sizes"
    typer.echo(
        f"verify: {where}: {manifest.model}@{manifest.commit} OK ({len(manifest.files)} files, {what})"
    )


@cache_app.command("ls")
def ls_command(
    root: Annotated[str, typer.Argument(help="Cache root, s3://BUCKET/PREFIX.")],
    endpoint_url: EndpointUrl = None,
) -> None:
    """List the entries under a cache root: model, commit, complete or not, size, refs."""
    from infra.modelcache.verify import list_entries

    location = parse_s3_uri(root, key="root")
    with s3_errors(f"ls {location.uri}"):
        entries = list_entries(make_s3_client(TransferSettings(), endpoint_url), location)
    for entry in entries:
        size = f"{entry.total_size / 2**30:.2f} GiB" if entry.total_size is not None else "?"
        state = "complete" if entry.complete else "INCOMPLETE"
        refs = ",".join(entry.refs) or "-"
        typer.echo(f"{entry.model}\t{entry.commit}\t{state}\t{size}\trefs={refs}")
    if not entries:
        _say(f"ls: no entries under {location.uri}")


ShapeModel = Annotated[str, typer.Option(help="Hub model id the server runs.")]
ShapeTp = Annotated[int, typer.Option("--tensor-parallel-size", "-tp", help="vLLM tensor-parallel size.")]
ShapeGpu = Annotated[str, typer.Option(help="GPU type, e.g. 'NVIDIA L40S' (nvidia-smi --query-gpu=name).")]
ShapeVllm = Annotated[str, typer.Option(help="vLLM version of the server.")]
CompileDir = Annotated[
    Path, typer.Option("--dir", help="vLLM's cache: $VLLM_CACHE_ROOT/torch_compile_cache.")
]


@compile_app.command("push")
def compile_push_command(
    to: Annotated[str, typer.Option("--to", help="Cache root, s3://BUCKET/PREFIX.")],
    directory: CompileDir,
    model: ShapeModel,
    gpu: ShapeGpu,
    tensor_parallel_size: ShapeTp = 1,
    vllm_version: ShapeVllm = VLLM_VERSION,
    force: Annotated[bool, typer.Option(help="Replace a cache already published for this shape.")] = False,
    endpoint_url: EndpointUrl = None,
) -> None:
    """Publish the compile cache for this shape (as the cache's writer: serving pods only read it)."""
    from infra.modelcache.compile_cache import compile_cache_key, push_compile_cache

    root = parse_s3_uri(to, key="--to")
    key = compile_cache_key(vllm_version, model, tensor_parallel_size, gpu)
    client = make_s3_client(TransferSettings(), endpoint_url)
    with s3_errors(f"compile-cache push to {root.uri}"):
        uploaded = push_compile_cache(client, root, key, directory, force=force)
    _say(
        f"compile-cache: {root.key(key)}: "
        f"{'uploaded' if uploaded else 'already present, kept (--force replaces it)'}"
    )


@compile_app.command("pull")
def compile_pull_command(
    source: Annotated[str, typer.Option("--from", help="Cache root, s3://BUCKET/PREFIX.")],
    directory: CompileDir,
    model: ShapeModel,
    gpu: ShapeGpu,
    tensor_parallel_size: ShapeTp = 1,
    vllm_version: ShapeVllm = VLLM_VERSION,
    endpoint_url: EndpointUrl = None,
) -> None:
    """Fill the local compile cache for this shape if S3 has one (absence is normal for the first pod);
    an archive that does not match its manifest's sha256 is refused before anything is extracted."""
    from infra.modelcache.compile_cache import compile_cache_key, pull_compile_cache

    root = parse_s3_uri(source, key="--from")
    key = compile_cache_key(vllm_version, model, tensor_parallel_size, gpu)
    with s3_errors(f"compile-cache pull from {root.uri}"):
        pulled = pull_compile_cache(make_s3_client(TransferSettings(), endpoint_url), root, key, directory)
    _say(
        f"compile-cache: {root.key(key)}: {'restored' if pulled else 'nothing to restore (compiling at start)'}"
    )


def main() -> None:
    """`python -m infra.modelcache`: the same commands, for the serving image (no Pulumi installed)."""
    gc.freeze()  # what the imports allocated stays for the whole run: never walk it (see __main__.py)
    gc.enable()
    try:
        cache_app(prog_name="python -m infra.modelcache")
    except UserError as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(2)
