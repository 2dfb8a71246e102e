"""The Hugging Face Hub failures a user can fix, as one-line UserErrors: shared by the planner's model
lookup and the model cache's push, so both name the same cause the same way."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from infra.errors import UserError


@contextmanager
def hub_errors(
    model: str, revision: str, *, unreachable_hint: str = "", did_you_mean: str = ""
) -> Iterator[None]:
    """Hub failures -> one-line UserError (never the token, never a traceback).

    `unreachable_hint` is added when the Hub cannot be reached, to say what works offline; `did_you_mean`
    (e.g. "did you mean Qwen/Qwen3-8B?") when the repository is unknown or the Hub cannot tell.
    """
    import httpx2
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{model}@{revision}"
    suggestion = f"; {did_you_mean}" if did_you_mean else ""
    try:
        yield
    except GatedRepoError:
        raise UserError(
            f"{where} is gated: accept its licence on the Hub and set HF_TOKEN", key="HF_TOKEN"
        ) from None
    except RepositoryNotFoundError:
        raise UserError(
            f"{model} is not on the Hub, or is private and HF_TOKEN is missing or has no access{suggestion}",
            key="model",
        ) from None
    except RevisionNotFoundError:
        raise UserError(f"{where}: no such revision on the Hub", key="--revision") from None
    except HFValidationError:
        raise UserError(
            f"{model!r} is not a Hugging Face repo id (org/name: letters, digits, '-', '_', '.'){suggestion}",
            key="model",
        ) from None
    except HfHubHTTPError as error:
        raise UserError(f"{where}: the Hub answered {error}", key="hub") from None
    except (httpx2.TransportError, LocalEntryNotFoundError) as error:
        hints = "".join(f"; {text}" for text in (did_you_mean, unreachable_hint) if text)
        # Name HF_ENDPOINT only when the user set it: then it may be what is wrong.
        raise UserError(
            f"{where}: cannot reach the Hugging Face Hub at {constants.ENDPOINT} ({error}){hints}",
            key="HF_ENDPOINT" if os.environ.get("HF_ENDPOINT") else None,
        ) from None
