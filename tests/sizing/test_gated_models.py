"""A gated model with no token must not pass silently: the catalog's `gated` flag, read by a pure check
the program runs before anything is deployed."""

from __future__ import annotations

import pytest
import yaml

from infra.sizing.models import CATALOG_PATH, gated_without_token, load_model_catalog


@pytest.mark.parametrize(
    ("model", "has_token", "refused"),
    [
        ("meta-llama/Llama-3.3-70B-Instruct", False, True),  # the prod stack's model
        ("META-LLAMA/llama-3.3-70b-instruct", False, True),  # the Hub's ids are case-insensitive
        ("meta-llama/Llama-3.3-70B-Instruct", True, False),
        ("Qwen/Qwen3-8B", False, False),  # not gated
        ("someone/not-in-the-catalog", False, False),  # unknown offline: the Hub decides at fill time
        ("./models/local", False, False),
    ],
)
def test_gated_models_need_a_token(model: str, has_token: bool, refused: bool) -> None:
    message = gated_without_token(model, has_token=has_token, stack="prod")
    assert (message is not None) == refused
    if message is not None:
        assert "meta-llama/Llama-3.3-70B-Instruct is gated" in message
        assert "`pulumi config set --secret hfToken hf_... -s prod`" in message
        assert "https://huggingface.co/meta-llama/Llama-3.3-70B-Instruct" in message
        assert "\n" not in message


def test_every_gated_catalog_model_is_refused_without_a_token() -> None:
    gated = [m["id"] for m in yaml.safe_load(CATALOG_PATH.read_text())["models"] if m.get("gated")]
    assert gated and all(load_model_catalog()[m.lower()].gated for m in gated)
    for model in gated:
        assert gated_without_token(model, has_token=False, stack="s") is not None
        assert gated_without_token(model, has_token=True, stack="s") is None
