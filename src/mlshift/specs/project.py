"""``mlshift.yaml``: named targets and the desired models and endpoints, in one file."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from mlshift.specs._base import SpecModel
from mlshift.specs.endpoint import EndpointSpec
from mlshift.specs.model import ModelSpec
from mlshift.specs.monitor import MonitorSpec

__all__ = ["ProjectFile", "TargetConfig"]


class TargetConfig(SpecModel):
    """A named target: a URI plus adapter options (``targets: {prod: sagemaker://us-east-1}``).

    Options are passed to the adapter as they are and never printed: they may hold secrets.
    """

    uri: str
    options: dict[str, Any] = Field(default_factory=dict)


class ProjectFile(SpecModel):
    """The contents of ``mlshift.yaml``.

    Attributes:
        version: The file format version (1).
        default_target: The target used when none is given (else ``MLSHIFT_TARGET``, else ``local://``).
        targets: Target name → URI or ``{uri, options}``.
        models: Models to register; paths are relative to the file.
        endpoints: Endpoints to converge to.
        monitors: Monitors of endpoints' captured traffic (``mlshift monitors apply`` saves them).
    """

    version: int = 1
    default_target: str | None = None
    targets: dict[str, TargetConfig] = Field(default_factory=dict)
    models: tuple[ModelSpec, ...] = ()
    endpoints: tuple[EndpointSpec, ...] = ()
    monitors: tuple[MonitorSpec, ...] = ()

    @field_validator("targets", mode="before")
    @classmethod
    def _uri_shorthand(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: ({"uri": v} if isinstance(v, str) else v) for k, v in value.items()}
        return value

    @field_validator("version")
    @classmethod
    def _known_version(cls, value: int) -> int:
        if value != 1:
            raise ValueError(f"unsupported file version {value}; this mlshift reads version 1")
        return value

    @model_validator(mode="after")
    def _unique_and_known(self) -> ProjectFile:
        kinds: tuple[
            tuple[str, tuple[ModelSpec, ...] | tuple[EndpointSpec, ...] | tuple[MonitorSpec, ...]], ...
        ] = (
            ("model", self.models),
            ("endpoint", self.endpoints),
            ("monitor", self.monitors),
        )
        for kind, items in kinds:
            names = [i.name for i in items]
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"{kind} names must be unique in the file; repeated: {', '.join(dupes)}")
        if (
            self.default_target
            and "://" not in self.default_target
            and self.default_target not in self.targets
        ):
            known = ", ".join(sorted(self.targets)) or "none defined"
            raise ValueError(f"default_target {self.default_target!r} is not a defined target ({known})")
        return self
