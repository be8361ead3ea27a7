"""``azureml://SUBSCRIPTION/RESOURCE_GROUP/WORKSPACE``: the adapter tying clients, registry, endpoints."""

from __future__ import annotations

import re
import shutil
import tempfile
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlshift.adapter import Adapter, Capability, CaptureReader, MonitoringStorage, NameRules, TargetURI
from mlshift.errors import ConfigError
from mlshift.storage import PrefixedObjectStore
from mlshift_azureml._naming import NAME_RULES
from mlshift_azureml._sdk import AzureClients
from mlshift_azureml.options import AzureMLOptions

if TYPE_CHECKING:
    from mlshift_azureml._endpoints import AzureMLEndpointService
    from mlshift_azureml._models import AzureMLModelRegistry
    from mlshift_azureml._pipelines import AzureMLPipelineService
    from mlshift_azureml._store import BlobObjectStore

__all__ = ["CAPABILITIES", "AzureMLAdapter", "Workspace"]

#: What the Azure ML target declares. Azure has no native canary: mlshift's engine steps the
#: endpoint's ``traffic`` and reads gates from Azure Monitor (``METRICS``). A deployment's model
#: cannot be swapped under its name by mlshift, so changes are add → shift → remove (no
#: ``IN_PLACE_UPDATE``). ``AUTOSCALING``: an Azure Monitor autoscale setting per deployment.
#: ``SHADOW_TRAFFIC``: the endpoint's ``mirror_traffic``, judged on metrics (shadow mode
#: ``mirror-only``). ``SERVERLESS`` does not exist on managed online endpoints, so a
#: serverless spec is refused at plan time.
#: Pipelines are Azure ML pipeline jobs; their conditions are gate nodes that stop the steps
#: downstream (``PIPELINE_CONDITIONS``, lowered: see :mod:`mlshift_azureml._pipelines`), and
#: their schedules are ``JobSchedule`` resources (``SCHEDULES``).
#: ``CAPTURE``: the neutral ``capture`` is each deployment's data collector (payload logging of
#: requests and answers to the workspace's blob datastore), read back for monitors.
CAPABILITIES = frozenset(
    {
        Capability.TRAFFIC_SPLIT,
        Capability.TARGETED_INVOKE,
        Capability.METRICS,
        Capability.GPU,
        Capability.AUTOSCALING,
        Capability.SHADOW_TRAFFIC,
        Capability.PIPELINES,
        Capability.PIPELINE_CONDITIONS,
        Capability.SCHEDULES,
        Capability.CAPTURE,
    }
)

# ARM's rules: subscriptions are GUIDs on Azure (any id is accepted here so that examples and
# the testing kit can write azureml://SUB/RG/WS); resource groups 1-90 of [-\w._()] not ending
# in '.'; workspaces 3-33 characters.
_SUBSCRIPTION = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")
_RESOURCE_GROUP = re.compile(r"[-\w._()]{0,89}[-\w_()]")
_WORKSPACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{1,32}")
_FORM = "write azureml://SUBSCRIPTION/RESOURCE_GROUP/WORKSPACE"


@dataclass(frozen=True)
class Workspace:
    """The workspace a target points at.

    Attributes:
        subscription: The Azure subscription id.
        resource_group: The resource group.
        name: The workspace name.
    """

    subscription: str
    resource_group: str
    name: str

    @property
    def arm_id(self) -> str:
        """The workspace's ARM resource id."""
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.MachineLearningServices/workspaces/{self.name}"
        )


def parse_workspace(uri: TargetURI) -> Workspace:
    """The workspace named by ``azureml://SUB/RG/WS``.

    Raises:
        ConfigError: naming the malformed part.
    """
    parts = [p for p in uri.path.split("/") if p]
    if not uri.location or len(parts) != 2:
        raise ConfigError(
            f"{uri.raw!r} does not name a workspace",
            field="target",
            hint=f"{_FORM}, e.g. azureml://SUB/RG/WS",
        )
    sub, (rg, ws) = uri.location, parts
    for what, value, rule in (
        ("subscription id", sub, _SUBSCRIPTION),
        ("resource group", rg, _RESOURCE_GROUP),
        ("workspace name", ws, _WORKSPACE),
    ):
        if not rule.fullmatch(value):
            raise ConfigError(f"{value!r} is not a valid {what} (in {uri.raw!r})", field="target", hint=_FORM)
    return Workspace(sub, rg, ws)


class AzureMLAdapter:
    """Adapter for ``azureml://SUBSCRIPTION/RESOURCE_GROUP/WORKSPACE``.

    Attributes:
        workspace: The workspace.
        options: The validated target options.
        clients: The Azure SDK clients (made on first use; ``azure.ai.ml`` is imported then).
        cache_dir: Where downloaded artifacts are kept (a temporary folder of this adapter).
    """

    name = "azureml"
    capabilities: frozenset[Capability] = CAPABILITIES
    name_rules: NameRules = NAME_RULES
    #: Nothing of the target's state is kept on this machine.
    root: None = None

    def __init__(self, uri: TargetURI, workspace: Workspace, options: AzureMLOptions) -> None:
        self.uri = uri
        self.workspace = workspace
        self.options = options
        self.clients = AzureClients(workspace)
        self.cache_dir = Path(tempfile.mkdtemp(prefix="mlshift-azureml-"))
        weakref.finalize(self, shutil.rmtree, self.cache_dir, True)
        self._store: BlobObjectStore | None = None
        self._capture_store: BlobObjectStore | None = None
        self._models: AzureMLModelRegistry | None = None
        self._endpoints: AzureMLEndpointService | None = None
        self._pipelines: AzureMLPipelineService | None = None

    @classmethod
    def from_uri(cls, uri: TargetURI, options: Mapping[str, Any], *, base_dir: Path) -> AzureMLAdapter:
        """Build from ``azureml://SUB/RG/WS[?option=value&...]`` and the target's options.

        No Azure call is made and no credential is looked for here: clients are created on
        first use. ``base_dir`` is not used: no option names a local path.

        Raises:
            ConfigError: a malformed URI or an invalid option (named).
        """
        if uri.variant is not None:
            raise ConfigError(
                f"the azureml target has no {uri.variant!r} variant (in {uri.raw!r})",
                field="target",
                hint=_FORM,
            )
        workspace = parse_workspace(uri)
        return cls(uri, workspace, AzureMLOptions.from_sources(uri.query, options))

    @property
    def store(self) -> BlobObjectStore:
        """The workspace datastore as mlshift uses it (artifacts, cards, journal, locks)."""
        if self._store is None:
            from mlshift_azureml._store import BlobObjectStore

            self._store = BlobObjectStore(self)
        return self._store

    @property
    def capture_store(self) -> BlobObjectStore:
        """The workspace's default blob datastore, where Azure's data collector writes.

        The target's own datastore when that is ``workspaceblobstore`` (the default option).
        """
        from mlshift_azureml._capture import COLLECTOR_DATASTORE

        if self.options.datastore == COLLECTOR_DATASTORE:
            return self.store
        if self._capture_store is None:
            from mlshift_azureml._store import BlobObjectStore

            self._capture_store = BlobObjectStore(self, COLLECTOR_DATASTORE)
        return self._capture_store

    def monitoring_store(self) -> PrefixedObjectStore:
        """Monitoring's documents (baselines, monitors, runs) under the datastore's ``PREFIX/monitoring/``."""
        return PrefixedObjectStore(self.store, f"{self.options.prefix}/monitoring")

    def monitoring_uri(self, key: str) -> str:
        """``azureml://datastores/DATASTORE/paths/PREFIX/monitoring/KEY``."""
        return self.store.uri(f"{self.options.prefix}/monitoring/{key}")

    @property
    def models(self) -> AzureMLModelRegistry:
        if self._models is None:
            from mlshift_azureml._models import AzureMLModelRegistry

            self._models = AzureMLModelRegistry(self)
        return self._models

    @property
    def endpoints(self) -> AzureMLEndpointService:
        if self._endpoints is None:
            from mlshift_azureml._endpoints import AzureMLEndpointService

            self._endpoints = AzureMLEndpointService(self)
        return self._endpoints

    @property
    def pipelines(self) -> AzureMLPipelineService:
        """Azure ML pipeline jobs: compile, submit, follow, cancel, schedule."""
        if self._pipelines is None:
            from mlshift_azureml._pipelines import AzureMLPipelineService

            self._pipelines = AzureMLPipelineService(self)
        return self._pipelines

    def resource_tags(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """Tags for a new resource: the target's ``tags`` option plus ``extra``."""
        return {**self.options.tags, **(extra or {})}

    def close(self) -> None:
        """Close the SDK clients (endpoints keep running)."""
        self.clients.close()

    def __repr__(self) -> str:
        return f"<AzureMLAdapter {self.uri.raw}>"


if TYPE_CHECKING:
    # mypy checks here that the adapter declares every hook of mlshift's adapter contract.
    _CONTRACT: type[Adapter] = AzureMLAdapter
    _MONITORING: type[MonitoringStorage] = AzureMLAdapter
    _CAPTURE: type[CaptureReader] = AzureMLEndpointService
