"""Azure ML's errors, translated into mlshift's error tree at the adapter's boundary.

Every SDK exception the adapter lets through becomes one of :mod:`mlshift.errors` (the
original stays on ``.orig``). Four faults get a class of their own here, because each has its
own fix::

    Conflict
    ├── EndpointNameTaken        the endpoint name is used in the region (by another workspace)
    └── EndpointBusy             the endpoint is "Updating": Azure refuses a second change
    ProviderError
    ├── Throttled                429 after the SDK's own retries (which honour Retry-After)
    └── DeploymentUnhealthy      a deployment never became healthy (with its last log lines)
    QuotaExceeded                from mlshift.errors: not enough cores / instances
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

from mlshift.errors import (
    AuthError,
    ConfigError,
    Conflict,
    MlshiftError,
    NotFound,
    ProviderError,
    ProviderTimeout,
    QuotaExceeded,
)

__all__ = [
    "DeploymentUnhealthy",
    "EndpointBusy",
    "EndpointNameTaken",
    "Throttled",
    "azure_errors",
    "error_code",
    "translate",
]

PROVIDER = "azureml"


class EndpointNameTaken(Conflict):
    """The endpoint name is in use in the workspace's region (names are unique per region)."""

    code = "endpoint_name_taken"


class EndpointBusy(Conflict):
    """The endpoint is being updated; Azure refuses another change until that one ends."""

    code = "endpoint_busy"


class Throttled(ProviderError):
    """Azure kept answering 429 after the SDK's retries (each after its ``Retry-After``)."""

    code = "throttled"


class DeploymentUnhealthy(ProviderError):
    """A deployment that never became healthy; the message carries its last log lines.

    Attributes:
        logs: The container's last log lines, as Azure returned them.
    """

    code = "deployment_unhealthy"

    def __init__(self, message: str, *, logs: str = "", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.logs = logs


_QUOTA = ("QuotaExceeded", "InsufficientQuota", "OutOfQuota", "SubscriptionQuotaExceeded")
_TAKEN = ("EndpointNameNotAvailable", "EndpointNameAlreadyInUse")
_BUSY = ("EndpointUpdating", "OperationInProgress", "ResourceBusy")


def error_code(exc: BaseException) -> str:
    """Azure's error code of an SDK exception (``""`` if it has none)."""
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None)
    if code:
        return str(code)
    response = getattr(exc, "response", None)
    if response is not None:
        try:
            body = json.loads(response.text())
            return str(body.get("error", {}).get("code", ""))
        except (ValueError, AttributeError, TypeError):
            return ""
    return ""


def _message(exc: BaseException) -> str:
    error = getattr(exc, "error", None)
    text = getattr(error, "message", None) or getattr(exc, "message", None) or str(exc)
    return str(text).strip().splitlines()[0] if str(text).strip() else type(exc).__name__


def translate(exc: BaseException, what: str) -> MlshiftError:
    """The mlshift error for an exception the SDK raised while doing ``what``."""
    if isinstance(exc, MlshiftError):
        return exc
    from azure.core import exceptions as az

    code = error_code(exc)
    status = getattr(exc, "status_code", None) or getattr(getattr(exc, "response", None), "status_code", None)
    text = f"{what}: {_message(exc)}"
    common: dict[str, Any] = {"provider": PROVIDER, "provider_code": code or None, "orig": exc}
    if isinstance(exc, az.ClientAuthenticationError) or status in (401, 403):
        return AuthError(
            text,
            hint="check `az login` (or the AZURE_* variables) and that this identity has a role "
            "such as AzureML Data Scientist on the workspace",
            **common,
        )
    if code in _TAKEN:
        return EndpointNameTaken(
            text,
            hint="endpoint names are unique per Azure region, across workspaces: choose another name",
            **common,
        )
    if code in _BUSY:
        return EndpointBusy(text, hint="wait for the running update to finish, then apply again", **common)
    if code in _QUOTA:
        return QuotaExceeded(
            text,
            hint="ask for more quota for this VM family in the workspace's region, or use a smaller "
            "size / fewer replicas",
            **common,
        )
    if status == 429:
        return Throttled(
            text, hint="Azure is throttling this identity: wait a minute and apply again", **common
        )
    if isinstance(exc, az.ResourceNotFoundError) or status == 404:
        return NotFound(text, **common)
    if isinstance(exc, az.ResourceExistsError) or status == 409:
        return Conflict(text, **common)
    if status == 400:
        return ConfigError(f"{text} (Azure refused the request)")
    if isinstance(exc, (az.ServiceRequestTimeoutError, az.ServiceResponseTimeoutError, TimeoutError)):
        return ProviderTimeout(text, **common)
    return ProviderError(text, **common)


@contextlib.contextmanager
def azure_errors(what: str) -> Iterator[None]:
    """Translate what the SDK raises inside the block (``what``: for the message)."""
    try:
        yield
    except MlshiftError:
        raise
    except Exception as exc:
        module = type(exc).__module__
        if module.startswith(("azure.", "msrest", "requests")):
            raise translate(exc, what) from exc
        raise
