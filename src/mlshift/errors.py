"""The one error tree of mlshift.

Every error mlshift raises on purpose is a subclass of :class:`MlshiftError`, so
``except mlshift.MlshiftError`` catches all of them and nothing else::

    MlshiftError
    ├── ConfigError (also ValueError)       bad spec, mlshift.yaml, URI, CLI argument, payload
    │   ├── AdapterNotFound                 unknown target scheme / adapter not installed
    │   └── InvalidPayload                  a prediction request the model cannot take
    ├── UnsupportedOperation                the target lacks a capability the spec needs
    ├── IntegrityError                      an artifact whose bytes do not match its digest
    ├── RolloutFailed                       a deployment that was rolled back
    └── ProviderError                       the target refused or failed an operation
        ├── AuthError
        ├── DockerUnavailable               no Docker daemon (or no docker SDK) to talk to
        ├── NotFound (also LookupError)
        │   └── ImageNotFound               a container image (serving or base) is missing
        ├── Conflict
        │   └── LeaseLost                   another process took an endpoint's lock mid-change
        ├── QuotaExceeded
        └── ProviderTimeout (also TimeoutError)

A message says what was wrong, where, and what to do about it. Adapters translate SDK
exceptions at their boundary with ``raise ... from exc`` and keep the original on
:attr:`ProviderError.orig`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "AdapterNotFound",
    "AuthError",
    "ConfigError",
    "Conflict",
    "DockerUnavailable",
    "ImageNotFound",
    "IntegrityError",
    "InvalidPayload",
    "LeaseLost",
    "MlshiftError",
    "NotFound",
    "ProviderError",
    "ProviderTimeout",
    "QuotaExceeded",
    "RolloutFailed",
    "UnsupportedOperation",
]


class MlshiftError(Exception):
    """Root of every error mlshift raises on purpose.

    Attributes:
        hint: What the user can do about it, when mlshift knows.
    """

    #: A short machine-readable code, stable across releases (used in JSON output).
    code: str = "error"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message

    def to_dict(self) -> dict[str, Any]:
        """The error as JSON-ready data (used by ``--output json`` and the model server)."""
        data: dict[str, Any] = {"code": self.code, "type": type(self).__name__, "message": self.message}
        if self.hint:
            data["hint"] = self.hint
        return data


class ConfigError(MlshiftError, ValueError):
    """A spec, ``mlshift.yaml``, URI, option or argument is invalid.

    Attributes:
        field: The dotted path of the offending field, when there is one.
    """

    code = "config_error"

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        hint: str | None = None,
        loc: tuple[int | str, ...] = (),
        detail: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.field = field
        #: The field's location as a tuple (for adding a line number to ``mlshift.yaml`` errors).
        self.loc = loc
        #: The problem without the "where" prefix.
        self.detail = detail or message

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        if self.field:
            data["field"] = self.field
        return data


class AdapterNotFound(ConfigError):
    """No adapter is installed for a target's scheme."""

    code = "adapter_not_found"


class InvalidPayload(ConfigError):
    """A prediction request does not fit the model (wrong shape, type or format)."""

    code = "invalid_payload"


class UnsupportedOperation(MlshiftError):
    """The target cannot do what was asked (a missing capability)."""

    code = "unsupported"


class IntegrityError(MlshiftError):
    """An artifact's bytes do not match the digest it was registered with."""

    code = "integrity_error"


class RolloutFailed(MlshiftError):
    """A deployment failed its health gate or errored, and was rolled back.

    Attributes:
        reason: Why the rollout stopped.
        measurements: The numbers the decision was made on.
    """

    code = "rollout_failed"

    def __init__(
        self,
        message: str,
        *,
        reason: str = "",
        measurements: Mapping[str, float] | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.reason = reason
        self.measurements = dict(measurements or {})


class ProviderError(MlshiftError):
    """The target refused or failed an operation.

    Attributes:
        provider: The adapter name (``local``, ``sagemaker``, ...).
        provider_code: The provider's own error code, when it has one.
        orig: The original exception, when one was translated.
    """

    code = "provider_error"

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        provider_code: str | None = None,
        orig: BaseException | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.provider = provider
        self.provider_code = provider_code
        self.orig = orig

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        if self.provider:
            data["provider"] = self.provider
        if self.provider_code:
            data["provider_code"] = self.provider_code
        return data


class AuthError(ProviderError):
    """Credentials are missing, expired or not allowed to do this."""

    code = "auth_error"


class NotFound(ProviderError, LookupError):
    """A model, version, alias or endpoint does not exist."""

    code = "not_found"


class Conflict(ProviderError):
    """The resource exists already, or someone else is changing it right now."""

    code = "conflict"


class LeaseLost(Conflict):
    """The lock on an endpoint was lost while this process was changing it; the change stopped."""

    code = "lease_lost"


class QuotaExceeded(ProviderError):
    """The target's quota or a local resource limit was hit."""

    code = "quota_exceeded"


class ProviderTimeout(ProviderError, TimeoutError):
    """An operation did not finish in the time allowed."""

    code = "timeout"


class DockerUnavailable(ProviderError):
    """No Docker daemon answers (or the Docker SDK for Python is not installed)."""

    code = "docker_unavailable"


class ImageNotFound(NotFound):
    """A container image mlshift needs (the serving image or its base) is not there.

    Attributes:
        image: The image's name.
    """

    code = "image_not_found"

    def __init__(self, message: str, *, image: str, hint: str | None = None) -> None:
        super().__init__(message, provider="docker", hint=hint)
        self.image = image
