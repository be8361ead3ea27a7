"""The Azure SDK clients of one target, made on first use.

``azure.ai.ml`` takes a second or two to import, so nothing here imports it before a client is
asked for. The credential is ``azure-identity``'s ``DefaultAzureCredential``: it is held by the
clients for their lifetime and never written, logged or put into an error.

A testing kit that is active (:class:`mlshift_azureml.testing.FakeAzureML`) takes the place of
the network and of the credential through :func:`active_session`: every client is then built
with the kit's ``transport=`` and credential, exactly as a user would pass their own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from mlshift.errors import MlshiftError

if TYPE_CHECKING:
    from mlshift_azureml._adapter import Workspace

__all__ = ["AzureClients", "SdkSession", "active_session", "install_session", "uninstall_session"]


class SdkSession(Protocol):
    """What stands in for Azure: a transport for every SDK client and a credential."""

    def transport(self) -> Any:
        """An ``azure.core`` ``HttpTransport``."""
        ...

    def credential(self) -> Any:
        """A ``TokenCredential``."""
        ...


_SESSIONS: list[SdkSession] = []
_SESSIONS_LOCK = threading.Lock()


def install_session(session: SdkSession) -> None:
    """Route every client made from now on through ``session`` (the newest one wins)."""
    with _SESSIONS_LOCK:
        _SESSIONS.append(session)


def uninstall_session(session: SdkSession) -> None:
    """Undo :func:`install_session`."""
    with _SESSIONS_LOCK:
        if session in _SESSIONS:
            _SESSIONS.remove(session)


def active_session() -> SdkSession | None:
    """The testing kit in charge, if one is active."""
    with _SESSIONS_LOCK:
        return _SESSIONS[-1] if _SESSIONS else None


def _require(module: str) -> None:
    try:
        __import__(module)
    except ImportError as exc:
        raise MlshiftError(
            f"the azureml target needs {module} ({exc})",
            hint='pip install "mlshift[azureml]"  (or: pip install mlshift-azureml)',
        ) from exc


class AzureClients:
    """``MLClient``, blob and Azure Monitor clients for one workspace, made on first use."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self._lock = threading.RLock()
        self._session = active_session()
        self._credential: Any = None
        self._ml: Any = None
        self._monitor: Any = None
        self._transport: Any = None

    @property
    def sleep(self) -> Callable[[float], None]:
        """How mlshift's own polling waits: the transport's ``sleep`` (a kit's does not wait)."""
        transport = self.transport()
        return transport.sleep if transport is not None else time.sleep

    def transport(self) -> Any:
        """The kit's transport, or ``None`` for the SDK's default (requests)."""
        if self._session is None:
            return None
        if self._transport is None:
            self._transport = self._session.transport()
        return self._transport

    def _kwargs(self) -> dict[str, Any]:
        transport = self.transport()
        return {} if transport is None else {"transport": transport}

    def credential(self) -> Any:
        """The credential every client uses (built once)."""
        with self._lock:
            if self._credential is None:
                if self._session is not None:
                    self._credential = self._session.credential()
                else:
                    _require("azure.identity")
                    from azure.identity import DefaultAzureCredential

                    self._credential = DefaultAzureCredential()
            return self._credential

    def ml(self) -> Any:
        """The workspace's ``azure.ai.ml.MLClient`` (no call is made to build it)."""
        with self._lock:
            if self._ml is None:
                _require("azure.ai.ml")
                from azure.ai.ml import MLClient

                ws = self.workspace
                self._ml = MLClient(
                    self.credential(),
                    ws.subscription,
                    ws.resource_group,
                    ws.name,
                    enable_telemetry=False,
                    **self._kwargs(),
                )
            return self._ml

    def container(self, account_url: str, container: str) -> Any:
        """An ``azure.storage.blob`` container client (for the workspace datastore)."""
        _require("azure.storage.blob")
        from azure.storage.blob import ContainerClient

        return ContainerClient(account_url, container, credential=self.credential(), **self._kwargs())

    def monitor(self) -> Any:
        """An ``azure.mgmt.monitor.MonitorManagementClient`` for reading endpoint metrics."""
        with self._lock:
            if self._monitor is None:
                _require("azure.mgmt.monitor")
                from azure.mgmt.monitor import MonitorManagementClient

                self._monitor = MonitorManagementClient(
                    self.credential(), self.workspace.subscription, **self._kwargs()
                )
            return self._monitor

    def pipeline(self) -> Any:
        """A bare ``azure.core`` pipeline for scoring requests.

        No retry policy: a retried request would be scored (and counted in the metrics that
        gate a rollout) twice. No auth policy: scoring takes the endpoint's key.
        """
        from azure.core.pipeline import Pipeline
        from azure.core.pipeline.transport import RequestsTransport

        transport = self.transport() or RequestsTransport()
        return Pipeline(transport, policies=[])

    def close(self) -> None:
        """Close what was opened (endpoints keep running)."""
        with self._lock:
            for client in (self._ml, self._monitor):
                close = getattr(client, "close", None)
                if callable(close):
                    try:
                        close()
                    except Exception:  # closing is best effort
                        pass
            self._ml = self._monitor = None
            if self._credential is not None and self._session is None:
                close = getattr(self._credential, "close", None)
                if callable(close):
                    close()
            self._credential = None
