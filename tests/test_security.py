"""Hardening, as an attacker or a careless user meets it: model files, folders, permissions."""

from __future__ import annotations

import asyncio
import builtins
import json
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

import mlshift
from mlshift.errors import ConfigError
from mlshift.serving import load_model

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3]]


@pytest.fixture(scope="module")
def xy() -> tuple[Any, Any]:
    return load_iris(return_X_y=True)


def _payload(marker: Path) -> str:
    # Harmless, but proof of execution: it creates a file.
    return f"__import__('pathlib').Path({str(marker)!r}).touch() or 0"


def _exploit(xy: tuple[Any, Any], marker: Path, first: Any, second: Any) -> Pipeline:
    """The pipeline from the report: fill every cell with code, then evaluate every cell."""
    X, y = xy
    pipe = Pipeline(
        [
            ("fill", FunctionTransformer(first, kw_args={"fill_value": "0", "dtype": object})),
            ("run", FunctionTransformer(second)),
            ("clf", DummyClassifier()),
        ]
    )
    pipe.fit(X, y)  # with a harmless "0"; the payload goes in after fitting
    pipe.set_params(fill__kw_args={"fill_value": _payload(marker), "dtype": object})
    return pipe


EXPLOITS: dict[str, tuple[Callable[..., Any], Callable[[], Any], list[str]]] = {
    "full_like+vectorize(eval)": (
        np.full_like,
        lambda: np.vectorize(builtins.eval),
        ["builtins.eval", "numpy.full_like", "numpy.vectorize"],
    ),
    "full_like+vectorize(exec)": (
        np.full_like,
        lambda: np.vectorize(builtins.exec),
        ["builtins.exec", "numpy.vectorize"],
    ),
    "full_like+frompyfunc(eval)": (
        np.full_like,
        lambda: np.frompyfunc(builtins.eval, 1, 1),
        ["builtins.eval"],
    ),
}


@pytest.fixture(autouse=True)
def _no_global_trust(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLSHIFT_SKOPS_TRUST", raising=False)


def _dump(model: Any, path: Path) -> Path:
    import skops.io as sio

    try:
        sio.dump(model, path)
    except Exception as exc:  # skops cannot save every callable: that variant is then moot
        pytest.skip(f"skops cannot save this variant: {exc}")
    return path


# --------------------------------------------------------------------------------- skops


@pytest.mark.parametrize("kind", list(EXPLOITS))
def test_skops_exploit_is_refused_at_load_and_at_register(
    kind: str, xy: tuple[Any, Any], tmp_path: Path
) -> None:
    first, second, names = EXPLOITS[kind]
    marker = tmp_path / "pwned"
    path = _dump(_exploit(xy, marker, first, second()), tmp_path / "model.skops")

    with pytest.raises(ConfigError) as info:
        load_model(path, "sklearn")
    message = str(info.value)
    for name in names:
        assert name in message
    assert "MLSHIFT_SKOPS_TRUST=" in message and "--skops-trust" in message

    client = mlshift.connect(f"local://{tmp_path / 'state'}")
    with pytest.raises(ConfigError, match="does not trust"):
        client.models.register("evil", path)
    assert client.models.list() == []
    assert not any((tmp_path / "state" / "artifacts").rglob("*.skops"))
    # ... also when a signature is given, so that nothing needs to load the model.
    with pytest.raises(ConfigError, match="does not trust"):
        client.models.register("evil", path, signature=mlshift.Signature.numeric(4))
    assert not marker.exists()


def test_a_project_file_model_is_checked_at_plan_time(xy: tuple[Any, Any], tmp_path: Path) -> None:
    from mlshift.specs.model import ModelSpec

    first, second, _ = EXPLOITS["full_like+vectorize(eval)"]
    path = _dump(_exploit(xy, tmp_path / "pwned", first, second()), tmp_path / "model.skops")
    client = mlshift.connect(f"local://{tmp_path / 'state'}")
    spec = ModelSpec.model_validate({"name": "evil", "path": str(path), "framework": "sklearn"})
    with pytest.raises(ConfigError, match="does not trust"):
        client.plan(spec)
    link = tmp_path / "link.skops"
    link.symlink_to(path)
    with pytest.raises(ConfigError, match="symbolic link"):
        client.plan(spec.model_copy(update={"path": str(link)}))


def test_the_exploit_is_real_once_trusted_deliberately(
    xy: tuple[Any, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Proof that the refusal above matters: trusted by name, the file runs its payload.
    marker = tmp_path / "pwned"
    first, second, _ = EXPLOITS["full_like+vectorize(eval)"]
    path = _dump(_exploit(xy, marker, first, second()), tmp_path / "model.skops")
    monkeypatch.setenv(
        "MLSHIFT_SKOPS_TRUST", "builtins.eval, numpy.full_like,numpy.vectorize,builtins.object"
    )
    model = load_model(path, "sklearn")
    assert not marker.exists()
    model.predict(ROWS)
    assert marker.exists()


def test_per_model_trust_is_recorded_with_the_version(
    artifacts_dir: Path, xy: tuple[Any, Any], tmp_path: Path
) -> None:
    from mlshift._artifacts import SKOPS_TRUST_TAG

    marker = tmp_path / "pwned"
    first, second, _ = EXPLOITS["full_like+vectorize(eval)"]
    path = _dump(_exploit(xy, marker, first, second()), tmp_path / "model.skops")
    client = mlshift.connect(f"local://{tmp_path / 'state'}")
    trusted = ["numpy.vectorize", "builtins.eval", "numpy.full_like", "builtins.object"]
    version = client.models.register("mine", path, skops_trust=trusted)
    assert version.tags[SKOPS_TRUST_TAG] == "builtins.eval,builtins.object,numpy.full_like,numpy.vectorize"
    stored = client.adapter.models.artifact_path(version)
    with pytest.raises(ConfigError):
        load_model(stored, "sklearn")
    load_model(stored, "sklearn", skops_trust=trusted)  # what the local target's server is given
    # Trusting only some of them is not enough, and the error names the rest.
    with pytest.raises(ConfigError, match=r"numpy\.vectorize") as info:
        client.models.register("mine", path, skops_trust=["builtins.eval"])
    assert "builtins.eval," not in str(info.value).split("hint")[0]


@pytest.fixture(scope="module")
def artifacts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.mark.parametrize(
    "make",
    [
        lambda: LogisticRegression(max_iter=300),
        lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=300)),
        lambda: make_pipeline(FunctionTransformer(np.log1p), LogisticRegression(max_iter=300)),
        lambda: RandomForestClassifier(n_estimators=3, random_state=0),
        lambda: HistGradientBoostingClassifier(max_iter=3),
        lambda: KNeighborsClassifier(),
    ],
    ids=["logistic", "scaled-pipeline", "log1p-pipeline", "forest", "hist-gb", "knn"],
)
def test_plain_sklearn_models_load_with_no_setting(
    make: Callable[[], Any], xy: tuple[Any, Any], tmp_path: Path
) -> None:
    X, y = xy
    estimator = make().fit(X, y)
    path = _dump(estimator, tmp_path / "plain.skops")
    model = load_model(path, "sklearn")
    assert model.predict(ROWS) == estimator.predict(np.asarray(ROWS)).tolist()
    client = mlshift.connect(f"local://{tmp_path / 'state'}")
    assert client.models.register("plain", path).version == "1"


def test_registering_a_pickle_warns_that_it_runs_code(xy: tuple[Any, Any], tmp_path: Path) -> None:
    import joblib

    from mlshift._client import PickleWarning

    X, y = xy
    joblib.dump(LogisticRegression(max_iter=300).fit(X, y), tmp_path / "m.joblib")
    client = mlshift.connect(f"local://{tmp_path / 'state'}")
    with pytest.warns(PickleWarning, match="runs whatever code it contains"):
        client.models.register("pickled", tmp_path / "m.joblib")


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


# --------------------------------------------------------------------- server limits


BLOCKING_PREDICTOR = """
import threading

class Predictor:
    gate = threading.Event()
    entered = threading.Event()

    def load(self, path):
        pass

    def predict(self, batch):
        if batch[0][0] == -1:
            Predictor.entered.set()
            Predictor.gate.wait(30)
        if batch[0][0] == -2:
            return [object() for _ in batch]
        if batch[0][0] == -3:
            raise RuntimeError("secret in " + str(__file__))
        return [row[0] for row in batch]
"""


async def _call(
    app: Any, method: str, path: str, body: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One request straight into the ASGI app, as a server would make it."""
    sent = [{"type": "http.request", "body": body, "more_body": False}]
    out: dict[str, Any] = {"status": 0, "headers": {}, "body": b""}

    async def receive() -> dict[str, Any]:
        if sent:
            return sent.pop(0)
        await asyncio.Event().wait()  # the client stays connected
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            out["status"] = message["status"]
            out["headers"] = {k.decode(): v.decode() for k, v in message["headers"]}
        elif message["type"] == "http.response.body":
            out["body"] += message.get("body", b"")

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-length", str(len(body)).encode()), *(headers or [])],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    await app(scope, receive, send)
    return out["status"], out["headers"], out["body"]


@pytest.fixture
def blocking_model(tmp_path: Path) -> Any:
    folder = tmp_path / "blocking"
    folder.mkdir()
    (folder / "predictor.py").write_text(BLOCKING_PREDICTOR)
    return load_model(folder, "predictor")


def _rows_body(rows: list[list[float]]) -> bytes:
    return json.dumps({"instances": rows}).encode()


def _wait_for(event: Any) -> None:
    assert event.wait(30), "the prediction never started"


def test_requests_over_the_inflight_cap_get_503_and_health_still_answers(blocking_model: Any) -> None:
    from mlshift.serving import Limits, create_app

    app = create_app(blocking_model, limits=Limits(max_inflight=1))
    cls = blocking_model.native.__class__

    async def scenario() -> None:
        first = asyncio.ensure_future(_call(app, "POST", "/invocations", _rows_body([[-1, 0]])))
        await asyncio.get_running_loop().run_in_executor(None, _wait_for, cls.entered)
        status, headers, body = await _call(app, "POST", "/invocations", _rows_body([[1, 0]]))
        assert status == 503
        assert headers["retry-after"] == "1"
        assert json.loads(body)["error"]["code"] == "overloaded"
        # Health checks are not predictions: they answer while the prediction runs.
        assert (await _call(app, "GET", "/ping"))[0] == 200
        cls.gate.set()
        assert (await first)[0] == 200
        assert (await _call(app, "POST", "/invocations", _rows_body([[1, 0]])))[0] == 200

    asyncio.run(scenario())


async def _held_call(
    app: Any, path: str, body: bytes, reading: asyncio.Event, release: asyncio.Event
) -> tuple[int, dict[str, str], bytes]:
    """A request whose body arrives only once ``release`` is set; ``reading`` is set when the
    app starts reading it (the request is then in flight)."""
    out: dict[str, Any] = {"status": 0, "headers": {}, "body": b""}

    async def receive() -> dict[str, Any]:
        reading.set()
        await release.wait()
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            out["status"] = message["status"]
            out["headers"] = {k.decode(): v.decode() for k, v in message["headers"]}
        elif message["type"] == "http.response.body":
            out["body"] += message.get("body", b"")

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    await app(scope, receive, send)
    return out["status"], out["headers"], out["body"]


def _v2_body(rows: list[list[float]]) -> bytes:
    flat = [x for row in rows for x in row]
    return json.dumps(
        {"inputs": [{"name": "input", "shape": [len(rows), 2], "datatype": "FP64", "data": flat}]}
    ).encode()


def test_the_inflight_cap_holds_across_invocations_and_v2_infer(blocking_model: Any) -> None:
    from mlshift.serving import Limits, create_app

    app = create_app(blocking_model, model_ref="blocking:1", limits=Limits(max_inflight=2))
    infer = "/v2/models/blocking/infer"
    routes = {"/invocations": _rows_body([[1, 0]]), infer: _v2_body([[1, 0]])}

    async def scenario() -> None:
        # One request in flight on each route: together they fill the server's two places.
        release = asyncio.Event()
        readings = {path: asyncio.Event() for path in routes}
        held = {
            path: asyncio.ensure_future(_held_call(app, path, body, readings[path], release))
            for path, body in routes.items()
        }
        for reading in readings.values():
            await asyncio.wait_for(reading.wait(), 30)
        for path, body in routes.items():
            status, headers, answer = await _call(
                app, "POST", path, body, [(b"content-type", b"application/json")]
            )
            assert status == 503, (path, answer)
            assert headers["retry-after"] == "1"
            error = json.loads(answer)["error"]
            if path == infer:  # the protocol's error shape
                assert "already answering 2 requests" in error
            else:
                assert error["code"] == "overloaded"
        release.set()
        for path, task in held.items():
            status, _, answer = await task
            assert status == 200, (path, answer)
        # Nothing is left counted: both routes answer again.
        for path, body in routes.items():
            status, _, answer = await _call(app, "POST", path, body, [(b"content-type", b"application/json")])
            assert status == 200, (path, answer)

    asyncio.run(scenario())


def test_large_bodies_take_a_slot_small_ones_do_not(blocking_model: Any) -> None:
    from mlshift.serving import Limits, create_app

    app = create_app(blocking_model, limits=Limits(max_large_inflight=1, large_body_bytes=200))
    cls = blocking_model.native.__class__
    big = _rows_body([[-1, 0]] + [[1, 0]] * 40)
    assert len(big) > 200

    async def scenario() -> None:
        first = asyncio.ensure_future(_call(app, "POST", "/invocations", big))
        await asyncio.get_running_loop().run_in_executor(None, _wait_for, cls.entered)
        status, headers, _ = await _call(app, "POST", "/invocations", _rows_body([[1, 0]] * 40))
        assert (status, headers.get("retry-after")) == (503, "1")
        # ... also when the length is not declared (a chunked body): refused once it is large.
        chunked = await _call_chunked(app, _rows_body([[1, 0]] * 40))
        assert chunked[0] == 503
        assert (await _call(app, "GET", "/ping"))[0] == 200
        cls.gate.set()
        assert (await first)[0] == 200
        assert (await _call(app, "POST", "/invocations", _rows_body([[1, 0]] * 40)))[0] == 200

    asyncio.run(scenario())


async def _call_chunked(app: Any, body: bytes) -> tuple[int, dict[str, str], bytes]:
    chunks = [body[i : i + 50] for i in range(0, len(body), 50)]
    out: dict[str, Any] = {"status": 0, "headers": {}}

    async def receive() -> dict[str, Any]:
        chunk = chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            out["status"] = message["status"]
            out["headers"] = {k.decode(): v.decode() for k, v in message["headers"]}

    scope = {"type": "http", "method": "POST", "path": "/invocations", "headers": [], "query_string": b""}
    await app(scope, receive, send)
    return out["status"], out["headers"], b""


@pytest.fixture(scope="module")
def iris_model(xy: tuple[Any, Any], artifacts_dir: Path) -> tuple[Any, Any]:
    X, y = xy
    estimator = LogisticRegression(max_iter=300).fit(X, y)
    path = _dump(estimator, artifacts_dir / "iris.skops")
    return load_model(path, "sklearn"), estimator


@pytest.mark.parametrize("large", [False, True], ids=["inline", "large-body"])
def test_rows_limit_is_413(iris_model: tuple[Any, Any], large: bool) -> None:
    from mlshift.serving import Limits, create_app

    model, _ = iris_model
    app = create_app(model, limits=Limits(max_rows=5, large_body_bytes=50 if large else 1 << 20))
    status, _, body = asyncio.run(_call(app, "POST", "/invocations", _rows_body(ROWS * 3)))
    assert status == 413
    assert json.loads(body)["error"]["code"] == "too_many_rows"
    assert asyncio.run(_call(app, "POST", "/invocations", _rows_body(ROWS * 2)))[0] == 200


def test_large_numeric_bodies_parsed_in_pieces_predict_the_same(
    iris_model: tuple[Any, Any], xy: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlshift.serving import Limits, _arrays, create_app

    monkeypatch.setattr(_arrays, "PIECE_BYTES", 300)  # many pieces from a small body
    model, estimator = iris_model
    X, _ = xy
    app = create_app(model, limits=Limits(large_body_bytes=100))
    parsed = _arrays.parse_json_array(_rows_body(X.tolist()), model.signature, np.dtype("float64"), 10**6)
    assert parsed is not None and parsed.array.shape == X.shape  # the piecewise path, not the fallback
    for body in (
        json.dumps({"instances": X.tolist()}).encode(),
        json.dumps({"inputs": X.tolist()}, indent=2).encode(),
    ):
        status, _, out = asyncio.run(_call(app, "POST", "/invocations", body))
        assert status == 200
        assert json.loads(out)["predictions"] == estimator.predict(X).tolist()
    # A bad value deep in a large body gets the exact parser's answer, naming it.
    rows = X.tolist()
    rows[100][2] = None
    status, _, out = asyncio.run(_call(app, "POST", "/invocations", _rows_body(rows)))
    assert status == 400
    assert "instances[100][2]" in json.loads(out)["error"]["message"]


def test_unencodable_predictions_are_a_generic_json_500(blocking_model: Any) -> None:
    from mlshift.serving import create_app

    app = create_app(blocking_model)
    for accept in (b"application/json", b"text/csv"):
        status, headers, body = asyncio.run(
            _call(app, "POST", "/invocations", _rows_body([[-2, 0]]), [(b"accept", accept)])
        )
        assert status == 500, body
        assert headers["content-type"] == "application/json"
        error = json.loads(body)["error"]
        assert error["code"] == "prediction_failed" and "object at 0x" not in body.decode()
    status, _, body = asyncio.run(_call(app, "POST", "/invocations", _rows_body([[-3, 0]])))
    assert status == 500
    assert "secret" not in body.decode() and "predictor.py" not in body.decode()


def test_a_trailing_slash_is_404_not_a_redirect(iris_model: tuple[Any, Any]) -> None:
    from mlshift.serving import create_app

    app = create_app(iris_model[0])
    status, headers, body = asyncio.run(
        _call(app, "POST", "/invocations/", _rows_body(ROWS), [(b"host", b"evil.example")])
    )
    assert status == 404
    assert "location" not in headers
    assert json.loads(body)["error"]["code"] == "not_found"


def test_limits_from_the_environment() -> None:
    from mlshift.serving import Limits

    limits = Limits.from_env(
        {"MLSHIFT_MAX_BODY_MB": "8", "MLSHIFT_MAX_ROWS": "10", "MLSHIFT_MAX_INFLIGHT": "3"}
    )
    assert (limits.max_body_bytes, limits.max_rows, limits.max_inflight) == (8 << 20, 10, 3)
    assert Limits.from_env({}) == Limits()
    for bad in ("0", "-1", "lots", "1.5"):
        with pytest.raises(ConfigError, match="MLSHIFT_MAX_ROWS"):
            Limits.from_env({"MLSHIFT_MAX_ROWS": bad})


# ---------------------------------------------------------------------------- router


def _make_router(tmp_path: Path, app: Any | None = None, max_body: int = 10_000) -> Any:
    import httpx

    from mlshift.local._router import Router

    routes = tmp_path / "routes.json"
    routes.write_text(
        json.dumps(
            {"variants": [{"name": "blue", "weight": 100, "backends": ["http://backend"], "model": "m:1"}]}
        )
    )
    router = Router(routes, max_body=max_body)
    if app is not None:
        router._client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app))
    return router


async def _call_router_chunked(router: Any, chunks: list[bytes]) -> tuple[int, bytes]:
    pending = list(chunks)
    out: dict[str, Any] = {"status": 0, "body": b""}

    async def receive() -> dict[str, Any]:
        if not pending:
            await asyncio.Event().wait()
        chunk = pending.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(pending)}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            out["status"] = message["status"]
        elif message["type"] == "http.response.body":
            out["body"] += message.get("body", b"")

    scope = {"type": "http", "method": "POST", "path": "/invocations", "headers": [], "query_string": b""}
    await router(scope, receive, send)
    return out["status"], out["body"]


def test_router_refuses_bodies_over_the_limit_declared_or_streamed(
    tmp_path: Path, iris_model: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlshift.local import _router
    from mlshift.serving import create_app

    monkeypatch.setattr(_router, "BUFFER_BYTES", 500)
    router = _make_router(tmp_path, create_app(iris_model[0]), max_body=5_000)
    status, _, body = asyncio.run(_call(router, "POST", "/invocations", b"[" * 6_000))
    assert status == 413 and json.loads(body)["error"]["code"] == "payload_too_large"
    status, body = asyncio.run(_call_router_chunked(router, [b" " * 400] * 20))
    assert status == 413 and json.loads(body)["error"]["code"] == "payload_too_large"
    # Under the limit, a body streamed in pieces reaches the model whole.
    rows = _rows_body(ROWS * 60)
    assert 500 < len(rows) < 5_000
    status, body = asyncio.run(
        _call_router_chunked(router, [rows[i : i + 300] for i in range(0, len(rows), 300)])
    )
    assert status == 200, body
    assert json.loads(body)["predictions"] == iris_model[1].predict(np.asarray(ROWS * 60)).tolist()


def test_router_answers_bad_headers_and_queries_with_json_400(tmp_path: Path) -> None:
    router = _make_router(tmp_path)
    status, _, body = asyncio.run(
        _call(router, "POST", "/invocations", b"{}", [(b"x-mlshift-target-variant", b"\xff\xfe")])
    )
    assert status == 400 and json.loads(body)["error"]["code"] == "invalid_header"
    for query in (
        b"window=abc",
        b"window=%ff",
        b"window=\xff",
        b"window=nan",
        b"window=inf",
        b"window=-1",
        b"window=0",
    ):
        status, body = asyncio.run(_get_with_query(router, "/_mlshift/metrics", query))
        assert status == 400, query
        assert json.loads(body)["error"]["code"] == "invalid_window"
    status, body = asyncio.run(_get_with_query(router, "/_mlshift/metrics", b"window=30"))
    assert status == 200 and json.loads(body)["window_seconds"] == 30


async def _get_with_query(app: Any, path: str, query: bytes) -> tuple[int, bytes]:
    out: dict[str, Any] = {"status": 0, "body": b""}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            out["status"] = message["status"]
        elif message["type"] == "http.response.body":
            out["body"] += message.get("body", b"")

    await app(
        {"type": "http", "method": "GET", "path": path, "headers": [], "query_string": query}, receive, send
    )
    return out["status"], out["body"]


def test_router_process_streams_a_huge_chunked_body_in_bounded_memory(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys
    import threading

    import httpx
    import psutil

    # A variant that takes whatever it is sent and never answers: the router must stop at the limit.
    sink = socket.socket()
    sink.bind(("127.0.0.1", 0))
    sink.listen(8)

    def swallow() -> None:
        while True:
            try:
                conn, _ = sink.accept()
            except OSError:
                return
            threading.Thread(
                target=lambda c=conn: [None for _ in iter(lambda: c.recv(1 << 16), b"")], daemon=True
            ).start()

    threading.Thread(target=swallow, daemon=True).start()
    routes = tmp_path / "routes.json"
    backend = f"http://127.0.0.1:{sink.getsockname()[1]}"
    routes.write_text(json.dumps({"variants": [{"name": "a", "weight": 100, "backends": [backend]}]}))
    port_file = tmp_path / "router.port"
    env = {**os.environ, "MLSHIFT_MAX_BODY_MB": "20", "PYTHONPATH": str(Path(mlshift.__file__).parents[1])}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlshift.local._router",
            "--routes",
            str(routes),
            "--port",
            "0",
            "--port-file",
            str(port_file),
        ],
        env=env,
    )
    try:
        deadline = time.monotonic() + 300  # bounds a hang only: Python starts slowly on a loaded machine
        while not (port_file.exists() and port_file.read_text()):
            assert proc.poll() is None and time.monotonic() < deadline, "the router did not start"
            time.sleep(0.02)
        watched = psutil.Process(proc.pid)
        peak = [watched.memory_info().rss]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], watched.memory_info().rss)
                done.wait(0.01)

        sampler = threading.Thread(target=sample)
        sampler.start()
        chunk = b"x" * (1 << 20)
        try:
            with httpx.Client(trust_env=False, timeout=120) as http:
                response = http.post(
                    f"http://127.0.0.1:{port_file.read_text()}/invocations",
                    content=(chunk for _ in range(60)),
                )
        finally:
            done.set()
            sampler.join()
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "payload_too_large"
        assert peak[0] < 100 * 2**20, f"router RSS peaked at {peak[0] / 2**20:.0f} MB"
    finally:
        proc.terminate()
        proc.wait(30)
        sink.close()


# ---------------------------------------------------------------------- registration

PREDICTOR = """
class Predictor:
    def load(self, path):
        pass

    def predict(self, batch):
        return [0 for _ in batch]
"""


def _predictor_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "predictor.py").write_text(PREDICTOR)
    (folder / "weights.txt").write_text("1")
    return folder


def _bad_zero(folder: Path) -> str:
    (folder / "zeros").symlink_to("/dev/zero")
    return "zeros"


def _bad_escape(folder: Path) -> str:
    (folder / "passwd").symlink_to("/etc/passwd")
    return "passwd"


def _bad_fifo(folder: Path) -> str:
    os.mkfifo(folder / "pipe")
    return "pipe"


def _bad_loop(folder: Path) -> str:
    (folder / "a").symlink_to(folder / "b")
    (folder / "b").symlink_to(folder / "a")
    return "a"


def _bad_dangling(folder: Path) -> str:
    (folder / "gone").symlink_to(folder / "nowhere")
    return "gone"


def _bad_nested_escape(folder: Path) -> str:
    (folder / "sub").mkdir()
    (folder / "sub" / "up").symlink_to(folder.parent)
    return "up"


BAD_FOLDERS: dict[str, tuple[Callable[[Path], str], str]] = {
    "symlink to /dev/zero": (_bad_zero, "out of the folder"),
    "symlink escaping": (_bad_escape, "out of the folder"),
    "fifo": (_bad_fifo, "named pipe"),
    "symlink loop": (_bad_loop, "broken symbolic link"),
    "dangling symlink": (_bad_dangling, "broken symbolic link"),
    "nested link to a parent": (_bad_nested_escape, "out of the folder"),
}


def _assert_refused_quickly(tmp_path: Path, path: Path, *needles: str, **kwargs: Any) -> None:
    client = mlshift.connect(f"local://{tmp_path / 'state'}")
    start = time.monotonic()
    with pytest.raises(ConfigError) as info:
        client.models.register("m", path, **kwargs)
    elapsed = time.monotonic() - start
    for needle in needles:
        assert needle in str(info.value)
    assert "Traceback" not in str(info.value)
    assert elapsed < 1.0, f"refused after {elapsed:.2f}s"
    assert client.models.list() == []
    artifacts = tmp_path / "state" / "artifacts"
    stored = list(artifacts.rglob("*")) if artifacts.exists() else []
    assert stored == [], stored


@pytest.mark.parametrize("case", list(BAD_FOLDERS))
def test_bad_folders_are_refused_by_name_before_anything_is_stored(case: str, tmp_path: Path) -> None:
    folder = _predictor_folder(tmp_path)
    make, reason = BAD_FOLDERS[case]
    name = make(folder)
    _assert_refused_quickly(tmp_path, folder, name, reason)


def test_a_big_folder_that_is_not_a_model_is_refused_before_hashing(tmp_path: Path) -> None:
    for path in (Path("/usr"), Path(mlshift.__file__).parents[2]):
        if path.is_dir():
            _assert_refused_quickly(tmp_path, path, "no predictor.py")
            _assert_refused_quickly(tmp_path, path, "is a directory", framework="sklearn")


def test_a_symlinked_model_file_is_refused_naming_the_link(xy: tuple[Any, Any], tmp_path: Path) -> None:
    X, y = xy
    real = _dump(LogisticRegression(max_iter=300).fit(X, y), tmp_path / "real.skops")
    link = tmp_path / "link.skops"
    link.symlink_to(real)
    _assert_refused_quickly(tmp_path, link, "link.skops", "symbolic link")


def test_special_file_as_the_artifact_is_refused(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "model.skops")
    _assert_refused_quickly(tmp_path, tmp_path / "model.skops", "named pipe")


def test_artifact_size_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _predictor_folder(tmp_path)
    with open(folder / "big.bin", "wb") as fh:
        fh.truncate(3 * 1024 * 1024)  # sparse: no real disk used
    monkeypatch.setenv("MLSHIFT_MAX_ARTIFACT_MB", "2")
    _assert_refused_quickly(tmp_path, folder, "2 MB limit", "MLSHIFT_MAX_ARTIFACT_MB")
    monkeypatch.setenv("MLSHIFT_MAX_ARTIFACT_MB", "lots")
    _assert_refused_quickly(tmp_path, folder, "MLSHIFT_MAX_ARTIFACT_MB='lots'")


def test_links_inside_the_folder_are_stored_as_files_and_hashing_reports_progress(tmp_path: Path) -> None:
    folder = _predictor_folder(tmp_path)
    (folder / "alias.txt").symlink_to(folder / "weights.txt")
    seen: list[tuple[int, int]] = []
    client = mlshift.connect(f"local://{tmp_path / 'state'}")
    version = client.models.register("m", folder, progress=lambda done, total: seen.append((done, total)))
    stored = client.adapter.models.artifact_path(version)
    assert (stored / "alias.txt").read_text() == "1"
    assert not (stored / "alias.txt").is_symlink()
    assert seen and seen[-1][0] == seen[-1][1] == sum(f.stat().st_size for f in folder.iterdir())


# ------------------------------------------------------------------------ permissions


def test_state_and_stored_artifacts_are_private(tmp_path: Path, xy: tuple[Any, Any]) -> None:
    X, y = xy
    source = _dump(LogisticRegression(max_iter=300).fit(X, y), tmp_path / "m.skops")
    source.chmod(0o666)  # a careless source: its mode must not come along
    folder = _predictor_folder(tmp_path)
    (folder / "weights.txt").chmod(0o666)
    folder.chmod(0o777)
    old = os.umask(0o022)
    try:
        client = mlshift.connect(f"local://{tmp_path / 'state'}")
        file_version = client.models.register("m", source)
        tree_version = client.models.register("p", folder)
    finally:
        os.umask(old)
    state = tmp_path / "state"
    # Modes, not access: tests may run as root, who can read anything anyway.
    assert _mode(state) == 0o700
    assert _mode(state / "state.db") == 0o600
    for extra in ("state.db-wal", "state.db-shm"):
        if (state / extra).exists():
            assert _mode(state / extra) == 0o600, extra
    stored_file = client.adapter.models.artifact_path(file_version)
    assert _mode(stored_file) == 0o400
    stored_tree = client.adapter.models.artifact_path(tree_version)
    assert _mode(stored_tree) == 0o500
    assert {_mode(p) for p in stored_tree.rglob("*") if p.is_file()} == {0o400}
    assert load_model(stored_file, "sklearn").predict(ROWS)
    # Deleting a version removes its read-only copy.
    client.models.delete("p:1")
    assert not stored_tree.exists()


# ------------------------------------------------------------------------ endpoints


def test_endpoints_delete_waits_for_the_endpoint_lock(memory: mlshift.Client, iris: dict[str, Any]) -> None:
    from mlshift.errors import Conflict

    memory.models.register("iris", iris["v1"], framework="sklearn")
    memory.endpoints.deploy("ep", "iris:1")
    with memory.adapter.endpoints.lock("ep", owner="a deploy elsewhere", timeout=5):
        with pytest.raises(Conflict, match="being changed"):
            memory.endpoints.delete("ep", lock_timeout=0.2)
        assert memory.endpoints.get("ep").name == "ep"  # untouched
    memory.endpoints.delete("ep")
    assert [e.name for e in memory.endpoints.list()] == []


def test_cli_register_refusals_are_one_line_and_trust_is_recorded(
    xy: tuple[Any, Any], tmp_path: Path
) -> None:
    import subprocess
    import sys

    env = {
        **os.environ,
        "MLSHIFT_TARGET": f"local://{tmp_path / 'state'}",
        "NO_COLOR": "1",
        "PYTHONPATH": str(Path(mlshift.__file__).parents[1]),
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mlshift", "models", "register", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )

    folder = _predictor_folder(tmp_path)
    os.mkfifo(folder / "pipe")
    refused = run("m", str(folder))
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "'pipe'" in refused.stderr and "named pipe" in refused.stderr
    first, second, names = EXPLOITS["full_like+vectorize(eval)"]
    path = _dump(_exploit(xy, tmp_path / "pwned", first, second()), tmp_path / "model.skops")
    refused = run("evil", str(path))
    assert refused.returncode == 1 and "builtins.eval" in refused.stderr and "Traceback" not in refused.stderr
    trusted = run(
        "mine",
        str(path),
        *[a for n in [*names, "builtins.object"] for a in ("--skops-trust", n)],
        "-o",
        "json",
    )
    assert trusted.returncode == 0, trusted.stderr
    assert json.loads(trusted.stdout)["tags"]["mlshift.skops-trust"] == (
        "builtins.eval,builtins.object,numpy.full_like,numpy.vectorize"
    )


def test_router_a_client_leaving_mid_body_is_not_a_variant_failure(
    tmp_path: Path, iris_model: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlshift.local import _router
    from mlshift.serving import create_app

    monkeypatch.setattr(_router, "BUFFER_BYTES", 100)
    router = _make_router(tmp_path, create_app(iris_model[0]), max_body=5_000)
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": b"[" * 150, "more_body": True},
        {"type": "http.request", "body": b"[" * 150, "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/invocations", "headers": [], "query_string": b""}
    asyncio.run(router(scope, receive, send))
    assert sent == []
    assert router.samples == {}  # the gate's error rate must not count it against the variant


def test_large_record_bodies_parsed_in_pieces_answer_as_the_exact_parser(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlshift.serving import Limits, _payload, create_app
    from mlshift.specs.model import Signature

    monkeypatch.setattr(_payload, "RECORD_PIECE_BYTES", 64)  # many pieces from a small body
    folder = tmp_path / "echo"
    folder.mkdir()
    (folder / "predictor.py").write_text(
        "class Predictor:\n"
        "    signature = {'inputs': [{'name': 'a'}, {'name': 's', 'dtype': 'string'}]}\n"
        "    def load(self, path):\n        pass\n"
        "    def predict(self, batch):\n        return [f'{a}|{s}' for a, s in batch]\n"
    )
    model = load_model(folder, "predictor")
    assert model.signature == Signature.model_validate(
        {"inputs": [{"name": "a"}, {"name": "s", "dtype": "string"}]}
    )
    large = create_app(model, limits=Limits(large_body_bytes=100))
    small = create_app(model)
    plain = [{"s": f"v{i}", "a": i} for i in range(30)]
    # Strings that look like record boundaries: a cut there leaves invalid JSON, so the whole
    # body goes to the exact parser instead.
    tricky = [{"s": v, "a": i} for i, v in enumerate(["x", "}, {", '"}, {"a": 1', "\\}, {", "ok"] * 6)]
    for records, piecewise in ((plain, True), (tricky, False)):
        body = json.dumps({"dataframe_records": records}, indent=1).encode()
        assert (_payload.parse_json_records(body, model.signature) is not None) is piecewise
        big, exact = (asyncio.run(_call(app, "POST", "/invocations", body)) for app in (large, small))
        assert big[0] == exact[0] == 200 and big[2] == exact[2]
        assert json.loads(big[2])["predictions"][1] == f"1|{records[1]['s']}"
    records = plain
    # A bad record deep in the body is named as the exact parser names it.
    records[20] = {"a": 1}
    body = json.dumps({"dataframe_records": records}).encode()
    big, exact = (asyncio.run(_call(app, "POST", "/invocations", body)) for app in (large, small))
    assert big[0] == exact[0] == 400 and big[2] == exact[2]
    assert b"dataframe_records[20]" in big[2]
