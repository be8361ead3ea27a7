"""Request capture: what the model server records, how it never hurts a caller, and plan checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import mlshift
from capture_helpers import wait_for
from mlshift.errors import UnsupportedOperation
from mlshift.serving import load_model
from mlshift.serving._app import create_app
from mlshift.serving._capture import (
    CAPTURE_DIR_ENV,
    ENDPOINT_ENV,
    capture_files,
    decode_record,
    write_capture_config,
)


def _records(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for path in capture_files(folder) for line in path.read_text().splitlines()]


@pytest.fixture
def served(iris: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Path]:
    from starlette.testclient import TestClient

    folder = tmp_path / "capture" / "iris"
    monkeypatch.setenv(CAPTURE_DIR_ENV, str(folder))
    monkeypatch.setenv(ENDPOINT_ENV, "iris")
    write_capture_config(folder, {"sample_rate": 1.0, "max_file_mb": 16, "queue_size": 100})
    app = create_app(load_model(iris["v1"], "sklearn"), variant="blue", model_ref="iris:1")
    return TestClient(app), folder


def test_the_server_records_requests_and_answers(served: tuple[Any, Path], iris: dict[str, Any]) -> None:
    client, folder = served
    answers = []
    for i, row in enumerate(iris["rows"]):
        resp = client.post("/invocations", json={"instances": [row]}, headers={"X-Request-Id": f"req-{i}"})
        assert resp.status_code == 200
        assert resp.headers["x-request-id"] == f"req-{i}"  # labels can be joined by this id
        answers.append(resp.json()["predictions"])
    resp = client.post("/invocations", content=b"5.1,3.5,1.4,0.2\n", headers={"Content-Type": "text/csv"})
    assert resp.status_code == 200
    generated = resp.headers["x-request-id"]
    client.post("/invocations", json={"instances": [[1, 2]]})  # a 400: not recorded
    pretty = json.dumps({"instances": [iris["rows"][1]]}, indent=2).encode()
    assert client.post("/invocations", content=pretty).status_code == 200
    wait_for(lambda: len(_records(folder)) == 6, "6 captured records")
    records = _records(folder)
    assert [r["request_id"] for r in records][:5] == ["req-0", "req-1", "req-2", "req-3", generated]
    assert records[5]["request"] == {"instances": [iris["rows"][1]]}  # one line in the file
    first = records[0]
    assert first["endpoint"] == "iris" and first["variant"] == "blue" and first["model"] == "iris:1"
    # The body and the answer as they were sent; decoded as the server decodes them.
    assert first["request"] == {"instances": [iris["rows"][0]]}
    assert first["response"] == {"predictions": answers[0]}
    assert decode_record(first) == ([iris["rows"][0]], answers[0])
    assert records[4]["content_type"] == "text/csv" and records[4]["request"] == "5.1,3.5,1.4,0.2\n"
    assert decode_record(records[4])[0] == [[5.1, 3.5, 1.4, 0.2]]
    assert first["timestamp"].endswith("+00:00")
    # The documented layout: data/YYYY-MM-DD/HH/<variant>-<pid>-<n>.jsonl
    path = next(capture_files(folder))
    assert path.parent.parent.parent.name == "data" and path.name.startswith("blue-")


def test_a_full_queue_drops_records_and_never_fails_the_caller(
    served: tuple[Any, Path], iris: dict[str, Any]
) -> None:
    client, _ = served
    writer = client.app.router.routes[0].app.writer  # the capture wrapper around the predict route
    # Stop the writer thread so nothing drains the queue; then fill it.
    writer._stop.set()
    writer._thread.join(timeout=5)
    writer.limit = 3
    for _ in range(10):
        assert client.post("/invocations", json={"instances": iris["rows"]}).status_code == 200
    assert writer.pending == 3
    assert writer.dropped == 7


def test_sample_rate_and_switching_capture_off(served: tuple[Any, Path], iris: dict[str, Any]) -> None:
    client, folder = served
    writer = client.app.router.routes[0].app.writer
    write_capture_config(folder, {"sample_rate": 0.1, "max_file_mb": 16, "queue_size": 100})
    wait_for(lambda: writer.rate == 0.1, "the new sample rate to be read")
    for _ in range(400):
        client.post("/invocations", json={"instances": [iris["rows"][0]]})
    wait_for(lambda: writer.pending == 0, "the queue to drain")
    wait_for(lambda: writer.captured == len(_records(folder)), "records flushed")
    assert 10 <= writer.captured <= 80  # 40 expected; binomial(400, 0.1) is within this > 99.99 %
    write_capture_config(folder, None)
    wait_for(lambda: writer.rate == 0.0, "capture to be switched off")
    before = writer.captured
    for _ in range(20):
        client.post("/invocations", json={"instances": [iris["rows"][0]]})
    assert writer.pending == 0 and writer.captured == before


def test_the_stats_file_says_which_rate_is_in_force(served: tuple[Any, Path]) -> None:
    _, folder = served

    def stated() -> list[float]:
        rates = []
        for path in (folder / "stats").glob("*.json"):
            try:
                rates.append(json.loads(path.read_text())["sample_rate"])
            except (OSError, ValueError, KeyError):
                return []  # being replaced: read it again
        return rates

    wait_for(lambda: stated() == [1.0], "the stats to state rate 1.0")
    # Before any request is captured at the new rate, the file says it is in force.
    write_capture_config(folder, {"sample_rate": 0.25, "max_file_mb": 16, "queue_size": 100})
    wait_for(lambda: stated() == [0.25], "the stats to state the new rate")
    write_capture_config(folder, None)
    wait_for(lambda: stated() == [0.0], "the stats to state capture is off")


def test_a_target_without_capture_refuses_it_at_plan_time(
    memory: mlshift.Client, iris: dict[str, Any]
) -> None:
    memory.models.register("iris", iris["v1"])
    with pytest.raises(UnsupportedOperation, match="request capture.*CAPTURE.*local"):
        memory.endpoints.deploy("iris", "iris:1", capture={"sample_rate": 0.5})
    assert memory.endpoints.list() == []


def test_a_new_endpoint_shows_its_capture_on_the_create_line(
    local: mlshift.Client, iris: dict[str, Any]
) -> None:
    local.models.register("iris", iris["v1"])

    def create_line(capture: dict[str, Any] | None) -> str:
        spec = mlshift.EndpointSpec(
            name="iris", variants=[{"name": "blue", "model": "iris:1"}], capture=capture
        )
        plan = local.plan(spec)
        assert [a.kind for a in plan.actions] == ["create_endpoint"]
        return next(line for line in plan.render().splitlines() if "create endpoint" in line)

    assert create_line({"sample_rate": 0.2, "max_file_mb": 8}) == (
        "    + create endpoint iris (blue=iris:1 100%) "
        "with capture sample_rate 0.2, max_file_mb 8, queue_size 10000"
    )
    # Nothing is captured either way: the line says nothing about it.
    assert (
        create_line(None)
        == create_line({"enabled": False})
        == "    + create endpoint iris (blue=iris:1 100%)"
    )


def test_local_endpoint_captures_and_changes_rate_live(local: mlshift.Client, iris: dict[str, Any]) -> None:
    local.models.register("iris", iris["v1"])
    local.endpoints.deploy("iris", "iris:1", capture={"sample_rate": 1.0})
    folder = local.adapter.endpoints.capture_dir("iris")
    for row in iris["rows"] * 5:
        local.endpoints.predict("iris", [row])
    wait_for(lambda: len(_records(folder)) == 20, "20 captured records")
    records = _records(folder)
    assert {r["model"] for r in records} == {"iris:1"} and {r["endpoint"] for r in records} == {"iris"}
    assert decode_record(records[0])[0] == [iris["rows"][0]]
    # A new rate is an option change on the live endpoint: planned, applied, no restart.
    variant = local.endpoints.get("iris").variants[0].name
    spec = mlshift.EndpointSpec(
        name="iris",
        variants=[{"name": variant, "model": "iris:1"}],
        capture={"enabled": False},
    )
    plan = local.plan(spec)
    assert [a.kind for a in plan.actions] == ["update_options"]
    local.apply(plan)
    assert not (folder / "capture.json").exists()
    # A deploy that says nothing about capture leaves it as it is.
    local.endpoints.deploy("iris", "iris:1")
    assert not (folder / "capture.json").exists()


def test_open_inference_protocol_requests_are_recorded(
    served: tuple[Any, Path], iris: dict[str, Any]
) -> None:
    import numpy as np

    client, folder = served
    rows = iris["rows"]
    expected = iris["expected_v1"]
    tensor = {"inputs": [{"name": "input", "shape": [4, 4], "datatype": "FP64", "data": rows}]}
    resp = client.post("/v2/models/iris/infer", json=tensor, headers={"X-Request-Id": "v2-json"})
    assert resp.status_code == 200 and resp.headers["x-request-id"] == "v2-json"
    assert resp.json()["outputs"][0]["data"] == expected
    # Binary tensor data both ways (what tritonclient sends by default).
    data = np.asarray(rows[:2], dtype="<f8").tobytes()
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": [2, 4],
                    "datatype": "FP64",
                    "parameters": {"binary_data_size": len(data)},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    resp = client.post(
        "/v2/models/iris/versions/1/infer",
        content=head + data,
        headers={"inference-header-content-length": str(len(head)), "X-Request-Id": "v2-binary"},
    )
    assert resp.status_code == 200, resp.text
    # A refused /v2 request is not recorded.
    assert client.post("/v2/models/iris/infer", json={"inputs": []}).status_code == 400
    wait_for(lambda: len(_records(folder)) == 2, "2 captured /v2 records")
    first, second = _records(folder)
    assert first["request_id"] == "v2-json" and first["protocol"] == "v2" and first["model"] == "iris:1"
    assert decode_record(first) == (rows, expected)
    assert second["request_id"] == "v2-binary" and "request_binary" in second and "response_binary" in second
    assert decode_record(second) == (rows[:2], expected[:2])


def test_a_v2_record_with_one_tensor_per_column_reads_in_the_signature_order() -> None:
    record = {
        "protocol": "v2",
        "columns": ["age", "plan"],
        "request": {
            "inputs": [
                {"name": "plan", "shape": [2], "datatype": "BYTES", "data": ["gold", "free"]},
                {"name": "age", "shape": [2], "datatype": "INT64", "data": [31, 47]},
            ]
        },
        "response": {
            "outputs": [{"name": "predictions", "shape": [2], "datatype": "FP64", "data": [0.5, 1.5]}]
        },
    }
    assert decode_record(record) == ([[31, "gold"], [47, "free"]], [0.5, 1.5])
    from mlshift.errors import InvalidPayload

    with pytest.raises(InvalidPayload, match="captured /v2 request"):
        decode_record({**record, "request": {"inputs": "nope"}})
