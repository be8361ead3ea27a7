"""The local target: a registry in SQLite, artifacts on disk, endpoints as local processes.

``local://`` keeps its state in ``./.mlshift`` (next to ``mlshift.yaml`` when there is one);
``local:///path/to/state`` keeps it elsewhere. Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlshift.adapter import Capability, NameRules, TargetURI
from mlshift.errors import ConfigError
from mlshift.local._endpoints import LocalEndpointOptions, LocalEndpointService
from mlshift.local._models import LocalModelRegistry
from mlshift.local._state import StateDB
from mlshift.local._store import ArtifactStore

__all__ = ["LocalAdapter", "LocalEndpointOptions"]


class LocalAdapter:
    """Adapter for ``local://``: no cloud account, no Docker.

    Attributes:
        root: The state directory.
    """

    name = "local"
    capabilities = frozenset(
        {
            Capability.TRAFFIC_SPLIT,
            Capability.TARGETED_INVOKE,
            Capability.METRICS,
            Capability.SHADOW_TRAFFIC,
            Capability.PIPELINES,
            Capability.PIPELINE_CONDITIONS,
            Capability.SCHEDULES,
        }
    )
    name_rules = NameRules()

    def __init__(self, uri: TargetURI, root: Path) -> None:
        self.uri = uri
        self.root = root
        db = StateDB(root / "state.db")
        store = ArtifactStore(root / "artifacts")
        self._models = LocalModelRegistry(db, store)
        self._endpoints = LocalEndpointService(root, db, store)

    @classmethod
    def from_uri(cls, uri: TargetURI, options: Mapping[str, Any]) -> LocalAdapter:
        """Build from ``local://`` or ``local:///abs/path`` (or ``local://./relative``).

        Raises:
            ConfigError: for an unknown variant (``local+docker`` arrives later) or option.
        """
        if uri.variant is not None:
            raise ConfigError(
                f"the local target has no {uri.variant!r} variant (in {uri.raw!r}); use local://",
                field="target",
            )
        unknown = sorted(k for k in options if not k.startswith("_")) + sorted(uri.query)
        if unknown:
            raise ConfigError(
                f"the local target takes no options; got {', '.join(unknown)}",
                field="target",
                hint="the state folder goes in the URI: local:///path/to/state",
            )
        base = Path(str(options.get("_base_dir") or Path.cwd()))
        location = uri.location + uri.path
        if not location:
            root = base / ".mlshift"
        else:
            root = Path(location).expanduser()
            if not root.is_absolute():
                root = base / root
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot use {root} as the local state folder: {exc.strerror}", field="target"
            ) from None
        return cls(uri, root.resolve())

    @property
    def models(self) -> LocalModelRegistry:
        return self._models

    @property
    def endpoints(self) -> LocalEndpointService:
        return self._endpoints

    def close(self) -> None:
        self._endpoints.close()
