"""ServingSecrets under recording mocks: generated or given API key, optional HF token, all secret."""

from __future__ import annotations

import pulumi

from infra.components.serving_secrets import ServingSecrets, ServingSecretsArgs
from infra.mock_runtime import sync_await
from infra.render import REDACTED
from tests.components.support import run

TAGS = {"project": "llm-serving", "stack": "test"}
COMPONENT = "llm-serving:index:ServingSecrets"


def test_without_a_key_one_is_generated_and_stored_as_a_secret() -> None:
    holder: dict[str, ServingSecrets] = {}
    recorded = run(
        lambda: holder.setdefault("s", ServingSecrets("s", ServingSecretsArgs(namespace="ns", tags=TAGS)))
    )
    assert sorted(recorded.names()) == sorted(
        [
            (COMPONENT, "s"),
            ("random:index/randomPassword:RandomPassword", "s-api-key"),
            ("kubernetes:core/v1:Secret", "s-api-key-secret"),
        ]
    )
    component = recorded.one(COMPONENT, "s")
    assert len(recorded.children_of(component)) == 2
    password = recorded.inputs("random:index/randomPassword:RandomPassword", "s-api-key")
    assert password["length"] >= 32 and password["special"] is False
    secret = recorded.inputs("kubernetes:core/v1:Secret", "s-api-key-secret")
    assert secret["metadata"] == {
        "name": "s-api-key",
        "namespace": "ns",
        "labels": {
            "app.kubernetes.io/managed-by": "pulumi",
            "app.kubernetes.io/part-of": "llm-serving",
            "llm-serving/project": "llm-serving",
            "llm-serving/stack": "test",
        },
    }
    assert secret["stringData"] == {"api-key": REDACTED}
    assert sync_await(holder["s"].api_key.is_secret())


def test_a_given_key_and_token_are_used_and_never_generated() -> None:
    recorded = run(
        lambda: ServingSecrets(
            "s",
            ServingSecretsArgs(
                namespace="ns",
                api_key=pulumi.Output.secret("sk-given"),
                hf_token=pulumi.Output.secret("hf_given"),
                tags=TAGS,
            ),
        )
    )
    assert not recorded.of_type("random:index/randomPassword:RandomPassword")
    token = recorded.inputs("kubernetes:core/v1:Secret", "s-hf-token-secret")
    assert token["stringData"] == {"token": REDACTED}
    assert (
        token["metadata"]["name"] == "s-hf-token"
        and token["metadata"]["labels"]["llm-serving/stack"] == "test"
    )
    raw = str([r.inputs for r in recorded.registrations])
    assert "sk-given" in raw  # the value reaches the Secret, wrapped as a secret on the wire...
    assert "sk-given" not in str([recorded.inputs(t, n) for t, n in recorded.names()])  # ...and never shown
