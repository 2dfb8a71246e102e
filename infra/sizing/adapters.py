"""LoRA adapters as the planner needs them: the rank from the adapter's own `adapter_config.json` (PEFT's
format), read like a model's config.json: from a local folder, or from the Hugging Face Hub (or its local
cache when `HF_HUB_OFFLINE=1`), or from an S3 folder (boto3's default credentials, the stack's region;
`AWS_ENDPOINT_URL_S3` for a stand-in: an offline render has no S3 to read and fails naming the key).
vLLM 0.33.0 refuses an adapter it cannot serve only when it loads it, at pod start; the checks here
(vllm/lora/peft_helper.py's) fail the preview instead.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.errors import UserError
from infra.hub import hub_errors
from infra.modelcache.s3_source import is_s3_source, read_source_json
from infra.sizing.memory import LORA_RANK_CHOICES
from infra.sizing.models import is_repo_id
from infra.sizing.plan import LoraSlots

CONFIG_FILE = "adapter_config.json"


@dataclass(frozen=True)
class AdapterConfig:
    source: str  # Hub id, local folder or s3://BUCKET/PREFIX
    rank: int  # the largest rank of any module (r, or a larger one in rank_pattern)
    base_model: str | None  # base_model_name_or_path, as the adapter was trained


def parse_adapter_config(config: Any, source: str, *, key: str) -> AdapterConfig:
    """Validate an adapter_config.json as vLLM 0.33.0's PEFTHelper would at load time."""
    if not isinstance(config, dict):
        raise UserError(f"{source}'s {CONFIG_FILE} must hold a JSON object", key=key)
    peft_type = config.get("peft_type", "LORA")
    if peft_type != "LORA":
        raise UserError(f"{source} is a {peft_type} adapter; vLLM serves LoRA adapters only", key=key)
    ranks = [config.get("r"), *(config.get("rank_pattern") or {}).values()]
    if not all(isinstance(r, int) and not isinstance(r, bool) and r > 0 for r in ranks):
        raise UserError(
            f"{source}'s {CONFIG_FILE} has no positive integer rank r (got {ranks[0]!r})", key=key
        )
    rank = max(ranks)
    if rank > LORA_RANK_CHOICES[-1]:
        raise UserError(
            f"{source} has LoRA rank {rank}; vLLM 0.33.0's --max-lora-rank goes up to {LORA_RANK_CHOICES[-1]}",
            key=key,
        )
    unsupported = [
        reason
        for reason, present in (
            ("DoRA (use_dora)", config.get("use_dora")),
            ("adapter bias (bias)", config.get("bias", "none") != "none"),
            ("LoRA bias (lora_bias)", config.get("lora_bias")),
            (
                "modules_to_save other than a classifier",
                set(config.get("modules_to_save") or ()) - {"classifier", "score"},
            ),
        )
        if present
    ]
    if unsupported:
        raise UserError(f"{source} uses {', '.join(unsupported)}, which vLLM 0.33.0 cannot serve", key=key)
    base = config.get("base_model_name_or_path")
    return AdapterConfig(source=source, rank=rank, base_model=base if isinstance(base, str) else None)


def load_adapter_config(
    source: str,
    *,
    revision: str = "main",
    key: str = "loraAdapters",
    token: str | None = None,
    region: str | None = None,
) -> AdapterConfig:
    """The adapter's config from a local folder, an S3 folder (s3://BUCKET/PREFIX, read in `region` with
    the default AWS credentials), or from the Hub at `revision`."""
    if is_s3_source(source):
        body = read_source_json(source, CONFIG_FILE, region=region, key=key)
        try:
            config = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise UserError(f"cannot read {source}/{CONFIG_FILE}: {error}", key=key) from None
        return parse_adapter_config(config, source, key=key)
    local = Path(source).expanduser()
    if local.is_dir():
        return parse_adapter_config(_read_json(local / CONFIG_FILE, key), source, key=key)
    if not is_repo_id(source):
        raise UserError(
            f"{source!r} is neither a folder holding {CONFIG_FILE} nor a Hugging Face repo id (org/name)",
            key=key,
        )
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    cache_dir = os.environ.get("HF_HUB_CACHE") or None  # read now: huggingface_hub reads it at import
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        cached = try_to_load_from_cache(source, CONFIG_FILE, cache_dir=cache_dir, revision=revision)
        if not isinstance(cached, str):
            raise UserError(
                f"{source}@{revision}: {CONFIG_FILE} is not in the local Hugging Face cache and "
                f"HF_HUB_OFFLINE=1; fetch it once online (hf download {source} {CONFIG_FILE} --revision "
                f"{revision}) or unset HF_HUB_OFFLINE",
                key=key,
            )
        path = cached
    else:
        try:
            with hub_errors(source, revision):
                path = hf_hub_download(
                    source,
                    CONFIG_FILE,
                    revision=revision,
                    cache_dir=cache_dir,
                    token=token or os.environ.get("HF_TOKEN"),
                    etag_timeout=10,
                )
        except UserError as error:  # the same cause, named by the adapter's key
            message = str(error).removeprefix(f"{error.key}: ") if error.key else str(error)
            raise UserError(message, key=key) from None
    return parse_adapter_config(_read_json(Path(path), key), source, key=key)


def _read_json(path: Path, key: str) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(
            f"{path} does not exist: a LoRA adapter folder holds {CONFIG_FILE}", key=key
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"cannot read {path}: {error}", key=key) from None


@dataclass(frozen=True)
class AdapterRef:
    """Where to read one adapter's config, and the config key (or option) an error names."""

    source: str
    revision: str = "main"
    key: str = "loraAdapters"
    region: str | None = None  # where an s3:// source is read (the stack's region)


def lora_slots(adapters: Sequence[AdapterRef]) -> LoraSlots | None:
    """One slot per adapter, so every adapter can be in the same batch, at the largest adapter's rank."""
    if not adapters:
        return None
    ranks = [
        load_adapter_config(a.source, revision=a.revision, key=a.key, region=a.region).rank for a in adapters
    ]
    return LoraSlots(max_loras=len(adapters), max_lora_rank=max(ranks))
