"""A LoRA adapter's rank from its adapter_config.json (PEFT's format), read from a folder, the Hub (a fake
Hub on 127.0.0.1) or the local Hugging Face cache when offline; what vLLM 0.33.0 cannot serve is refused
with one line naming the key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from infra.errors import UserError
from infra.sizing.adapters import AdapterRef, load_adapter_config, lora_slots, parse_adapter_config
from infra.sizing.plan import LoraSlots
from tests.conftest import REPO_ROOT
from tests.sizing.test_hub_loading import fake_hub

LORA = {
    "peft_type": "LORA",
    "r": 16,
    "lora_alpha": 32,
    "target_modules": ["q_proj", "v_proj"],
    "bias": "none",
}


@pytest.mark.parametrize(
    ("config", "rank"),
    [
        (LORA, 16),
        ({**LORA, "r": 4}, 4),
        ({**LORA, "rank_pattern": {"o_proj": 64}}, 64),  # the largest module rank is what vLLM checks
        ({"r": 8}, 8),  # peft_type defaults to LoRA
        ({**LORA, "modules_to_save": ["score"]}, 16),  # a classifier head vLLM accepts
    ],
)
def test_rank_is_the_largest_module_rank(config: dict[str, Any], rank: int) -> None:
    assert parse_adapter_config(config, "org/a", key="k").rank == rank


@pytest.mark.parametrize(
    ("config", "says"),
    [
        ({**LORA, "peft_type": "IA3"}, "IA3 adapter"),
        ({**LORA, "r": 0}, "no positive integer rank"),
        ({**LORA, "r": "16"}, "no positive integer rank"),
        ({k: v for k, v in LORA.items() if k != "r"}, "no positive integer rank"),
        ({**LORA, "r": 1024}, "goes up to 512"),
        ({**LORA, "use_dora": True}, "DoRA"),
        ({**LORA, "bias": "all"}, "adapter bias"),
        ({**LORA, "modules_to_save": ["lm_head"]}, "modules_to_save"),
        ([1, 2], "JSON object"),
    ],
)
def test_what_vllm_cannot_serve_is_one_line_naming_the_key(config: Any, says: str) -> None:
    with pytest.raises(UserError, match=says) as error:
        parse_adapter_config(config, "org/a", key="loraAdapters[1].source")
    assert error.value.key == "loraAdapters[1].source" and "\n" not in str(error.value)


def write_adapter(folder: Path, config: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder


def test_a_folder_and_a_missing_file(tmp_path: Path) -> None:
    folder = write_adapter(tmp_path / "sql", {**LORA, "r": 32, "base_model_name_or_path": "Qwen/Qwen3-8B"})
    config = load_adapter_config(str(folder))
    assert (config.rank, config.base_model) == (32, "Qwen/Qwen3-8B")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"holds adapter_config\.json"):
        load_adapter_config(str(tmp_path / "empty"), key="--lora-adapter")
    with pytest.raises(UserError, match="neither a folder"):
        load_adapter_config("not a repo id")


def hub_cache(root: Path, repo: str, config: Any, *, commit: str = "b" * 40) -> Path:
    """A Hugging Face cache holding one file of `repo` at `main`, as `hf download` leaves it."""
    repo_dir = root / f"models--{repo.replace('/', '--')}"
    write_adapter(repo_dir / "snapshots" / commit, config)
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(commit)
    return root


def test_offline_reads_the_local_hub_cache_and_says_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(hub_cache(tmp_path, "org/sql-lora", {**LORA, "r": 8})))
    assert lora_slots([AdapterRef("org/sql-lora"), AdapterRef("org/sql-lora")]) == LoraSlots(2, 8)
    with pytest.raises(UserError, match="not in the local Hugging Face cache") as error:
        lora_slots([AdapterRef("org/sql-lora"), AdapterRef("org/other", key="loraAdapters[1].source")])
    assert error.value.key == "loraAdapters[1].source"
    assert lora_slots([]) is None


@pytest.mark.integration
def test_plan_reads_adapters_from_the_hub_and_sizes_their_slots(tmp_path: Path) -> None:
    """`infra plan --lora-adapter` against a fake Hub: the rank comes from the Hub's adapter_config.json,
    the plan carries the slots and their flags; an adapter the Hub lacks is one line naming the option."""
    write_adapter(tmp_path, {**LORA, "r": 24})
    with fake_hub(tmp_path) as url:
        env = {**os.environ, "HF_ENDPOINT": url, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0"}
        env.pop("HF_HUB_CACHE", None)

        def plan(*adapters: str) -> subprocess.CompletedProcess[str]:
            options = [part for adapter in adapters for part in ("--lora-adapter", adapter)]
            return subprocess.run(
                [sys.executable, "-m", "infra", "plan", "Qwen/Qwen3-8B", "--instance-type", "g6.xlarge",
                 "--max-model-len", "8192", "--json", *options],
                capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=120,
            )  # fmt: skip

        found = plan("someorg/tiny-llama", f"someorg/tiny-llama@{'a' * 40}")
        missing = plan("someorg/no-such-adapter")
    assert found.returncode == 0, found.stderr
    result = json.loads(found.stdout)
    assert result["lora"]["max_loras"] == 2 and result["lora"]["max_lora_rank"] == 32  # 24 -> vLLM's 32
    args = result["vllm_args"]
    assert args[args.index("--max-lora-rank") + 1] == "32" and "--enable-lora" in args
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert missing.stderr.startswith("error: --lora-adapter: someorg/no-such-adapter is not on the Hub")


@pytest.mark.integration
def test_an_s3_adapter_is_read_from_s3_and_every_failure_is_one_line_naming_its_key(
    moto_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """adapter_config.json from a real S3 stand-in (moto_server on 127.0.0.1) in the stack's region; a
    missing object, a missing bucket, no credentials and an unreachable S3 each give one line naming the
    adapter's key, never a traceback."""
    import boto3

    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="eu-west-1")
    client.create_bucket(
        Bucket="team-adapters", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    client.put_object(
        Bucket="team-adapters", Key="qwen3/sql/adapter_config.json", Body=json.dumps({**LORA, "r": 40})
    )
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_endpoint)
    key = "revisions[0].loraAdapters[1].source"
    s3 = AdapterRef("s3://team-adapters/qwen3/sql", key=key, region="eu-west-1")
    assert lora_slots([s3]) == LoraSlots(1, 40)  # the planner rounds it up to a rank vLLM accepts

    def failure(source: str) -> str:
        with pytest.raises(UserError) as error:
            load_adapter_config(source, key=key, region="eu-west-1")
        assert error.value.key == key and "\n" not in str(error.value)
        return str(error.value)

    assert failure("s3://team-adapters/qwen3/nope") == (
        f"{key}: s3://team-adapters/qwen3/nope/adapter_config.json does not exist: a LoRA adapter folder "
        "holds adapter_config.json"
    )
    assert "the bucket does not exist" in failure("s3://no-such-bucket-here/x")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    assert "s3://team-adapters/qwen3/sql/adapter_config.json: no AWS credentials found" in failure(
        "s3://team-adapters/qwen3/sql"
    )
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    from tests.conftest import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    assert "cannot reach S3" in failure("s3://team-adapters/qwen3/sql")
