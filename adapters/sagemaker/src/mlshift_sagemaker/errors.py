"""AWS errors → the mlshift error tree, keeping the AWS error code and the original exception.

=====================================================  ==========================================
AWS                                                    mlshift
=====================================================  ==========================================
throttling (after botocore's retries), quotas          :class:`~mlshift.errors.QuotaExceeded`
``ValidationException`` and other bad requests         :class:`AwsValidationError` (a ConfigError)
"Could not find ...", ``NoSuchKey``, 404               :class:`~mlshift.errors.NotFound`
access denied, expired or missing credentials          :class:`~mlshift.errors.AuthError`
"already exists", in-progress, failed preconditions    :class:`~mlshift.errors.Conflict`
timeouts, unreachable endpoints                        :class:`~mlshift.errors.ProviderTimeout`
anything else (5xx after retries, ...)                 :class:`~mlshift.errors.ProviderError`
=====================================================  ==========================================

SageMaker reports a missing resource as a ``ValidationException`` whose message starts with
"Could not find", so the message is read as well as the code.

botocore is imported only once an error has happened (``import mlshift_sagemaker`` stays light).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
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

__all__ = ["AwsValidationError", "aws_errors", "error_code", "translate"]

PROVIDER = "sagemaker"

_THROTTLING = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "SlowDown",
        "ProvisionedThroughputExceededException",
        "BandwidthLimitExceeded",
        "EC2ThrottledException",
        "PriorRequestNotComplete",
    }
)
_QUOTA = frozenset(
    {
        "ResourceLimitExceeded",
        "LimitExceeded",
        "LimitExceededException",
        "ServiceQuotaExceededException",
        "QuotaExceeded",
        "TooManyBuckets",
    }
)
_AUTH = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnauthorizedOperation",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "ExpiredTokenException",
        "RequestExpired",
        "InvalidAccessKeyId",
        "AuthFailure",
        "MissingAuthenticationToken",
        "IncompleteSignature",
        "InvalidToken",
    }
)
_NOT_FOUND = frozenset(
    {
        "ResourceNotFound",
        "ResourceNotFoundException",
        "NoSuchKey",
        "NoSuchBucket",
        "NotFound",
        "404",
        "NoSuchEntity",
        "RepositoryNotFoundException",
        "ImageNotFoundException",
        "ObjectNotFoundException",  # Application Auto Scaling
    }
)
_CONFLICT = frozenset(
    {
        "ResourceInUse",
        "ResourceInUseException",
        "ConflictException",
        "ConcurrentModificationException",
        "ConditionalRequestConflict",
        "PreconditionFailed",
        "412",
        "BucketAlreadyExists",
        "OperationAborted",
    }
)
_VALIDATION = frozenset(
    {
        "ValidationException",
        "ValidationError",
        "InvalidParameterValue",
        "InvalidParameterValueException",
        "InvalidParameterCombination",
        "MissingParameter",
        "InvalidRequest",
        "InvalidArgument",
        "MalformedXML",
        "InvalidBucketName",
        "SerializationException",
    }
)


class AwsValidationError(ConfigError):
    """AWS refused a request as invalid: a :class:`ConfigError` that keeps the AWS details.

    Attributes:
        provider: ``sagemaker``.
        provider_code: The AWS error code (``ValidationException``).
        orig: The botocore exception.
    """

    code = "config_error"

    def __init__(
        self,
        message: str,
        *,
        provider_code: str | None = None,
        orig: BaseException | None = None,
        hint: str | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint, field=field)
        self.provider = PROVIDER
        self.provider_code = provider_code
        self.orig = orig

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        data["provider"] = PROVIDER
        if self.provider_code:
            data["provider_code"] = self.provider_code
        return data


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ``ClientError`` (``""`` for anything else)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", "") or "")
    return ""


def _message(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        msg = response.get("Error", {}).get("Message")
        if msg:
            return str(msg)
    return str(exc)


def _is_not_found_message(message: str) -> bool:
    lowered = message.lower()
    return any(
        s in lowered
        for s in (
            "could not find",
            "does not exist",
            "not found",
            "cannot find",
            "no such",
            "not exist",
            "not present",
        )
    )


def _is_conflict_message(message: str) -> bool:
    lowered = message.lower()
    return any(
        s in lowered
        for s in ("already exist", "in-progress", "in progress", "is being", "cannot update", "currently")
    )


def translate(exc: BaseException, what: str) -> MlshiftError:
    """The mlshift error for a botocore exception raised while doing ``what``.

    Args:
        exc: A ``botocore.exceptions.ClientError`` or ``BotoCoreError``.
        what: The operation in the user's words (``create endpoint 'fraud'``).
    """
    import botocore.exceptions as bx

    cause = exc.__cause__ or exc.__context__
    if not isinstance(exc, bx.ClientError) and isinstance(cause, bx.ClientError):
        # boto3's transfer manager wraps the ClientError of a failed upload in its own error.
        return translate(cause, what)
    if isinstance(exc, bx.ClientError):
        code = error_code(exc)
        message = _message(exc)
        text = f"{what}: {message} (AWS {code})"
        if code in _THROTTLING:
            return QuotaExceeded(
                text,
                provider=PROVIDER,
                provider_code=code,
                orig=exc,
                hint="AWS kept throttling after botocore's retries; retry later or raise max_attempts",
            )
        if code in _QUOTA:
            return QuotaExceeded(
                text,
                provider=PROVIDER,
                provider_code=code,
                orig=exc,
                hint="request a higher limit in the Service Quotas console, or use fewer or smaller "
                "instances",
            )
        if code in _AUTH:
            return AuthError(
                text,
                provider=PROVIDER,
                provider_code=code,
                orig=exc,
                hint="check the credentials of the standard AWS chain (aws sts get-caller-identity) "
                "and that their policy allows this action",
            )
        if code in _NOT_FOUND or (code in _VALIDATION and _is_not_found_message(message)):
            return NotFound(text, provider=PROVIDER, provider_code=code, orig=exc)
        if code in _CONFLICT or (code in _VALIDATION and _is_conflict_message(message)):
            return Conflict(
                text,
                provider=PROVIDER,
                provider_code=code,
                orig=exc,
                hint="someone else may be changing the same resource; try again when it is done",
            )
        if code in _VALIDATION:
            return AwsValidationError(text, provider_code=code, orig=exc)
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return ProviderError(
            text,
            provider=PROVIDER,
            provider_code=code or (str(status) if status else None),
            orig=exc,
            hint="AWS failed the request after botocore's retries; try again later"
            if isinstance(status, int) and status >= 500
            else None,
        )
    if isinstance(exc, (bx.NoCredentialsError, bx.PartialCredentialsError, bx.NoAuthTokenError)):
        return AuthError(
            f"{what}: no AWS credentials found",
            provider=PROVIDER,
            orig=exc,
            hint="configure the standard AWS chain: AWS_PROFILE, aws sso login, environment "
            "variables or an instance role",
        )
    if isinstance(exc, bx.ParamValidationError):
        # botocore refused the request before sending it (a value outside the API's limits).
        return AwsValidationError(f"{what}: {exc}", orig=exc)
    if isinstance(exc, bx.EndpointConnectionError):
        return ProviderError(
            f"{what}: {exc}",
            provider=PROVIDER,
            orig=exc,
            hint="check the network, the region, and AWS_ENDPOINT_URL if it is set",
        )
    if isinstance(exc, bx.TokenRetrievalError):
        return AuthError(f"{what}: {exc}", provider=PROVIDER, orig=exc, hint="run aws sso login again")
    if isinstance(exc, (bx.ConnectTimeoutError, bx.ReadTimeoutError)):
        return ProviderTimeout(f"{what}: {exc}", provider=PROVIDER, orig=exc)
    if isinstance(exc, bx.NoRegionError):
        return ConfigError(
            f"{what}: no AWS region", hint="write the region in the URI: sagemaker://us-east-1"
        )
    return ProviderError(f"{what}: {exc}", provider=PROVIDER, orig=exc)


def _is_aws(exc: BaseException) -> bool:
    return type(exc).__module__.startswith(("botocore", "boto3", "s3transfer"))


@contextmanager
def aws_errors(what: str) -> Iterator[None]:
    """Translate AWS exceptions raised inside the block (``raise ... from`` the original)."""
    try:
        yield
    except MlshiftError:
        raise
    except Exception as exc:
        if not _is_aws(exc):
            raise
        raise translate(exc, what) from exc
