"""The local target: a registry in SQLite, artifacts on disk, endpoints as local processes.

``local://`` keeps its state in ``./.mlshift`` (next to ``mlshift.yaml`` when there is one);
``local:///path/to/state`` keeps it elsewhere. Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlshift.adapter import Capability, NameRules, TargetURI
from mlshift.errors import ConfigError
from mlshift.local._docker import COMPUTE_LIMITS, ContainerTask, DockerRuntime
from mlshift.local._endpoints import LocalEndpointOptions, LocalEndpointService
from mlshift.local._models import LocalModelRegistry
from mlshift.local._runtime import ProcessRuntime, Replica, ReplicaRequest, ReplicaRuntime
from mlshift.local._state import StateDB
from mlshift.local._store import ArtifactStore
from mlshift.storage import FolderObjectStore

__all__ = [
    "COMPUTE_LIMITS",
    "ContainerTask",
    "DockerRuntime",
    "LocalAdapter",
    "LocalEndpointOptions",
    "ProcessRuntime",
    "Replica",
    "ReplicaRequest",
    "ReplicaRuntime",
]


class LocalAdapter:
    """Adapter for ``local://`` (host processes) and ``local+docker://`` (containers).

    Attributes:
        root: The state directory.
        pipelines: ``None``: pipelines run on this machine with mlshift's local runner.
    """

    name = "local"
    capabilities = frozenset(
        {
            Capability.TRAFFIC_SPLIT,
            Capability.TARGETED_INVOKE,
            Capability.IN_PLACE_UPDATE,
            Capability.METRICS,
            Capability.SHADOW_TRAFFIC,
            Capability.PIPELINES,
            Capability.PIPELINE_CONDITIONS,
            Capability.SCHEDULES,
            Capability.CAPTURE,
        }
    )
    name_rules = NameRules()
    pipelines: None = None

    def __init__(self, uri: TargetURI, root: Path, *, runtime: ReplicaRuntime | None = None) -> None:
        """Open (or create) the state in ``root``.

        Args:
            uri: The target URI this adapter was made from.
            root: The state folder.
            runtime: What runs variant replicas (default: :class:`ProcessRuntime`, host processes).
        """
        self.uri = uri
        self.root = root
        db = StateDB(root / "state.db")
        store = ArtifactStore(root / "artifacts")
        self._models = LocalModelRegistry(db, store)
        self._endpoints = LocalEndpointService(root, db, store, runtime)

    @classmethod
    def from_uri(cls, uri: TargetURI, options: Mapping[str, Any], *, base_dir: Path) -> LocalAdapter:
        """Build from ``local://`` or ``local:///abs/path`` (or ``local://./relative``).

        A relative state folder (and the default ``.mlshift``) is relative to ``base_dir``.

        ``local+docker://`` is the same target with each replica a container of the serving
        image (:class:`DockerRuntime`); Docker is first contacted when
        a replica starts.

        Raises:
            ConfigError: for an unknown variant or option.
        """
        if uri.variant not in (None, "docker"):
            raise ConfigError(
                f"the local target has no {uri.variant!r} variant (in {uri.raw!r}); "
                "use local:// (processes) or local+docker:// (containers)",
                field="target",
            )
        unknown = sorted(options) + sorted(uri.query)
        if unknown:
            raise ConfigError(
                f"the local target takes no options; got {', '.join(unknown)}",
                field="target",
                hint="the state folder goes in the URI: local:///path/to/state",
            )
        location = uri.location + uri.path
        if not location:
            root = base_dir / ".mlshift"
        else:
            root = Path(location).expanduser()
            if not root.is_absolute():
                root = base_dir / root
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot use {root} as the local state folder: {exc.strerror}", field="target"
            ) from None
        with contextlib.suppress(OSError):  # a folder someone else owns keeps its mode
            # The registry, endpoint logs and routing files are nobody else's business.
            root.chmod(0o700)
        runtime: ReplicaRuntime | None = None
        if uri.variant == "docker":
            runtime = DockerRuntime()
        return cls(uri, root.resolve(), runtime=runtime)

    @property
    def runtime(self) -> ReplicaRuntime:
        """What runs variant replicas (and, on ``local+docker://``, container pipeline steps)."""
        return self._endpoints.runtime

    @property
    def models(self) -> LocalModelRegistry:
        return self._models

    @property
    def endpoints(self) -> LocalEndpointService:
        return self._endpoints

    def monitoring_store(self) -> FolderObjectStore:
        """Monitoring's documents: files under ``<state>/monitoring/`` (``docs/monitoring.md``)."""
        return FolderObjectStore(self.root / "monitoring")

    def monitoring_uri(self, key: str) -> str:
        """The path of a monitoring document."""
        return str(self.root / "monitoring" / key)

    def close(self) -> None:
        self._endpoints.close()


if TYPE_CHECKING:
    # mypy checks here that the local target keeps monitoring's contract.
    from mlshift.adapter import CaptureReader, MonitoringStorage

    _MONITORING: type[MonitoringStorage] = LocalAdapter
    _CAPTURE: type[CaptureReader] = LocalEndpointService
