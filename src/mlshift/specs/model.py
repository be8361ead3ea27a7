"""Model specs: what to register (:class:`ModelSpec`) and what was registered (:class:`ModelVersion`)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

from pydantic import Field, field_validator

from mlshift.errors import ConfigError
from mlshift.specs._base import Name, SpecModel

__all__ = [
    "FRAMEWORKS",
    "ColumnSpec",
    "DType",
    "Framework",
    "ModelRef",
    "ModelSpec",
    "ModelVersion",
    "Signature",
]

Framework = Literal["sklearn", "onnx", "xgboost", "lightgbm", "mlflow", "predictor"]
#: The frameworks the model server can load, in the order they are documented.
FRAMEWORKS: tuple[str, ...] = ("sklearn", "onnx", "xgboost", "lightgbm", "mlflow", "predictor")

DType = Literal["float32", "float64", "int32", "int64", "bool", "string"]


class ColumnSpec(SpecModel):
    """One input or output column of a model signature."""

    name: str | None = None
    dtype: DType = "float64"


class Signature(SpecModel):
    """What a model takes and returns; the model server checks requests against it.

    Attributes:
        inputs: One entry per feature, in the order the model expects them.
        outputs: The output columns, when known.
    """

    inputs: tuple[ColumnSpec, ...] = Field(min_length=1)
    outputs: tuple[ColumnSpec, ...] = ()

    @property
    def n_features(self) -> int:
        """The number of input features."""
        return len(self.inputs)

    @property
    def column_names(self) -> tuple[str, ...] | None:
        """Input names, when every input has one."""
        names = tuple(c.name for c in self.inputs)
        if all(n is not None for n in names):
            return names  # type: ignore[return-value]
        return None

    @classmethod
    def from_columns(cls, names: list[str] | tuple[str, ...], dtype: DType = "float64") -> Signature:
        """A signature of named numeric columns."""
        return cls(inputs=tuple(ColumnSpec(name=n, dtype=dtype) for n in names))

    @classmethod
    def numeric(cls, n_features: int, dtype: DType = "float64") -> Signature:
        """A signature of ``n_features`` unnamed numeric columns."""
        return cls(inputs=tuple(ColumnSpec(dtype=dtype) for _ in range(n_features)))


class ModelSpec(SpecModel):
    """A model to register: a name, an artifact on disk, and what it is.

    Attributes:
        name: The model's name; versions are numbered per name by the target.
        path: The artifact: a file (``.skops``, ``.joblib``, ``.onnx``, an XGBoost ``.json``
            or ``.ubj``, a LightGBM text model) or a directory (an MLflow model folder with
            its ``MLmodel`` file, or a ``predictor.py`` with a ``Predictor`` class and
            whatever it loads).
        framework: How the model server loads it.
        signature: Input columns; inferred from the artifact when omitted.
        metrics: Numbers to keep with the version (``accuracy``, ``auc``, ...).
        tags: Free-form string labels.
    """

    name: Name
    path: str
    framework: Framework
    signature: Signature | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    tags: dict[str, str] = Field(default_factory=dict)
    description: str | None = None


class ModelVersion(SpecModel):
    """One registered, immutable version of a model.

    Attributes:
        digest: ``sha256:<hex>`` of the artifact's bytes; checked again at load time.
        artifact_uri: Where the target keeps the artifact.
        aliases: Movable names (``champion``, ``staging``) pointing at this version.
    """

    name: str
    version: str
    artifact_uri: str
    digest: str
    framework: Framework
    signature: Signature | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    tags: dict[str, str] = Field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    description: str | None = None
    created_at: datetime

    @property
    def ref(self) -> ModelRef:
        """The exact reference to this version (``name:version``)."""
        return ModelRef(name=self.name, version=self.version)

    def _repr_html_(self) -> str:
        """How a notebook shows the version (escaped; no secrets)."""
        from mlshift._html import model_version_html

        return model_version_html(self)

    @field_validator("digest")
    @classmethod
    def _digest_format(cls, value: str) -> str:
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", value):
            raise ValueError("digest must look like 'sha256:<64 hex digits>'")
        return value


_REF = re.compile(
    r"^(?P<name>[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)"
    r"(?:(?::(?P<version>[A-Za-z0-9._-]+))|(?:@(?P<alias>[A-Za-z][A-Za-z0-9_-]*)))?$"
)


class ModelRef(SpecModel):
    """A reference to a model version: ``name:version``, ``name@alias`` or ``name`` (latest)."""

    name: str
    version: str | None = None
    alias: str | None = None

    @classmethod
    def parse(cls, text: str | ModelRef) -> ModelRef:
        """Parse ``NAME``, ``NAME:VERSION`` or ``NAME@ALIAS``.

        Raises:
            ConfigError: if the text is none of those forms.
        """
        if isinstance(text, ModelRef):
            return text
        match = _REF.match(text.strip()) if isinstance(text, str) else None
        if not match:
            raise ConfigError(
                f"invalid model reference {text!r}",
                hint="write NAME:VERSION (iris:3), NAME@ALIAS (iris@champion) or NAME for the latest",
            )
        return cls(name=match["name"], version=match["version"], alias=match["alias"])

    @property
    def is_exact(self) -> bool:
        """True when the reference names a fixed version."""
        return self.version is not None

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}:{self.version}"
        if self.alias is not None:
            return f"{self.name}@{self.alias}"
        return self.name
