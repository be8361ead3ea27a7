"""mlshift: register, deploy safely and run ML pipelines on any cloud or a laptop.

>>> import mlshift
>>> client = mlshift.connect("local://")            # doctest: +SKIP
>>> client.models.register("iris", "iris.skops")      # doctest: +SKIP

Public names are imported lazily so that ``import mlshift`` stays fast; they behave exactly
as if imported eagerly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlshift._lazy import lazy_exports

__version__ = "0.1.0"

if TYPE_CHECKING:
    from mlshift._client import Client, Prediction, connect
    from mlshift._progress import ProgressPrinter
    from mlshift.adapter import Capability, EndpointState, Invocation, VariantState
    from mlshift.errors import (
        AdapterNotFound,
        AuthError,
        ConfigError,
        Conflict,
        IntegrityError,
        InvalidPayload,
        MlshiftError,
        NotFound,
        ProviderError,
        ProviderTimeout,
        QuotaExceeded,
        RolloutFailed,
        UnsupportedOperation,
    )
    from mlshift.plan import ApplyResult, Plan
    from mlshift.specs.endpoint import Autoscaling, Compute, EndpointSpec, Variant
    from mlshift.specs.model import ColumnSpec, ModelRef, ModelSpec, ModelVersion, Signature
    from mlshift.specs.monitor import CaptureSpec, MonitorSpec
    from mlshift.specs.project import ProjectFile

_LAZY: dict[str, str] = {
    "Client": "mlshift._client",
    "Prediction": "mlshift._client",
    "connect": "mlshift._client",
    "ProgressPrinter": "mlshift._progress",
    "Capability": "mlshift.adapter",
    "EndpointState": "mlshift.adapter",
    "Invocation": "mlshift.adapter",
    "VariantState": "mlshift.adapter",
    "ApplyResult": "mlshift.plan",
    "Plan": "mlshift.plan",
    "Autoscaling": "mlshift.specs.endpoint",
    "Compute": "mlshift.specs.endpoint",
    "EndpointSpec": "mlshift.specs.endpoint",
    "Variant": "mlshift.specs.endpoint",
    "ColumnSpec": "mlshift.specs.model",
    "ModelRef": "mlshift.specs.model",
    "ModelSpec": "mlshift.specs.model",
    "ModelVersion": "mlshift.specs.model",
    "Signature": "mlshift.specs.model",
    "CaptureSpec": "mlshift.specs.monitor",
    "MonitorSpec": "mlshift.specs.monitor",
    "ProjectFile": "mlshift.specs.project",
    **dict.fromkeys(
        [
            "AdapterNotFound",
            "AuthError",
            "ConfigError",
            "Conflict",
            "IntegrityError",
            "InvalidPayload",
            "MlshiftError",
            "NotFound",
            "ProviderError",
            "ProviderTimeout",
            "QuotaExceeded",
            "RolloutFailed",
            "UnsupportedOperation",
        ],
        "mlshift.errors",
    ),
}

__all__ = [
    "AdapterNotFound",
    "ApplyResult",
    "AuthError",
    "Autoscaling",
    "Capability",
    "CaptureSpec",
    "Client",
    "ColumnSpec",
    "Compute",
    "ConfigError",
    "Conflict",
    "EndpointSpec",
    "EndpointState",
    "IntegrityError",
    "InvalidPayload",
    "Invocation",
    "MlshiftError",
    "ModelRef",
    "ModelSpec",
    "ModelVersion",
    "MonitorSpec",
    "NotFound",
    "Plan",
    "Prediction",
    "ProgressPrinter",
    "ProjectFile",
    "ProviderError",
    "ProviderTimeout",
    "QuotaExceeded",
    "RolloutFailed",
    "Signature",
    "UnsupportedOperation",
    "Variant",
    "VariantState",
    "__version__",
    "connect",
]


__getattr__, __dir__ = lazy_exports(globals(), _LAZY)
