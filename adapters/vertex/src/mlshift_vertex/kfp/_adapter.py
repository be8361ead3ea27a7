"""``kfp://HOST[:PORT][/PREFIX]``: a pipelines-only target on a self-hosted Kubeflow Pipelines.

Kubeflow Pipelines has no model registry and no endpoints, so this target declares only
``PIPELINES`` and ``PIPELINE_CONDITIONS``; every model or endpoint primitive raises
:class:`PipelinesOnlyTarget`, and the planner calls them (``find_by_digest``, ``validate``)
before any change, so a spec with models or endpoints is refused at plan time.
``RegisterModel``/``Deploy`` steps act on the ``step_target`` option's target instead.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from mlshift.adapter import (
    Adapter,
    Artifact,
    BaseEndpointService,
    Capability,
    EndpointState,
    Invocation,
    NameRules,
    Operation,
    ResolvedVariant,
    RolloutRecord,
    TargetURI,
)
from mlshift.errors import UnsupportedOperation
from mlshift.specs.endpoint import Compute, EndpointSpec
from mlshift.specs.model import ModelRef, ModelSpec, ModelVersion
from mlshift_vertex.kfp._client import KubeflowClient
from mlshift_vertex.kfp._options import KubeflowOptions, api_base
from mlshift_vertex.kfp._service import KubeflowPipelineService

__all__ = ["KUBEFLOW_CAPABILITIES", "KubeflowAdapter", "PipelinesOnlyTarget"]

#: What ``kfp://`` declares: pipelines with native conditions, and schedules as Kubeflow
#: recurring runs (``client.pipelines.schedule``); no model or endpoint capability.
KUBEFLOW_CAPABILITIES = frozenset(
    {Capability.PIPELINES, Capability.PIPELINE_CONDITIONS, Capability.SCHEDULES}
)


#: Named in the refusal (mlshift's registry of installed adapters is private to its core).
_SERVING_TARGETS = (
    "local://, sagemaker://REGION, azureml://SUBSCRIPTION/RESOURCE_GROUP/WORKSPACE, vertex://PROJECT/LOCATION"
)


class PipelinesOnlyTarget(UnsupportedOperation):
    """A model or endpoint operation on a target that only runs pipelines (``kfp://``)."""

    code = "pipelines_only_target"


def _refuse(target: str, what: str) -> NoReturn:
    raise PipelinesOnlyTarget(
        f"{target} is a pipelines-only target: Kubeflow Pipelines has no model registry or endpoints, "
        f"so it cannot {what}; targets that serve models: {_SERVING_TARGETS}",
        hint="register and deploy on one of those (a pipeline's RegisterModel/Deploy steps act on the "
        "kfp target's step_target option), and run pipelines here",
    )


class _NoModels:
    """The model registry of a target that has none: every call is refused."""

    def __init__(self, target: str) -> None:
        self._target = target

    def register(self, spec: ModelSpec, artifact: Artifact) -> ModelVersion:
        _refuse(self._target, f"register model {spec.name!r}")

    def get(self, ref: ModelRef) -> ModelVersion:
        _refuse(self._target, f"look up model {ref.name!r}")

    def list(self, name: str | None = None) -> builtins.list[ModelVersion]:
        _refuse(self._target, "list models")

    def find_by_digest(self, name: str, digest: str) -> ModelVersion | None:
        _refuse(self._target, f"register model {name!r}")

    def set_alias(self, name: str, alias: str, version: str) -> ModelVersion:
        _refuse(self._target, f"set alias {alias!r} of model {name!r}")

    def remove_alias(self, name: str, alias: str) -> None:
        _refuse(self._target, f"remove alias {alias!r} of model {name!r}")

    def delete(self, name: str, version: str) -> None:
        _refuse(self._target, f"delete model {name}:{version}")

    def artifact_path(self, version: ModelVersion) -> Path:
        _refuse(self._target, f"read the artifact of model {version.name}:{version.version}")


class _NoEndpoints(BaseEndpointService):
    """The endpoints of a target that has none: every call is refused."""

    def __init__(self, target: str) -> None:
        self._target = target
        self.target_name = target

    def list(self) -> builtins.list[EndpointState]:
        _refuse(self._target, "list endpoints")

    def observe(self, name: str) -> EndpointState | None:
        _refuse(self._target, f"serve endpoint {name!r}")

    def validate(self, spec: EndpointSpec) -> None:
        _refuse(self._target, f"serve endpoint {spec.name!r}")

    def create(self, spec: EndpointSpec, variants: Sequence[ResolvedVariant]) -> Operation[EndpointState]:
        _refuse(self._target, f"create endpoint {spec.name!r}")

    def add_variant(self, name: str, variant: ResolvedVariant) -> Operation[EndpointState]:
        _refuse(self._target, f"change endpoint {name!r}")

    def remove_variant(self, name: str, variant_name: str) -> Operation[EndpointState]:
        _refuse(self._target, f"change endpoint {name!r}")

    def set_weights(self, name: str, weights: Mapping[str, int]) -> Operation[EndpointState]:
        _refuse(self._target, f"change endpoint {name!r}")

    def update_compute(self, name: str, variant_name: str, compute: Compute) -> Operation[EndpointState]:
        _refuse(self._target, f"change endpoint {name!r}")

    def update_tags(self, name: str, tags: Mapping[str, str]) -> Operation[EndpointState]:
        _refuse(self._target, f"change endpoint {name!r}")

    def delete(self, name: str) -> Operation[None]:
        _refuse(self._target, f"delete endpoint {name!r}")

    def invoke(
        self,
        name: str,
        body: bytes,
        content_type: str = "application/json",
        *,
        variant: str | None = None,
        timeout: float = 60.0,
    ) -> Invocation:
        _refuse(self._target, f"answer predictions on endpoint {name!r}")

    def record_rollout(self, record: RolloutRecord) -> None:
        _refuse(self._target, f"roll out endpoint {record.endpoint!r}")

    def rollouts(self, name: str, limit: int = 20) -> builtins.list[RolloutRecord]:
        _refuse(self._target, f"show the rollouts of endpoint {name!r}")

    def lock(self, name: str, *, owner: str, timeout: float) -> AbstractContextManager[None]:
        _refuse(self._target, f"change endpoint {name!r}")


class KubeflowAdapter:
    """Adapter for ``kfp://HOST[:PORT][/PREFIX]``: runs pipelines on Kubeflow Pipelines.

    Attributes:
        options: The validated target options.
        base_url: The API's base URL (``http://`` only to a loopback host).
    """

    name = "kfp"
    capabilities: frozenset[Capability] = KUBEFLOW_CAPABILITIES
    name_rules: NameRules = NameRules()
    #: Nothing of the target's state is kept on this machine.
    root: None = None

    def __init__(self, uri: TargetURI, options: KubeflowOptions) -> None:
        self.uri = uri
        self.options = options
        self.base_url = api_base(uri, options)
        self._api = KubeflowClient(self.base_url, options.token, timeout=options.request_timeout)
        self._pipelines = KubeflowPipelineService(self._api, options, uri.raw)
        self._models = _NoModels(uri.raw)
        self._endpoints = _NoEndpoints(uri.raw)

    @classmethod
    def from_uri(cls, uri: TargetURI, options: Mapping[str, Any], *, base_dir: Path) -> KubeflowAdapter:
        """Build from ``kfp://HOST[:PORT][/PREFIX][?option=value&...]``; no request is sent.

        Raises:
            ConfigError: a malformed host, port or option (named), or credentials in the URI.
        """
        parsed = KubeflowOptions.from_sources(uri.query, options)
        return cls(uri, parsed)

    @property
    def models(self) -> _NoModels:
        return self._models

    @property
    def endpoints(self) -> _NoEndpoints:
        return self._endpoints

    @property
    def pipelines(self) -> KubeflowPipelineService:
        return self._pipelines

    def close(self) -> None:
        """Close the HTTP connections."""
        self._api.close()

    def __repr__(self) -> str:
        return f"<KubeflowAdapter {self.uri.raw}>"


if TYPE_CHECKING:
    # mypy checks here that the adapter declares every hook of mlshift's adapter contract.
    _CONTRACT: type[Adapter] = KubeflowAdapter
