"""FakeVertex: Vertex AI's v1 REST surface that mlshift uses, GCS and Cloud Monitoring, on 127.0.0.1.

The real SDK talks to it: ``aiplatform_v1``'s clients with the REST transport and
``api_endpoint=http://127.0.0.1:PORT`` (the port comes from the OS), and the GCS and Cloud
Monitoring JSON APIs on the same server. The fake keeps state and enforces Vertex's rules, so a
request real Vertex would refuse is refused here with Vertex's status and message:

- ids: ``model_id`` ``[a-z0-9_-]`` ≤ 63, ``endpoint_id`` ``[a-z0-9-]`` ≤ 63 starting with a
  letter, deployed model ids digits only; labels lowercase ≤ 63;
- version aliases ``[a-z][a-zA-Z0-9-]{0,126}[a-z0-9]``, not numeric, unique per model;
  ``default`` always on exactly one version (it cannot be removed, only moved);
- ``traffic_split`` sums to 100 (or is empty); on ``DeployModel`` the key ``"0"`` is the model
  being deployed; ``UndeployModel`` refuses a model with traffic unless a new split is given (or
  it is the last one); ``UpdateEndpoint`` compares the ``etag``; an endpoint with deployed models
  cannot be deleted, nor can a model version that is deployed;
- ``min_replica_count`` ≥ 1 and a machine type on every deployed model; a ``max_replica_count``
  below the minimum is raised to it; ``autoscaling_metric_specs`` name supported metrics, at most
  once each, utilization targets 1-100 (``duty_cycle`` only with accelerators);
  ``MutateDeployedModel`` changes only the replica counts and ``autoscaling_metric_specs``.

Long-running operations come back finished, or after ``slow_operations(polls)`` still running
for that many polls. Predictions are real: each deployed model gets the mlshift model server
app, loaded from the artifact in the fake GCS and called in-process; every answer is counted in
the fake Cloud Monitoring (``response_count`` by ``response_code``, ``prediction_latencies``,
by ``deployed_model_id``), visible after ``metric_lag`` seconds (0 by default).

Request-response logging (``predictRequestResponseLoggingConfig``) is emulated: a prediction
answered on an endpoint that logs is written, sampled at its ``samplingRate`` (seeded, so runs
repeat), as a row of an in-fake BigQuery table (made on its first row) with
Vertex's columns ``endpoint``, ``deployed_model_id``, ``logging_time``, ``request_id`` (a number),
``request_payload`` and ``response_payload`` (repeated strings: here one element each, the JSON
body). A destination naming only a project gets the dataset ``logging_<display name>_<id>`` and
the table ``request_response_logging``, as Vertex documents. BigQuery's ``jobs.query``
(``POST /bigquery/v2/projects/P/queries``) answers the one query shape mlshift sends: chosen
columns of one table, filtered on ``logging_time`` with ``TIMESTAMP`` parameters.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

from mlshift.serving import InProcessCaller

if TYPE_CHECKING:
    from mlshift_vertex.testing._pipelines import FakePipelines

__all__ = ["FakeVertex", "Fault", "VertexCall", "fake_vertex"]

_MODEL_ID = re.compile(r"[a-z0-9_-]{1,63}")
_ENDPOINT_ID = re.compile(r"[a-z]([a-z0-9-]{0,61}[a-z0-9])?")
_ALIAS = re.compile(r"[a-z][a-zA-Z0-9-]{0,126}[a-z0-9]")
_LABEL_KEY = re.compile(r"[a-z][a-z0-9_-]{0,62}")
_LABEL_VALUE = re.compile(r"[a-z0-9_-]{0,63}")
_TYPE = "type.googleapis.com/google.cloud.aiplatform.v1."
_METRIC = "aiplatform.googleapis.com/prediction/online/"
_SCALING_METRICS = {
    _METRIC + "cpu/utilization",
    _METRIC + "accelerator/duty_cycle",
    _METRIC + "request_count",
}
#: What MutateDeployedModel may change (update_mask paths, as the REST transport sends them).
_MUTABLE = {
    "dedicatedResources.minReplicaCount",
    "dedicatedResources.maxReplicaCount",
    "dedicatedResources.requiredReplicaCount",
    "dedicatedResources.autoscalingMetricSpecs",
    "disableContainerLogging",
}
_STATUS = {
    400: "INVALID_ARGUMENT",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    412: "FAILED_PRECONDITION",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


class ApiError(Exception):
    """A Google-style error answer: HTTP status, canonical status name, message."""

    def __init__(self, code: int, message: str, status: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status or _STATUS.get(code, "UNKNOWN")
        self.message = message


@dataclass(frozen=True)
class VertexCall:
    """One request the fake answered.

    Attributes:
        method: ``GET``, ``POST``, ``PATCH`` or ``DELETE``.
        path: The URL path, unquoted (``/v1/projects/p/locations/l/models/iris@1``).
        status: The HTTP status it got.
        uploaded: Bytes of object data written to GCS by the request.
    """

    method: str
    path: str
    status: int
    uploaded: int = 0

    @property
    def mutating(self) -> bool:
        """Whether the request changes state (reads, lists, predictions and polls do not)."""
        if self.method == "GET":
            return False
        return not self.path.endswith((":predict", ":rawPredict", "/entries:list", "/queries"))


@dataclass
class Fault:
    """An error the fake answers instead of handling a request.

    Attributes:
        pattern: A regular expression searched in ``METHOD PATH`` (``POST .*:deployModel``).
        code: The HTTP status to answer (429 quota, 504 timeout, 409 conflict...).
        message: The error message.
        times: How many matching requests fail (then the fault is spent).
        status: The canonical status name (``None``: the one for ``code``).
    """

    pattern: str
    code: int
    message: str
    times: int = 1
    status: str | None = None


@dataclass
class _Operation:
    name: str
    response: dict[str, Any]
    polls_left: int


@dataclass
class _Sample:
    at: float
    endpoint_id: str
    deployed_model_id: str
    response_code: int
    latency_ms: float


@dataclass
class _State:
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    endpoints: dict[str, dict[str, Any]] = field(default_factory=dict)
    objects: dict[tuple[str, str], tuple[bytes, int]] = field(default_factory=dict)
    buckets: set[str] = field(default_factory=set)
    operations: dict[str, _Operation] = field(default_factory=dict)
    samples: list[_Sample] = field(default_factory=list)
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


#: The columns of a request-response logging table, as Vertex AI makes it (name, type, mode).
LOGGING_SCHEMA: tuple[tuple[str, str, str], ...] = (
    ("endpoint", "STRING", "NULLABLE"),
    ("deployed_model_id", "STRING", "NULLABLE"),
    ("logging_time", "TIMESTAMP", "NULLABLE"),
    ("request_id", "NUMERIC", "NULLABLE"),
    ("request_payload", "STRING", "REPEATED"),
    ("response_payload", "STRING", "REPEATED"),
)
#: The update_mask paths of the endpoint's request-response logging (the REST transport's, and proto's).
_LOGGING_PATHS = ("predictRequestResponseLoggingConfig", "predict_request_response_logging_config")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_BQ_PROJECT = r"[a-z][a-z0-9-]{4,28}[a-z0-9]"
_BQ_DESTINATION = re.compile(
    rf"bq://({_BQ_PROJECT})(?:\.([A-Za-z0-9_]{{1,1024}})\.([A-Za-z0-9_-]{{1,1024}}))?"
)
_QUERY = re.compile(
    r"\s*SELECT\s+(?P<columns>.+?)\s+FROM\s+`(?P<table>[^`]+)`"
    r"(?:\s+WHERE\s+(?P<where>.+?))?(?:\s+ORDER\s+BY\s+logging_time)?\s*;?\s*",
    re.IGNORECASE | re.DOTALL,
)
_CONDITION = re.compile(r"logging_time\s*(>=|<=|>|<)\s*@(\w+)", re.IGNORECASE)


class FakeVertex:
    """A fake Vertex AI (with GCS and Cloud Monitoring) for tests and offline scripts.

    While active (``with FakeVertex() as vertex:``) it sets ``MLSHIFT_VERTEX_API_ENDPOINT`` to
    its URL and, unless already set, ``MLSHIFT_VERTEX_STAGING_BUCKET`` to its bucket,
    ``MLSHIFT_VERTEX_METRIC_LAG`` to ``metric_lag``, and short poll intervals, so
    ``mlshift.connect("vertex://PROJECT/LOCATION")`` talks to it.

    Args:
        bucket: The staging bucket that exists (others answer 404).
        metric_lag: Seconds before a prediction shows in Cloud Monitoring (real Vertex: 120-360).
        seed: Seed for the traffic split's random choice of a deployed model.

    Attributes:
        calls: Every request answered, in order.
    """

    def __init__(
        self, bucket: str = "mlshift-kit", *, metric_lag: float = 0.0, seed: int | None = None
    ) -> None:
        self.bucket = bucket
        self.metric_lag = metric_lag
        self.calls: list[VertexCall] = []
        self._state = _State(buckets={bucket})
        self._faults: list[Fault] = []
        self._slow_polls = 0
        self._broken: dict[str, int] = {}
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        self._generation = itertools.count(1_700_000_000_000_001)
        self._random = random.Random(seed)
        # Logging's own draws, so sampling does not change which deployed model answers.
        self._logging_random = random.Random(None if seed is None else seed + 1)
        self._apps: dict[str, Any] = {}
        self._caller: InProcessCaller | None = None
        self._server: ThreadingHTTPServer | None = None
        self._stack = contextlib.ExitStack()
        self._folder: Path | None = None
        self._pipelines: Any = None

    # ---------------------------------------------------------------- lifecycle

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        if self._server is None:
            raise RuntimeError("the fake is not started (use `with FakeVertex() as vertex:`)")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeVertex:
        """Start the server and point ``vertex://`` targets at it (see the class docstring)."""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                fake._serve(self)

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        thread = threading.Thread(target=server.serve_forever, name="mlshift-fake-vertex", daemon=True)
        thread.start()
        self._caller = InProcessCaller(name="mlshift-fake-vertex-models", server=("vertex", 8080))
        self._folder = Path(tempfile.mkdtemp(prefix="mlshift-fake-vertex-"))
        self._stack.callback(shutil.rmtree, self._folder, True)
        self._stack.callback(self._caller.close)
        self._stack.callback(server.server_close)
        self._stack.callback(server.shutdown)
        from mlshift_vertex.testing._pipelines import FakePipelines

        self._pipelines = FakePipelines(self)
        self._stack.callback(self._pipelines.close)
        forced = {"MLSHIFT_VERTEX_API_ENDPOINT": self.url}
        defaults = {
            "MLSHIFT_VERTEX_STAGING_BUCKET": f"gs://{self.bucket}",
            "MLSHIFT_VERTEX_METRIC_LAG": f"{self.metric_lag:g}",
            "MLSHIFT_VERTEX_METRIC_RESOLUTION": "1",
            "MLSHIFT_VERTEX_POLL_INTERVAL": "0.01",
        }
        for key, value in {**forced, **{k: v for k, v in defaults.items() if k not in os.environ}}.items():
            saved = os.environ.get(key)
            os.environ[key] = value
            self._stack.callback(self._restore, key, saved)
        return self

    @staticmethod
    def _restore(key: str, value: str | None) -> None:
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value

    def stop(self) -> None:
        """Stop the server, restore the environment and forget the model apps."""
        self._stack.close()
        self._server = None
        self._apps.clear()

    def __enter__(self) -> FakeVertex:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------------- test controls

    def fail(
        self,
        pattern: str,
        code: int,
        message: str = "injected fault",
        *,
        times: int = 1,
        status: str | None = None,
    ) -> Fault:
        """Answer the next ``times`` requests matching ``pattern`` (``METHOD PATH``) with an error.

        For example ``fail("POST .*:deployModel", 429, "Quota exceeded")`` is a quota error on
        the next deploy; ``fail("POST .*:predict", 504)`` a prediction that timed out.
        ``status`` is the canonical status name (default: the one for ``code``).
        """
        fault = Fault(pattern, code, message, times, status)
        with self._lock:
            self._faults.append(fault)
        return fault

    def slow_operations(self, polls: int) -> None:
        """Long-running operations started from now on report ``done: false`` for ``polls`` polls."""
        self._slow_polls = polls

    def break_variant(self, variant: str, code: int = 500) -> None:
        """Make the deployed models named ``variant`` answer every prediction with ``code``.

        Unlike :meth:`fail`, the answers are the model's: they are routed by the traffic split
        and counted in Cloud Monitoring under the deployed model (``code=0`` heals it).
        """
        with self._lock:
            if code:
                self._broken[variant] = code
            else:
                self._broken.pop(variant, None)

    @property
    def pipelines(self) -> FakePipelines:
        """Pipeline jobs (run for real), schedules and task logs: see :mod:`._pipelines`."""
        if self._pipelines is None:
            raise RuntimeError("the fake is not started (use `with FakeVertex() as vertex:`)")
        pipelines: FakePipelines = self._pipelines
        return pipelines

    def mutating_calls(self) -> list[VertexCall]:
        """The requests so far that changed state."""
        return [c for c in self.calls if c.mutating]

    @property
    def bytes_uploaded(self) -> int:
        """Object bytes written to GCS so far."""
        return sum(c.uploaded for c in self.calls)

    def models(self) -> dict[str, dict[str, Any]]:
        """Every model version by resource name (``.../models/ID@VERSION``): a copy."""
        with self._lock:
            return {
                f"{key}@{vid}": json.loads(json.dumps(v))
                for key, model in self._state.models.items()
                for vid, v in model["versions"].items()
            }

    def endpoint(self, name: str) -> dict[str, Any] | None:
        """An endpoint by resource name (``projects/P/locations/L/endpoints/ID``): a copy."""
        with self._lock:
            found = self._state.endpoints.get(name)
            return None if found is None else json.loads(json.dumps(found))

    def objects(self, prefix: str = "") -> dict[str, bytes]:
        """GCS objects of the staging bucket whose keys start with ``prefix``."""
        with self._lock:
            return {
                k: v[0]
                for (b, k), v in self._state.objects.items()
                if b == self.bucket and k.startswith(prefix)
            }

    def bigquery_rows(self, table: str) -> list[dict[str, Any]]:
        """The rows request-response logging wrote to ``PROJECT.DATASET.TABLE``: a copy
        (``logging_time`` as a UTC datetime, ``request_id`` an int, payloads lists of strings)."""
        with self._lock:
            return [dict(row) for row in self._state.tables.get(table.removeprefix("bq://"), [])]

    def bigquery_tables(self) -> list[str]:
        """``PROJECT.DATASET.TABLE`` of every table logging has written to."""
        with self._lock:
            return sorted(self._state.tables)

    # ---------------------------------------------------------------- HTTP

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        path = unquote(parts.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        length = int(handler.headers.get("content-length") or 0)
        raw = handler.rfile.read(length) if length else b""
        uploaded = 0
        status, headers, body = 200, {"content-type": "application/json"}, b""
        try:
            self._fault(f"{handler.command} {path}")
            if path.startswith("/upload/storage/v1/"):
                uploaded = len(raw)
                result: Any = self._gcs_upload(path, query, raw)
            elif path.startswith("/storage/v1/"):
                result = self._gcs(handler.command, path, query)
            elif path == "/v2/entries:list":
                result = self.pipelines.entries(json.loads(raw) if raw else {})
            elif path.startswith("/v3/"):
                result = self._monitoring(path, query)
            elif path.startswith("/bigquery/v2/"):
                result = self._bigquery(handler.command, path, json.loads(raw) if raw else {})
            elif path.startswith(("/v1/", "/ui/")):
                data = json.loads(raw) if raw else {}
                result = self._vertex(handler.command, path.split("/", 2)[2], query, data)
            else:
                raise ApiError(404, f"no such API: {path}")
            if isinstance(result, tuple):
                body, extra = result
                headers = {"content-type": "application/octet-stream", **extra}
            elif result is None:
                status = 204
            else:
                body = json.dumps(result).encode()
        except Exception as exc:  # the fake's own bug: answer it, so the caller fails at once
            error = exc if isinstance(exc, ApiError) else ApiError(500, f"the fake failed: {exc!r}")
            status = error.code
            body = json.dumps(
                {"error": {"code": error.code, "message": error.message, "status": error.status}}
            ).encode()
            uploaded = 0
        with self._lock:
            self.calls.append(VertexCall(handler.command, path, status, uploaded))
        handler.send_response(status)
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.send_header("content-length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def _fault(self, request: str) -> None:
        with self._lock:
            for fault in self._faults:
                if fault.times > 0 and re.search(fault.pattern, request):
                    fault.times -= 1
                    raise ApiError(fault.code, fault.message, fault.status)

    # ---------------------------------------------------------------- GCS

    def _bucket(self, name: str) -> None:
        if name not in self._state.buckets:
            raise ApiError(404, f"The specified bucket does not exist: {name}")

    def _gcs_upload(self, path: str, query: Mapping[str, str], data: bytes) -> Any:
        match = re.fullmatch(r"/upload/storage/v1/b/([^/]+)/o", path)
        if not match or query.get("uploadType") != "media" or not query.get("name"):
            raise ApiError(400, f"unsupported upload: {path} {dict(query)}")
        bucket, key = match[1], query["name"]
        with self._lock:
            self._bucket(bucket)
            current = self._state.objects.get((bucket, key))
            condition = query.get("ifGenerationMatch")
            if condition is not None:
                have = 0 if current is None else current[1]
                if int(condition) != have:
                    raise ApiError(
                        412,
                        "At least one of the pre-conditions you specified did not hold.",
                        "FAILED_PRECONDITION",
                    )
            generation = next(self._generation)
            self._state.objects[(bucket, key)] = (data, generation)
        return {"bucket": bucket, "name": key, "generation": str(generation), "size": str(len(data))}

    def _gcs(self, method: str, path: str, query: Mapping[str, str]) -> Any:
        match = re.fullmatch(r"/storage/v1/b/([^/]+)/o(?:/(.+))?", path)
        if not match:
            raise ApiError(404, f"no such GCS API: {path}")
        bucket, key = match[1], match[2]
        with self._lock:
            self._bucket(bucket)
            if key is None and method == "GET":
                prefix = query.get("prefix", "")
                names = sorted(k for (b, k) in self._state.objects if b == bucket and k.startswith(prefix))
                start = int(query.get("pageToken") or 0)
                page = names[start : start + 1000]
                out: dict[str, Any] = {"kind": "storage#objects", "items": [{"name": n} for n in page]}
                if start + 1000 < len(names):
                    out["nextPageToken"] = str(start + 1000)
                return out
            if key is None:
                raise ApiError(400, f"unsupported: {method} {path}")
            found = self._state.objects.get((bucket, key))
            if found is None:
                raise ApiError(404, f"No such object: {bucket}/{key}")
            if method == "DELETE":
                del self._state.objects[(bucket, key)]
                return None
            if method == "GET" and query.get("alt") == "media":
                return found[0], {"x-goog-generation": str(found[1])}
            if method == "GET":
                return {
                    "bucket": bucket,
                    "name": key,
                    "generation": str(found[1]),
                    "size": str(len(found[0])),
                }
        raise ApiError(400, f"unsupported: {method} {path}")

    # ---------------------------------------------------------------- Vertex AI

    def _operation(self, parent: str, response_type: str, response: Mapping[str, Any]) -> dict[str, Any]:
        name = f"{parent}/operations/{next(self._ids)}"
        body = {
            "@type": _TYPE + response_type
            if "." not in response_type
            else f"type.googleapis.com/{response_type}",
            **response,
        }
        op = _Operation(name, body, self._slow_polls)
        self._state.operations[name] = op
        return self._op_json(op)

    @staticmethod
    def _op_json(op: _Operation) -> dict[str, Any]:
        if op.polls_left > 0:
            return {"name": op.name, "done": False}
        return {"name": op.name, "done": True, "response": op.response}

    def _vertex(self, method: str, path: str, query: Mapping[str, str], data: dict[str, Any]) -> Any:
        match = re.fullmatch(r"(projects/[^/]+/locations/[^/]+)(?:/(.*))?", path)
        if not match:
            raise ApiError(404, f"no such resource: {path}")
        parent, rest = match[1], match[2] or ""
        with self._lock:
            if rest.startswith("operations/"):
                op = self._state.operations.get(path)
                if op is None:
                    raise ApiError(404, f"Operation {path} not found")
                if op.polls_left > 0:
                    op.polls_left -= 1
                return self._op_json(op)
            if rest.startswith(("pipelineJobs", "schedules")):
                return self.pipelines.api(method, parent, rest, query, data)
            if rest.startswith("models"):
                return self._models_api(method, parent, rest, query, data)
            if rest.startswith("endpoints"):
                if rest.endswith(":predict"):
                    endpoint = self._endpoint(f"{parent}/{rest.removesuffix(':predict')}")
                    deployed, model = self._route(endpoint)
                else:
                    return self._endpoints_api(method, parent, rest, query, data)
        # Predictions run outside the lock: the model server may take a while.
        return self._predict(endpoint, deployed, model, data)

    # -- models

    @staticmethod
    def _check_labels(labels: Mapping[str, str]) -> None:
        if len(labels) > 64:
            raise ApiError(400, "At most 64 labels are allowed.")
        for key, value in labels.items():
            if not _LABEL_KEY.fullmatch(key) or not _LABEL_VALUE.fullmatch(str(value)):
                raise ApiError(
                    400,
                    f"Invalid label {key}={value!r}: keys and values must be lowercase, "
                    "at most 63 characters.",
                )

    @staticmethod
    def _check_alias(alias: str) -> None:
        if not _ALIAS.fullmatch(alias) or alias.isdigit():
            raise ApiError(
                400,
                f"Invalid version alias {alias!r}: it must match "
                "[a-z][a-zA-Z0-9-]{0,126}[a-z0-9] and not be a number.",
            )

    def _model(self, key: str) -> dict[str, Any]:
        model = self._state.models.get(key)
        if model is None:
            raise ApiError(404, f"Model {key} is not found.")
        return model

    def _version(self, resource: str) -> tuple[dict[str, Any], dict[str, Any]]:
        key, _, vid = resource.partition("@")
        model = self._model(key)
        if not vid:
            vid = next(v for v, m in model["versions"].items() if "default" in m["versionAliases"])
        elif not vid.isdigit():  # an alias
            found = [v for v, m in model["versions"].items() if vid in m["versionAliases"]]
            if not found:
                raise ApiError(404, f"Model {resource} is not found.")
            vid = found[0]
        version = model["versions"].get(vid)
        if version is None:
            raise ApiError(404, f"Model {resource} is not found.")
        return model, version

    def _deployed_anywhere(self, key: str, vid: str | None) -> list[str]:
        out = []
        for name, endpoint in self._state.endpoints.items():
            for d in endpoint["deployedModels"]:
                if d["model"] == key and (vid is None or d["modelVersionId"] == vid):
                    out.append(name)
        return out

    def _models_api(
        self, method: str, parent: str, rest: str, query: Mapping[str, str], data: dict[str, Any]
    ) -> Any:
        if rest == "models:upload" and method == "POST":
            return self._upload(parent, data)
        if rest == "models" and method == "GET":
            wanted = self._label_filter(query.get("filter", ""))
            items = []
            for key, model in sorted(self._state.models.items()):
                if key.startswith(parent + "/"):
                    default = next(m for m in model["versions"].values() if "default" in m["versionAliases"])
                    if all(default["labels"].get(k) == v for k, v in wanted.items()):
                        items.append(default)
            return {"models": items}
        resource = f"{parent}/{rest}"
        if resource.endswith(":listVersions"):
            model = self._model(resource.removesuffix(":listVersions"))
            return {"models": [model["versions"][v] for v in sorted(model["versions"], key=int)]}
        if resource.endswith(":mergeVersionAliases"):
            return self._merge_aliases(
                resource.removesuffix(":mergeVersionAliases"), data.get("versionAliases", [])
            )
        if resource.endswith(":deleteVersion") and method == "DELETE":
            model, version = self._version(resource.removesuffix(":deleteVersion"))
            key = resource.partition("@")[0]
            if self._deployed_anywhere(key, version["versionId"]):
                raise ApiError(
                    400,
                    f"Model version {resource} is deployed to an endpoint; undeploy it first.",
                    "FAILED_PRECONDITION",
                )
            if "default" in version["versionAliases"]:
                raise ApiError(
                    400,
                    "The default version of a model cannot be deleted; move the default alias first.",
                    "FAILED_PRECONDITION",
                )
            del model["versions"][version["versionId"]]
            return self._operation(parent, "google.protobuf.Empty", {})
        if method == "GET":
            return self._version(resource)[1]
        if method == "DELETE":
            self._model(resource)
            if self._deployed_anywhere(resource, None):
                raise ApiError(
                    400,
                    f"Model {resource} is deployed to an endpoint; undeploy it first.",
                    "FAILED_PRECONDITION",
                )
            del self._state.models[resource]
            return self._operation(parent, "google.protobuf.Empty", {})
        raise ApiError(404, f"unsupported: {method} {rest}")

    def _upload(self, parent: str, data: dict[str, Any]) -> Any:
        body = dict(data.get("model") or {})
        if not body.get("displayName"):
            raise ApiError(400, "Model display_name is required.")
        if not (body.get("containerSpec") or {}).get("imageUri"):
            raise ApiError(400, "Model container_spec.image_uri is required.")
        self._check_labels(body.get("labels", {}))
        aliases = list(body.get("versionAliases", []))
        for alias in aliases:
            self._check_alias(alias)
        parent_model = data.get("parentModel")
        if parent_model:
            model = self._model(parent_model)
            key = parent_model
        else:
            model_id = data.get("modelId") or str(next(self._ids) + 10**12)
            if not _MODEL_ID.fullmatch(model_id):
                raise ApiError(400, f"Invalid model id {model_id!r}: use [a-z0-9_-], at most 63 characters.")
            key = f"{parent}/models/{model_id}"
            if key in self._state.models:
                raise ApiError(409, f"Model {key} already exists.")
            model = {"versions": {}, "next": 1, "createTime": _now()}
            self._state.models[key] = model
        taken = {a for m in model["versions"].values() for a in m["versionAliases"]} - {"default"}
        if taken & set(aliases):
            raise ApiError(
                400, f"Version aliases {sorted(taken & set(aliases))} are already used by another version."
            )
        vid = str(model["next"])
        model["next"] += 1
        if not model["versions"] or "default" in aliases:
            for other in model["versions"].values():
                other["versionAliases"] = [a for a in other["versionAliases"] if a != "default"]
            aliases = ["default", *[a for a in aliases if a != "default"]]
        now = _now()
        version = {
            **body,
            "name": key,
            "versionId": vid,
            "versionAliases": aliases,
            "createTime": model["createTime"],
            "updateTime": now,
            "versionCreateTime": now,
            "versionUpdateTime": now,
            "supportedDeploymentResourcesTypes": [1],  # DEDICATED_RESOURCES
        }
        model["versions"][vid] = version
        return self._operation(parent, "UploadModelResponse", {"model": key, "modelVersionId": vid})

    def _merge_aliases(self, resource: str, changes: list[str]) -> Any:
        model, version = self._version(resource)
        aliases = list(version["versionAliases"])
        for change in changes:
            if change.startswith("-"):
                alias = change[1:]
                if alias == "default":
                    raise ApiError(
                        400, "The default alias cannot be removed; set it on another version instead."
                    )
                aliases = [a for a in aliases if a != alias]
                continue
            self._check_alias(change)
            for other in model["versions"].values():
                if other is not version and change in other["versionAliases"]:
                    if change != "default":
                        raise ApiError(
                            400, f"Alias {change!r} is already used by version {other['versionId']}."
                        )
                    other["versionAliases"] = [a for a in other["versionAliases"] if a != "default"]
            if change not in aliases:
                aliases.append(change)
        version["versionAliases"] = aliases
        version["versionUpdateTime"] = _now()
        return version

    @staticmethod
    def _label_filter(text: str) -> dict[str, str]:
        return dict(re.findall(r'labels\.([a-z0-9_-]+)\s*=\s*"?([a-z0-9_-]*)"?', text))

    # -- endpoints

    def _endpoint(self, name: str) -> dict[str, Any]:
        endpoint = self._state.endpoints.get(name)
        if endpoint is None:
            raise ApiError(404, f"Endpoint {name} is not found.")
        return endpoint

    @staticmethod
    def _touch(endpoint: dict[str, Any]) -> None:
        endpoint["etag"] = f"AMEw9y{random.getrandbits(48):x}"
        endpoint["updateTime"] = _now()

    @staticmethod
    def _check_split(split: Mapping[str, Any], ids: set[str], what: str) -> dict[str, int]:
        out = {str(k): int(v) for k, v in split.items()}
        unknown = sorted(set(out) - ids)
        if unknown:
            raise ApiError(400, f"{what}: traffic_split names deployed models that do not exist: {unknown}.")
        if out and sum(out.values()) != 100:
            raise ApiError(400, f"{what}: the traffic split must sum to 100 (got {sum(out.values())}).")
        return out

    def _endpoints_api(
        self, method: str, parent: str, rest: str, query: Mapping[str, str], data: dict[str, Any]
    ) -> Any:
        if rest == "endpoints" and method == "POST":
            endpoint_id = query.get("endpointId") or str(next(self._ids) + 10**15)
            if query.get("endpointId") and not _ENDPOINT_ID.fullmatch(endpoint_id):
                raise ApiError(
                    400,
                    f"Invalid endpoint id {endpoint_id!r}: use [a-z0-9-], at most 63 characters, "
                    "starting with a letter.",
                )
            name = f"{parent}/endpoints/{endpoint_id}"
            if name in self._state.endpoints:
                raise ApiError(409, f"Endpoint {name} already exists.")
            if not data.get("displayName"):
                raise ApiError(400, "Endpoint display_name is required.")
            self._check_labels(data.get("labels", {}))
            self._check_logging(data.get("predictRequestResponseLoggingConfig"))
            now = _now()
            endpoint = {**data, "name": name, "deployedModels": [], "trafficSplit": {}, "createTime": now}
            self._touch(endpoint)
            self._state.endpoints[name] = endpoint
            return self._operation(parent, "Endpoint", endpoint)
        if rest == "endpoints" and method == "GET":
            wanted = self._label_filter(query.get("filter", ""))
            items = [
                e
                for n, e in sorted(self._state.endpoints.items())
                if n.startswith(parent + "/")
                and all(e.get("labels", {}).get(k) == v for k, v in wanted.items())
            ]
            return {"endpoints": items}
        name = f"{parent}/{rest}"
        if name.endswith(":deployModel"):
            return self._deploy(parent, self._endpoint(name.removesuffix(":deployModel")), data)
        if name.endswith(":undeployModel"):
            return self._undeploy(parent, self._endpoint(name.removesuffix(":undeployModel")), data)
        if name.endswith(":mutateDeployedModel"):
            return self._mutate(parent, self._endpoint(name.removesuffix(":mutateDeployedModel")), data)
        endpoint = self._endpoint(name)
        if method == "GET":
            return endpoint
        if method == "PATCH":
            etag = data.get("etag")
            if etag and etag != endpoint["etag"]:
                raise ApiError(
                    409, "The etag does not match: the endpoint was changed since it was read.", "ABORTED"
                )
            mask = [m.strip() for m in query.get("updateMask", "").split(",") if m.strip()]
            if not mask:
                raise ApiError(400, "update_mask is required.")
            for path in mask:
                if path in ("trafficSplit", "traffic_split"):
                    ids = {d["id"] for d in endpoint["deployedModels"]}
                    endpoint["trafficSplit"] = self._check_split(
                        data.get("trafficSplit", {}), ids, "UpdateEndpoint"
                    )
                elif path == "labels":
                    self._check_labels(data.get("labels", {}))
                    endpoint["labels"] = dict(data.get("labels", {}))
                elif path in _LOGGING_PATHS:
                    config = data.get("predictRequestResponseLoggingConfig")
                    self._check_logging(config)
                    endpoint["predictRequestResponseLoggingConfig"] = dict(config or {})
                elif path in ("displayName", "display_name", "description"):
                    endpoint[path] = data.get(path)
                else:
                    raise ApiError(400, f"update_mask path {path!r} cannot be updated.")
            self._touch(endpoint)
            return endpoint
        if method == "DELETE":
            if endpoint["deployedModels"]:
                raise ApiError(
                    400, f"Endpoint {name} has deployed models; undeploy them first.", "FAILED_PRECONDITION"
                )
            del self._state.endpoints[name]
            return self._operation(parent, "google.protobuf.Empty", {})
        raise ApiError(404, f"unsupported: {method} {rest}")

    @staticmethod
    def _check_logging(config: Mapping[str, Any] | None) -> None:
        """Vertex's rules for ``predict_request_response_logging_config``."""
        if not config or not config.get("enabled"):
            return
        rate = float(config.get("samplingRate") or 0)
        if not 0 < rate <= 1:
            raise ApiError(400, f"sampling_rate must be in (0, 1], got {rate:g}.")
        uri = str((config.get("bigqueryDestination") or {}).get("outputUri") or "")
        if not _BQ_DESTINATION.fullmatch(uri):
            raise ApiError(
                400,
                f"Invalid BigQuery destination {uri!r}: use bq://PROJECT or bq://PROJECT.DATASET.TABLE.",
            )

    def _deploy(self, parent: str, endpoint: dict[str, Any], data: dict[str, Any]) -> Any:
        deployed = dict(data.get("deployedModel") or {})
        _, version = self._version(str(deployed.get("model", "")))
        resources = deployed.get("dedicatedResources")
        if not resources or not (resources.get("machineSpec") or {}).get("machineType"):
            raise ApiError(400, "Model requires dedicated_resources with a machine_spec.machine_type.")
        self._check_scaling(resources)
        ids = {d["id"] for d in endpoint["deployedModels"]}
        new_id = str(next(self._ids) + 10**9)[-10:]
        split = data.get("trafficSplit")
        if split:
            checked = self._check_split(split, ids | {"0"}, "DeployModel")
            endpoint["trafficSplit"] = {(new_id if k == "0" else k): v for k, v in checked.items()}
        elif not ids:
            endpoint["trafficSplit"] = {new_id: 100}
        key = str(deployed["model"]).partition("@")[0]
        record = {
            **deployed,
            "id": new_id,
            "model": key,
            "modelVersionId": version["versionId"],
            "createTime": _now(),
            "dedicatedResources": resources,
        }
        endpoint["deployedModels"].append(record)
        self._touch(endpoint)
        return self._operation(parent, "DeployModelResponse", {"deployedModel": record})

    @staticmethod
    def _check_scaling(resources: dict[str, Any]) -> None:
        """Vertex's rules for replica counts and autoscaling metrics (``resources`` is completed)."""
        if int(resources.get("minReplicaCount") or 0) < 1:
            raise ApiError(400, "dedicated_resources.min_replica_count must be at least 1.")
        if int(resources.get("maxReplicaCount") or 0) < int(resources["minReplicaCount"]):
            resources["maxReplicaCount"] = resources["minReplicaCount"]
        accelerators = int((resources.get("machineSpec") or {}).get("acceleratorCount") or 0)
        seen: set[str] = set()
        for spec in resources.get("autoscalingMetricSpecs") or []:
            name, target = spec.get("metricName", ""), int(spec.get("target") or 60)
            if name not in _SCALING_METRICS:
                raise ApiError(
                    400, f"Unsupported autoscaling metric {name!r}; use one of {sorted(_SCALING_METRICS)}."
                )
            if name in seen:
                raise ApiError(400, f"At most one autoscaling_metric_specs entry per metric ({name}).")
            seen.add(name)
            if name.endswith("duty_cycle") and not accelerators:
                raise ApiError(400, "accelerator/duty_cycle autoscaling needs a machine with accelerators.")
            if not name.endswith("request_count") and not 1 <= target <= 100:
                raise ApiError(400, f"autoscaling target for {name} must be 1-100 (percent), got {target}.")
            if target < 1:
                raise ApiError(400, f"autoscaling target for {name} must be at least 1, got {target}.")

    def _mutate(self, parent: str, endpoint: dict[str, Any], data: dict[str, Any]) -> Any:
        change = dict(data.get("deployedModel") or {})
        target = next((d for d in endpoint["deployedModels"] if d["id"] == str(change.get("id", ""))), None)
        if target is None:
            raise ApiError(404, f"Deployed model {change.get('id')} is not found on {endpoint['name']}.")
        mask = data.get("updateMask") or ""
        paths = [
            p.strip() for p in (mask if isinstance(mask, str) else ",".join(mask.get("paths", []))).split(",")
        ]
        paths = [p for p in paths if p]
        if not paths:
            raise ApiError(400, "update_mask is required.")
        for path in paths:
            if path not in _MUTABLE:
                raise ApiError(400, f"Field {path!r} of a deployed model cannot be mutated.")
        resources = json.loads(json.dumps(target["dedicatedResources"]))
        given = change.get("dedicatedResources") or {}
        for path in paths:
            key = path.split(".", 1)[-1]
            if path.startswith("dedicatedResources."):
                if key in given:
                    resources[key] = given[key]
                else:
                    resources.pop(key, None)
        self._check_scaling(resources)
        target["dedicatedResources"] = resources
        self._touch(endpoint)
        return self._operation(parent, "MutateDeployedModelResponse", {"deployedModel": target})

    def _undeploy(self, parent: str, endpoint: dict[str, Any], data: dict[str, Any]) -> Any:
        target = str(data.get("deployedModelId", ""))
        ids = {d["id"] for d in endpoint["deployedModels"]}
        if target not in ids:
            raise ApiError(404, f"Deployed model {target} is not found on {endpoint['name']}.")
        split = data.get("trafficSplit")
        if split:
            checked = self._check_split(split, ids, "UndeployModel")
            if checked.get(target, 0) > 0:
                raise ApiError(400, f"The new traffic split still sends traffic to {target}.")
            endpoint["trafficSplit"] = checked
        elif int(endpoint["trafficSplit"].get(target, 0)) > 0 and len(ids) > 1:
            raise ApiError(
                400,
                f"Deployed model {target} has {endpoint['trafficSplit'][target]}% of the traffic; move it to "
                "other deployed models (or pass a new traffic split) before undeploying.",
                "FAILED_PRECONDITION",
            )
        endpoint["deployedModels"] = [d for d in endpoint["deployedModels"] if d["id"] != target]
        endpoint["trafficSplit"] = {k: v for k, v in endpoint["trafficSplit"].items() if k != target}
        if not endpoint["deployedModels"]:
            endpoint["trafficSplit"] = {}
        self._touch(endpoint)
        return self._operation(parent, "UndeployModelResponse", {})

    # -- predictions

    def _route(self, endpoint: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        split = {k: int(v) for k, v in endpoint["trafficSplit"].items() if int(v) > 0}
        if not split:
            raise ApiError(
                400, f"Endpoint {endpoint['name']} has no deployed model with traffic.", "FAILED_PRECONDITION"
            )
        pick = self._random.uniform(0, 100)
        chosen = list(split)[-1]
        for key, weight in split.items():
            pick -= weight
            if pick < 0:
                chosen = key
                break
        deployed = next(d for d in endpoint["deployedModels"] if d["id"] == chosen)
        _, version = self._version(f"{deployed['model']}@{deployed['modelVersionId']}")
        return json.loads(json.dumps(deployed)), json.loads(json.dumps(version))

    def _app(self, deployed: Mapping[str, Any], model: Mapping[str, Any]) -> Any:
        key = f"{deployed['model']}@{deployed['modelVersionId']}#{deployed['id']}"
        app = self._apps.get(key)
        if app is None:
            from mlshift.serving import create_app, load_model

            env = {e["name"]: e.get("value", "") for e in (model.get("containerSpec") or {}).get("env", [])}
            bucket, _, prefix = str(model.get("artifactUri", "")).removeprefix("gs://").partition("/")
            assert self._folder is not None
            folder = self._folder / str(next(self._ids))
            with self._lock:
                files = {
                    k: v[0]
                    for (b, k), v in self._state.objects.items()
                    if b == bucket and k.startswith(prefix)
                }
            for name, data in files.items():
                dest = folder / name[len(prefix) :].lstrip("/")
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(data)
            entry = env.get("MLSHIFT_ARTIFACT", "")
            loaded = load_model(
                folder / entry if entry else folder,
                env.get("MLSHIFT_FRAMEWORK", "sklearn"),
                digest=env.get("MLSHIFT_MODEL_DIGEST") or None,
            )
            app = create_app(loaded, variant=str(deployed.get("displayName") or deployed["id"]))
            self._apps[key] = app
        return app

    def _predict(
        self, endpoint: dict[str, Any], deployed: dict[str, Any], model: dict[str, Any], data: dict[str, Any]
    ) -> Any:
        assert self._caller is not None
        start = time.perf_counter()
        body = json.dumps({k: v for k, v in data.items() if k in ("instances", "parameters")}).encode()
        broken = self._broken.get(str(deployed.get("displayName")))
        if broken:
            status, answer = broken, json.dumps({"error": {"message": "the model failed"}}).encode()
        else:
            app = self._app(deployed, model)
            status, _, answer = self._caller.call(app, body, "application/json", "application/json")
        latency = (time.perf_counter() - start) * 1000
        with self._lock:
            self._state.samples.append(
                _Sample(time.time(), endpoint["name"].rsplit("/", 1)[-1], deployed["id"], status, latency)
            )
        if status >= 400:
            try:
                message = json.loads(answer).get("error", {}).get("message") or answer.decode(
                    errors="replace"
                )
            except (ValueError, AttributeError):
                message = answer.decode(errors="replace")
            raise ApiError(status, str(message))
        predictions = json.loads(answer).get("predictions", [])
        self._log(endpoint, deployed, body, predictions)
        return {
            "predictions": predictions,
            "deployedModelId": deployed["id"],
            "model": deployed["model"],
            "modelVersionId": deployed["modelVersionId"],
            "modelDisplayName": model.get("displayName", ""),
        }

    # ---------------------------------------------------------------- request-response logging

    def _log(self, endpoint: dict[str, Any], deployed: dict[str, Any], body: bytes, predictions: Any) -> None:
        """Write one answered prediction to the endpoint's logging table, if it logs and is sampled."""
        config = endpoint.get("predictRequestResponseLoggingConfig") or {}
        if not config.get("enabled"):
            return
        match = _BQ_DESTINATION.fullmatch(str((config.get("bigqueryDestination") or {}).get("outputUri", "")))
        if match is None:
            return
        endpoint_id = endpoint["name"].rsplit("/", 1)[-1]
        if match[2]:
            table = f"{match[1]}.{match[2]}.{match[3]}"
        else:
            display = endpoint.get("displayName", "")
            dataset = re.sub(r"[^A-Za-z0-9_]", "_", f"logging_{display}_{endpoint_id}")
            table = f"{match[1]}.{dataset}.request_response_logging"
        with self._lock:
            if self._logging_random.random() >= float(config.get("samplingRate") or 0):
                return
            self._state.tables.setdefault(table, []).append(
                {
                    "endpoint": endpoint["name"],
                    "deployed_model_id": deployed["id"],
                    "logging_time": datetime.now(timezone.utc),
                    "request_id": self._logging_random.getrandbits(62),
                    "request_payload": [body.decode()],
                    "response_payload": [json.dumps({"predictions": predictions})],
                }
            )

    # ---------------------------------------------------------------- BigQuery

    def _bigquery(self, method: str, path: str, data: Mapping[str, Any]) -> Any:
        """``jobs.query``: the query shape the adapter sends, answered at once in one page."""
        match = re.fullmatch(r"/bigquery/v2/projects/([^/]+)/queries", path)
        if method != "POST" or not match:
            raise ApiError(404, f"no such BigQuery API: {method} {path}")
        if data.get("useLegacySql", True):
            raise ApiError(400, "The fake BigQuery answers standard SQL only (useLegacySql: false).")
        query = _QUERY.fullmatch(str(data.get("query", "")))
        if query is None:
            raise ApiError(
                400,
                "The fake BigQuery answers only SELECT columns FROM `project.dataset.table` "
                "[WHERE logging_time > @a AND logging_time <= @b] [ORDER BY logging_time].",
            )
        schema = {name: (kind, mode) for name, kind, mode in LOGGING_SCHEMA}
        columns = [c.strip() for c in query["columns"].split(",")]
        if columns == ["*"]:
            columns = list(schema)
        unknown = [c for c in columns if c not in schema]
        if unknown:
            raise ApiError(400, f"Unrecognized name: {unknown[0]}", "INVALID_ARGUMENT")
        params: dict[str, datetime] = {}
        for param in data.get("queryParameters") or []:
            if (param.get("parameterType") or {}).get("type") != "TIMESTAMP":
                name = param.get("name")
                raise ApiError(400, f"The fake BigQuery takes TIMESTAMP parameters only ({name}).")
            value = str((param.get("parameterValue") or {}).get("value", ""))
            try:
                stamp = datetime.fromisoformat(value.replace(" UTC", "+00:00").replace("Z", "+00:00"))
            except ValueError:
                raise ApiError(400, f"Invalid TIMESTAMP parameter {param.get('name')}: {value!r}") from None
            params[str(param.get("name"))] = stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)
        conditions = []
        where = query["where"] or ""
        for part in re.split(r"\s+AND\s+", where, flags=re.IGNORECASE) if where else []:
            found = _CONDITION.fullmatch(part.strip())
            if found is None:
                raise ApiError(400, f"The fake BigQuery cannot filter on {part.strip()!r}.")
            if found[2] not in params:
                raise ApiError(400, f"Query parameter '{found[2]}' not found", "INVALID_ARGUMENT")
            conditions.append((found[1], params[found[2]]))
        table = query["table"]
        with self._lock:
            if table not in self._state.tables:
                project, _, rest = table.partition(".")
                raise ApiError(404, f"Not found: Table {project}:{rest} was not found in location US")
            rows = [dict(row) for row in self._state.tables[table]]
        tests = {
            ">": lambda a, b: a > b,
            ">=": lambda a, b: a >= b,
            "<": lambda a, b: a < b,
            "<=": lambda a, b: a <= b,
        }
        kept = sorted(
            (r for r in rows if all(tests[op](r["logging_time"], at) for op, at in conditions)),
            key=lambda r: r["logging_time"],
        )

        def cell(name: str, value: Any) -> Any:
            kind, mode = schema[name]
            if mode == "REPEATED":
                return [{"v": str(v)} for v in value]
            if kind == "TIMESTAMP":  # formatOptions.useInt64Timestamp: microseconds since the epoch
                return str((value - _EPOCH) // timedelta(microseconds=1))
            return None if value is None else str(value)

        job = f"job_{next(self._ids)}"
        return {
            "kind": "bigquery#queryResponse",
            "schema": {"fields": [{"name": c, "type": schema[c][0], "mode": schema[c][1]} for c in columns]},
            "jobReference": {"projectId": match[1], "jobId": job, "location": "US"},
            "totalRows": str(len(kept)),
            "rows": [{"f": [{"v": cell(c, r[c])} for c in columns]} for r in kept],
            "totalBytesProcessed": "0",
            "jobComplete": True,
            "cacheHit": False,
            "queryId": job,
        }

    # ---------------------------------------------------------------- Cloud Monitoring

    def _monitoring(self, path: str, query: Mapping[str, str]) -> Any:
        if not re.fullmatch(r"/v3/projects/[^/]+/timeSeries", path):
            raise ApiError(404, f"no such Monitoring API: {path}")
        text = query.get("filter", "")
        metric = re.search(r'metric\.type\s*=\s*"([^"]+)"', text)
        endpoint_id = re.search(r'resource\.labels\.endpoint_id\s*=\s*"([^"]+)"', text)
        deployed_id = re.search(r'metric\.labels\.deployed_model_id\s*=\s*"([^"]+)"', text)
        if not metric:
            raise ApiError(400, "filter must name a metric.type")
        try:
            start = datetime.fromisoformat(query["interval.startTime"].replace("Z", "+00:00")).timestamp()
            end = datetime.fromisoformat(query["interval.endTime"].replace("Z", "+00:00")).timestamp()
        except (KeyError, ValueError):
            raise ApiError(400, "interval.startTime and interval.endTime are required (RFC 3339)") from None
        visible_until = time.time() - self.metric_lag
        with self._lock:
            samples = [
                s
                for s in self._state.samples
                if start <= s.at <= min(end, visible_until)
                and (endpoint_id is None or s.endpoint_id == endpoint_id[1])
                and (deployed_id is None or s.deployed_model_id == deployed_id[1])
            ]
        interval = {"startTime": query["interval.startTime"], "endTime": query["interval.endTime"]}
        aligner = query.get("aggregation.perSeriesAligner", "ALIGN_DELTA")
        series: list[dict[str, Any]] = []
        if metric[1].endswith("/response_count"):
            by_code: dict[str, int] = {}
            for s in samples:
                by_code[str(s.response_code)] = by_code.get(str(s.response_code), 0) + 1
            for code, count in sorted(by_code.items()):
                series.append(
                    {
                        "metric": {
                            "type": metric[1],
                            "labels": {
                                "response_code": code,
                                "deployed_model_id": deployed_id[1] if deployed_id else "",
                            },
                        },
                        "resource": {
                            "type": "aiplatform.googleapis.com/Endpoint",
                            "labels": {"endpoint_id": endpoint_id[1] if endpoint_id else ""},
                        },
                        "metricKind": "DELTA",
                        "valueType": "INT64",
                        "points": [{"interval": interval, "value": {"int64Value": str(count)}}],
                    }
                )
        elif metric[1].endswith("/prediction_latencies") and samples:
            latencies = sorted(s.latency_ms for s in samples)
            percent = {"ALIGN_PERCENTILE_50": 50, "ALIGN_PERCENTILE_95": 95, "ALIGN_PERCENTILE_99": 99}.get(
                aligner
            )
            if percent is None:
                raise ApiError(
                    400,
                    "prediction_latencies is a distribution: use an ALIGN_PERCENTILE_* aligner, "
                    f"not {aligner}",
                )
            value = latencies[min(len(latencies) - 1, int(len(latencies) * percent / 100))]
            series.append(
                {
                    "metric": {
                        "type": metric[1],
                        "labels": {"deployed_model_id": deployed_id[1] if deployed_id else ""},
                    },
                    "metricKind": "GAUGE",
                    "valueType": "DOUBLE",
                    "points": [{"interval": interval, "value": {"doubleValue": value}}],
                }
            )
        return {"timeSeries": series}


@contextlib.contextmanager
def fake_vertex(**kwargs: Any) -> Iterator[FakeVertex]:
    """``with fake_vertex() as vertex:``: a started :class:`FakeVertex`, stopped afterwards."""
    with FakeVertex(**kwargs) as fake:
        yield fake
