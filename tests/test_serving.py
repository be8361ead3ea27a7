"""The model server, as a client sees it: load, predict over HTTP, refuse bad input clearly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

import mlshift
from mlshift._artifacts import digest_path
from mlshift.errors import ConfigError, IntegrityError, InvalidPayload
from mlshift.serving import (
    Limits,
    LoadedModel,
    Predictor,
    create_app,
    detect_framework,
    infer_signature,
    load_model,
)
from mlshift.specs.model import FRAMEWORKS, Signature

with warnings.catch_warnings():
    # starlette asks for httpx2 instead of httpx; either works for these tests.
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

pytestmark = pytest.mark.filterwarnings(
    # The tests call the fitted model directly with arrays, as the server does.
    "ignore:X does not have valid feature names:UserWarning"
)

NAMES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
SRC = Path(mlshift.__file__).resolve().parents[1]

PREDICTOR_PY = """
from pathlib import Path
from typing import Any

from mlshift.errors import InvalidPayload


class Predictor:
    signature = {"inputs": [{"name": "a"}, {"name": "b"}]}

    def load(self, path: Path) -> None:
        self.offset = float((path / "offset.txt").read_text())

    def predict(self, batch: list[list[Any]]) -> list[Any]:
        if any(row[0] < 0 for row in batch):
            raise InvalidPayload("a must not be negative")
        if any(row[0] == 999 for row in batch):
            raise RuntimeError("boom")
        return [row[0] * 10 + row[1] + self.offset for row in batch]
"""


class Doubler(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """A custom transformer: its type is outside sklearn, so skops must not trust it."""

    def fit(self, X: Any, y: Any = None) -> Doubler:
        self.n_features_in_ = np.asarray(X).shape[1]
        return self

    def transform(self, X: Any) -> Any:
        return np.asarray(X) * 2


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def iris() -> tuple[Any, Any]:
    data = load_iris()  # bundled with scikit-learn, nothing is downloaded
    return data.data, data.target


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory, iris: tuple[Any, Any]) -> dict[str, Any]:
    import joblib
    import skops.io as sio

    X, y = iris
    root = tmp_path_factory.mktemp("artifacts")
    named = LogisticRegression(max_iter=500).fit(X, y)
    # What fitting on a DataFrame records; set by hand because pandas is not installed.
    named.feature_names_in_ = np.asarray(NAMES, dtype=object)
    sio.dump(named, root / "iris.skops")
    unnamed = LogisticRegression(max_iter=500).fit(X, y)
    joblib.dump(unnamed, root / "iris.joblib")
    custom = make_pipeline(Doubler(), LogisticRegression(max_iter=500)).fit(X, y)
    sio.dump(custom, root / "custom.skops")
    predictor_dir = root / "adder"
    predictor_dir.mkdir()
    (predictor_dir / "predictor.py").write_text(PREDICTOR_PY)
    (predictor_dir / "offset.txt").write_text("0.5")
    return {
        "root": root,
        "skops": root / "iris.skops",
        "joblib": root / "iris.joblib",
        "custom": root / "custom.skops",
        "predictor": predictor_dir,
        "named": named,
        "unnamed": unnamed,
        "custom_model": custom,
    }


@pytest.fixture(scope="module")
def onnx_path(artifacts: dict[str, Any], iris: tuple[Any, Any]) -> Path:
    skl2onnx = pytest.importorskip("skl2onnx")
    pytest.importorskip("onnxruntime")
    X, _ = iris
    onx = skl2onnx.to_onnx(artifacts["unnamed"], X[:1].astype(np.float32))
    path: Path = artifacts["root"] / "iris.onnx"
    path.write_bytes(onx.SerializeToString())
    return path


@pytest.fixture(scope="module")
def sk_model(artifacts: dict[str, Any]) -> LoadedModel:
    return load_model(artifacts["skops"], "sklearn")


@pytest.fixture
def client(sk_model: LoadedModel) -> TestClient:
    return TestClient(create_app(sk_model, variant="blue", model_ref="iris:3"))


def expected(model: Any, X: Any) -> list[Any]:
    out: list[Any] = model.predict(np.asarray(X, dtype=float)).tolist()
    return out


ROWS = [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3], [7.7, 3.0, 6.1, 2.3]]


# ------------------------------------------------------------------------------ loading


def test_detect_framework(artifacts: dict[str, Any], tmp_path: Path) -> None:
    assert detect_framework(artifacts["skops"]) == "sklearn"
    assert detect_framework(artifacts["joblib"]) == "sklearn"
    assert detect_framework(artifacts["predictor"]) == "predictor"
    model = tmp_path / "model.onnx"
    model.write_bytes(b"")
    assert detect_framework(model) == "onnx"
    strange = tmp_path / "model.bin"
    strange.write_bytes(b"x")
    with pytest.raises(ConfigError) as info:
        detect_framework(strange)
    message = str(info.value)
    assert "model.bin" in message
    for kind in ("sklearn", "onnx", "predictor"):
        assert kind in message
    with pytest.raises(ConfigError, match="does not exist"):
        detect_framework(tmp_path / "missing.skops")


@pytest.mark.parametrize("kind", ["skops", "joblib"])
def test_sklearn_predictions_equal_the_models_own(
    artifacts: dict[str, Any], iris: tuple[Any, Any], kind: str
) -> None:
    X, _ = iris
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = load_model(artifacts[kind], "sklearn")
        model.predict(ROWS)
    # The server orders columns itself; sklearn's per-request feature-name warning is noise.
    assert not [w for w in caught if "feature names" in str(w.message)]
    assert model.framework == "sklearn"
    original = artifacts["named" if kind == "skops" else "unnamed"]
    assert model.predict(X.tolist()) == expected(original, X)


def test_onnx_predictions_equal_the_sklearn_model(
    onnx_path: Path, artifacts: dict[str, Any], iris: tuple[Any, Any]
) -> None:
    X, _ = iris
    model = load_model(onnx_path, "onnx")
    assert model.framework == "onnx"
    assert model.signature == Signature.numeric(4, dtype="float32")
    assert model.predict(X.tolist()) == expected(artifacts["unnamed"], X)
    client = TestClient(create_app(model))
    response = client.post("/invocations", json={"instances": ROWS})
    assert response.status_code == 200
    assert response.json() == {"predictions": expected(artifacts["unnamed"], ROWS)}
    bad = client.post("/invocations", json={"instances": [[1, 2, 3]]})
    assert bad.status_code == 400
    assert "the model takes 4" in bad.json()["error"]["message"]


def test_infer_signature(artifacts: dict[str, Any], onnx_path: Path) -> None:
    assert infer_signature(artifacts["skops"], "sklearn") == Signature.from_columns(NAMES)
    assert infer_signature(artifacts["joblib"], "sklearn") == Signature.numeric(4)
    assert infer_signature(onnx_path, "onnx") == Signature.numeric(4, dtype="float32")
    assert infer_signature(artifacts["predictor"], "predictor") == Signature.from_columns(["a", "b"])


def test_predictor_without_signature_infers_none(tmp_path: Path) -> None:
    (tmp_path / "predictor.py").write_text(
        "class Predictor:\n"
        "    def load(self, path):\n        pass\n"
        "    def predict(self, batch):\n        return [len(r) for r in batch]\n"
    )
    assert infer_signature(tmp_path, "predictor") is None
    model = load_model(tmp_path, "predictor")
    assert isinstance(model.native, Predictor)
    assert model.predict([["x", "y", "z"]]) == [3]


def test_unknown_framework_lists_allowed(artifacts: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as info:
        load_model(artifacts["skops"], "tensorflow")
    message = str(info.value)
    assert "'tensorflow'" in message
    for name in FRAMEWORKS:
        assert name in message
    with pytest.raises(ConfigError, match="unknown framework"):
        infer_signature(artifacts["skops"], "caffe")


def test_digest_is_checked_before_loading(artifacts: dict[str, Any]) -> None:
    good = digest_path(artifacts["skops"])
    model = load_model(artifacts["skops"], "sklearn", digest=good)
    assert model.digest == good
    wrong = "sha256:" + "0" * 64
    with pytest.raises(IntegrityError) as info:
        load_model(artifacts["skops"], "sklearn", digest=wrong)
    assert wrong in str(info.value) and good in str(info.value)


def test_corrupt_artifact_is_a_config_error(tmp_path: Path) -> None:
    for name, framework in (("bad.skops", "sklearn"), ("bad.joblib", "sklearn"), ("bad.onnx", "onnx")):
        path = tmp_path / name
        path.write_bytes(b"this is not a model")
        with pytest.raises(ConfigError, match="cannot load"):
            load_model(path, framework)
    with pytest.raises(ConfigError, match="does not exist"):
        load_model(tmp_path / "nope.skops", "sklearn")


def test_skops_refuses_untrusted_types_unless_told(
    artifacts: dict[str, Any], iris: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLSHIFT_SKOPS_TRUST", raising=False)
    with pytest.raises(ConfigError) as info:
        load_model(artifacts["custom"], "sklearn")
    assert "Doubler" in str(info.value)
    doubler = f"{Doubler.__module__}.Doubler"
    assert f"MLSHIFT_SKOPS_TRUST={doubler}" in str(info.value)
    monkeypatch.setenv("MLSHIFT_SKOPS_TRUST", "1")  # no longer a blanket yes
    with pytest.raises(ConfigError, match="Doubler"):
        load_model(artifacts["custom"], "sklearn")
    monkeypatch.setenv("MLSHIFT_SKOPS_TRUST", doubler)
    model = load_model(artifacts["custom"], "sklearn")
    assert model.predict(ROWS) == expected(artifacts["custom_model"], ROWS)


def test_given_signature_is_used_and_checked(artifacts: dict[str, Any]) -> None:
    renamed = Signature.from_columns(["a", "b", "c", "d"])
    model = load_model(artifacts["joblib"], "sklearn", signature=renamed)
    assert model.signature == renamed
    with pytest.raises(ConfigError, match="signature has 3 inputs"):
        load_model(artifacts["joblib"], "sklearn", signature=Signature.numeric(3))


def test_python_predict_refuses_bad_rows(sk_model: LoadedModel) -> None:
    with pytest.raises(InvalidPayload, match=r"has 2 values, the model takes 4 \(sepal_length"):
        sk_model.predict([[1.0, 2.0]])


def test_importing_serving_is_lazy() -> None:
    code = (
        "import sys, mlshift.serving; "
        "print(sorted(m for m in ('sklearn', 'onnxruntime', 'skops', 'numpy') if m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "[]"


# ----------------------------------------------------------------------------- payloads

HEADER_CSV = "petal_width,sepal_length,sepal_width,petal_length\n" + "".join(
    f"{r[3]},{r[0]},{r[1]},{r[2]}\n" for r in ROWS
)

PAYLOADS: dict[str, tuple[Any, str]] = {
    "instances rows": ({"instances": ROWS}, "json"),
    "instances records": ({"instances": [dict(zip(NAMES, r, strict=True)) for r in ROWS]}, "json"),
    "inputs rows": ({"inputs": ROWS}, "json"),
    "inputs columnar": ({"inputs": {n: [r[i] for r in ROWS] for i, n in enumerate(NAMES)}}, "json"),
    "dataframe_split reordered": (
        {
            "dataframe_split": {
                "columns": NAMES[::-1],
                "data": [r[::-1] for r in ROWS],
                "index": [0, 1, 2],
            }
        },
        "json",
    ),
    "dataframe_records": ({"dataframe_records": [dict(zip(NAMES, r, strict=True)) for r in ROWS]}, "json"),
    "csv": ("".join(",".join(map(str, r)) + "\n" for r in ROWS), "csv"),
    "csv with header": (HEADER_CSV, "csv"),
    "vertex with empty parameters": ({"instances": ROWS, "parameters": {}}, "json"),
}


@pytest.mark.parametrize("name", list(PAYLOADS))
def test_every_payload_format_gives_the_same_predictions(
    client: TestClient, artifacts: dict[str, Any], name: str
) -> None:
    body, kind = PAYLOADS[name]
    if kind == "csv":
        response = client.post("/invocations", content=body, headers={"content-type": "text/csv"})
    else:
        response = client.post("/invocations", json=body)
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": expected(artifacts["named"], ROWS)}


def test_single_flat_row(client: TestClient, artifacts: dict[str, Any]) -> None:
    for body in ({"instances": ROWS[2]}, {"instances": dict(zip(NAMES, ROWS[2], strict=True))}):
        response = client.post("/invocations", json=body)
        assert response.json() == {"predictions": expected(artifacts["named"], ROWS[2:])}


def test_big_batches_predict_off_the_event_loop(client: TestClient, artifacts: dict[str, Any]) -> None:
    rows = ROWS * 700  # over the inline limit: predicted in a worker thread
    response = client.post("/invocations", json={"instances": rows})
    assert response.status_code == 200
    assert response.json() == {"predictions": expected(artifacts["named"], rows)}


def test_csv_out_when_asked(client: TestClient, artifacts: dict[str, Any]) -> None:
    response = client.post("/invocations", json={"instances": ROWS}, headers={"accept": "text/csv"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert response.text.splitlines() == [str(p) for p in expected(artifacts["named"], ROWS)]


BAD: list[tuple[str, bytes, str, str]] = [
    (
        "wrong width",
        json.dumps({"instances": [ROWS[0], ROWS[1], [1, 2, 3, 4, 5]]}).encode(),
        "json",
        "instances[2] has 5 values, the model takes 4 (sepal_length, sepal_width, petal_length,",
    ),
    (
        "ragged rows",
        json.dumps({"instances": [[1, 2, 3, 4], [1, 2]]}).encode(),
        "json",
        "instances[1] has 2 values, the model takes 4",
    ),
    (
        "non-numeric",
        json.dumps({"instances": [[5.1, "wide", 1.4, 0.2]]}).encode(),
        "json",
        "instances[0][1] (sepal_width) is 'wide', expected a number",
    ),
    (
        "null value",
        json.dumps({"inputs": [[5.1, 3.5, None, 0.2]]}).encode(),
        "json",
        "inputs[0][2] (petal_length) is null, expected a number",
    ),
    ("malformed json", b'{"instances": [[1, 2, 3, 4]', "json", "not valid JSON"),
    ("empty body", b"", "json", "the request body is empty"),
    ("empty batch", b'{"instances": []}', "json", "is empty"),
    ("empty csv", b"\n\n", "csv", "is empty"),
    ("unknown key", b'{"rows": [[1, 2, 3, 4]]}', "json", "unknown key 'rows'"),
    ("two keys", json.dumps({"instances": ROWS, "inputs": ROWS}).encode(), "json", "exactly one"),
    ("not rows", b'"rows"', "json", "expected a list of rows or an object"),
    (
        "missing column",
        json.dumps({"dataframe_records": [dict(zip(NAMES[:3], ROWS[0][:3], strict=True))]}).encode(),
        "json",
        "missing 'petal_width'",
    ),
    (
        "unknown column",
        json.dumps({"instances": [{**dict(zip(NAMES, ROWS[0], strict=True)), "color": 1}]}).encode(),
        "json",
        "unknown 'color'",
    ),
    (
        "split columns mismatch",
        json.dumps({"dataframe_split": {"columns": ["a", "b", "c", "d"], "data": ROWS}}).encode(),
        "json",
        "missing 'sepal_length'",
    ),
    ("csv bad cell", b"5.1,3.5,1.4,0.2\n5.0,abc,1.4,0.2\n", "csv", "line 2, column 2 (sepal_width)"),
    ("csv wrong width", b"5.1,3.5,1.4\n", "csv", "line 1 has 3 values, the model takes 4"),
    ("parameters", json.dumps({"instances": ROWS, "parameters": {"k": 1}}).encode(), "json", "no parameters"),
]


@pytest.mark.parametrize(("name", "body", "kind", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_requests_get_400_and_the_server_keeps_serving(
    client: TestClient, artifacts: dict[str, Any], name: str, body: bytes, kind: str, message: str
) -> None:
    content_type = "text/csv" if kind == "csv" else "application/json"
    response = client.post("/invocations", content=body, headers={"content-type": content_type})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_payload"
    assert message in error["message"]
    assert response.headers["x-mlshift-variant"] == "blue"
    good = client.post("/invocations", json={"instances": ROWS})
    assert good.status_code == 200
    assert good.json()["predictions"] == expected(artifacts["named"], ROWS)


def test_body_over_the_limit_is_413(sk_model: LoadedModel) -> None:
    client = TestClient(create_app(sk_model, limits=Limits(max_body_bytes=1000)))
    response = client.post("/invocations", json={"instances": ROWS * 50})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert client.post("/invocations", json={"instances": ROWS}).status_code == 200


# ---------------------------------------------------------------------- routes, headers


def test_headers_on_every_response(client: TestClient) -> None:
    responses = [
        client.get("/ping"),
        client.post("/invocations", json={"instances": ROWS}),
        client.post("/invocations", json={"nope": 1}),
        client.get("/no/such/route"),
        client.get("/invocations"),
        client.get("/v1/metadata"),
    ]
    assert [r.status_code for r in responses] == [200, 200, 400, 404, 405, 200]
    for response in responses:
        assert response.headers["x-mlshift-variant"] == "blue"
        assert response.headers["x-mlshift-model"] == "iris:3"
    assert responses[3].json()["error"]["code"] == "not_found"


def test_no_headers_without_names(sk_model: LoadedModel) -> None:
    response = TestClient(create_app(sk_model)).get("/ping")
    assert response.status_code == 200
    assert "x-mlshift-variant" not in response.headers
    assert "x-mlshift-model" not in response.headers


def test_sagemaker_vertex_and_azure_default_routes(client: TestClient) -> None:
    for path in ("/ping", "/health", "/", "/ready"):
        assert client.get(path).status_code == 200, path
    for path in ("/invocations", "/predict", "/score"):
        assert client.post(path, json={"instances": ROWS}).status_code == 200, path


def test_vertex_and_azure_routes_from_environment(
    sk_model: LoadedModel, artifacts: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIP_HEALTH_ROUTE", "/v1/endpoints/42/deployedModels/7")
    monkeypatch.setenv("AIP_PREDICT_ROUTE", "/v1/endpoints/42/deployedModels/7:predict")
    monkeypatch.setenv("MLSHIFT_AZURE_SCORE_ROUTE", "/v2/score")
    client = TestClient(create_app(sk_model))
    assert client.get("/v1/endpoints/42/deployedModels/7").status_code == 200
    response = client.post("/v1/endpoints/42/deployedModels/7:predict", json={"instances": ROWS})
    assert response.json() == {"predictions": expected(artifacts["named"], ROWS)}
    assert client.post("/v2/score", json={"instances": ROWS}).status_code == 200
    assert client.post("/score", json={"instances": ROWS}).status_code == 404
    assert client.post("/invocations", json={"instances": ROWS}).status_code == 200


def test_metadata(client: TestClient, artifacts: dict[str, Any]) -> None:
    data = client.get("/v1/metadata").json()
    assert data["framework"] == "sklearn"
    assert data["model_ref"] == "iris:3"
    assert data["variant"] == "blue"
    assert data["digest"] == digest_path(artifacts["skops"])
    assert [c["name"] for c in data["signature"]["inputs"]] == NAMES


# -------------------------------------------------------------------------- predictor


def test_predictor_model_over_http(artifacts: dict[str, Any]) -> None:
    model = load_model(artifacts["predictor"], "predictor")
    assert model.signature == Signature.from_columns(["a", "b"])
    client = TestClient(create_app(model, variant="green"))
    ok = client.post("/invocations", json={"dataframe_records": [{"b": 2, "a": 1}, {"a": 3, "b": 4}]})
    assert ok.json() == {"predictions": [12.5, 34.5]}
    csv_ok = client.post("/score", content=b"b,a\n2,1\n", headers={"content-type": "text/csv"})
    assert csv_ok.json() == {"predictions": [12.5]}
    refused = client.post("/invocations", json={"instances": [[-1, 2]]})
    assert refused.status_code == 400
    assert refused.json()["error"]["message"] == "a must not be negative"
    failed = client.post("/invocations", json={"instances": [[999, 2]]})
    assert failed.status_code == 500
    assert failed.json()["error"]["code"] == "prediction_failed"
    # The exception's text stays in the server log: it may hold paths or data.
    assert "boom" not in failed.text and "RuntimeError" not in failed.text
    assert failed.json()["error"]["request_id"] in failed.json()["error"]["message"]
    assert failed.headers["x-mlshift-variant"] == "green"
    assert client.post("/invocations", json={"instances": [[1, 1]]}).json() == {"predictions": [11.5]}


def test_a_predictor_loaded_by_two_threads_at_once_loads_for_both(tmp_path: Path) -> None:
    # The module body takes a while, as a real one importing torch does: a second thread must
    # wait for it, never take the half-run module that has no Predictor yet.
    (tmp_path / "predictor.py").write_text(
        "import time\ntime.sleep(0.3)\n\n"
        "class Predictor:\n    def load(self, path):\n        pass\n\n"
        "    def predict(self, batch):\n        return [1 for _ in batch]\n"
    )
    import threading

    start = threading.Barrier(2)
    outcomes: list[object] = []

    def load() -> None:
        start.wait(timeout=30)
        try:
            outcomes.append(load_model(tmp_path, "predictor").predict([[0.0]]))
        except Exception as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=load) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert outcomes == [[1], [1]]


def test_predictor_errors(tmp_path: Path) -> None:
    (tmp_path / "predictor.py").write_text("class Other:\n    pass\n")
    with pytest.raises(ConfigError, match="no class named Predictor"):
        load_model(tmp_path, "predictor")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "predictor.py").write_text("import not_a_real_module_xyz\n")
    with pytest.raises(ConfigError, match="ModuleNotFoundError"):
        load_model(broken, "predictor")
    assert not any("not_a_real" in p for p in sys.path)


# --------------------------------------------------------------------------- processes


def _run_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return subprocess.run(
        [sys.executable, "-m", "mlshift.serving", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def test_cli_startup_errors_are_one_line(artifacts: dict[str, Any], tmp_path: Path) -> None:
    result = _run_cli("--artifact", str(artifacts["skops"]), "--digest", "sha256:" + "1" * 64)
    assert result.returncode == 3
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "does not match its registered digest" in lines[0]


def test_real_server_with_port_file(artifacts: dict[str, Any], tmp_path: Path) -> None:
    import httpx

    port_file = tmp_path / "run" / "port"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlshift.serving",
            "--artifact",
            str(artifacts["skops"]),
            "--port",
            "0",
            "--port-file",
            str(port_file),
            "--variant",
            "green",
            "--model-ref",
            "iris:3",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        # Starting Python, importing the server and loading the model can take long on a loaded
        # machine: the deadline only bounds a hang, and a server that exits fails at once.
        deadline = time.monotonic() + 300
        while not port_file.exists() or not port_file.read_text().strip():
            assert proc.poll() is None, proc.communicate()[1].decode()
            assert time.monotonic() < deadline, "the server never wrote its port file"
            time.sleep(0.05)
        port = int(port_file.read_text())
        assert port > 0
        base = f"http://127.0.0.1:{port}"
        response = httpx.post(f"{base}/invocations", json={"instances": ROWS}, timeout=60)
        assert response.status_code == 200
        assert response.json() == {"predictions": expected(artifacts["named"], ROWS)}
        assert response.headers["x-mlshift-variant"] == "green"
        assert response.headers["x-mlshift-model"] == "iris:3"
        bad = httpx.post(f"{base}/invocations", content=b"{", timeout=60)
        assert bad.status_code == 400
        assert httpx.get(f"{base}/ping", timeout=60).status_code == 200
        proc.terminate()
        proc.wait(timeout=60)
        assert not port_file.exists()
        assert b"Traceback" not in proc.stderr.read()  # type: ignore[union-attr]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_aip_http_port_replaces_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlshift.serving._server import _resolve_port

    monkeypatch.setenv("AIP_HTTP_PORT", "9123")
    assert _resolve_port(8080) == 9123
    assert _resolve_port(7000) == 7000
    monkeypatch.setenv("AIP_HTTP_PORT", "nope")
    with pytest.raises(ConfigError, match="AIP_HTTP_PORT"):
        _resolve_port(8080)
