"""Stack config: the Pulumi.yaml schema, Pulumi's way of applying it, validation, and the README reference."""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pytest
import yaml

from infra import config
from infra.config import (
    PROJECT,
    PROJECT_FILE,
    apply_project_config,
    load_schema,
    readme_with_reference,
    settings_from_values,
)
from infra.errors import UserError
from infra.program import check_plan_cost
from infra.render import install_mocks
from infra.sizing.gpus import SPOT_PRICE_FACTOR, load_catalog
from tests.components.support import make_plan


def settings(**values: Any) -> config.StackSettings:
    return settings_from_values(values, stack="test")


# --- the schema ---------------------------------------------------------------------------------------------


def test_project_file_is_a_python_pip_project_with_stacks_in_stacks_dir() -> None:
    project = yaml.safe_load(PROJECT_FILE.read_text())
    assert project["name"] == PROJECT
    assert project["runtime"] == {"name": "python", "options": {"toolchain": "pip", "virtualenv": ".venv"}}
    assert project["stackConfigDir"] == "stacks"


def test_every_key_has_a_description_a_default_and_a_pulumi_type() -> None:
    for key in load_schema().values():
        assert key.description, key.name
        assert key.default is not None, f"{key.name} has no default: Pulumi would require it in every stack"
        assert key.type in (None, "string", "integer", "boolean", "array"), key.name
        if key.type == "array":
            assert key.items == "string"
    assert {k.name for k in load_schema().values() if k.secret} == {"hfToken", "apiKey"}


def test_optional_secrets_are_untyped_so_pulumi_accepts_their_empty_default() -> None:
    """Pulumi validates typed keys after applying defaults: a typed secret with a plaintext default would fail
    every stack that does not set it ("must be encrypted as it's secret")."""
    for key in load_schema().values():
        if key.secret:
            assert key.type is None and key.default == "" and key.type_label == "string", key.name


def test_schema_defaults_make_valid_settings() -> None:
    defaults = settings()
    assert defaults.model == load_schema()["model"].default
    assert defaults.replicas.min == load_schema()["replicas"].default["min"]
    assert defaults.cluster.mode == "new"


def test_config_py_repeats_no_default() -> None:
    """Defaults live only in Pulumi.yaml: the settings must not spell any of them out as a field default."""
    source = (PROJECT_FILE.parent / "infra" / "config" / "settings.py").read_text()
    fields = source.split("class StackSettings")[1]
    fields = fields.split("@field_validator")[0]
    for key in load_schema().values():
        assert "default=" not in fields.replace("default=None", ""), "a settings field declares a default"
        if isinstance(key.default, str) and key.default:
            assert f'= "{key.default}"' not in fields, key.name


def test_every_config_key_is_a_settings_field() -> None:
    aliases = {field.alias for field in config.StackSettings.model_fields.values() if field.alias}
    plain = {k.name for k in load_schema().values() if not k.secret}
    assert plain == aliases


# --- applying the schema the way the Pulumi CLI does ----------------------------------------------------------


def test_apply_fills_defaults_and_encodes_values_as_pulumi_passes_them() -> None:
    values, secret_keys = apply_project_config(
        {"llm-serving:maxModelLen": 4096, "replicas": {"min": 0, "max": 2}, "aws:region": "eu-west-1"},
        stack="s",
    )
    assert values["llm-serving:maxModelLen"] == "4096"
    assert json.loads(values["llm-serving:replicas"]) == {"min": 0, "max": 2}
    assert values["llm-serving:capacityType"] == "on-demand"
    assert values["aws:region"] == "eu-west-1"
    assert secret_keys == {"llm-serving:hfToken", "llm-serving:apiKey"}


def test_apply_redacts_encrypted_secrets() -> None:
    values, secret_keys = apply_project_config({"hfToken": {"secure": "v1:abc"}}, stack="s")
    assert "v1:abc" not in values["llm-serving:hfToken"]
    assert "llm-serving:hfToken" in secret_keys


@pytest.mark.parametrize(
    ("stack_config", "message"),
    [
        ({"modle": "x"}, "modle: unknown config key in stack 's'; known keys: model, "),
        ({"model": "x", "concurency": 2}, "(did you mean concurrency?)"),
        ({"maxModelLen": "long"}, "maxModelLen: must be of type integer, got 'long'"),
        ({"gpus": "L4"}, "gpus: must be of type array<string>, got 'L4'"),
        ({"kubernetesVersion": 1.33}, "kubernetesVersion: must be of type string, got 1.33 (quote it)"),
        ({"hfToken": "hf_plain"}, "hfToken: is a secret and must be encrypted"),
    ],
)
def test_apply_rejects_what_pulumi_would(stack_config: dict, message: str) -> None:
    with pytest.raises(UserError) as raised:
        apply_project_config(stack_config, stack="s")
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


# --- validation: one line naming the key ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"capacityType": "spott"}, "capacityType: must be 'spot' or 'on-demand', got 'spott'"),
        (
            {"dtype": "fp32"},
            "dtype: must be one of 'auto', 'bfloat16', 'float16', 'half', 'float', 'float32', got 'fp32'",
        ),
        ({"kvCacheDtype": "int4"}, "kvCacheDtype: must be one of 'auto', 'bfloat16'"),
        ({"quantization": "int3"}, "quantization: must be "),
        ({"kvCacheDtype": "int8"}, "kvCacheDtype: must be "),
        ({"kubernetesVersion": "1.29"}, "kubernetesVersion: must be one of '1.3"),
        ({"maxModelLen": -1}, "maxModelLen: Input should be greater than or equal to 0"),
        ({"concurrency": 0}, "concurrency: Input should be greater than or equal to 1"),
        ({"replicas": {"min": 3, "max": 1}}, "replicas: min (3) must not exceed max (1)"),
        ({"replicas": {"min": 1}}, "replicas.max: is required"),
        ({"replicas": {"min": 1, "max": 2, "maxx": 3}}, "replicas.maxx: is not a known field"),
        ({"replicas": {"min": "1", "max": 2}}, "replicas.min: Input should be a valid integer"),
        ({"maxCostPerHour": "cheap"}, "maxCostPerHour: must be a number of USD per hour, got 'cheap'"),
        ({"maxCostPerHour": -5}, "maxCostPerHour: Input should be greater than or equal to 0"),
        ({"cluster": {"mode": "existing"}}, "cluster: mode existing needs the cluster's name"),
        ({"cluster": {"mode": "new", "kubeconfig": "/k"}}, "cluster: kubeconfig and nodeRole apply only"),
        ({"cluster": {"mode": "borrowed"}}, "cluster.mode: must be 'new' or 'existing'"),
        ({"cluster": {"mode": "existing", "name": "bad name"}}, "cluster.name: 'bad name' is not an EKS"),
        ({"region": "mars-1"}, "region: 'mars-1' is not an AWS region;"),
        ({"region": "us-east-9"}, "region: 'us-east-9' is not an AWS region; did you mean us-east-2"),
        (
            {"cluster": {"mode": "existing", "name": "c", "publicAccessCidrs": ["203.0.113.7/32"]}},
            "cluster: publicAccessCidrs and privateAccess apply only to mode new",
        ),
        (
            {"cluster": {"mode": "new", "publicAccessCidrs": "all"}},
            "cluster.publicAccessCidrs: must be a list",
        ),
        ({"namespace": "LLM"}, "namespace: 'LLM' is not a Kubernetes namespace name"),
        ({"tags": {"aws:owner": "x"}}, "tags: 'aws:owner' is not a valid AWS tag key"),
        ({"tags": {"team": 3}}, "tags: must map strings to strings"),
        ({"gpus": ["L4", "L4"]}, "gpus: lists a name twice"),
        ({"gpus": [""]}, "gpus: must be a list of non-empty names"),
        ({"model": "has space"}, "model: 'has space' is not a model id"),
        ({"model": ""}, "model: String should have at least 1 character"),
        ({"quantization": "fp8", "dtype": "float16"}, "quantization: fp8 quantizes from bfloat16 weights"),
        ({"modle": "x"}, "modle: is not a config key of this project (did you mean model?)"),
        ({"servingImage": "vllm/vllm-openai"}, "servingImage: names no tag or digest"),
        ({"servingImage": "vllm/vllm-openai:latest"}, "servingImage: uses the floating tag latest"),
        ({"servingImage": "ecr.example.com/Repo:v1"}, "servingImage: is not an image reference"),
        ({"servingImage": "r/x@sha256:abc"}, "servingImage: is not an image reference"),
        ({"modelLoadMode": "stream"}, "modelLoadMode: must be 'local' or 'runai_streamer', got 'stream'"),
        ({"compileCache": "yes"}, "compileCache: Input should be a valid boolean"),
        ({"monitoring": {"retention": "2 weeks"}}, "monitoring.retention: must be a Prometheus duration"),
        ({"monitoring": {"storageGiB": 0}}, "monitoring.storageGiB: must be at least 1 GiB, got 0"),
        ({"monitoring": {"storageClass": "GP3"}}, "monitoring.storageClass: must be a StorageClass name"),
        ({"monitoring": {"ttftP95SloSeconds": 0}}, "monitoring.ttftP95SloSeconds: must be positive"),
        ({"monitoring": {"ttftP95SloSeconds": "fast"}}, "monitoring.ttftP95SloSeconds: Input should be"),
        ({"monitoring": {"retension": "7d"}}, "monitoring.retension: is not a known field"),
        ({"autoscaling": {"waitingPerReplica": 0}}, "autoscaling.waitingPerReplica: must be positive"),
        ({"autoscaling": {"kvCacheUsage": 1.5}}, "autoscaling.kvCacheUsage: must be a fraction in (0, 1]"),
        ({"autoscaling": {"kvCacheUsage": True}}, "autoscaling.kvCacheUsage: Input should be a valid number"),
        ({"autoscaling": {"gpuUtilizationPercent": 101}}, "autoscaling.gpuUtilizationPercent: must be a"),
        ({"autoscaling": {"gpuUtilizationPercent": -1}}, "autoscaling.gpuUtilizationPercent: Input should"),
        (
            {
                "model": "modelscope://Qwen/Qwen3-8B",
                "modelLoadMode": "runai_streamer",
                "modelRevision": "a" * 40,
            },
            "model: a ModelScope revision names no commit",
        ),
        ({"cpuOffloadGb": -1}, "cpuOffloadGb: must be a number of GiB per GPU from 0 (no offload) to 4096"),
        ({"cpuOffloadGb": "16"}, "cpuOffloadGb: must be a number of GiB per GPU"),
        ({"cpuOffloadGb": True}, "cpuOffloadGb: must be a number of GiB per GPU"),
        (
            {"modelLoadMode": "runai_streamer"},
            "modelRevision: 'main' is not a 40-hex commit sha; modelLoadMode runai_streamer",
        ),
        (
            {"modelLoadMode": "runai_streamer", "modelRevision": "v1.0"},
            "modelRevision: 'v1.0' is not a 40-hex commit sha",
        ),
    ],
)
def test_each_invalid_value_fails_with_one_line_naming_the_key(values: dict, expected: str) -> None:
    with pytest.raises(UserError) as raised:
        settings(**values)
    message = str(raised.value)
    assert message.startswith(expected.split(":")[0] + ":"), message
    assert expected in message, message
    assert "\n" not in message


@pytest.mark.parametrize(
    "reference",
    [
        "vllm/vllm-openai:v0.33.0",
        "123456789012.dkr.ecr.us-east-1.amazonaws.com/llm-serving/dev:vllm-0.33.0-0123456789abcdef",
        "localhost:5000/serving:1",
        "serving@sha256:" + "0" * 64,
        "serving:latest@sha256:" + "0" * 64,  # the digest pins it
    ],
)
def test_pinned_serving_images_are_accepted(reference: str) -> None:
    assert settings(servingImage=reference).serving_image == reference


def test_serving_defaults_build_the_image_pull_locally_and_cache_compiles() -> None:
    defaults = settings()
    assert defaults.serving_image == "" and defaults.model_load_mode == "local" and defaults.compile_cache
    commit = "0123456789abcdef0123456789abcdef01234567"
    streamed = settings(modelLoadMode="runai_streamer", modelRevision=commit, compileCache=False)
    assert streamed.model_load_mode == "runai_streamer" and not streamed.compile_cache


def test_valid_values_shape_the_one_revision_shorthand() -> None:
    stack = settings(
        maxModelLen=8192,
        concurrency=4,
        dtype="bfloat16",
        quantization="fp8",
        gpus=["L4"],
        capacityType="spot",
        region="eu-west-1",
        tags={"team": "ml"},
    )
    (revision,) = stack.revisions
    assert revision.name == "primary" and revision.weight == 100 and revision.index is None
    assert (revision.max_model_len, revision.concurrency, revision.quantization) == (8192, 4, "fp8")
    assert revision.gpus == ("L4",) and revision.key("gpus") == "gpus"
    assert stack.tags == {"project": PROJECT, "stack": "test", "managed-by": "pulumi", "team": "ml"}
    assert settings(cluster={"mode": "existing", "name": "c1"}).cluster_name == "c1"
    assert settings().cluster_name == f"{PROJECT}-test"
    assert settings().revisions[0].served_name == settings().model


def test_monitoring_and_autoscaling_keys_left_out_keep_their_schema_defaults() -> None:
    schema = load_schema()
    defaults = settings()
    assert defaults.monitoring.storage().retention == schema["monitoring"].default["retention"]
    assert (
        defaults.autoscaling.thresholds().waiting_per_replica
        == schema["autoscaling"].default["waitingPerReplica"]
    )
    assert not defaults.autoscaling.thresholds().gpu_utilization  # 0 is off
    partial = settings(monitoring={"retention": "7d"}, autoscaling={"gpuUtilizationPercent": 70})
    assert partial.monitoring.storage().retention == "7d"
    assert partial.monitoring.storage().storage_gib == schema["monitoring"].default["storageGiB"]
    assert partial.monitoring.alert_thresholds().ttft_p95_slo_seconds == 2
    gpu = partial.autoscaling.thresholds()
    assert gpu.gpu_utilization and gpu.gpu_utilization_percent == 70
    assert gpu.kv_cache_usage == schema["autoscaling"].default["kvCacheUsage"]


def test_the_cluster_endpoint_is_private_unless_networks_are_listed() -> None:
    assert settings().cluster.public_access_cidrs == () and settings().cluster.private_access
    listed = settings(
        cluster={"mode": "new", "publicAccessCidrs": ["203.0.113.7/32"], "privateAccess": False}
    )
    assert listed.cluster.public_access_cidrs == ("203.0.113.7/32",) and not listed.cluster.private_access


def test_a_modelscope_model_is_served_under_its_bare_id_unless_named() -> None:
    (revision,) = settings(model="modelscope://Qwen/Qwen3-8B", modelRevision="master").revisions
    assert (revision.model, revision.served_name) == ("modelscope://Qwen/Qwen3-8B", "Qwen/Qwen3-8B")
    (named,) = settings(model="modelscope://Qwen/Qwen3-8B", servedModelName="qwen").revisions
    assert named.served_name == "qwen"


def test_revisions_inherit_every_key_they_leave_out() -> None:
    stack = settings(
        model="Qwen/Qwen3-8B",
        maxModelLen=8192,
        extraArgs=["--enable-prefix-caching"],
        cpuOffloadGb=2,
        revisions=[
            {"name": "stable", "weight": 90},
            {
                "name": "canary",
                "weight": 10,
                "modelRevision": "a" * 40,
                "maxModelLen": 16384,
                "extraArgs": [],
                "cpuOffloadGb": 0.5,
            },
        ],
    )
    stable, canary = stack.revisions
    assert (stable.cpu_offload_gb, canary.cpu_offload_gb) == (2.0, 0.5)
    assert (stable.model, stable.model_revision, stable.max_model_len) == ("Qwen/Qwen3-8B", "main", 8192)
    assert stable.extra_args == ("--enable-prefix-caching",) and canary.extra_args == ()
    assert (canary.model_revision, canary.max_model_len, canary.weight) == ("a" * 40, 16384, 10)
    assert canary.key("maxModelLen") == "revisions[1].maxModelLen"


@pytest.mark.parametrize(
    ("revisions", "expected"),
    [
        (
            [{"name": "a", "weight": 60}, {"name": "b", "weight": 30}],
            "revisions: traffic weights must sum to 100, got 90 (a=60, b=30)",
        ),
        ([{"name": "a", "weight": 101}], "revisions[0].weight: Input should be less than or equal to 100"),
        ([{"name": "a", "weight": -1}], "revisions[0].weight: Input should be greater than or equal to 0"),
        ([{"name": "a"}], "revisions[0].weight: is required"),
        ([{"name": "Canary", "weight": 100}], "revisions[0].name: 'Canary' is not a revision name"),
        (
            [{"name": "a", "weight": 50}, {"name": "a", "weight": 50}],
            "revisions[1].name: 'a' names two revisions",
        ),
        (
            [{"name": "a", "weight": 50}, {"name": "b", "weight": 50, "model": "Qwen/Qwen3-14B"}],
            "revisions[1].servedModelName: 'Qwen/Qwen3-14B' differs from 'Qwen/Qwen3-8B'",
        ),
        ([{"name": "a", "weight": 100, "dtype": "fp4"}], "revisions[0].dtype: must be one of"),
        ([{"name": "a", "weight": 100, "cpuOffloadGb": 1e6}], "revisions[0].cpuOffloadGb: must be a number"),
        ([{"name": "a", "weight": 100, "gpu": ["L4"]}], "revisions[0].gpu: is not a known field"),
        ([{"name": "a", "weight": 100, "extraArgs": "--x"}], "revisions[0].extraArgs: must be a list"),
        ({"name": "a"}, "revisions: must be a list of revisions"),
        (
            [
                {
                    "name": "a",
                    "weight": 100,
                    "loraAdapters": [{"name": "x", "source": "o/x"}, {"name": "x", "source": "o/y"}],
                }
            ],
            "revisions[0].loraAdapters[1].name: 'x' names two adapters",
        ),
        (
            [
                {
                    "name": "a",
                    "weight": 100,
                    "servedModelName": "qwen",
                    "loraAdapters": [{"name": "qwen", "source": "o/x"}],
                }
            ],
            "revisions[0].loraAdapters[0].name: 'qwen' is the model's own served name",
        ),
        (
            [
                {"name": "a", "weight": 50, "loraAdapters": [{"name": "x", "source": "o/x"}]},
                {"name": "b", "weight": 50},
            ],
            "revisions[1].loraAdapters: serves LoRA adapters [], revision 'a' ['x']",
        ),
    ],
)
def test_invalid_revisions_fail_naming_the_key(revisions: Any, expected: str) -> None:
    with pytest.raises(UserError) as raised:
        settings(revisions=revisions)
    assert str(raised.value).startswith(expected), str(raised.value)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("adapters", "expected"),
    [
        ([{"name": "sql lora", "source": "o/x"}], "loraAdapters[0].name: 'sql lora' is not an adapter name"),
        (
            [{"name": "sql", "source": "./sql"}],
            "loraAdapters[0].source: './sql' is neither a Hugging Face repo id (org/name) nor an S3 folder",
        ),
        (
            [{"name": "sql", "source": "s3://bucket"}],
            "loraAdapters[0].source: 's3://bucket' names a whole bucket; give the adapter's folder",
        ),
        (
            [{"name": "sql", "source": "s3://Bucket_1/sql"}],
            "loraAdapters[0].source: 'Bucket_1' in 's3://Bucket_1/sql' is not a valid S3 bucket name",
        ),
        (
            [{"name": "sql", "source": "o/x", "revision": "a..b"}],
            "loraAdapters[0].revision: 'a..b' is not a branch",
        ),
        ([{"name": "sql"}], "loraAdapters[0].source: is required"),
        ("o/x", "loraAdapters: must be a list of {name, source, revision} entries"),
    ],
)
def test_invalid_adapters_fail_naming_the_key(adapters: Any, expected: str) -> None:
    with pytest.raises(UserError) as raised:
        settings(loraAdapters=adapters)
    assert str(raised.value).startswith(expected), str(raised.value)


def test_adapters_are_inherited_and_a_revision_without_traffic_may_serve_others() -> None:
    adapters = [
        {"name": "sql", "source": "org/sql-lora"},
        {"name": "de", "source": "org/de", "revision": "v2"},
        {"name": "s3", "source": "s3://team-adapters/qwen3/s3-lora/"},
    ]
    stable, shadow = settings(
        loraAdapters=adapters,
        revisions=[{"name": "stable", "weight": 100}, {"name": "shadow", "weight": 0, "loraAdapters": []}],
    ).revisions
    assert [(a.name, a.source, a.revision) for a in stable.lora_adapters] == [
        ("sql", "org/sql-lora", "main"),
        ("de", "org/de", "v2"),
        ("s3", "s3://team-adapters/qwen3/s3-lora/", "main"),
    ]
    assert shadow.lora_adapters == ()


def test_a_revision_without_traffic_may_serve_another_name_and_keeps_running() -> None:
    stack = settings(
        revisions=[{"name": "a", "weight": 100}, {"name": "shadow", "weight": 0, "model": "Qwen/Qwen3-14B"}]
    )
    assert [r.weight for r in stack.revisions] == [100, 0]


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        ({"scheme": "public"}, "endpoint.scheme: must be 'internal' or 'internet-facing'"),
        (
            {"scheme": "internet-facing", "allowedCidrs": ["0.0.0.0/0"]},
            "endpoint.certificateArn: an internet",
        ),
        (
            {
                "scheme": "internet-facing",
                "certificateArn": "arn:aws:acm:us-east-1:123456789012:certificate/ab-12",
            },
            "endpoint.allowedCidrs: list the client networks",
        ),
        ({"scheme": "internal", "allowedCidrs": ["10.0.0.0/8"]}, "endpoint.scheme: certificateArn and"),
        (
            {"scheme": "internal", "allowedCidrs": ["everyone"]},
            "endpoint.allowedCidrs: must be a list of IPv4",
        ),
    ],
)
def test_invalid_endpoints_fail_naming_the_key(endpoint: dict, expected: str) -> None:
    with pytest.raises(UserError) as raised:
        settings(endpoint=endpoint)
    assert str(raised.value).startswith(expected), str(raised.value)


KEY_ARN = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def test_the_model_cache_uses_sse_s3_unless_the_stack_asks_for_kms() -> None:
    assert settings().model_cache.encryption == "s3" and settings().model_cache.kms_key_arn is None
    created = settings(modelCache={"encryption": "kms"}).model_cache
    assert (created.encryption, created.kms_key_arn) == ("kms", None)
    given = settings(modelCache={"encryption": "kms", "kmsKeyArn": KEY_ARN}).model_cache
    assert given.kms_key_arn == KEY_ARN


@pytest.mark.parametrize(
    ("model_cache", "region", "expected"),
    [
        ({"encryption": "aes"}, "us-east-1", "modelCache.encryption: must be 's3' or 'kms'"),
        ({"encryption": "s3", "kmsKeyArn": KEY_ARN}, "us-east-1", "modelCache.kmsKeyArn: a key applies only"),
        (
            {"encryption": "kms", "kmsKeyArn": "arn:aws:kms:us-east-1:123456789012:alias/cache"},
            "us-east-1",
            "modelCache.kmsKeyArn: 'arn:aws:kms:us-east-1:123456789012:alias/cache' is not a KMS key ARN",
        ),
        (
            {"encryption": "kms", "kmsKeyArn": KEY_ARN},
            "eu-west-1",
            "modelCache.kmsKeyArn: the key is in us-east-1 but the bucket in eu-west-1",
        ),
        ({"encryption": "kms", "keyArn": KEY_ARN}, "us-east-1", "modelCache.keyArn: is not a known field"),
    ],
)
def test_invalid_model_cache_encryption_fails_naming_the_key(
    model_cache: dict, region: str, expected: str
) -> None:
    with pytest.raises(UserError) as raised:
        settings(modelCache=model_cache, region=region)
    assert str(raised.value).startswith(expected), str(raised.value)
    assert "\n" not in str(raised.value)


# --- reading through pulumi.Config ----------------------------------------------------------------------------


def _load(stack_config: dict[str, Any]) -> config.StackSettings:
    install_mocks(stack="test")
    values, secret_keys = apply_project_config(stack_config, stack="test")
    pulumi.runtime.set_all_config(values, list(secret_keys))
    try:
        return config.load_settings()
    finally:
        pulumi.runtime.set_all_config({}, [])


def test_load_settings_reads_pulumi_config() -> None:
    loaded = _load(
        {
            "model": "meta-llama/Llama-3.1-8B-Instruct",
            "replicas": {"min": 0, "max": 3},
            "maxCostPerHour": 2.5,
            "apiKey": {"secure": "v1:x"},
        }
    )
    assert loaded.model == "meta-llama/Llama-3.1-8B-Instruct"
    assert (loaded.replicas.min, loaded.replicas.max) == (0, 3)
    assert loaded.max_cost_per_hour == 2.5
    assert loaded.api_key is not None and loaded.hf_token is None
    assert loaded.stack == "test"


def test_load_settings_reads_the_serving_keys() -> None:
    loaded = _load({"compileCache": False, "servingImage": "registry.example.com/serving:v1"})
    assert loaded.compile_cache is False and loaded.serving_image == "registry.example.com/serving:v1"
    assert _load({}).compile_cache is True


def test_load_settings_names_a_key_pulumi_cannot_parse() -> None:
    install_mocks(stack="test")
    values, secrets = apply_project_config({}, stack="test")
    values["llm-serving:maxModelLen"] = "lots"
    values["llm-serving:replicas"] = "{not json"
    pulumi.runtime.set_all_config(values, list(secrets))
    try:
        with pytest.raises(UserError, match=r"^maxModelLen: must be of type integer"):
            config.load_settings()
        values["llm-serving:maxModelLen"] = "0"
        pulumi.runtime.set_all_config(values, list(secrets))
        with pytest.raises(UserError, match=r"^replicas: must be of type object"):
            config.load_settings()
    finally:
        pulumi.runtime.set_all_config({}, [])


# --- the cost ceiling -----------------------------------------------------------------------------------------


def test_cost_ceiling_exceeded_names_the_key() -> None:
    stack = settings(replicas={"min": 1, "max": 3}, maxCostPerHour=1.0)
    plan = make_plan(priced_for_replicas=3, nodes_for_replicas=3, stack_cost_per_hour_usd=1.44)
    with pytest.raises(UserError) as raised:
        check_plan_cost(stack, {"primary": plan})
    message = str(raised.value)
    assert message.startswith(
        "maxCostPerHour: the plans cost $1.44/h at max replicas (primary: 3 x g6.xlarge spot at $0.48/h)"
    )
    assert "above the ceiling of $1.00/h" in message and "\n" not in message


def test_the_cost_is_what_each_plan_priced_for_its_revisions_max_replicas() -> None:
    """One computation: the planner prices whole nodes for replicas.max (spread or not); the ceiling check
    adds those figures up and refuses a plan priced for other replicas."""
    two = settings(revisions=[{"name": "a", "weight": 50}, {"name": "b", "weight": 50}])
    priced = {"a": make_plan(stack_cost_per_hour_usd=0.48), "b": make_plan(stack_cost_per_hour_usd=1.0)}
    assert check_plan_cost(two, priced) == 1.48
    unpriced = make_plan(cost_per_hour_usd=None, stack_cost_per_hour_usd=None)
    assert check_plan_cost(settings(maxCostPerHour=0.1), {"primary": unpriced}) is None
    spread = settings(replicas={"min": 2, "max": 3})
    with pytest.raises(ValueError, match="priced for other replicas"):
        check_plan_cost(spread, {"primary": make_plan(priced_for_replicas=3)})  # priced as packed
    assert check_plan_cost(
        spread, {"primary": make_plan(priced_for_replicas=3, priced_spread=True, stack_cost_per_hour_usd=3.0)}
    ) == pytest.approx(3.0)


def test_max_cost_per_hour_says_where_its_prices_come_from() -> None:
    """The description a user reads names the catalog's price region and the spot factor the planner uses;
    a catalog refreshed for another region, or a new factor, makes this fail until the text follows."""
    description = load_schema()["maxCostPerHour"].description
    assert (
        f"({load_catalog().region} on-demand list prices; spot is estimated as {SPOT_PRICE_FACTOR:g} x"
        in description
    )


# --- the README reference --------------------------------------------------------------------------------------


def test_readme_config_reference_matches_the_schema() -> None:
    readme = (PROJECT_FILE.parent / "README.md").read_text()
    assert readme == readme_with_reference(readme), (
        "README config reference is stale: run .venv/bin/python -m infra.config"
    )
    for key in load_schema():
        assert f"| `{key}` |" in readme
