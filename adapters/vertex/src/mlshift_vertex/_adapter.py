"""``vertex://PROJECT/LOCATION``: the adapter object that ties clients, GCS, registry and endpoints."""

from __future__ import annotations

import re
import shutil
import tempfile
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlshift.adapter import PENDING, Adapter, Capability, NameRules, PollingOperation, TargetURI
from mlshift.errors import ConfigError, ProviderError
from mlshift.storage import PrefixedObjectStore
from mlshift_vertex._endpoints import VertexEndpointService
from mlshift_vertex._gcp import GoogleClients
from mlshift_vertex._models import VertexModelRegistry
from mlshift_vertex._naming import NAME_RULES
from mlshift_vertex._pipelines import VertexPipelineService
from mlshift_vertex._store import GcsObjectStore
from mlshift_vertex.errors import PROVIDER, google_errors
from mlshift_vertex.options import VertexOptions

__all__ = ["CAPABILITIES", "VertexAdapter"]

#: What the Vertex AI target declares. Not declared, so refused or planned around at plan time:
#: ``IN_PLACE_UPDATE`` (a deployed model cannot be swapped: add → shift → remove),
#: ``SHADOW_TRAFFIC`` (Vertex has no mirrored traffic), ``TARGETED_INVOKE`` (a public endpoint
#: cannot address one deployed model), ``NATIVE_ROLLOUT`` (mlshift's engine steps the traffic
#: split). Pipelines run on Vertex AI Pipelines as KFP
#: pipeline specs (conditions as ``triggerPolicy`` sub-DAGs), schedules as Vertex schedules.
#: ``CAPTURE`` is the endpoint's request-response logging to BigQuery, read back by monitors.
CAPABILITIES = frozenset(
    {
        Capability.CAPTURE,
        Capability.TRAFFIC_SPLIT,
        Capability.METRICS,
        Capability.GPU,
        Capability.AUTOSCALING,
        Capability.PIPELINES,
        Capability.PIPELINE_CONDITIONS,
        Capability.SCHEDULES,
    }
)

_PROJECT = re.compile(r"[a-z][a-z0-9-]{4,28}[a-z0-9]")
_LOCATION = re.compile(r"[a-z]+-[a-z]+[0-9]+")


class VertexAdapter:
    """Adapter for ``vertex://PROJECT/LOCATION``.

    Attributes:
        project: The Google Cloud project id.
        location: The Vertex AI region (``us-central1``).
        options: The validated target options.
        clients: The Google clients (made on first use).
        store: The staging bucket as mlshift uses it.
        cache_dir: Where downloaded artifacts are kept (a temporary folder of this adapter).
    """

    name = "vertex"
    capabilities: frozenset[Capability] = CAPABILITIES
    name_rules: NameRules = NAME_RULES
    #: Nothing of the target's state is kept on this machine.
    root: None = None

    def __init__(self, uri: TargetURI, project: str, location: str, options: VertexOptions) -> None:
        self.uri = uri
        self.project = project
        self.location = location
        self.options = options
        self.clients = GoogleClients(project, location, options)
        self.store = GcsObjectStore(self.clients, options)
        self.cache_dir = Path(tempfile.mkdtemp(prefix="mlshift-vertex-"))
        weakref.finalize(self, shutil.rmtree, self.cache_dir, True)
        self._models = VertexModelRegistry(self)
        self._endpoints = VertexEndpointService(self)
        self._pipelines = VertexPipelineService(self)

    @classmethod
    def from_uri(cls, uri: TargetURI, options: Mapping[str, Any], *, base_dir: Path) -> VertexAdapter:
        """Build from ``vertex://PROJECT/LOCATION[?option=value&...]`` and the target's options.

        No Google call is made and no credential is read here. ``base_dir`` is not used: no
        option names a local path.

        Raises:
            ConfigError: a malformed project or location, or an invalid option (named).
        """
        hint = "write vertex://PROJECT/LOCATION, e.g. vertex://my-project/us-central1"
        if uri.variant is not None:
            raise ConfigError(
                f"the vertex target has no {uri.variant!r} variant (in {uri.raw!r})",
                field="target",
                hint=hint,
            )
        project, location = uri.location, uri.path.strip("/")
        if not _PROJECT.fullmatch(project):
            raise ConfigError(
                f"{project!r} is not a Google Cloud project id (in {uri.raw!r})"
                if project
                else f"no project in {uri.raw!r}",
                field="target",
                hint=hint + "; project ids are 6-30 lowercase letters, digits and '-'",
            )
        if not _LOCATION.fullmatch(location):
            raise ConfigError(
                f"{location!r} is not a Vertex AI location (in {uri.raw!r})"
                if location
                else f"no location in {uri.raw!r}",
                field="target",
                hint=hint,
            )
        return cls(uri, project, location, VertexOptions.from_sources(uri.query, options))

    @property
    def parent(self) -> str:
        """``projects/PROJECT/locations/LOCATION``."""
        return f"projects/{self.project}/locations/{self.location}"

    @property
    def models(self) -> VertexModelRegistry:
        return self._models

    @property
    def endpoints(self) -> VertexEndpointService:
        return self._endpoints

    @property
    def pipelines(self) -> VertexPipelineService:
        """Vertex AI Pipelines: KFP pipeline specs run as pipeline jobs, and their schedules."""
        return self._pipelines

    def monitoring_store(self) -> PrefixedObjectStore:
        """Monitoring's documents (baselines, monitors, runs) under ``gs://BUCKET/PREFIX/monitoring/``."""
        return PrefixedObjectStore(self.store, self.store.key("monitoring"))

    def monitoring_uri(self, key: str) -> str:
        """``gs://BUCKET/PREFIX/monitoring/KEY``."""
        return self.store.uri(self.store.key("monitoring", key))

    def image_uri(self) -> str:
        """The serving image: the ``image_uri`` option, else the mlshift image in Artifact Registry."""
        return (
            self.options.image_uri or f"{self.location}-docker.pkg.dev/{self.project}/mlshift/serving:latest"
        )

    def wait(self, operation: Any, what: str) -> Any:
        """Poll a long-running operation with mlshift's own deadline; returns its result.

        The SDK's ``operation.result()`` would wait with its own timeout (900 s for deploys) and
        sleep between checks; here each check is one ``GET`` of the operation, every
        ``poll_interval`` seconds, until ``wait_timeout`` (or an hour).

        Raises:
            ProviderTimeout: the operation did not finish in time (it may still finish).
            ProviderError: the operation failed (with Vertex's message).
        """

        def poll() -> Any:
            with google_errors(what):
                if not operation.done():
                    return PENDING
                error = operation.exception()
            if error is not None:
                from google.api_core import exceptions

                if isinstance(error, exceptions.GoogleAPICallError):
                    with google_errors(what):
                        raise error
                raise ProviderError(f"Vertex AI failed to {what}: {error}", provider=PROVIDER)
            return operation.result()

        return PollingOperation(
            poll,
            description=what,
            interval=self.options.poll_interval,
            timeout=self.options.wait_timeout,
            default_timeout=3600.0,
            provider=PROVIDER,
            hint="it may still finish: look at the operation in the Cloud console (Vertex AI), "
            "or raise the target's wait_timeout",
        ).wait()

    def close(self) -> None:
        """Close the Google clients (endpoints keep running)."""
        self._endpoints.close()
        self.clients.close()

    def __repr__(self) -> str:
        return f"<VertexAdapter {self.uri.raw}>"


if TYPE_CHECKING:
    # mypy checks here that the adapter declares every hook of mlshift's adapter contract.
    from mlshift.adapter import CaptureReader, MonitoringStorage

    _CONTRACT: type[Adapter] = VertexAdapter
    _MONITORING: type[MonitoringStorage] = VertexAdapter
    _CAPTURE: type[CaptureReader] = VertexEndpointService
