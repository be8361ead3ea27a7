"""Monitoring on azureml://: the neutral ``capture`` as each deployment's data collector (payload
logging), read back from the workspace's blob datastore by the same monitor that runs on
local://, with baselines and monitors kept in the datastore.

Requests carry ten rows each, as the local and SageMaker acceptance tests send them (the monitor
judges rows).
"""

from __future__ import annotations

import json
import re
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import mlshift
from conftest import ROOT, TARGET, azureml
from mlshift.adapter import CapturedRequest, CaptureReader, MonitoringStorage
from mlshift.errors import ConfigError
from mlshift.specs import EndpointSpec
from mlshift.specs.monitor import CaptureSpec
from mlshift_azureml._capture import capture_key, payload_record
from mlshift_azureml.testing import FakeAzureML

#: Azure's layout in workspaceblobstore:
#: modelDataCollector/ENDPOINT/DEPLOYMENT/COLLECTION/YYYY/MM/DD/HH/ID.jsonl
CAPTURE_KEY = re.compile(
    r"modelDataCollector/churn/churn-v1/(request|response)/\d{4}/\d{2}/\d{2}/\d{2}/[0-9a-f]{32}\.jsonl"
)


@pytest.fixture(scope="module")
def example() -> Any:
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import monitor_retrain
    finally:
        sys.path.pop(0)
    return monitor_retrain


@pytest.fixture(scope="module")
def churn(example: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """The example's model trained on 5,000 rows, and those rows (the baseline)."""
    x_train = example.make_data(5000, seed=1)
    return example.train_model(x_train, tmp_path_factory.mktemp("churn") / "churn.skops"), x_train


def _lines(azure: FakeAzureML, collection: str) -> list[dict[str, Any]]:
    keys = [k for k in azure.blob_keys("modelDataCollector/") if f"/{collection}/" in k]
    return [json.loads(line) for key in keys for line in azure.blob_bytes(key).splitlines()]


def test_payload_logging_in_azures_format_and_a_monitor_over_it_finds_the_drift(
    client: mlshift.Client, azure: FakeAzureML, example: Any, churn: tuple[Path, Any]
) -> None:
    path, x_train = churn
    client.models.register("churn", path, baseline=x_train)
    client.endpoints.deploy("churn", "churn:1", capture={"sample_rate": 1.0})
    ml = azureml(client).clients.ml()
    collector = ml.online_deployments.get("churn-v1", "churn").data_collector
    assert {k: v.enabled for k, v in collector.collections.items()} == {"request": "true", "response": "true"}
    assert (collector.sampling_rate, collector.rolling_rate) == (1.0, "Hour")
    # The baseline is kept in the datastore with the version.
    assert "mlshift/monitoring/baselines/churn/1.json" in azure.blob_keys("mlshift/monitoring/")
    spec = client.monitors.apply({"name": "churn-drift", "endpoint": "churn", "min_rows": 200})

    # 2,000 requests' worth of rows drawn like the training data: no drift.
    example.send(client, example.make_data(2000, seed=10), batch=10)
    files = azure.blob_keys("modelDataCollector/")
    assert files and all(CAPTURE_KEY.fullmatch(k) for k in files)
    requests, responses = _lines(azure, "request"), _lines(azure, "response")
    assert len(requests) == len(responses) == 200
    first_request = requests[0]
    assert first_request["type"] == "azureml.inference.request"
    assert first_request["datacontenttype"] == "application/json"
    assert first_request["source"].endswith("/onlineEndpoints/churn/deployments/churn-v1")
    assert len(first_request["data"]["instances"]) == 10
    assert {r["correlationid"] for r in requests} == {r["correlationid"] for r in responses}

    first = client.monitors.run(spec.name)
    assert first.judged and first.model == "churn:1"
    assert first.requests == 200 and first.report is not None and first.report.rows == 2000
    assert first.drifted == () and first.quality == ()

    # x2 moves by one standard deviation for the next 2,000: that feature is flagged, and only
    # it (the prediction it drives moves too, as on local://).
    example.send(client, example.make_data(2000, seed=11, shift=1.0), batch=10)
    assert len(_lines(azure, "request")) == 400
    second = client.monitors.run(spec.name)
    assert second.requests == 200 and second.report is not None and second.report.rows == 2000
    assert second.drifted == ("x2", "(prediction)")
    x2 = second.report["x2"]
    assert x2.statistic == "psi" and x2.value is not None and x2.value > x2.threshold == 0.2
    assert all(not second.report[f].drifted for f in ("x0", "x1", "x3"))
    assert second.episode_started and second.in_episode

    # Runs and their reports are in the datastore, where another machine finds them.
    prefix = f"azureml://datastores/workspaceblobstore/paths/mlshift/monitoring/runs/churn-drift/{second.id}/"
    assert second.report_path == prefix + "report.json" and second.html_path == prefix + "report.html"
    assert f"mlshift/monitoring/runs/churn-drift/{second.id}/window.json" in azure.blob_keys("mlshift/")
    with mlshift.connect(TARGET) as other:
        assert [m.name for m in other.monitors.list()] == ["churn-drift"]
        assert [r.id for r in other.monitors.runs("churn-drift")] == [first.id, second.id]
        assert other.monitors.report("churn-drift").drifted == ("x2", "(prediction)")
        page = other.monitors.html("churn-drift")
        assert "x2" in page and "<svg" in page
        assert other.models.baseline("churn:1") == client.models.baseline("churn:1")


def _endpoint(model: str = "churn:1", **spec: Any) -> EndpointSpec:
    return EndpointSpec.model_validate(
        {"name": "churn", "variants": [{"name": "main", "model": model}], **spec}
    )


def _deploy(client: mlshift.Client, churn: tuple[Path, Any], **spec: Any) -> EndpointSpec:
    path, x_train = churn
    client.models.register("churn", path, baseline=x_train[:500])
    endpoint = _endpoint(**spec)
    client.apply(endpoint)
    return endpoint


def test_capture_is_planned_changed_and_kept_by_specs_without_it(
    client: mlshift.Client, azure: FakeAzureML, churn: tuple[Path, Any]
) -> None:
    client.models.register("churn", churn[0], baseline=churn[1][:500])
    plan = client.plan(_endpoint(capture={"sample_rate": 0.25}))
    assert (
        "sampling_rate 0.25) to datastore workspaceblobstore under modelDataCollector/churn/" in plan.render()
    )
    client.apply(plan)
    endpoints = azureml(client).endpoints
    assert isinstance(endpoints, CaptureReader)
    assert endpoints.capture_settings("churn") == CaptureSpec(sample_rate=0.25)
    # Unchanged: nothing to do, and planning and applying it change nothing.
    mark = len(azure.calls)
    assert client.plan(_endpoint(capture={"sample_rate": 0.25})).is_empty
    client.apply(_endpoint(capture={"sample_rate": 0.25}))
    assert azure.mutating_calls(since=mark) == []
    plan = client.plan(_endpoint(capture={"sample_rate": 0.5}))
    assert azure.mutating_calls(since=mark) == []
    assert [a.kind for a in plan.actions] == ["update_options"]
    assert "capture.sample_rate 0.25 -> 0.5" in plan.render()
    client.apply(plan)
    assert endpoints.capture_settings("churn") == CaptureSpec(sample_rate=0.5)
    # 0.5 of 8 requests: every other one is logged (the kit samples exactly).
    for _ in range(8):
        client.endpoints.predict("churn", [[0.0, 1.0, 2.0, 3.0]])
    assert len(_lines(azure, "request")) == 4
    # deploy() without capture: the endpoint keeps capturing, also on a new deployment.
    client.models.register("churn", churn[0], framework="sklearn", tags={"copy": "2"})
    client.endpoints.deploy("churn", "churn:2", variant="blue")
    ml = azureml(client).clients.ml()
    assert ml.online_deployments.get("blue", "churn").data_collector.sampling_rate == 0.5
    assert endpoints.capture_settings("churn") == CaptureSpec(sample_rate=0.5)
    client.apply(
        EndpointSpec.model_validate(
            {
                "name": "churn",
                "variants": [{"name": "blue", "model": "churn:2"}],
                "capture": {"enabled": False},
            }
        )
    )
    assert endpoints.capture_settings("churn") is None
    assert ml.online_deployments.get("blue", "churn").data_collector is None


def test_settings_azure_does_not_take_are_a_plan_note(
    client: mlshift.Client, churn: tuple[Path, Any]
) -> None:
    client.models.register("churn", churn[0], framework="sklearn")
    plan = client.plan(_endpoint(capture={"max_file_mb": 4}))
    assert any("capture.max_file_mb do not apply" in line for line in plan.render().splitlines())


def test_the_reader_pairs_requests_with_answers_and_keeps_the_window(
    client: mlshift.Client, azure: FakeAzureML, churn: tuple[Path, Any]
) -> None:
    _deploy(client, churn, capture={"sample_rate": 1.0})
    now = datetime.now(timezone.utc)
    body = json.dumps({"instances": [[0.0, 5.0, 10.0, -2.0]]}).encode()
    source = "/subscriptions/s/resourceGroups/r/providers/Microsoft.MachineLearningServices/workspaces/w"

    def put(collection: str, when: datetime, data: bytes, content_type: str, rid: str) -> None:
        line = payload_record(
            collection, source=source, time=when, content_type=content_type, body=data, correlation_id=rid
        )
        azure.put_blob(capture_key("churn", "main", collection, when, "0" * 32), (line + "\n").encode())

    put("request", now - timedelta(seconds=5), b"1,2,3,4", "text/csv", "order-42")
    put("response", now - timedelta(seconds=5), b'{"predictions": [1]}', "application/json", "order-42")
    put("request", now - timedelta(hours=3), body, "application/json", "too-old")
    records = list(azureml(client).endpoints.read_capture("churn", since=now - timedelta(hours=1), until=now))
    assert records == [
        CapturedRequest(
            request_id="order-42",
            endpoint="churn",
            variant="main",
            timestamp=records[0].timestamp,
            content_type="text/csv",
            request=b"1,2,3,4",
            response=b'{"predictions": [1]}',
        )
    ]
    assert abs((records[0].timestamp - (now - timedelta(seconds=5))).total_seconds()) < 0.001


def test_a_callers_request_id_is_the_captured_records_id(
    client: mlshift.Client, azure: FakeAzureML, churn: tuple[Path, Any]
) -> None:
    _deploy(client, churn, capture={"sample_rate": 1.0})
    since = datetime.now(timezone.utc) - timedelta(seconds=1)
    row = [0.0, 5.0, 10.0, -2.0]
    mine = client.endpoints.predict("churn", [row], request_id="order-7")
    made = client.endpoints.predict("churn", [row])
    assert mine.request_id == "order-7" and made.request_id and made.request_id != "order-7"
    records = azureml(client).endpoints.read_capture("churn", since=since, until=datetime.now(timezone.utc))
    # Labels posted for these ids join the captured requests.
    assert {r.request_id for r in records} >= {"order-7", made.request_id}


def test_records_as_azure_writes_them_are_read() -> None:
    from mlshift_azureml._capture import parse_payloads

    # As Azure documents them: whole-second times with a "Z"; a body kept in a blob of its own.
    lines = [
        {
            "specversion": "1.0",
            "id": "19790b87",
            "source": "/subscriptions/s/.../onlineEndpoints/ep/deployments/dp",
            "type": "azureml.inference.request",
            "datacontenttype": "application/json",
            "time": "2026-12-06T08:59:48Z",
            "data": {"data": [[1, 2, 3, 4]]},
            "path": "/score",
            "method": "POST",
            "contentrange": "bytes 0-59/*",
            "correlationid": "f6e8",
            "xrequestid": "f6e8",
        },
        {
            "specversion": "1.0",
            "id": "ba99",
            "type": "azureml.inference.request",
            "datacontenttype": "text/plain",
            "time": "2026-12-06T08:41:07Z",
            "data": "https://acct.blob.core.windows.net/modeldata/mdc/ba99",
            "datainblob": "true",
            "xrequestid": "big-1",
        },
    ]
    text = "\n".join(json.dumps(line) for line in lines) + "\nnot a record\n"
    first, second = parse_payloads(text.encode())
    assert first.time == datetime(2026, 12, 6, 8, 59, 48, tzinfo=timezone.utc)
    assert (first.kind, first.correlation_id) == ("request", "f6e8")
    assert json.loads(first.body or b"") == {"data": [[1, 2, 3, 4]]}
    assert (second.correlation_id, second.body) == ("big-1", None)


def test_monitoring_storage_is_under_the_targets_prefix(client: mlshift.Client, azure: FakeAzureML) -> None:
    adapter = azureml(client)
    assert isinstance(adapter, MonitoringStorage)
    adapter.monitoring_store().put("state/x.json", b"{}")
    assert "mlshift/monitoring/state/x.json" in azure.blob_keys("mlshift/")
    assert (
        adapter.monitoring_uri("state/x.json")
        == "azureml://datastores/workspaceblobstore/paths/mlshift/monitoring/state/x.json"
    )


def test_a_monitor_on_an_endpoint_without_capture_is_refused(
    client: mlshift.Client, churn: tuple[Path, Any]
) -> None:
    _deploy(client, churn)
    with pytest.raises(ConfigError, match="does not capture") as err:
        client.monitors.apply({"name": "m", "endpoint": "churn"})
    assert err.value.field == "endpoint"
    assert client.monitors.list() == []


def test_a_collector_changed_outside_mlshift_is_planned_back(
    client: mlshift.Client, azure: FakeAzureML, churn: tuple[Path, Any]
) -> None:
    from azure.ai.ml.entities import DataCollector, DeploymentCollection

    _deploy(client, churn, capture={"sample_rate": 0.5})
    ml = azureml(client).clients.ml()
    deployment = ml.online_deployments.get("main", "churn")
    # Someone keeps the rate but stops logging answers and rolls files daily (the reader lists hours).
    deployment.data_collector = DataCollector(
        collections={"request": DeploymentCollection(enabled="true")}, sampling_rate=0.5, rolling_rate="Day"
    )
    ml.online_deployments.begin_create_or_update(deployment, skip_script_validation=True).result()
    plan = client.plan(_endpoint(capture={"sample_rate": 0.5}))
    assert "capture.sample_rate 0.5 (answers not logged, rolling_rate Day) -> 0.5" in plan.render()
    client.apply(plan)
    collector = ml.online_deployments.get("main", "churn").data_collector
    assert sorted(collector.collections) == ["request", "response"] and collector.rolling_rate == "Hour"
    assert all(c.enabled == "true" for c in collector.collections.values())
    assert client.plan(_endpoint(capture={"sample_rate": 0.5})).is_empty


def test_what_was_captured_is_read_after_the_endpoint_is_deleted(
    client: mlshift.Client, churn: tuple[Path, Any]
) -> None:
    _deploy(client, churn, capture={"sample_rate": 1.0})
    start = datetime.now(timezone.utc) - timedelta(seconds=1)
    client.endpoints.predict("churn", [[0.0, 1.0, 2.0, 3.0]])
    client.endpoints.delete("churn")
    endpoints = azureml(client).endpoints
    assert endpoints.capture_settings("churn") is None
    (record,) = endpoints.read_capture("churn", since=start, until=datetime.now(timezone.utc))
    assert record.variant == "main"
    assert json.loads(record.request or b"") == {"instances": [[0.0, 1.0, 2.0, 3.0]]}
    assert record.response is not None and "predictions" in json.loads(record.response)
