"""The model server as users of other tools call it: the Open Inference Protocol (V2),
Azure ML / SageMaker / Vertex AI / MLflow payload conventions, and connection hygiene."""

from __future__ import annotations

import http.client
import io
import json
import os
import socket
import struct
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mlshift
from mlshift.errors import ConfigError
from mlshift.serving import LoadedModel, create_app, load_model
from mlshift.serving._app import Limits

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

pytestmark = pytest.mark.filterwarnings("ignore:X does not have valid feature names:UserWarning")

NAMES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3], [7.7, 3.0, 6.1, 2.3]]
SRC = Path(mlshift.__file__).resolve().parents[1]

PREDICTOR_PY = """
from typing import Any


class Predictor:
    signature = {"inputs": [{"name": "a"}, {"name": "b"}]}

    def load(self, path):
        pass

    def predict(self, batch: list[list[Any]], params: dict[str, Any] | None = None) -> list[Any]:
        offset = (params or {}).get("offset", 0)
        return [row[0] * 10 + row[1] + offset for row in batch]
"""

PLAIN_PREDICTOR_PY = """
class Predictor:
    signature = {"inputs": [{"name": "a"}, {"name": "b"}]}

    def load(self, path):
        pass

    def predict(self, batch):
        return [row[0] + row[1] for row in batch]
"""


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    import skops.io as sio
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    root = tmp_path_factory.mktemp("interop")
    model = LogisticRegression(max_iter=500).fit(x, y)
    model.feature_names_in_ = np.asarray(NAMES, dtype=object)  # as fitting on a DataFrame does
    sio.dump(model, root / "iris.skops")
    with_params = root / "with-params"
    with_params.mkdir()
    (with_params / "predictor.py").write_text(PREDICTOR_PY)
    plain = root / "plain"
    plain.mkdir()
    (plain / "predictor.py").write_text(PLAIN_PREDICTOR_PY)
    return {"skops": root / "iris.skops", "model": model, "with_params": with_params, "plain": plain}


@pytest.fixture(scope="module")
def sk_model(artifacts: dict[str, Any]) -> LoadedModel:
    return load_model(artifacts["skops"], "sklearn")


@pytest.fixture
def client(sk_model: LoadedModel) -> TestClient:
    return TestClient(create_app(sk_model, model_ref="iris:3"))


def expected(artifacts: dict[str, Any], rows: Any = ROWS) -> list[Any]:
    out: list[Any] = artifacts["model"].predict(np.asarray(rows, dtype=float)).tolist()
    return out


# ------------------------------------------------------------------ payload conventions

CONVENTIONS: dict[str, Any] = {
    "azure input_data split": {
        "input_data": {"columns": NAMES[::-1], "index": [0, 1, 2], "data": [r[::-1] for r in ROWS]}
    },
    "azure input_data list": {"input_data": ROWS},
    "azure data": {"data": ROWS},
    "sagemaker bare list": ROWS,
    "sagemaker bare list of records": [dict(zip(NAMES, r, strict=True)) for r in ROWS],
    "mlflow dataframe_split with empty params": {
        "dataframe_split": {"columns": NAMES, "data": ROWS},
        "params": {},
    },
}


@pytest.mark.parametrize("name", list(CONVENTIONS))
@pytest.mark.parametrize("route", ["/invocations", "/score", "/predict"])
def test_every_clouds_json_convention_predicts_the_same(
    client: TestClient, artifacts: dict[str, Any], name: str, route: str
) -> None:
    response = client.post(route, json=CONVENTIONS[name])
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": expected(artifacts)}


def test_a_bare_flat_list_is_one_row(client: TestClient, artifacts: dict[str, Any]) -> None:
    response = client.post("/invocations", json=ROWS[1])
    assert response.json() == {"predictions": expected(artifacts, ROWS[1:2])}


def test_bad_rows_in_new_conventions_are_named(client: TestClient) -> None:
    response = client.post("/score", json={"input_data": [ROWS[0], [1, 2, 3]]})
    assert response.status_code == 400
    assert "input_data[1] has 3 values, the model takes 4" in response.json()["error"]["message"]
    response = client.post("/invocations", json=[ROWS[0], [1, "x", 3, 4]])
    assert "body[1][1] (sepal_width) is 'x', expected a number" in response.json()["error"]["message"]
    response = client.post("/score", json={"input_data": {"columns": NAMES, "rows": ROWS}})
    assert response.status_code == 400
    assert "unknown key 'rows' in 'input_data'" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    "body",
    [
        {"instances": ROWS},
        {"input_data": ROWS},
        {"data": ROWS},
        ROWS,
        [dict(zip(NAMES, r, strict=True)) for r in ROWS],
        {"data": [dict(zip(NAMES, r, strict=True)) for r in ROWS]},
    ],
    ids=["instances", "input_data", "data", "bare list", "bare records", "data records"],
)
def test_large_bodies_of_every_convention(
    sk_model: LoadedModel, artifacts: dict[str, Any], body: Any
) -> None:
    # Over large_body_bytes: parsed a piece at a time in a worker thread.
    app = create_app(sk_model, limits=Limits(large_body_bytes=1000))
    big = body * 100 if isinstance(body, list) else {k: v * 100 for k, v in body.items()}
    response = TestClient(app).post("/invocations", json=big)
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": expected(artifacts) * 100}


def test_large_bare_lists_are_parsed_straight_into_an_array(sk_model: LoadedModel) -> None:
    from mlshift.serving._arrays import parse_json_array

    for body in (json.dumps(ROWS * 10).encode(), json.dumps({"data": ROWS * 10}).encode()):
        batch = parse_json_array(body, sk_model.signature, np.dtype("float64"), 10**6)
        assert batch is not None and batch.array.shape == (30, 4)
    # A list that opens bare but closes an object is not one: left to the exact parser.
    assert parse_json_array(b"[[1,2,3,4]]}", sk_model.signature, np.dtype("float64"), 10**6) is None


def _npy(array: Any) -> bytes:
    out = io.BytesIO()
    np.save(out, array)
    return out.getvalue()


def test_sagemaker_npy_bodies(sk_model: LoadedModel, artifacts: dict[str, Any]) -> None:
    npy = {"content-type": "application/x-npy"}
    for app in (create_app(sk_model), create_app(sk_model, limits=Limits(large_body_bytes=10))):
        client = TestClient(app)
        response = client.post("/invocations", content=_npy(np.asarray(ROWS)), headers=npy)
        assert response.status_code == 200, response.text
        assert response.json() == {"predictions": expected(artifacts)}
    client = TestClient(create_app(sk_model))
    one_row = client.post("/invocations", content=_npy(np.asarray(ROWS[2], dtype=np.float32)), headers=npy)
    assert one_row.json() == {"predictions": expected(artifacts, ROWS[2:])}
    # Never unpickled: an object array is refused, as is anything that is not .npy.
    pickled = client.post(
        "/invocations", content=_npy(np.asarray([[object()]] * 4, dtype=object)), headers=npy
    )
    assert pickled.status_code == 400
    assert "not a .npy array" in pickled.json()["error"]["message"]
    garbage = client.post("/invocations", content=b"\x93NUMPY\x00\xff garbage", headers=npy)
    assert garbage.status_code == 400
    narrow = client.post("/invocations", content=_npy(np.ones((2, 3))), headers=npy)
    assert narrow.status_code == 400
    assert "has 3 columns, the model takes 4" in narrow.json()["error"]["message"]


def test_binary_encodings_the_server_does_not_read_are_415(client: TestClient) -> None:
    for content_type in ("application/x-recordio-protobuf", "image/png"):
        response = client.post(
            "/invocations", content=b"\x00\x01\xff\xfe", headers={"content-type": content_type}
        )
        assert response.status_code == 415
        error = response.json()["error"]
        assert error["code"] == "unsupported_media_type" and content_type in error["message"]
        assert "application/x-npy" in error["hint"]


@pytest.mark.parametrize(
    "body",
    [
        {"instances": [[1, 2]], "parameters": {"offset": 0.5}},
        {"dataframe_split": {"columns": ["b", "a"], "data": [[2, 1]]}, "params": {"offset": 0.5}},
    ],
    ids=["vertex parameters", "mlflow params"],
)
def test_parameters_reach_a_predictor_that_takes_them(artifacts: dict[str, Any], body: Any) -> None:
    client = TestClient(create_app(load_model(artifacts["with_params"], "predictor")))
    assert client.post("/predict", json=body).json() == {"predictions": [12.5]}
    assert client.post("/predict", json={"instances": [[1, 2]]}).json() == {"predictions": [12]}


def test_parameters_are_refused_by_models_that_take_none(
    artifacts: dict[str, Any], sk_model: LoadedModel
) -> None:
    for model in (load_model(artifacts["plain"], "predictor"), sk_model):
        client = TestClient(create_app(model))
        width = 2 if model.framework == "predictor" else 4
        response = client.post("/predict", json={"instances": [[1] * width], "parameters": {"k": 1}})
        assert response.status_code == 400
        error = response.json()["error"]
        assert "the request has 'parameters', but this model takes no parameters" in error["message"]
        assert "params argument" in error["hint"]
        response = client.post("/invocations", json={"data": [[1] * width], "params": {"k": 1}})
        assert "has 'params'" in response.json()["error"]["message"]


def test_parameters_must_be_one_object(artifacts: dict[str, Any]) -> None:
    client = TestClient(create_app(load_model(artifacts["with_params"], "predictor")))
    both = client.post("/predict", json={"instances": [[1, 2]], "parameters": {"a": 1}, "params": {"b": 2}})
    assert both.status_code == 400 and "both 'parameters' and 'params'" in both.json()["error"]["message"]
    listed = client.post("/predict", json={"instances": [[1, 2]], "params": [1]})
    assert listed.status_code == 400 and "'params' is a JSON list" in listed.json()["error"]["message"]


def test_version_route(client: TestClient) -> None:
    response = client.get("/version")
    assert response.status_code == 200
    assert response.text == mlshift.__version__


def test_serve_banner_shows_the_vertex_port(
    monkeypatch: pytest.MonkeyPatch, artifacts: dict[str, Any]
) -> None:
    from typer.testing import CliRunner

    import mlshift.serving
    from mlshift.cli import app

    served: dict[str, Any] = {}
    monkeypatch.setattr(mlshift.serving, "serve", lambda path, **kwargs: served.update(kwargs))
    monkeypatch.setenv("AIP_HTTP_PORT", "9123")
    result = CliRunner().invoke(app, ["serve", str(artifacts["skops"])])
    assert result.exit_code == 0, result.output
    assert "http://127.0.0.1:9123" in result.output and "8080" not in result.output
    assert served["port"] == 9123
    monkeypatch.setenv("AIP_HTTP_PORT", "eighty")
    result = CliRunner().invoke(app, ["serve", str(artifacts["skops"])])
    assert isinstance(result.exception, ConfigError)
    assert "AIP_HTTP_PORT='eighty' is not a port number" in str(result.exception)


# -------------------------------------------------------------- Open Inference Protocol


def _infer(rows: Any = ROWS, datatype: str = "FP64", name: str = "input", **extra: Any) -> dict[str, Any]:
    shape = list(np.asarray(rows).shape)
    return {"inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": rows}], **extra}


def test_v2_metadata_and_health(client: TestClient) -> None:
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").status_code == 200
    server = client.get("/v2").json()
    assert server == {"name": "mlshift", "version": mlshift.__version__, "extensions": ["binary_tensor_data"]}
    for path in ("/v2/models/iris", "/v2/models/iris/versions/3"):
        assert client.get(path).json() == {
            "name": "iris",
            "versions": ["3"],
            "platform": "sklearn",
            "inputs": [{"name": "input", "datatype": "FP64", "shape": [-1, 4]}],
            "outputs": [{"name": "predictions", "datatype": "INT64", "shape": [-1]}],
        }
        assert client.get(path + "/ready").status_code == 200


def test_v2_infer_json(client: TestClient, artifacts: dict[str, Any]) -> None:
    for path in ("/v2/models/iris/infer", "/v2/models/iris/versions/3/infer"):
        response = client.post(path, json=_infer(id="req-1"))
        assert response.status_code == 200, response.text
        assert response.json() == {
            "model_name": "iris",
            "model_version": "3",
            "id": "req-1",
            "outputs": [
                {"name": "predictions", "datatype": "INT64", "shape": [3], "data": expected(artifacts)}
            ],
        }
    # Flat data in row-major order, and datatypes that widen to FP64 without loss.
    flat_rows = [v for row in ROWS for v in row]
    flat = {"inputs": [{"name": "input", "shape": [3, 4], "datatype": "FP32", "data": flat_rows}]}
    assert client.post("/v2/models/iris/infer", json=flat).json()["outputs"][0]["data"] == expected(artifacts)
    ints = _infer([[5, 3, 1, 0]], "INT64")
    assert client.post("/v2/models/iris/infer", json=ints).json()["outputs"][0]["data"] == expected(
        artifacts, [[5, 3, 1, 0]]
    )


def test_v2_infer_one_tensor_per_column(client: TestClient, artifacts: dict[str, Any]) -> None:
    inputs = [
        {"name": n, "shape": [3], "datatype": "FP64", "data": [r[i] for r in ROWS]}
        for i, n in reversed(list(enumerate(NAMES)))
    ]
    response = client.post("/v2/models/iris/infer", json={"inputs": inputs})
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == expected(artifacts)


def test_v2_infer_binary_tensors(client: TestClient, artifacts: dict[str, Any]) -> None:
    data = np.asarray(ROWS, dtype="<f8").tobytes()
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": [3, 4],
                    "datatype": "FP64",
                    "parameters": {"binary_data_size": len(data)},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    response = client.post(
        "/v2/models/iris/infer",
        content=head + data,
        headers={"inference-header-content-length": str(len(head))},
    )
    assert response.status_code == 200, response.text
    split = int(response.headers["inference-header-content-length"])
    doc = json.loads(response.content[:split])
    output = doc["outputs"][0]
    assert output["datatype"] == "INT64" and output["shape"] == [3]
    values = np.frombuffer(response.content[split:], dtype="<i8")
    assert len(response.content) - split == output["parameters"]["binary_data_size"] == 24
    assert values.tolist() == expected(artifacts)


INFER = "/v2/models/iris/infer"
TAKES = "the model takes one input 'input' (datatype FP64, shape [-1, 4])"
SHORT = {"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP64", "data": ROWS[0]}]}
V2_BAD: list[tuple[str, str, Any, int, str]] = [
    ("other model", "/v2/models/cats/infer", _infer(), 404, "model 'cats' is not served here; "
     "this server serves 'iris' version 3"),
    ("other version", "/v2/models/iris/versions/2/infer", _infer(), 404, "has no version '2'"),
    ("input name", INFER, _infer(name="x"), 400, f"unknown input 'x'; {TAKES}"),
    ("datatype", INFER, _infer(datatype="BYTES"), 400, f"input 'input' has datatype BYTES, {TAKES}"),
    ("unknown datatype", INFER, _infer(datatype="FLOAT"), 400, "datatype 'FLOAT' is not one of"),
    ("width", INFER, _infer([[1, 2, 3]]), 400, f"input 'input' has shape [1, 3], {TAKES}"),
    ("shape and data", INFER, SHORT, 400, "input 'input' has 4 values, its shape needs 8"),
    ("strings", INFER, _infer([[1, 2, 3, "x"]]), 400, "data holds strings, expected numbers (FP64)"),
    ("fractions", INFER, _infer([[1, 2, 3, 4.5]], "INT64"), 400, "holds numbers, expected integers (INT64)"),
    ("no inputs", INFER, {"inputs": []}, 400, '"inputs" must be a non-empty list'),
    ("output", INFER, _infer(outputs=[{"name": "probabilities"}]), 400, "unknown output 'probabilities'"),
    ("parameters", INFER, _infer(parameters={"k": 1}), 400, "this model takes no parameters"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "path", "body", "status", "message"), V2_BAD, ids=[b[0] for b in V2_BAD])
def test_v2_errors_in_the_protocols_shape(
    client: TestClient, name: str, path: str, body: Any, status: int, message: str
) -> None:
    response = client.post(path, json=body)
    assert response.status_code == status, response.text
    error = response.json()
    assert list(error) == ["error"] and isinstance(error["error"], str)
    assert message in error["error"]


def test_v2_unknown_routes_and_bodies(client: TestClient) -> None:
    for response in (client.get("/v2/models/cats"), client.get("/v2/models/iris/versions/9/ready")):
        assert response.status_code == 404
        assert "not served here" in response.json()["error"] or "no version" in response.json()["error"]
    missing = client.get("/v2/nothing")
    assert missing.status_code == 404 and missing.json() == {"error": "no route GET /v2/nothing"}
    wrong_method = client.get("/v2/models/iris/infer")
    assert wrong_method.status_code == 405 and isinstance(wrong_method.json()["error"], str)
    not_json = client.post("/v2/models/iris/infer", content=b"{")
    assert not_json.status_code == 400 and "not valid JSON" in not_json.json()["error"]
    lying = client.post(
        "/v2/models/iris/infer", content=b"{}", headers={"inference-header-content-length": "99"}
    )
    assert lying.status_code == 400 and "Inference-Header-Content-Length" in lying.json()["error"]


def test_v2_limits(sk_model: LoadedModel) -> None:
    client = TestClient(
        create_app(sk_model, model_ref="iris:3", limits=Limits(max_rows=2, max_body_bytes=1000))
    )
    too_many = client.post("/v2/models/iris/infer", json=_infer())
    assert too_many.status_code == 413 and "has 3 rows" in too_many.json()["error"]
    too_large = client.post("/v2/models/iris/infer", json=_infer(ROWS * 30))
    assert too_large.status_code == 413 and "larger than 1,000 bytes" in too_large.json()["error"]
    assert too_large.headers["connection"] == "close"


def test_v2_parameters_reach_a_predictor(artifacts: dict[str, Any]) -> None:
    client = TestClient(create_app(load_model(artifacts["with_params"], "predictor"), model_ref="adder:1"))
    assert client.get("/v2/models/adder").json()["inputs"] == [
        {"name": "input", "datatype": "FP64", "shape": [-1, 2]}
    ]
    body = _infer([[1, 2], [3, 4]], parameters={"offset": 0.5, "binary_data_output": False})
    response = client.post("/v2/models/adder/versions/1/infer", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["outputs"] == [
        {"name": "predictions", "datatype": "FP64", "shape": [2], "data": [12.5, 34.5]}
    ]


# ------------------------------------------------------------------ real server processes


def _start(
    args: list[str], tmp_path: Path, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    port_file = tmp_path / "port"
    proc = subprocess.Popen(
        [sys.executable, "-m", *args, "--port", "0", "--port-file", str(port_file)],
        env={**os.environ, "PYTHONPATH": str(SRC), **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 300  # bounds a hang only: Python starts slowly on a loaded machine
    while not port_file.exists():  # written once the server accepts connections
        if proc.poll() is not None:
            raise AssertionError(proc.communicate()[1].decode())
        assert time.monotonic() < deadline, "the server never wrote its port file"
        time.sleep(0.05)
    return proc, int(port_file.read_text())


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stderr is not None:
        proc.stderr.close()


@pytest.fixture
def served(artifacts: dict[str, Any], tmp_path: Path) -> Iterator[int]:
    """``mlshift serve iris.skops`` on a free port."""
    proc, port = _start(["mlshift", "serve", str(artifacts["skops"])], tmp_path)
    try:
        yield port
    finally:
        _stop(proc)


def test_tritonclient_against_mlshift_serve(served: int, artifacts: dict[str, Any]) -> None:
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    client = httpclient.InferenceServerClient(url=f"127.0.0.1:{served}")
    try:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready("iris")
        assert not client.is_model_ready("cats")
        assert client.get_server_metadata()["name"] == "mlshift"
        metadata = client.get_model_metadata("iris")
        assert metadata["inputs"] == [{"name": "input", "datatype": "FP64", "shape": [-1, 4]}]
        assert metadata["outputs"][0]["name"] == "predictions"
        x = np.asarray(ROWS, dtype=np.float64)
        for binary in (False, True):  # JSON tensors, and the client's default binary tensors
            tensor = httpclient.InferInput("input", [3, 4], "FP64")
            tensor.set_data_from_numpy(x, binary_data=binary)
            outputs = [httpclient.InferRequestedOutput("predictions", binary_data=binary)]
            result = client.infer("iris", [tensor], outputs=outputs)
            assert result.as_numpy("predictions").tolist() == artifacts["model"].predict(x).tolist()
        default = httpclient.InferInput("input", [3, 4], "FP64")
        default.set_data_from_numpy(x)
        assert client.infer("iris", [default]).as_numpy("predictions").tolist() == expected(artifacts)
        wrong = httpclient.InferInput("input", [3, 3], "FP64")
        wrong.set_data_from_numpy(x[:, :3], binary_data=False)
        with pytest.raises(InferenceServerException, match=r"has shape \[3, 3\]"):
            client.infer("iris", [wrong])
    finally:
        client.close()


def test_refused_requests_close_the_connection(artifacts: dict[str, Any], tmp_path: Path) -> None:
    env = {"MLSHIFT_MAX_BODY_MB": "1", "MLSHIFT_MAX_INFLIGHT": "1"}
    proc, port = _start(["mlshift.serving", "--artifact", str(artifacts["skops"])], tmp_path, env)
    body = json.dumps({"instances": ROWS}).encode()
    try:
        # 413: the body is never read; the answer says so and the connection ends with it,
        # so the rest of the body (or a next request) is never read as a request.
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(
                b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 2000000\r\n\r\n" + b"[" * 1000
            )
            received = b""
            while chunk := sock.recv(65536):  # until the server closes
                received += chunk
        head = received.split(b"\r\n\r\n", 1)[0].lower()
        assert head.startswith(b"http/1.1 413") and b"connection: close" in head
        assert received.count(b"HTTP/1.1") == 1

        # 503: one request in flight (its body not yet sent) fills the server.
        with socket.create_connection(("127.0.0.1", port), timeout=30) as held:
            held.sendall(
                b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
            )
            deadline = time.monotonic() + 30
            while True:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                conn.request("POST", "/invocations", body=body, headers={"Content-Type": "application/json"})
                response = conn.getresponse()
                response.read()
                if response.status == 503:
                    break
                conn.close()  # the held request has not reached the app yet
                assert time.monotonic() < deadline, "the held request never filled the server"
            assert response.getheader("connection") == "close" and response.will_close
            assert response.getheader("retry-after") == "1"
            conn.close()
            held.sendall(body)
            answer = held.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200")
        # Nothing is left in flight: the next client is answered.
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("POST", "/invocations", body=body, headers={"Content-Type": "application/json"})
        assert json.loads(conn.getresponse().read()) == {"predictions": expected(artifacts)}
        conn.close()
    finally:
        _stop(proc)


def test_binary_tensor_bytes_helper_round_trip() -> None:
    from mlshift.serving._v2 import _unpack_bytes

    packed = b"".join(struct.pack("<I", len(s)) + s for s in (b"a", b"bc", b""))
    assert _unpack_bytes(packed, "x") == ["a", "bc", ""]


LABELLER_PY = """
class Predictor:
    signature = {"inputs": [{"name": "label", "dtype": "string"}, {"name": "n", "dtype": "int64"}]}

    def load(self, path):
        pass

    def predict(self, batch):
        return [f"{label}-{n}" for label, n in batch]
"""


def test_v2_string_columns_as_bytes_tensors(tmp_path: Path) -> None:
    (tmp_path / "predictor.py").write_text(LABELLER_PY)
    client = TestClient(create_app(load_model(tmp_path, "predictor"), model_ref="labeller:2"))
    metadata = client.get("/v2/models/labeller").json()
    assert metadata["inputs"] == [{"name": "input", "datatype": "BYTES", "shape": [-1, 2]}]
    # One BYTES tensor holding the table as sent: each column is checked against its dtype.
    table = _infer([["a", 1], ["b", 2]], "BYTES")
    output = client.post("/v2/models/labeller/infer", json=table).json()["outputs"][0]
    assert output == {"name": "predictions", "datatype": "BYTES", "shape": [2], "data": ["a-1", "b-2"]}
    wrong = client.post("/v2/models/labeller/infer", json=_infer([["a", "x"]], "BYTES"))
    assert wrong.status_code == 400 and "is 'x', expected an integer" in wrong.json()["error"]
    # One tensor per column: labels as binary BYTES (length-prefixed), numbers as JSON INT32.
    labels = b"".join(struct.pack("<I", len(v)) + v for v in (b"a", b"bc"))
    head = json.dumps(
        {
            "inputs": [
                {"name": "n", "shape": [2], "datatype": "INT32", "data": [1, 2]},
                {
                    "name": "label",
                    "shape": [2],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(labels)},
                },
            ],
            "outputs": [{"name": "predictions", "parameters": {"binary_data": True}}],
        }
    ).encode()
    response = client.post(
        "/v2/models/labeller/versions/2/infer",
        content=head + labels,
        headers={"inference-header-content-length": str(len(head))},
    )
    assert response.status_code == 200, response.text
    split = int(response.headers["inference-header-content-length"])
    assert json.loads(response.content[:split])["outputs"][0]["datatype"] == "BYTES"
    from mlshift.serving._v2 import _unpack_bytes

    assert _unpack_bytes(response.content[split:], "predictions") == ["a-1", "bc-2"]


def test_v2_onnx_model_takes_fp32(artifacts: dict[str, Any], tmp_path: Path) -> None:
    import skl2onnx

    path = tmp_path / "iris.onnx"
    path.write_bytes(
        skl2onnx.to_onnx(artifacts["model"], np.asarray(ROWS, dtype=np.float32)).SerializeToString()
    )
    client = TestClient(create_app(load_model(path, "onnx"), model_ref="iris:4"))
    metadata = client.get("/v2/models/iris/versions/4").json()
    assert metadata["platform"] == "onnx"
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
    assert metadata["outputs"] == [{"name": "predictions", "datatype": "INT64", "shape": [-1]}]
    response = client.post("/v2/models/iris/infer", json=_infer(datatype="FP32"))
    assert response.json()["outputs"][0]["data"] == expected(artifacts)
    # FP64 does not narrow to FP32 without loss: refused, naming what the model takes.
    narrowing = client.post("/v2/models/iris/infer", json=_infer())
    assert narrowing.status_code == 400
    assert "has datatype FP64, the model takes one input 'input' (datatype FP32" in narrowing.json()["error"]
