"""Google API errors translated into mlshift's error tree, with hints for Vertex AI.

``google.api_core.exceptions`` is imported only when an error is translated, so importing this
module imports no Google library.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from mlshift.errors import (
    AuthError,
    Conflict,
    MlshiftError,
    NotFound,
    ProviderError,
    ProviderTimeout,
    QuotaExceeded,
)

__all__ = ["EtagConflict", "VertexApiError", "google_errors", "translate"]

PROVIDER = "vertex"


class VertexApiError(ProviderError):
    """Vertex AI (or GCS, or Cloud Monitoring) refused a request for a reason mlshift does not map."""

    code = "vertex_api_error"


class EtagConflict(Conflict):
    """An endpoint changed between reading it and updating it (its ``etag`` no longer matched)."""

    code = "etag_conflict"


def _status(exc: BaseException) -> str:
    """The canonical status (``FAILED_PRECONDITION``): over REST it is only in the error body,
    and the exception class follows the HTTP code (a 400 is ``BadRequest`` whatever it meant)."""
    code = getattr(exc, "grpc_status_code", None)
    if code is not None:
        return str(getattr(code, "name", code))
    response = getattr(exc, "response", None)
    try:
        status = response.json()["error"]["status"]  # type: ignore[union-attr]
    except Exception:
        return ""
    return status if isinstance(status, str) else ""


def translate(exc: BaseException, what: str) -> MlshiftError:
    """The mlshift error for a Google API exception raised while doing ``what``."""
    from google.api_core import exceptions as g

    message = getattr(exc, "message", None) or str(exc)
    canonical = _status(exc)
    status = canonical or type(exc).__name__
    text = f"Vertex AI refused to {what}: {message}"
    if isinstance(exc, g.TooManyRequests) or canonical == "RESOURCE_EXHAUSTED":
        return QuotaExceeded(
            text,
            provider=PROVIDER,
            provider_code=status,
            orig=exc,
            hint="a Vertex AI quota was hit (machines, GPUs or requests per minute in this region): see "
            "IAM & Admin > Quotas in the Cloud console, ask for more, or use a smaller size; "
            "the next apply continues from what exists",
        )
    if isinstance(exc, (g.Unauthenticated, g.PermissionDenied)) or canonical in (
        "UNAUTHENTICATED",
        "PERMISSION_DENIED",
    ):
        return AuthError(
            text,
            provider=PROVIDER,
            provider_code=status,
            orig=exc,
            hint="check Application Default Credentials (`gcloud auth application-default login`) "
            "and that the account has roles/aiplatform.user and storage access to the staging bucket",
        )
    if isinstance(exc, g.NotFound) or canonical == "NOT_FOUND":
        return NotFound(text, provider=PROVIDER, provider_code=status, orig=exc)
    if isinstance(exc, g.Aborted) or canonical == "ABORTED" or "etag" in message.lower():
        return EtagConflict(
            text,
            provider=PROVIDER,
            provider_code=status,
            orig=exc,
            hint="someone else changed the endpoint at the same time: run the command again",
        )
    if isinstance(exc, (g.AlreadyExists, g.Conflict, g.FailedPrecondition)) or canonical in (
        "ALREADY_EXISTS",
        "FAILED_PRECONDITION",
    ):
        return Conflict(text, provider=PROVIDER, provider_code=status, orig=exc)
    if isinstance(exc, (g.DeadlineExceeded, g.GatewayTimeout)) or canonical == "DEADLINE_EXCEEDED":
        return ProviderTimeout(
            text,
            provider=PROVIDER,
            provider_code=status,
            orig=exc,
            hint="the model container did not answer in time: read its logs in Cloud Logging "
            '(resource.type="aiplatform.googleapis.com/Endpoint"), and check that it listens on '
            "AIP_HTTP_PORT and answers AIP_HEALTH_ROUTE",
        )
    return VertexApiError(text, provider=PROVIDER, provider_code=status, orig=exc)


@contextlib.contextmanager
def google_errors(what: str) -> Iterator[None]:
    """Translate Google API exceptions raised inside the block (others pass through)."""
    try:
        yield
    except MlshiftError:
        raise
    except Exception as exc:
        if type(exc).__module__.startswith("google.api_core"):
            raise translate(exc, what) from exc
        raise
