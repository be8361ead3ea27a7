"""FakeAzureML: a stateful, in-process fake of the Azure ML control plane, its blob datastore,
online endpoints' scoring URIs and Azure Monitor metrics.

The real SDKs (``azure-ai-ml``'s ``MLClient``, ``azure-storage-blob``, ``azure-mgmt-monitor``)
talk to it through :class:`~mlshift_azureml.testing._http.FakeTransport`; the fake answers the
REST calls they make with the bodies Azure sends (``flavors`` on models and ``scaleSettings`` on
deployments included: the SDK crashes reading responses without them) and enforces Azure's
rules: name patterns, endpoint names unique per region, ``traffic`` summing to 100, no deletion
of a deployment that takes traffic, one change at a time per endpoint.

A deployment with a data collector whose ``request``/``response`` collections are enabled
(payload logging) has its scored requests and answers written to the workspace datastore in
Azure's layout and format (:mod:`mlshift_azureml._capture`), one file per deployment,
collection and hour. ``sampling_rate`` is kept exactly and deterministically (a request is
logged whenever the running share reaches a whole request, not by a random draw), so tests
know how many records to expect; record times keep their microseconds.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import io
import itertools
import json
import os
import re
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape

from mlshift.adapter import MirrorShare
from mlshift_azureml._capture import COLLECTIONS, capture_key, payload_record
from mlshift_azureml._sdk import install_session, uninstall_session
from mlshift_azureml.testing._autoscale import AUTOSCALE_PATH, AutoscaleSettings
from mlshift_azureml.testing._http import FakeCredential, FakeTransport, Reply
from mlshift_azureml.testing._jobs import FakeJobs
from mlshift_azureml.testing._serving import InProcessServer

__all__ = ["AzureCall", "FakeAzureML", "Fault"]

_ONLINE_NAME = re.compile(r"[a-zA-Z][-a-zA-Z0-9]{1,30}[a-zA-Z0-9]")
_MODEL_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9\-_]{0,254}")
_WS = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/"
    r"Microsoft\.MachineLearningServices/workspaces/(?P<ws>[^/]+)(?P<rest>/.*)?$",
    re.IGNORECASE,
)
_READ_POSTS = ("/listkeys", "/listsecrets", "/getlogs", "/token")


@dataclass(frozen=True)
class AzureCall:
    """One HTTP request an SDK sent to the fake.

    Attributes:
        method: ``GET``, ``PUT``, ...
        url: The full URL.
        service: ``arm`` (control plane), ``blob``, ``score`` or ``metrics``.
        status: What the fake answered.
        bytes_sent: The request body's size.
    """

    method: str
    url: str
    service: str
    status: int
    bytes_sent: int

    @property
    def mutating(self) -> bool:
        """Whether the call changes something (reads, key listings and scoring do not)."""
        if self.service == "score" or self.method in ("GET", "HEAD"):
            return False
        path = urlsplit(self.url).path.lower()
        return not (self.method == "POST" and path.endswith(_READ_POSTS))


@dataclass
class Fault:
    """A fault the fake injects into matching requests.

    Attributes:
        kind: ``throttle`` (429 with ``Retry-After``), ``forbidden`` (403), ``quota``
            (deployment creation refused), ``unhealthy`` (a deployment that never becomes
            healthy), ``busy`` (409 "Updating" on changes). An endpoint that reads as busy and
            a taken name are set with :meth:`FakeAzureML.hold_busy` and
            :meth:`FakeAzureML.take_endpoint_name`.
        match: A substring of the request path (``""``: every control-plane request).
        times: How many requests it hits (``None``: every one).
        retry_after: Seconds in a throttled answer's ``Retry-After``.
        logs: The container log an unhealthy deployment returns.
    """

    kind: str
    match: str = ""
    times: int | None = 1
    retry_after: int = 1
    logs: str = ""
    hits: int = 0


@dataclass
class _Deployment:
    body: dict[str, Any]
    logs: str = "Booting worker with pid: 7\nListening at: http://0.0.0.0:5001\n"
    failed: bool = False
    # Payload logging: the running share of requests not logged yet, and the collector's file id.
    sampled: float = 0.0
    instance: str = field(default_factory=lambda: uuid.uuid4().hex)


@dataclass
class _Endpoint:
    body: dict[str, Any]
    key: str
    deployments: dict[str, _Deployment] = field(default_factory=dict)
    # Traffic the control plane accepted but the data plane does not show yet (eventual consistency).
    pending_reads: int = 0
    busy_reads: int = 0
    counter: dict[str, float] = field(default_factory=dict)
    # Which un-targeted requests are mirrored: (deployment, percent) and its evenly spread picker.
    mirror: tuple[str, int, MirrorShare] | None = None


@dataclass
class _Workspace:
    sub: str
    rg: str
    name: str
    location: str
    models: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    environments: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    endpoints: dict[str, _Endpoint] = field(default_factory=dict)
    # Data assets (the SDK registers one per data collector collection).
    data: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    @property
    def arm_id(self) -> str:
        return (
            f"/subscriptions/{self.sub}/resourceGroups/{self.rg}/providers/"
            f"Microsoft.MachineLearningServices/workspaces/{self.name}"
        )

    @property
    def account(self) -> str:
        return re.sub(r"[^a-z0-9]", "", f"{self.name}{self.sub}".lower())[:18] + "store"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _system(stamp: str | None = None) -> dict[str, str]:
    """ARM's ``systemData`` (the SDK formats ``lastModifiedAt`` of endpoints unconditionally)."""
    at = stamp or _now()
    return {
        "createdAt": at,
        "createdBy": "fake@mlshift.test",
        "createdByType": "User",
        "lastModifiedAt": at,
        "lastModifiedBy": "fake@mlshift.test",
        "lastModifiedByType": "User",
    }


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, {"error": {"code": code, "message": message}}, headers or {})


class FakeAzureML:
    """Azure ML in this process: control plane, datastore blobs, scoring and metrics.

    Use it as a context manager; while it is active every ``azureml://`` target built in this
    process talks to it (any subscription, resource group and workspace exists)::

        with FakeAzureML() as azure:
            client = mlshift.connect("azureml://SUB/RG/WS")
            ...
            assert not [c for c in azure.calls if c.mutating]

    Args:
        region: The region every workspace is in.
        traffic_lag: Reads of an endpoint after a traffic change that still show the old
            traffic (Azure's traffic updates are eventually consistent).
    """

    def __init__(self, region: str = "eastus", *, traffic_lag: int = 0) -> None:
        self.region = region
        self.traffic_lag = traffic_lag
        self.calls: list[AzureCall] = []
        self.faults: list[Fault] = []
        self._lock = threading.RLock()
        self._workspaces: dict[str, _Workspace] = {}
        self._blobs: dict[tuple[str, str], dict[str, tuple[bytes, str]]] = {}
        self._blob_meta: dict[tuple[str, str, str], dict[str, str]] = {}
        self._taken: set[str] = set()
        self._metrics: list[tuple[str, str, float, int, int, float]] = []
        self._server = InProcessServer()
        self._etags = itertools.count(1)
        self.credential_object = FakeCredential()
        #: Azure Monitor autoscale settings (ARM), per resource group.
        self.autoscale = AutoscaleSettings(self._deployment_by_id, region)
        #: ``(endpoint, deployment, status)`` of every mirrored copy answered (the answer is dropped).
        self.mirrored: list[tuple[str, str, int]] = []
        self._mirroring: concurrent.futures.ThreadPoolExecutor | None = None
        self._mirror_jobs: list[concurrent.futures.Future[None]] = []
        #: Pipeline jobs, their components, child jobs and logs, and schedules.
        self.jobs = FakeJobs(self)

    # ------------------------------------------------------------------ the session hooks

    def transport(self) -> FakeTransport:
        """A transport that answers from this fake (give it to any Azure SDK client)."""
        return FakeTransport(self.handle)

    def credential(self) -> FakeCredential:
        """A credential that hands out JWTs (``aud=https://ml.azure.com``)."""
        return self.credential_object

    def __enter__(self) -> FakeAzureML:
        self._set_env: list[str] = []
        # The fake shows each request in its metrics at once, and its reads are free: targets
        # built while it is active wait out no lag (set explicitly, the options still win).
        for key in ("MLSHIFT_AZUREML_METRIC_LAG", "MLSHIFT_AZUREML_POLL_INTERVAL"):
            if key not in os.environ:
                os.environ[key] = "0"
                self._set_env.append(key)
        install_session(self)
        self._patch_requests()
        return self

    def __exit__(self, *args: Any) -> None:
        # Pipeline jobs first: a register or deploy node still running talks to this fake.
        self.jobs.close()
        if self._mirroring is not None:
            self._mirroring.shutdown(wait=True, cancel_futures=True)
            self._mirroring = None
        uninstall_session(self)
        self._unpatch_requests()
        for key in self._set_env:
            os.environ.pop(key, None)
        self._server.close()

    def _patch_requests(self) -> None:
        """Route blob requests sent through ``requests`` to the fake.

        ``transport=`` reaches every control-plane client, but the SDK uploads a local model or
        code folder with a blob client of its own on the default (requests) transport. Those
        requests land here instead of the network; anything else passes through.
        """
        import requests.adapters

        original = requests.adapters.HTTPAdapter.send
        fake = self

        def send(adapter: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
            host = urlsplit(request.url).hostname or ""
            if not host.endswith(
                (
                    ".blob.core.windows.net",
                    ".inference.ml.azure.com",
                    "management.azure.com",
                    ".api.azureml.ms",
                )
            ):
                return original(adapter, request, *args, **kwargs)
            body = request.body or b""
            if hasattr(body, "read"):
                body = body.read()
            elif not isinstance(body, (bytes, str)):
                body = b"".join(bytes(chunk) for chunk in body)
            if isinstance(body, str):
                body = body.encode()
            headers = {k.lower(): v for k, v in request.headers.items()}
            reply = fake.handle(request.method.upper(), request.url, headers, body)
            response = requests.Response()
            response.status_code = reply.status
            response._content = reply.content()
            response.headers.update(reply.headers)
            response.url = request.url
            response.request = request
            response.raw = io.BytesIO(response._content)
            return response

        self._original_send = original
        requests.adapters.HTTPAdapter.send = send  # type: ignore[method-assign, assignment]

    def _unpatch_requests(self) -> None:
        import requests.adapters

        original = getattr(self, "_original_send", None)
        if original is not None:
            requests.adapters.HTTPAdapter.send = original  # type: ignore[method-assign]

    # ------------------------------------------------------------------ faults and inspection

    def throttle(self, match: str = "", times: int = 1, retry_after: int = 1) -> Fault:
        """Answer the next ``times`` matching control-plane requests with 429 and ``Retry-After``."""
        return self._add(Fault("throttle", match, times, retry_after=retry_after))

    def exhaust_quota(self, times: int | None = 1) -> Fault:
        """Refuse the next ``times`` deployment creations for lack of cores quota."""
        return self._add(Fault("quota", "/deployments/", times))

    def never_healthy(self, deployment: str = "", logs: str = "", times: int | None = 1) -> Fault:
        """Make matching new deployments fail their readiness probe, with ``logs`` in their log."""
        text = logs or "Traceback (most recent call last):\nModuleNotFoundError: No module named 'mlshift'\n"
        return self._add(Fault("unhealthy", f"/deployments/{deployment}", times, logs=text))

    def deny(self, match: str = "", times: int | None = 1) -> Fault:
        """Answer the next ``times`` matching control-plane requests with 403 (no role allows it)."""
        return self._add(Fault("forbidden", match, times))

    def refuse_as_updating(self, endpoint: str, times: int = 1) -> Fault:
        """Refuse the next ``times`` changes to ``endpoint`` with Azure's 409 "Updating" answer.

        That is what a change meets when another client's update started after it last read
        the endpoint (:meth:`hold_busy` also shows the state in reads).
        """
        return self._add(Fault("busy", f"/onlineEndpoints/{endpoint}", times))

    def hold_busy(self, endpoint: str, reads: int = 2) -> None:
        """Keep ``endpoint`` "Updating" for its next ``reads`` reads (changes are refused meanwhile)."""
        with self._lock:
            for ws in self._workspaces.values():
                if endpoint in ws.endpoints:
                    ws.endpoints[endpoint].busy_reads = reads

    def take_endpoint_name(self, name: str) -> None:
        """Pretend another workspace in the region has an endpoint called ``name``."""
        with self._lock:
            self._taken.add(name.lower())

    def _deployment_by_id(self, arm_id: str) -> dict[str, Any] | None:
        """An online deployment's REST body by its ARM id (``None``: no such deployment)."""
        match = _WS.match(arm_id)
        rest = [p for p in ((match["rest"] or "") if match else "").split("/") if p]
        if match is None or len(rest) != 4 or rest[0].lower() != "onlineendpoints":
            return None
        ws = self._workspaces.get(f"{match['sub']}/{match['rg']}/{match['ws']}".lower())
        endpoint = None if ws is None else ws.endpoints.get(rest[1])
        found = None if endpoint is None else endpoint.deployments.get(rest[3])
        return None if found is None else found.body

    def scale_to(self, endpoint: str, deployment: str, instances: int) -> None:
        """Move a deployment's instance count as Azure's autoscaler does under load.

        Raises:
            ValueError: the deployment has no autoscale setting, or ``instances`` is outside it.
        """
        with self._lock:
            for ws in self._workspaces.values():
                found = ws.endpoints.get(endpoint)
                if found is None or deployment not in found.deployments:
                    continue
                body = found.deployments[deployment].body
                settings = [
                    s
                    for group in self.autoscale.settings.values()
                    for s in group.values()
                    if s["properties"]["targetResourceUri"].lower() == body["id"].lower()
                ]
                if not settings:
                    raise ValueError(f"deployment {deployment!r} has no autoscale setting")
                capacity = settings[0]["properties"]["profiles"][0]["capacity"]
                if not int(capacity["minimum"]) <= instances <= int(capacity["maximum"]):
                    raise ValueError(f"{instances} is outside the setting's {capacity}")
                body.setdefault("sku", {})["capacity"] = instances
                return
        raise ValueError(f"no deployment {endpoint}/{deployment}")

    def _add(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def mutating_calls(self, since: int = 0, service: str | None = None) -> list[AzureCall]:
        """Calls that changed something, from index ``since`` of :attr:`calls` on."""
        return [c for c in self.calls[since:] if c.mutating and (service is None or c.service == service)]

    def uploaded_bytes(self, since: int = 0) -> int:
        """Bytes written to the datastore, from index ``since`` of :attr:`calls` on."""
        return sum(c.bytes_sent for c in self.calls[since:] if c.service == "blob" and c.method == "PUT")

    def endpoint_state(self, sub: str, rg: str, ws: str, endpoint: str) -> dict[str, Any] | None:
        """An endpoint's REST body as the fake holds it (``None``: no such endpoint)."""
        with self._lock:
            found = self._workspace(sub, rg, ws).endpoints.get(endpoint)
            return None if found is None else json.loads(json.dumps(found.body))

    # ------------------------------------------------------------------ dispatch

    def handle(self, method: str, url: str, headers: Mapping[str, str], body: bytes) -> Reply:
        """Answer one request (the transport's entry point)."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        path = unquote(parts.path)
        if host.endswith(".blob.core.windows.net"):
            service = "blob"
        elif host.endswith(".inference.ml.azure.com"):
            service = "score"
        elif "/providers/microsoft.insights/" in path.lower() and not AUTOSCALE_PATH.match(path):
            service = "metrics"
        elif host.endswith(".api.azureml.ms"):
            service = "history"  # workspace discovery and run history (pipeline child jobs, logs)
        else:
            service = "arm"
        with self._lock:
            try:
                reply = self._fault(method, path, service)
                if reply is None:
                    if service == "blob":
                        reply = self._blob(method, host, path, query, headers, body)
                    elif service == "score":
                        reply = None  # answered outside the lock: the model runs on its own loop
                    elif service == "metrics":
                        reply = self._metrics_reply(path, query)
                    elif service == "history":
                        reply = self.jobs.history(method, host, path, query, body)
                    else:
                        reply = self._arm(method, path, query, body)
            except _Refused as refused:
                reply = refused.reply
        if reply is None:
            reply = self._score(host, path, headers, body)
        with self._lock:
            self.calls.append(AzureCall(method, url, service, reply.status, len(body)))
        return reply

    def _fault(self, method: str, path: str, service: str) -> Reply | None:
        for fault in self.faults:
            if fault.times is not None and fault.hits >= fault.times:
                continue
            if fault.match and fault.match not in path:
                continue
            if fault.kind == "throttle" and service in ("arm", "metrics", "history"):
                fault.hits += 1
                return _error(
                    429,
                    "TooManyRequests",
                    "The request was throttled.",
                    {"Retry-After": str(fault.retry_after)},
                )
            if fault.kind == "busy" and method in ("PUT", "PATCH", "DELETE") and service == "arm":
                fault.hits += 1
                return _error(
                    409,
                    "EndpointUpdating",
                    "the endpoint is in provisioning state Updating; wait for the running operation "
                    "to finish",
                )
            if fault.kind == "forbidden" and service in ("arm", "metrics"):
                fault.hits += 1
                return _error(
                    403,
                    "AuthorizationFailed",
                    "The client 'fake@mlshift.test' does not have authorization to perform action "
                    f"'{method} {path}' over scope '{path}' or the scope is invalid.",
                )
            if fault.kind == "quota" and method == "PUT" and service == "arm":
                fault.hits += 1
                return _error(
                    400,
                    "QuotaExceeded",
                    "Not enough quota available for the requested VM size in this subscription. "
                    f"Current usage/limit: 24/24 cores (region {self.region})",
                )
        return None

    # ------------------------------------------------------------------ ARM

    def _workspace(self, sub: str, rg: str, ws: str) -> _Workspace:
        key = f"{sub}/{rg}/{ws}".lower()
        found = self._workspaces.get(key)
        if found is None:
            found = _Workspace(sub, rg, ws, self.region)
            self._workspaces[key] = found
            self._blobs.setdefault((found.account, "azureml-blobstore"), {})
        return found

    def _arm(self, method: str, path: str, query: Mapping[str, str], body: bytes) -> Reply:
        if AUTOSCALE_PATH.match(path):
            return self.autoscale.handle(method, path, json.loads(body) if body else {})
        match = _WS.match(path)
        if match is None:
            return _error(404, "NotFound", f"the fake has no route for {method} {path}")
        ws = self._workspace(match["sub"], match["rg"], match["ws"])
        rest = [p for p in (match["rest"] or "").split("/") if p]
        data = json.loads(body) if body else {}
        if not rest:
            return Reply(200, self._workspace_body(ws))
        head = rest[0].lower()
        if head == "datastores":
            return self._datastores(ws, rest[1:])
        if head == "models":
            return self._models(ws, method, rest[1:], query, data)
        if head == "environments":
            return self._environments(ws, method, rest[1:], data)
        if head == "onlineendpoints":
            return self._endpoints(ws, method, rest[1:], data)
        if head == "data":
            return self._data(ws, method, rest[1:], data)
        if head in ("components", "jobs", "schedules"):
            return self.jobs.arm(ws, head, method, rest[1:], query, data)
        return _error(404, "NotFound", f"the fake has no route for {method} {path}")

    def _workspace_body(self, ws: _Workspace) -> dict[str, Any]:
        return {
            "id": ws.arm_id,
            "name": ws.name,
            "type": "Microsoft.MachineLearningServices/workspaces",
            "location": ws.location,
            "kind": "Default",
            "tags": {},
            "identity": {"type": "SystemAssigned"},
            "sku": {"name": "Basic", "tier": "Basic"},
            "properties": {
                "friendlyName": ws.name,
                "discoveryUrl": f"https://{ws.location}.api.azureml.ms/discovery",
                "mlFlowTrackingUri": f"azureml://{ws.location}.api.azureml.ms/mlflow/v1.0{ws.arm_id}",
                "storageAccount": f"{ws.arm_id.split('/providers/')[0]}/providers/Microsoft.Storage/"
                f"storageAccounts/{ws.account}",
                "containerRegistry": f"{ws.arm_id.split('/providers/')[0]}/providers/"
                f"Microsoft.ContainerRegistry/registries/{ws.account}acr",
                "provisioningState": "Succeeded",
                "publicNetworkAccess": "Enabled",
            },
        }

    def _datastore_body(self, ws: _Workspace) -> dict[str, Any]:
        return {
            "id": f"{ws.arm_id}/datastores/workspaceblobstore",
            "name": "workspaceblobstore",
            "type": "Microsoft.MachineLearningServices/workspaces/datastores",
            "properties": {
                "datastoreType": "AzureBlob",
                "accountName": ws.account,
                "containerName": "azureml-blobstore",
                "endpoint": "core.windows.net",
                "protocol": "https",
                "isDefault": True,
                "credentials": {"credentialsType": "AccountKey"},
                "serviceDataAccessAuthIdentity": "None",
                "tags": {},
            },
        }

    def _datastores(self, ws: _Workspace, rest: list[str]) -> Reply:
        if not rest:
            return Reply(200, {"value": [self._datastore_body(ws)]})
        if rest[0] != "workspaceblobstore":
            return _error(404, "UserError", f"datastore {rest[0]!r} not found")
        if len(rest) > 1 and rest[1].lower() == "listsecrets":
            return Reply(200, {"secretsType": "AccountKey", "key": "ZmFrZS1rZXk="})
        return Reply(200, self._datastore_body(ws))

    # ---- models

    def _model_body(self, ws: _Workspace, name: str, version: str, props: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": f"{ws.arm_id}/models/{name}/versions/{version}",
            "name": version,
            "type": "Microsoft.MachineLearningServices/workspaces/models/versions",
            "systemData": props.get("_system") or _system(),
            "properties": {k: v for k, v in props.items() if k != "_system"},
        }

    def _models(
        self, ws: _Workspace, method: str, rest: list[str], query: Mapping[str, str], data: dict[str, Any]
    ) -> Reply:
        if not rest:
            names = sorted(ws.models)
            value = [
                {
                    "id": f"{ws.arm_id}/models/{n}",
                    "name": n,
                    "properties": {"latestVersion": self._latest(ws, n), "isArchived": False},
                }
                for n in names
                if self._latest(ws, n)
            ]
            return Reply(200, {"value": value})
        name = rest[0]
        versions = ws.models.get(name, {})
        if len(rest) == 1:
            if method == "GET":
                if not versions:
                    return _error(404, "UserError", f"model container {name!r} not found")
                return Reply(200, {"id": f"{ws.arm_id}/models/{name}", "name": name, "properties": {}})
            return Reply(200, {"id": f"{ws.arm_id}/models/{name}", "name": name, "properties": {}})
        if len(rest) == 2:  # .../versions
            view = query.get("listViewType", "ActiveOnly")
            rows = [
                (v, p)
                for v, p in versions.items()
                if view == "All" or (p.get("isArchived", False) == (view == "ArchivedOnly"))
            ]
            rows.sort(key=lambda item: item[1]["_system"]["createdAt"], reverse=True)
            top = int(query.get("$top") or len(rows) or 1)
            return Reply(200, {"value": [self._model_body(ws, name, v, p) for v, p in rows[:top]]})
        version = rest[2]
        if method == "GET":
            if version not in versions:
                return _error(404, "UserError", f"model {name}:{version} not found")
            return Reply(200, self._model_body(ws, name, version, versions[version]))
        if method == "PUT":
            if not _MODEL_NAME.fullmatch(name):
                return _error(400, "UserError", f"model name {name!r} is invalid")
            props = dict(data.get("properties") or {})
            props.setdefault("flavors", {})
            props.setdefault("properties", {})
            props.setdefault("tags", {})
            props.setdefault("isArchived", False)
            old = versions.get(version)
            if old is not None:
                if old.get("modelUri") != props.get("modelUri"):
                    return _error(
                        409,
                        "Conflict",
                        f"model {name}:{version} exists with another asset; versions are immutable",
                    )
                props["_system"] = old["_system"]
            else:
                stamp = datetime.now(timezone.utc) + timedelta(microseconds=next(self._etags))
                props["_system"] = _system(stamp.isoformat())
            ws.models.setdefault(name, {})[version] = props
            return Reply(200 if old else 201, self._model_body(ws, name, version, props))
        if method == "DELETE":
            versions.pop(version, None)
            return Reply(200 if versions is not None else 204)
        return _error(405, "MethodNotAllowed", method)

    def _latest(self, ws: _Workspace, name: str) -> str | None:
        live = [
            (p["_system"]["createdAt"], v) for v, p in ws.models.get(name, {}).items() if not p["isArchived"]
        ]
        return max(live)[1] if live else None

    # ---- environments

    def _environments(self, ws: _Workspace, method: str, rest: list[str], data: dict[str, Any]) -> Reply:
        if len(rest) < 3:
            return Reply(200, {"value": []})
        name, version = rest[0], rest[2]
        stored = ws.environments.setdefault(name, {})
        ident = f"{ws.arm_id}/environments/{name}/versions/{version}"
        if method == "GET":
            if version not in stored:
                return _error(404, "UserError", f"environment {name}:{version} not found")
            return Reply(200, {"id": ident, "name": version, "properties": stored[version]})
        if method == "PUT":
            props = dict(data.get("properties") or {})
            props.setdefault("osType", "Linux")
            props.setdefault("tags", {})
            props.setdefault("properties", {})
            stored[version] = props
            return Reply(201, {"id": ident, "name": version, "properties": props})
        return _error(405, "MethodNotAllowed", method)

    # ---- online endpoints

    def _data(self, ws: _Workspace, method: str, rest: list[str], data: dict[str, Any]) -> Reply:
        """Data asset versions: ``GET``/``PUT .../data/NAME/versions/VERSION`` (a version is immutable)."""
        if len(rest) != 3 or rest[1].lower() != "versions":
            return _error(404, "NotFound", f"the fake has no route for {method} data/{'/'.join(rest)}")
        name, version = rest[0], rest[2]
        found = ws.data.get(name, {}).get(version)
        if method == "GET":
            if found is None:
                return _error(404, "UserError", f"data asset {name}:{version} not found")
            return Reply(200, found)
        if method != "PUT":
            return _error(405, "MethodNotAllowed", method)
        props = dict(data.get("properties") or {})
        if found is not None:
            if found["properties"].get("dataUri") == props.get("dataUri"):
                return Reply(200, found)
            return _error(409, "UserError", f"data asset {name}:{version} already exists with another path")
        props.setdefault("dataType", "uri_folder")
        body = {
            "id": f"{ws.arm_id}/data/{name}/versions/{version}",
            "name": version,
            "type": "Microsoft.MachineLearningServices/workspaces/data/versions",
            "systemData": _system(),
            "properties": props,
        }
        ws.data.setdefault(name, {})[version] = body
        return Reply(201, body)

    def _endpoint_body(
        self, ws: _Workspace, name: str, props: dict[str, Any], data: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            "id": f"{ws.arm_id}/onlineEndpoints/{name}",
            "name": name,
            "type": "Microsoft.MachineLearningServices/workspaces/onlineEndpoints",
            "location": ws.location,
            "kind": "Managed",
            "tags": dict(data.get("tags") or {}),
            "identity": data.get("identity") or {"type": "SystemAssigned"},
            "systemData": _system(),
            "properties": props,
        }

    def _visible(self, ws: _Workspace, endpoint: _Endpoint) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(json.dumps(endpoint.body))
        if endpoint.pending_reads > 0:
            endpoint.pending_reads -= 1
            body["properties"]["traffic"] = body["properties"].pop("_previousTraffic", {})
            body["properties"]["mirrorTraffic"] = body["properties"].pop("_previousMirror", {})
        else:
            body["properties"].pop("_previousTraffic", None)
            body["properties"].pop("_previousMirror", None)
        if endpoint.busy_reads > 0:
            endpoint.busy_reads -= 1
            body["properties"]["provisioningState"] = "Updating"
        return body

    def _endpoints(self, ws: _Workspace, method: str, rest: list[str], data: dict[str, Any]) -> Reply:
        if not rest:
            value = [self._visible(ws, e) for e in ws.endpoints.values()]
            return Reply(200, {"value": value})
        name = rest[0]
        endpoint = ws.endpoints.get(name)
        if len(rest) == 1:
            if method == "GET":
                if endpoint is None:
                    return _error(404, "UserError", f"online endpoint {name!r} not found")
                return Reply(200, self._visible(ws, endpoint))
            if method in ("PUT", "PATCH"):
                return self._put_endpoint(ws, name, endpoint, data, method)
            if method == "DELETE":
                if endpoint is None:
                    return Reply(204)
                self._refuse_if_busy(endpoint)
                del ws.endpoints[name]
                return Reply(200)
        if endpoint is None:
            return _error(404, "UserError", f"online endpoint {name!r} not found")
        action = rest[1].lower()
        if action == "listkeys" and method == "POST":
            return Reply(200, {"primaryKey": endpoint.key, "secondaryKey": endpoint.key[::-1]})
        if action == "deployments":
            return self._deployments(ws, endpoint, method, rest[2:], data)
        return _error(404, "NotFound", f"the fake has no route for {method} {'/'.join(rest)}")

    def _refuse_if_busy(self, endpoint: _Endpoint) -> None:
        if endpoint.busy_reads > 0:
            raise _Refused(
                _error(
                    409,
                    "EndpointUpdating",
                    f"endpoint {endpoint.body['name']!r} is in provisioning state Updating; "
                    "wait for the running operation to finish",
                )
            )

    def _put_endpoint(
        self, ws: _Workspace, name: str, endpoint: _Endpoint | None, data: dict[str, Any], method: str
    ) -> Reply:
        props = dict(data.get("properties") or {})
        if endpoint is None:
            if method == "PATCH":
                return _error(404, "UserError", f"online endpoint {name!r} not found")
            if not _ONLINE_NAME.fullmatch(name):
                return _error(400, "UserError", f"endpoint name {name!r} is invalid")
            others = {e.lower() for w in self._workspaces.values() if w is not ws for e in w.endpoints}
            if name.lower() in self._taken | others:
                return _error(
                    409,
                    "EndpointNameNotAvailable",
                    f"endpoint name {name!r} is already in use in region {ws.location}",
                )
            props.setdefault("traffic", {})
            props.setdefault("mirrorTraffic", {})
            if props["traffic"]:
                return _error(400, "UserError", "a new endpoint has no deployments to send traffic to")
            props.update(
                {
                    "authMode": props.get("authMode", "Key"),
                    "provisioningState": "Succeeded",
                    "scoringUri": f"https://{name}.{ws.location}.inference.ml.azure.com/score",
                    "swaggerUri": f"https://{name}.{ws.location}.inference.ml.azure.com/swagger.json",
                }
            )
            ws.endpoints[name] = _Endpoint(self._endpoint_body(ws, name, props, data), key=uuid.uuid4().hex)
            return Reply(201, ws.endpoints[name].body)
        self._refuse_if_busy(endpoint)
        current = endpoint.body["properties"]
        traffic = {k: int(v) for k, v in (props.get("traffic", current.get("traffic")) or {}).items()}
        mirror = {
            k: int(v) for k, v in (props.get("mirrorTraffic", current.get("mirrorTraffic")) or {}).items()
        }
        problem = self._check_traffic(endpoint, traffic, mirror)
        if problem:
            return _error(400, "BadArgument", problem)
        changed = traffic != current.get("traffic") or mirror != current.get("mirrorTraffic")
        if changed and self.traffic_lag:
            current["_previousTraffic"] = current.get("traffic", {})
            current["_previousMirror"] = current.get("mirrorTraffic", {})
            endpoint.pending_reads = self.traffic_lag
        current["traffic"], current["mirrorTraffic"] = traffic, mirror
        if "tags" in data:
            endpoint.body["tags"] = dict(data.get("tags") or {})
        if props.get("description") is not None:
            current["description"] = props["description"]
        endpoint.counter = {}
        return Reply(200, endpoint.body)

    @staticmethod
    def _check_traffic(endpoint: _Endpoint, traffic: dict[str, int], mirror: dict[str, int]) -> str | None:
        unknown = sorted((set(traffic) | set(mirror)) - set(endpoint.deployments))
        if unknown:
            return f"traffic names deployments that do not exist: {', '.join(unknown)}"
        if any(v < 0 or v > 100 for v in traffic.values()):
            return "traffic values must be between 0 and 100"
        total = sum(traffic.values())
        if traffic and total not in (0, 100):
            return f"traffic must sum to 100 (or 0), got {total}"
        if len([v for v in mirror.values() if v]) > 1:
            return "only one deployment can receive mirrored traffic"
        for deployment, percent in mirror.items():
            if percent > 50:
                return f"mirror traffic of {deployment!r} is {percent}%: at most 50% can be mirrored"
            if percent and traffic.get(deployment, 0):
                return f"deployment {deployment!r} cannot receive live and mirrored traffic at once"
        return None

    # ---- deployments

    def _deployment_body(
        self, ws: _Workspace, endpoint: _Endpoint, name: str, data: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            "id": f"{endpoint.body['id']}/deployments/{name}",
            "name": name,
            "type": "Microsoft.MachineLearningServices/workspaces/onlineEndpoints/deployments",
            "location": ws.location,
            "kind": "Managed",
            "tags": dict(data.get("tags") or {}),
            "sku": data.get("sku") or {"name": "Default", "tier": "Standard", "capacity": 1},
            "systemData": _system(),
            "properties": data["properties"],
        }

    def _deployments(
        self, ws: _Workspace, endpoint: _Endpoint, method: str, rest: list[str], data: dict[str, Any]
    ) -> Reply:
        if not rest:
            return Reply(200, {"value": [d.body for d in endpoint.deployments.values()]})
        name = rest[0]
        found = endpoint.deployments.get(name)
        if len(rest) > 1 and rest[1].lower() == "getlogs":
            if found is None:
                return _error(404, "UserError", f"deployment {name!r} not found")
            tail = int(data.get("tail") or 100)
            return Reply(200, {"content": "\n".join(found.logs.splitlines()[-tail:])})
        if method == "GET":
            if found is None:
                return _error(404, "UserError", f"deployment {name!r} not found")
            return Reply(200, found.body)
        if method == "DELETE":
            if found is None:
                return Reply(204)
            self._refuse_if_busy(endpoint)
            props = endpoint.body["properties"]
            if props.get("traffic", {}).get(name) or props.get("mirrorTraffic", {}).get(name):
                return _error(
                    400,
                    "BadArgument",
                    f"deployment {name!r} takes traffic; set its traffic to 0 before deleting it",
                )
            del endpoint.deployments[name]
            props.get("traffic", {}).pop(name, None)
            props.get("mirrorTraffic", {}).pop(name, None)
            return Reply(200)
        if method == "PUT":
            self._refuse_if_busy(endpoint)
            if not _ONLINE_NAME.fullmatch(name):
                return _error(
                    400, "UserError", f"deployment name {name!r} is invalid (3-32 letters, digits, '-')"
                )
            props = dict(data.get("properties") or {})
            model = str(props.get("model") or "")
            model_match = re.search(r"/models/([^/]+)/versions/([^/]+)$", model)
            if not model_match or model_match[2] not in ws.models.get(model_match[1], {}):
                return _error(400, "UserError", f"model {model!r} not found in the workspace")
            problem = _normalize_collector(props)
            if problem:
                return _error(400, "BadArgument", problem)
            props.setdefault("scaleSettings", {"scaleType": "Default"})
            props.setdefault("endpointComputeType", "Managed")
            props.setdefault("appInsightsEnabled", False)
            props.setdefault("egressPublicNetworkAccess", "Enabled")
            props["provisioningState"] = "Succeeded"
            data = {**data, "properties": props}
            unhealthy = next(
                (
                    f
                    for f in self.faults
                    if f.kind == "unhealthy"
                    and f"/deployments/{name}".startswith(f.match)
                    and (f.times is None or f.hits < f.times)
                ),
                None,
            )
            deployment = _Deployment(self._deployment_body(ws, endpoint, name, data))
            endpoint.deployments[name] = deployment
            if unhealthy is not None:
                unhealthy.hits += 1
                props["provisioningState"] = "Failed"
                deployment.failed = True
                deployment.logs = unhealthy.logs
                return _error(
                    400,
                    "ResourceNotReady",
                    f"User container has crashed or terminated: the readiness probe of deployment {name!r} "
                    "failed 30 times. Please see troubleshooting guide, available here: "
                    "https://aka.ms/oe-tsg#error-resourcenotready",
                )
            return Reply(201, deployment.body)
        return _error(405, "MethodNotAllowed", method)

    # ------------------------------------------------------------------ blob storage

    def _blob(
        self,
        method: str,
        host: str,
        path: str,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        body: bytes,
    ) -> Reply:
        account = host.split(".", 1)[0]
        container, _, key = path.lstrip("/").partition("/")
        blobs = self._blobs.get((account, container))
        if blobs is None:
            return Reply(404, b"", {"x-ms-error-code": "ContainerNotFound"})
        if query.get("comp") == "list":
            prefix = query.get("prefix", "")
            names = sorted(k for k in blobs if k.startswith(prefix))
            items = "".join(
                f"<Blob><Name>{escape(k)}</Name><Properties><Content-Length>{len(blobs[k][0])}</Content-Length>"
                f"<Etag>{blobs[k][1]}</Etag><BlobType>BlockBlob</BlobType></Properties></Blob>"
                for k in names
            )
            xml = (
                '<?xml version="1.0" encoding="utf-8"?><EnumerationResults '
                f'ServiceEndpoint="https://{host}/" ContainerName="{container}">'
                f"<Prefix>{escape(prefix)}</Prefix>"
                f"<Blobs>{items}</Blobs><NextMarker /></EnumerationResults>"
            )
            return Reply(200, xml.encode(), {"content-type": "application/xml"})
        found = blobs.get(key)
        meta_key = (account, container, key)
        if method == "PUT" and query.get("comp") == "metadata":
            if found is None:
                return Reply(404, b"", {"x-ms-error-code": "BlobNotFound"})
            self._blob_meta[meta_key] = {k: v for k, v in headers.items() if k.startswith("x-ms-meta-")}
            etag = f'"0x{next(self._etags):016X}"'
            blobs[key] = (found[0], etag)
            return Reply(200, b"", {"etag": etag, "last-modified": _http_date()})
        if method == "PUT":
            if headers.get("if-none-match") == "*" and found is not None:
                return Reply(409, b"", {"x-ms-error-code": "BlobAlreadyExists"})
            match = headers.get("if-match")
            if match and (found is None or found[1] != match):
                return Reply(412, b"", {"x-ms-error-code": "ConditionNotMet"})
            etag = f'"0x{next(self._etags):016X}"'
            blobs[key] = (body, etag)
            self._blob_meta[meta_key] = {k: v for k, v in headers.items() if k.startswith("x-ms-meta-")}
            return Reply(201, b"", {"etag": etag, "last-modified": _http_date(), "content-md5": ""})
        if found is None:
            return Reply(404, b"", {"x-ms-error-code": "BlobNotFound"})
        data, etag = found
        if method == "DELETE":
            del blobs[key]
            self._blob_meta.pop(meta_key, None)
            return Reply(202, b"")
        common = {
            **self._blob_meta.get(meta_key, {}),
            "etag": etag,
            "last-modified": _http_date(),
            "x-ms-blob-type": "BlockBlob",
            "content-type": "application/octet-stream",
        }
        if method == "HEAD":
            return Reply(200, b"", {**common, "content-length": str(len(data))})
        span = headers.get("x-ms-range") or headers.get("range")
        if span and data:
            start_text, _, end_text = span.removeprefix("bytes=").partition("-")
            start = int(start_text)
            end = min(int(end_text) if end_text else len(data) - 1, len(data) - 1)
            return Reply(
                206, data[start : end + 1], {**common, "content-range": f"bytes {start}-{end}/{len(data)}"}
            )
        return Reply(200, data, common)

    def blob_keys(self, prefix: str = "") -> list[str]:
        """Every blob key in every workspace datastore (for tests)."""
        with self._lock:
            return sorted(k for blobs in self._blobs.values() for k in blobs if k.startswith(prefix))

    def blob_bytes(self, key: str) -> bytes:
        """The content of the blob ``key`` of the workspace datastores (for tests).

        Raises:
            KeyError: no such blob.
        """
        with self._lock:
            for blobs in self._blobs.values():
                if key in blobs:
                    return blobs[key][0]
        raise KeyError(key)

    def put_blob(self, key: str, data: bytes, workspace: str | None = None) -> None:
        """Write ``key`` into the datastore of ``workspace`` (the only or first one by default)."""
        with self._lock:
            found = [w for w in self._workspaces.values() if workspace in (None, w.name)]
            if not found:
                raise KeyError(f"no workspace {workspace!r} has been used yet")
            blobs = self._blobs.setdefault((found[0].account, "azureml-blobstore"), {})
            blobs[key] = (data, f'"0x{next(self._etags):016X}"')

    def _blob_folder(self, ws: _Workspace, uri: str, dest: Path) -> None:
        """Copy a datastore folder or file (``azureml://.../datastores/NAME/paths/P``) to ``dest``."""
        prefix = uri.split("/paths/", 1)[1] if "/paths/" in uri else uri
        blobs = self._blobs[(ws.account, "azureml-blobstore")]
        for key, (data, _) in blobs.items():
            if key == prefix or key.startswith(prefix.rstrip("/") + "/"):
                rel = key[len(prefix) :].lstrip("/") or Path(key).name
                target = dest / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)

    # ------------------------------------------------------------------ scoring

    def _score(self, host: str, path: str, headers: Mapping[str, str], body: bytes) -> Reply:
        endpoint_name = host.split(".", 1)[0]
        with self._lock:
            located = [
                (ws, ws.endpoints[n])
                for ws in self._workspaces.values()
                for n in ws.endpoints
                if n == endpoint_name
            ]
            if not located:
                return Reply(404, {"message": f"endpoint {endpoint_name!r} not found"})
            ws, endpoint = located[0]
            if headers.get("authorization", "") != f"Bearer {endpoint.key}":
                return Reply(401, {"message": "invalid authentication"})
            if path.rstrip("/") != "/score":
                return Reply(404, {"message": f"no route {path}"})
            props = endpoint.body["properties"]
            target = headers.get("azureml-model-deployment")
            chosen: str | None = target
            if target:
                if target not in endpoint.deployments:
                    return Reply(404, {"message": f"deployment {target!r} not found on endpoint"})
            else:
                chosen = self._pick(endpoint, {k: v for k, v in props.get("traffic", {}).items() if v > 0})
                if chosen is None:
                    return Reply(
                        503, {"message": "no deployment receives traffic; set the endpoint's traffic"}
                    )
            assert chosen is not None
            deployment = endpoint.deployments[chosen]
            endpoint_id = endpoint.body["id"]
            # Only requests that name no deployment are mirrored (Azure's rule).
            mirror_to = None if target else self._mirror_pick(endpoint)
        reply = self._answer(ws, endpoint_name, endpoint_id, chosen, deployment, headers, body)
        if mirror_to is not None:
            self._mirror(ws, endpoint_name, endpoint_id, mirror_to, headers, body)
        return reply

    def _mirror_pick(self, endpoint: _Endpoint) -> _Deployment | None:
        """The deployment this un-targeted request is mirrored to, if any (``mirror_traffic``)."""
        wanted = [(k, int(v)) for k, v in endpoint.body["properties"].get("mirrorTraffic", {}).items() if v]
        if not wanted:
            endpoint.mirror = None
            return None
        name, percent = wanted[0]
        if endpoint.mirror is None or endpoint.mirror[:2] != (name, percent):
            endpoint.mirror = (name, percent, MirrorShare(percent))
        found = endpoint.deployments.get(name)
        return found if found is not None and endpoint.mirror[2].pick() else None

    def _mirror(
        self,
        ws: _Workspace,
        endpoint_name: str,
        endpoint_id: str,
        deployment: _Deployment,
        headers: Mapping[str, str],
        body: bytes,
    ) -> None:
        """Send a copy to the mirrored deployment after the caller got its answer; drop its answer."""
        name = str(deployment.body["name"])

        def run() -> None:
            reply = self._answer(ws, endpoint_name, endpoint_id, name, deployment, headers, body)
            with self._lock:
                self.mirrored.append((endpoint_name, name, reply.status))

        with self._lock:
            if self._mirroring is None:
                self._mirroring = concurrent.futures.ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix="fake-azureml-mirror"
                )
            self._mirror_jobs = [j for j in self._mirror_jobs if not j.done()]
            self._mirror_jobs.append(self._mirroring.submit(run))

    def wait_mirrored(self, timeout: float = 300.0) -> None:
        """Wait until every mirrored copy sent so far has been answered (and counted in the metrics).

        Raises:
            TimeoutError: some copy was still unanswered after ``timeout`` seconds (a bound on
                a hang: a first copy loads its model, which a loaded machine may take long to do).
        """
        with self._lock:
            jobs = list(self._mirror_jobs)
        _, pending = concurrent.futures.wait(jobs, timeout=timeout)
        if pending:
            raise TimeoutError(f"{len(pending)} mirrored requests still unanswered after {timeout:g} s")

    def _answer(
        self,
        ws: _Workspace,
        endpoint_name: str,
        endpoint_id: str,
        chosen: str,
        deployment: _Deployment,
        headers: Mapping[str, str],
        body: bytes,
    ) -> Reply:
        """One deployment's answer, as Azure wraps it, counted in the endpoint's metrics."""
        start = time.perf_counter()
        out_headers: dict[str, str] = {}
        if deployment.failed:
            status, out = 502, b'{"message": "deployment is not healthy"}'
        else:
            app = self._server.app(
                f"{endpoint_name}-{chosen}-{id(deployment)}",
                lambda folder: self._load(ws, deployment, folder),
            )
            status, out_headers, out = self._server.call(
                app, body, headers.get("content-type", "application/json")
            )
        latency = (time.perf_counter() - start) * 1000
        request_id = headers.get("x-request-id") or str(uuid.uuid4())
        reply_headers = {
            "azureml-model-deployment": chosen,
            "content-type": out_headers.get("content-type", "application/json"),
            "x-request-id": request_id,
        }
        self._collect(
            ws,
            endpoint_name,
            chosen,
            deployment,
            request_id,
            (headers.get("content-type", "application/json"), body),
            (reply_headers["content-type"], out),
        )
        outer = status
        if status != 200:
            # Azure wraps a model container's own error: 424, with the original code in a header.
            outer = 424
            reply_headers["ms-azureml-model-error-statuscode"] = str(status)
            reply_headers["ms-azureml-model-error-reason"] = "model_error"
        with self._lock:
            self._metrics.append((endpoint_id.lower(), chosen, time.time(), outer, status, latency))
        return Reply(outer, out, reply_headers)

    def _collect(
        self,
        ws: _Workspace,
        endpoint_name: str,
        chosen: str,
        deployment: _Deployment,
        request_id: str,
        request: tuple[str, bytes],
        response: tuple[str, bytes],
    ) -> None:
        """Payload logging: write the request and its answer as Azure's data collector does."""
        collector = deployment.body["properties"].get("dataCollector") or {}
        collections = collector.get("collections") or {}
        enabled = [
            name
            for name in COLLECTIONS
            if str((collections.get(name) or {}).get("dataCollectionMode", "")) == "Enabled"
        ]
        if not enabled:
            return
        rate = (collections.get(enabled[0]) or {}).get("samplingRate")
        rate = 1.0 if rate is None else float(rate)
        with self._lock:
            deployment.sampled += rate
            if deployment.sampled < 1.0 - 1e-9:
                return
            deployment.sampled -= 1.0
            now = datetime.now(timezone.utc)
            blobs = self._blobs.setdefault((ws.account, "azureml-blobstore"), {})
            for name, (content_type, data) in zip(COLLECTIONS, (request, response), strict=True):
                if name not in enabled:
                    continue
                line = payload_record(
                    name,
                    source=str(deployment.body["id"]),
                    time=now,
                    content_type=content_type,
                    body=data,
                    correlation_id=request_id,
                )
                key = capture_key(endpoint_name, chosen, name, now, deployment.instance)
                before = blobs.get(key, (b"", ""))[0]
                blobs[key] = (before + line.encode() + b"\n", f'"0x{next(self._etags):016X}"')

    @staticmethod
    def _pick(endpoint: _Endpoint, weights: Mapping[str, int]) -> str | None:
        """Smooth weighted round robin: exact shares over any window, and deterministic."""
        if not weights:
            return None
        total = sum(weights.values())
        for name, weight in weights.items():
            endpoint.counter[name] = endpoint.counter.get(name, 0) + weight
        best = max(weights, key=lambda n: endpoint.counter[n])
        endpoint.counter[best] -= total
        return best

    def _load(self, ws: _Workspace, deployment: _Deployment, folder: Path) -> Any:
        """Fetch the deployment's model from the datastore and build the model server app for it."""
        from mlshift.serving import create_app, load_model
        from mlshift.specs.model import Signature

        props = deployment.body["properties"]
        match = re.search(r"/models/([^/]+)/versions/([^/]+)$", str(props["model"]))
        assert match is not None
        model = ws.models[match[1]][match[2]]
        self._blob_folder(ws, str(model.get("modelUri", "")), folder)
        env = dict(props.get("environmentVariables") or {})
        # Azure mounts the model's folder; the serving image finds the model file in it.
        entry = str((model.get("tags") or {}).get("mlshift:entry", ""))
        signature = env.get("MLSHIFT_SIGNATURE")
        loaded = load_model(
            folder / entry if entry else folder,
            env.get("MLSHIFT_FRAMEWORK", "sklearn"),
            digest=env.get("MLSHIFT_MODEL_DIGEST"),
            signature=Signature.model_validate_json(signature) if signature else None,
        )
        return create_app(loaded, variant=deployment.body["name"], model_ref=env.get("MLSHIFT_MODEL_REF"))

    # ------------------------------------------------------------------ Azure Monitor metrics

    def _metrics_reply(self, path: str, query: Mapping[str, str]) -> Reply:
        resource = path.lower().split("/providers/microsoft.insights/")[0]
        names = [n.strip() for n in query.get("metricnames", "RequestsPerMinute").split(",")]
        timespan = query.get("timespan", "")
        now = time.time()
        start, end = now - 3600, now + 60
        if "/" in timespan:
            a, b = timespan.split("/")
            start, end = _parse_time(a), _parse_time(b)
        flt = query.get("$filter", "")
        wanted = dict(re.findall(r"(\w+) eq '([^']*)'", flt))
        rows = [m for m in self._metrics if m[0] == resource.rstrip("/") and start <= m[2] <= end]
        if wanted.get("deployment", "*") != "*":
            rows = [m for m in rows if m[1] == wanted["deployment"]]
        split = [k for k, v in wanted.items() if v == "*"]
        value = []
        for metric in names:
            groups: dict[tuple[str, ...], list[tuple[str, str, float, int, int, float]]] = {}
            for row in rows:
                dims = {
                    "deployment": row[1],
                    "statusCode": str(row[3]),
                    "statusCodeClass": f"{row[3] // 100}xx",
                    "modelStatusCode": str(row[4]),
                }
                groups.setdefault(tuple(dims[k] for k in split), []).append(row)
            series = []
            for key, members in sorted(groups.items()):
                minutes: dict[int, list[tuple[str, str, float, int, int, float]]] = {}
                for row in members:
                    minutes.setdefault(int(row[2] // 60) * 60, []).append(row)
                data = []
                for minute, grouped in sorted(minutes.items()):
                    stamp = datetime.fromtimestamp(minute, timezone.utc).isoformat()
                    if metric == "RequestsPerMinute":
                        data.append({"timeStamp": stamp, "total": float(len(grouped))})
                    else:
                        pct = {"P50": 0.5, "P90": 0.9, "P95": 0.95, "P99": 0.99}.get(
                            metric.rsplit("_", 1)[-1], 0.99
                        )
                        latencies = sorted(r[5] for r in grouped)
                        idx = min(len(latencies) - 1, round(pct * (len(latencies) - 1)))
                        data.append({"timeStamp": stamp, "average": latencies[idx]})
                series.append(
                    {
                        "metadatavalues": [
                            {"name": {"value": k, "localizedValue": k}, "value": v}
                            for k, v in zip(split, key, strict=True)
                        ],
                        "data": data,
                    }
                )
            value.append(
                {
                    "id": f"{resource}/providers/Microsoft.Insights/metrics/{metric}",
                    "type": "Microsoft.Insights/metrics",
                    "name": {"value": metric, "localizedValue": metric},
                    "unit": "Count" if metric == "RequestsPerMinute" else "Milliseconds",
                    "timeseries": series,
                    "errorCode": "Success",
                }
            )
        return Reply(
            200,
            {
                "cost": 0,
                "timespan": timespan or "",
                "interval": query.get("interval", "PT1M"),
                "namespace": "Microsoft.MachineLearningServices/workspaces/onlineEndpoints",
                "resourceregion": self.region,
                "value": value,
            },
        )


_ROLLING = ("Year", "Month", "Day", "Hour", "Minute")


def _normalize_collector(props: dict[str, Any]) -> str | None:
    """Check a deployment's ``dataCollector`` and give its enums Azure's casing (what is wrong, else None)."""
    collector = props.get("dataCollector")
    if not collector:
        return None
    collections = collector.get("collections")
    if not isinstance(collections, dict) or not collections:
        return "dataCollector.collections is required"
    for name, collection in collections.items():
        mode = str((collection or {}).get("dataCollectionMode") or "Disabled")
        if mode.lower() not in ("enabled", "disabled"):
            return f"dataCollector.collections.{name}.dataCollectionMode must be Enabled or Disabled"
        collection["dataCollectionMode"] = mode.capitalize()
        rate = collection.get("samplingRate")
        if rate is not None and not 0.0 <= float(rate) <= 1.0:
            return f"dataCollector.collections.{name}.samplingRate must be between 0.0 and 1.0"
    rolling = str(collector.get("rollingRate") or "Hour")
    canonical = next((r for r in _ROLLING if r.lower() == rolling.lower()), None)
    if canonical is None:
        return f"dataCollector.rollingRate must be one of {', '.join(_ROLLING)}"
    collector["rollingRate"] = canonical
    return None


class _Refused(Exception):
    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.status)
        self.reply = reply


def _http_date() -> str:
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime())


def _parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@contextlib.contextmanager
def fake_azureml(region: str = "eastus") -> Iterator[FakeAzureML]:
    """A :class:`FakeAzureML`, active for a ``with`` block."""
    with FakeAzureML(region) as fake:
        yield fake
