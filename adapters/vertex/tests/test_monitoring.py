"""Monitoring on vertex://: the neutral ``capture`` as the endpoint's request-response logging to
BigQuery, read back by the same monitor that runs on local://, with baselines and monitors kept
in the staging bucket.

Requests carry ten rows each, as the local acceptance test sends them (the monitor judges rows).
The fake logs every answered prediction of an endpoint that logs, sampled at its rate, to its
in-fake BigQuery table; the adapter reads the rows with the real google-cloud-bigquery client.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import mlshift
from mlshift.adapter import Capability, CapturedRequest, CaptureReader, MonitoringStorage
from mlshift.errors import ConfigError, UnsupportedOperation
from mlshift.specs import EndpointSpec
from mlshift.specs.monitor import CaptureSpec
from mlshift_vertex.testing import FakeVertex

ROOT = Path(__file__).resolve().parents[3]
TARGET = "vertex://my-project/us-central1"
ENDPOINT = "projects/my-project/locations/us-central1/endpoints/churn"
TABLE = "my-project.mlshift_capture.churn"


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


def _vertex(client: mlshift.Client) -> Any:
    return client.adapter


def test_logged_requests_are_read_back_and_a_monitor_over_them_finds_the_drift(
    client: mlshift.Client, vertex: FakeVertex, example: Any, churn: tuple[Path, Any]
) -> None:
    path, x_train = churn
    client.models.register("churn", path, baseline=x_train)
    client.endpoints.deploy("churn", "churn:1", capture={"sample_rate": 1.0})
    assert vertex.endpoint(ENDPOINT)["predictRequestResponseLoggingConfig"] == {
        "enabled": True,
        "samplingRate": 1.0,
        "bigqueryDestination": {"outputUri": f"bq://{TABLE}"},
    }
    # The baseline is kept in the bucket with the version.
    assert "monitoring/baselines/churn/1.json" in vertex.objects("monitoring/")
    spec = client.monitors.apply({"name": "churn-drift", "endpoint": "churn", "min_rows": 200})

    # 2,000 rows drawn like the training data, ten per request: no drift.
    example.send(client, example.make_data(2000, seed=10), batch=10)
    rows = vertex.bigquery_rows(TABLE)
    assert len(rows) == 200
    assert rows[0]["endpoint"] == ENDPOINT and rows[0]["deployed_model_id"].isdigit()
    assert len(json.loads(rows[0]["request_payload"][0])["instances"]) == 10
    assert len({r["request_id"] for r in rows}) == 200

    first = client.monitors.run(spec.name)
    assert first.judged and first.model == "churn:1"
    assert first.requests == 200 and first.report is not None and first.report.rows == 2000
    assert first.drifted == () and first.quality == ()

    # x2 moves by one standard deviation for the next 2,000: that feature is flagged, and only
    # it (the prediction it drives moves too, as on local://).
    example.send(client, example.make_data(2000, seed=11, shift=1.0), batch=10)
    assert len(vertex.bigquery_rows(TABLE)) == 400
    second = client.monitors.run(spec.name)
    assert second.requests == 200 and second.report is not None and second.report.rows == 2000
    assert second.drifted == ("x2", "(prediction)")
    x2 = second.report["x2"]
    assert x2.statistic == "psi" and x2.value is not None and x2.value > x2.threshold == 0.2
    assert all(not second.report[f].drifted for f in ("x0", "x1", "x3"))
    assert second.episode_started and second.in_episode

    # Runs and their reports are in the bucket, where another machine finds them.
    prefix = f"gs://{vertex.bucket}/monitoring/runs/churn-drift/{second.id}/"
    assert second.report_path == prefix + "report.json" and second.html_path == prefix + "report.html"
    assert f"monitoring/runs/churn-drift/{second.id}/window.json" in vertex.objects("monitoring/")
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
    client: mlshift.Client, vertex: FakeVertex, churn: tuple[Path, Any]
) -> None:
    client.models.register("churn", churn[0], baseline=churn[1][:500])
    plan = client.plan(_endpoint(capture={"sample_rate": 0.25}))
    assert any(
        f"request-response logging: sampling_rate 0.25 to the BigQuery table bq://{TABLE}" in note
        for note in plan.notes
    )
    _deploy(client, churn, capture={"sample_rate": 0.25})
    endpoints = _vertex(client).endpoints
    assert Capability.CAPTURE in client.adapter.capabilities and isinstance(endpoints, CaptureReader)
    assert endpoints.capture_settings("churn") == CaptureSpec(sample_rate=0.25)
    mark = len(vertex.mutating_calls())
    assert client.plan(_endpoint(capture={"sample_rate": 0.25})).is_empty
    client.apply(_endpoint(capture={"sample_rate": 0.25}))
    plan = client.plan(_endpoint(capture={"sample_rate": 0.5}))
    assert len(vertex.mutating_calls()) == mark  # an unchanged re-apply and a plan change nothing
    assert [a.kind for a in plan.actions] == ["update_options"]
    assert "request_response_logging.sampling_rate 0.25 -> 0.5" in plan.render()
    client.apply(plan)
    assert endpoints.capture_settings("churn") == CaptureSpec(sample_rate=0.5)
    # One UpdateEndpoint on Vertex (the other writes are the lease and journal in the bucket).
    assert [(c.method, c.path) for c in vertex.mutating_calls()[mark:] if c.path.startswith("/v1/")] == [
        ("PATCH", "/v1/" + ENDPOINT)
    ]
    # deploy() without capture: the endpoint keeps logging, also with a new version.
    client.models.register("churn", churn[0], framework="sklearn", tags={"copy": "2"})
    client.endpoints.deploy("churn", "churn:2", variant="main")
    assert endpoints.capture_settings("churn") == CaptureSpec(sample_rate=0.5)
    plan = client.plan(_endpoint("churn:2", capture={"enabled": False}))
    assert "request_response_logging.enabled true -> false" in plan.render()
    client.apply(plan)
    assert endpoints.capture_settings("churn") is None
    # Stopping keeps the table, so what was logged is still found there.
    assert endpoints.capture_location("churn") == f"bq://{TABLE}"
    assert client.plan(_endpoint("churn:2", capture={"enabled": False})).is_empty


def test_a_table_of_ones_own_is_used_and_kept(
    client: mlshift.Client, vertex: FakeVertex, churn: tuple[Path, Any]
) -> None:
    table = "bq://other-project.audit.churn_requests"
    _deploy(
        client, churn, capture={"sample_rate": 1.0}, provider_options={"vertex": {"capture_table": table}}
    )
    config = vertex.endpoint(ENDPOINT)["predictRequestResponseLoggingConfig"]
    assert config["bigqueryDestination"] == {"outputUri": table}
    client.endpoints.predict("churn", [[0.0, 5.0, 10.0, -2.0]])
    assert len(vertex.bigquery_rows(table)) == 1 and vertex.bigquery_tables() == [table[5:]]
    # A spec without provider_options.vertex keeps the table; one with them and no table moves
    # back to the default.
    assert client.plan(_endpoint(capture={"sample_rate": 1.0})).is_empty
    plan = client.plan(_endpoint(capture={"sample_rate": 1.0}, provider_options={"vertex": {}}))
    assert f"bigquery_destination {table} -> bq://{TABLE}" in plan.render()


def test_a_destination_naming_only_a_project_is_read_where_vertex_writes(
    client: mlshift.Client, vertex: FakeVertex, churn: tuple[Path, Any]
) -> None:
    """Set outside mlshift (the console), logging to ``bq://PROJECT`` goes to the dataset and
    table Vertex AI names itself; the reader finds them there."""
    _deploy(client, churn)
    endpoints = _vertex(client).endpoints
    assert endpoints.capture_settings("churn") is None
    types = _vertex(client).clients.types()
    from mlshift_vertex._endpoints import Logging

    endpoints._update(
        endpoints._require("churn"),
        {"predict_request_response_logging_config": Logging(True, 1.0, "bq://my-project").message(types)},
        "turn logging on",
    )
    assert endpoints.capture_settings("churn") == CaptureSpec(sample_rate=1.0)
    before = datetime.now(timezone.utc) - timedelta(seconds=1)
    client.endpoints.predict("churn", [[0.0, 5.0, 10.0, -2.0], [1.0, 4.0, 9.0, -2.5]])
    assert vertex.bigquery_tables() == ["my-project.logging_churn_churn.request_response_logging"]
    (record,) = endpoints.read_capture("churn", since=before, until=datetime.now(timezone.utc))
    assert record == CapturedRequest(
        request_id=record.request_id,
        endpoint="churn",
        variant="main",
        timestamp=record.timestamp,
        content_type="application/json",
        request=record.request,
        response=record.response,
        model="churn:1",
    )
    assert json.loads(record.request or b"") == {"instances": [[0.0, 5.0, 10.0, -2.0], [1.0, 4.0, 9.0, -2.5]]}
    assert record.request_id.isdigit() and len(json.loads(record.response or b"")["predictions"]) == 2
    # The window's bounds are honoured: nothing before it, nothing after it.
    assert (
        list(endpoints.read_capture("churn", since=record.timestamp, until=datetime.now(timezone.utc))) == []
    )
    assert list(endpoints.read_capture("churn", since=before, until=record.timestamp)) == [record]


def test_sampling_follows_the_rate_and_nothing_is_read_before_a_table_exists(
    client: mlshift.Client, vertex: FakeVertex, churn: tuple[Path, Any]
) -> None:
    _deploy(client, churn, capture={"sample_rate": 0.2})
    endpoints = _vertex(client).endpoints
    now = datetime.now(timezone.utc)
    assert list(endpoints.read_capture("churn", since=now - timedelta(hours=1), until=now)) == []
    for _ in range(200):
        client.endpoints.predict("churn", [[0.0, 5.0, 10.0, -2.0]])
    logged = len(vertex.bigquery_rows(TABLE))
    assert 20 <= logged <= 60  # 200 draws at 0.2: 40 expected; the fake is seeded, so this repeats
    now = datetime.now(timezone.utc)
    assert len(list(endpoints.read_capture("churn", since=now - timedelta(hours=1), until=now))) == logged


def test_a_callers_request_id_is_refused_before_anything_is_sent(
    client: mlshift.Client, vertex: FakeVertex, churn: tuple[Path, Any]
) -> None:
    # Vertex numbers the requests it logs itself, and its answer does not say which number.
    _deploy(client, churn, capture={"sample_rate": 1.0})
    before = len(vertex.bigquery_rows(TABLE))
    with pytest.raises(UnsupportedOperation, match="request with an id of the caller's"):
        client.endpoints.predict("churn", [[0.0, 5.0, 10.0, -2.0]], request_id="order-7")
    assert len(vertex.bigquery_rows(TABLE)) == before  # nothing was sent
    for _ in range(2):
        answer = client.endpoints.predict("churn", [[0.0, 5.0, 10.0, -2.0]])
        assert answer.request_id is None and len(answer.predictions) == 1
    assert len(vertex.bigquery_rows(TABLE)) == before + 2


def test_rows_of_payloads_split_per_instance_and_of_other_endpoints(
    client: mlshift.Client, vertex: FakeVertex, churn: tuple[Path, Any]
) -> None:
    """A table shared with another endpoint, and payloads logged one instance per element, are
    read as the monitor needs them."""
    _deploy(client, churn, capture={"sample_rate": 1.0})
    client.endpoints.predict("churn", [[0.0, 5.0, 10.0, -2.0]])
    rows = vertex._state.tables[TABLE]
    now = datetime.now(timezone.utc)
    rows.append(
        {
            **rows[0],
            "request_id": 7,
            "logging_time": now,
            "request_payload": ["[1.0, 2.0, 3.0, 4.0]", "[5.0, 6.0, 7.0, 8.0]"],
            "response_payload": ["1", "0"],
        }
    )
    rows.append(
        {**rows[0], "request_id": 8, "endpoint": "projects/my-project/locations/us-central1/endpoints/x"}
    )
    rows.append({**rows[0], "request_id": 9, "request_payload": ["not json"]})
    records = list(_vertex(client).endpoints.read_capture("churn", since=now - timedelta(hours=1), until=now))
    assert [r.request_id for r in records][-1] == "7" and {"8", "9"}.isdisjoint(r.request_id for r in records)
    assert json.loads(records[-1].request or b"") == {
        "instances": [[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]
    }
    assert json.loads(records[-1].response or b"") == {"predictions": [1, 0]}


@pytest.mark.parametrize(
    ("spec", "field", "message"),
    [
        (
            {"capture": {"sample_rate": 1.0}, "provider_options": {"vertex": {"capture_table": "bq://p.d"}}},
            "provider_options.vertex.capture_table",
            "is not a BigQuery table",
        ),
        (
            {"provider_options": {"vertex": {"capture_table": "bq://my-project.audit.churn"}}},
            "provider_options.vertex.capture_table",
            "no capture",
        ),
        (
            {
                "capture": {"enabled": False},
                "provider_options": {"vertex": {"capture_table": "bq://my-project.audit.churn"}},
            },
            "capture.enabled",
            "names a table",
        ),
    ],
)
def test_capture_vertex_cannot_honour_is_refused_at_plan_time(
    client: mlshift.Client,
    vertex: FakeVertex,
    churn: tuple[Path, Any],
    spec: dict[str, Any],
    field: str,
    message: str,
) -> None:
    client.models.register("churn", churn[0], framework="sklearn")
    mark = len(vertex.mutating_calls())
    with pytest.raises(ConfigError, match=message) as err:
        client.plan(_endpoint(**spec))
    assert err.value.field == field and err.value.hint
    assert len(vertex.mutating_calls()) == mark


def test_a_bad_capture_dataset_is_refused_when_connecting(vertex: FakeVertex) -> None:
    with pytest.raises(ConfigError, match="capture_dataset") as err:
        mlshift.connect(TARGET, options={"capture_dataset": "no-dashes"})
    assert "capture_dataset" in (err.value.field or "")


def test_settings_vertex_does_not_take_are_a_plan_note(
    client: mlshift.Client, churn: tuple[Path, Any]
) -> None:
    client.models.register("churn", churn[0], framework="sklearn")
    plan = client.plan(_endpoint(capture={"max_file_mb": 4}))
    assert any("capture.max_file_mb do not apply" in note for note in plan.render().splitlines())


def test_monitoring_storage_is_under_the_targets_prefix(client: mlshift.Client, vertex: FakeVertex) -> None:
    adapter = _vertex(client)
    assert isinstance(adapter, MonitoringStorage)
    adapter.monitoring_store().put("state/x.json", b"{}")
    assert "monitoring/state/x.json" in vertex.objects()
    assert adapter.monitoring_uri("state/x.json") == f"gs://{vertex.bucket}/monitoring/state/x.json"


def test_a_monitor_on_an_endpoint_without_capture_is_refused(
    client: mlshift.Client, churn: tuple[Path, Any]
) -> None:
    _deploy(client, churn)
    with pytest.raises(ConfigError, match="does not capture") as err:
        client.monitors.apply({"name": "m", "endpoint": "churn"})
    assert err.value.field == "endpoint"
    assert client.monitors.list() == []
