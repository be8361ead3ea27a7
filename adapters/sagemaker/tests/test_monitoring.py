"""Monitoring on sagemaker://: the neutral ``capture`` as SageMaker's data capture, read back from
S3 by the same monitor that runs on local://, with baselines and monitors kept in the bucket.

Issue 15's acceptance point for the testing kit: capture files appear in the fake S3 in
SageMaker's format and a monitor over them finds the same drift as on local://. Requests carry
ten rows each, as the local acceptance test sends them (the monitor judges rows).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import mlshift
from mlshift.adapter import CapturedRequest, CaptureReader, MonitoringStorage
from mlshift.errors import ConfigError
from mlshift.specs import EndpointSpec
from mlshift.specs.monitor import CaptureSpec
from mlshift_sagemaker._capture import capture_key, capture_record
from mlshift_sagemaker.testing import FakeSageMaker
from sagemaker_helpers import ROOT, TARGET, refused_before_any_change, sagemaker

#: SageMaker's key layout under the destination (``.../data-capture/churn``):
#: ENDPOINT/VARIANT/YYYY/MM/DD/HH/file.jsonl
CAPTURE_KEY = re.compile(r"mlshift/data-capture/churn/churn/churn-v1/\d{4}/\d{2}/\d{2}/\d{2}/[^/]+\.jsonl")


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


def _bucket(aws: FakeSageMaker) -> str:
    return f"sagemaker-us-east-1-{aws.account_id}"


def _capture_keys(aws: FakeSageMaker) -> list[str]:
    bucket = aws.backend("s3").buckets[_bucket(aws)]
    return sorted(k for k in bucket.keys if k.startswith("mlshift/data-capture/"))


def test_capture_in_sagemakers_format_and_a_monitor_over_it_finds_the_drift(
    client: mlshift.Client, aws: FakeSageMaker, example: Any, churn: tuple[Path, Any]
) -> None:
    path, x_train = churn
    client.models.register("churn", path, baseline=x_train)
    client.endpoints.deploy("churn", "churn:1", capture={"sample_rate": 1.0})
    sm = sagemaker(client).clients.client("sagemaker")
    config = sm.describe_endpoint_config(
        EndpointConfigName=sm.describe_endpoint(EndpointName="churn")["EndpointConfigName"]
    )["DataCaptureConfig"]
    assert config == {
        "EnableCapture": True,
        "InitialSamplingPercentage": 100,
        "DestinationS3Uri": f"s3://{_bucket(aws)}/mlshift/data-capture/churn",
        "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
        "CaptureContentTypeHeader": {
            "JsonContentTypes": ["application/json"],
            "CsvContentTypes": ["text/csv"],
        },
    }
    # The baseline is kept in the bucket with the version.
    keys = aws.backend("s3").buckets[_bucket(aws)].keys
    assert "mlshift/monitoring/baselines/churn/1.json" in keys
    spec = client.monitors.apply({"name": "churn-drift", "endpoint": "churn", "min_rows": 200})

    # 2,000 requests' worth of rows drawn like the training data: no drift.
    example.send(client, example.make_data(2000, seed=10), batch=10)
    files = _capture_keys(aws)
    assert len(files) == 200 and all(CAPTURE_KEY.fullmatch(k) for k in files)
    record = json.loads(aws.backend("s3").get_object(_bucket(aws), files[0]).value)
    assert record["captureData"]["endpointInput"]["encoding"] == "JSON"
    assert record["captureData"]["endpointInput"]["observedContentType"] == "application/json"
    assert len(json.loads(record["captureData"]["endpointInput"]["data"])["instances"]) == 10
    # predict() sends every request with an id (InferenceId), which labels are joined on.
    assert set(record["eventMetadata"]) == {"eventId", "inferenceId", "inferenceTime"}

    first = client.monitors.run(spec.name)
    assert first.judged and first.model == "churn:1"
    assert first.requests == 200 and first.report is not None and first.report.rows == 2000
    assert first.drifted == () and first.quality == ()

    # x2 moves by one standard deviation for the next 2,000: that feature is flagged, and only
    # it (the prediction it drives moves too, as on local://).
    example.send(client, example.make_data(2000, seed=11, shift=1.0), batch=10)
    assert len(_capture_keys(aws)) == 400
    second = client.monitors.run(spec.name)
    assert second.requests == 200 and second.report is not None and second.report.rows == 2000
    assert second.drifted == ("x2", "(prediction)")
    x2 = second.report["x2"]
    assert x2.statistic == "psi" and x2.value is not None and x2.value > x2.threshold == 0.2
    assert all(not second.report[f].drifted for f in ("x0", "x1", "x3"))
    assert second.episode_started and second.in_episode

    # Runs and their reports are in the bucket, where another machine finds them.
    prefix = f"s3://{_bucket(aws)}/mlshift/monitoring/runs/churn-drift/{second.id}/"
    assert second.report_path == prefix + "report.json" and second.html_path == prefix + "report.html"
    assert f"mlshift/monitoring/runs/churn-drift/{second.id}/window.json" in keys
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
    client: mlshift.Client, aws: FakeSageMaker, churn: tuple[Path, Any]
) -> None:
    _deploy(client, churn, capture={"sample_rate": 0.25})
    endpoints = sagemaker(client).endpoints
    assert isinstance(endpoints, CaptureReader)
    assert endpoints.capture_settings("churn") == CaptureSpec(sample_rate=0.25)
    mark = len(aws.calls)
    assert client.plan(_endpoint(capture={"sample_rate": 0.25})).is_empty
    plan = client.plan(_endpoint(capture={"sample_rate": 0.5}))
    assert aws.mutating_calls(since=mark) == []
    assert [a.kind for a in plan.actions] == ["update_options"]
    assert "data_capture.sampling_percent 25 -> 50" in plan.render()
    client.apply(plan)
    assert endpoints.capture_settings("churn") == CaptureSpec(sample_rate=0.5)
    # deploy() without capture: the endpoint keeps capturing, also on a new configuration.
    client.models.register("churn", churn[0], framework="sklearn", tags={"copy": "2"})
    client.endpoints.deploy("churn", "churn:2", variant="main")
    assert endpoints.capture_settings("churn") == CaptureSpec(sample_rate=0.5)
    client.apply(_endpoint("churn:2", capture={"enabled": False}))
    assert endpoints.capture_settings("churn") is None


@pytest.mark.parametrize(
    ("spec", "field", "message"),
    [
        ({"capture": {"sample_rate": 0.125}}, "capture.sample_rate", "whole percents"),
        (
            {
                "capture": {"sample_rate": 0.2},
                "provider_options": {"sagemaker": {"data_capture": {"sampling_percent": 30}}},
            },
            "capture.sample_rate",
            "disagree",
        ),
        (
            {
                "capture": {"sample_rate": 1.0},
                "provider_options": {"sagemaker": {"serverless": {"memory_mb": 2048, "max_concurrency": 2}}},
            },
            "capture",
            "serverless",
        ),
    ],
)
def test_capture_sagemaker_cannot_express_is_refused_at_plan_time(
    client: mlshift.Client,
    aws: FakeSageMaker,
    churn: tuple[Path, Any],
    spec: dict[str, Any],
    field: str,
    message: str,
) -> None:
    client.models.register("churn", churn[0], framework="sklearn")
    with refused_before_any_change(aws, field, match=message):
        client.plan(_endpoint(**spec))


def test_capture_that_the_endpoints_own_data_capture_would_override_is_refused(
    client: mlshift.Client, churn: tuple[Path, Any]
) -> None:
    _deploy(client, churn, provider_options={"sagemaker": {"data_capture": {"sampling_percent": 20}}})
    # deploy() carries no provider options: the endpoint keeps its data_capture, which would win.
    with pytest.raises(ConfigError, match="applied with .sampling_percent 20. disagree") as err:
        client.endpoints.deploy("churn", "churn:1", variant="main", capture={"sample_rate": 0.5})
    assert err.value.field == "capture.sample_rate"
    client.endpoints.deploy("churn", "churn:1", variant="main", capture={"sample_rate": 0.2})
    with pytest.raises(ConfigError, match="turns capture on") as err:
        client.endpoints.deploy("churn", "churn:1", variant="main", capture={"enabled": False})
    assert err.value.field == "capture.enabled"


def test_settings_sagemaker_does_not_take_are_a_plan_note(
    client: mlshift.Client, churn: tuple[Path, Any]
) -> None:
    client.models.register("churn", churn[0], framework="sklearn")
    plan = client.plan(_endpoint(capture={"max_file_mb": 4}))
    assert any("capture.max_file_mb do not apply" in note for note in plan.render().splitlines())


def test_the_reader_decodes_base64_and_takes_the_callers_inference_id(
    client: mlshift.Client, aws: FakeSageMaker, churn: tuple[Path, Any]
) -> None:
    _deploy(client, churn, capture={"sample_rate": 1.0})
    now = datetime.now(timezone.utc)
    body = json.dumps({"instances": [[0.0, 5.0, 10.0, -2.0]]}).encode()
    line = capture_record(
        event_id="e-1",
        time=now - timedelta(seconds=5),
        request=body,
        request_type="application/x-npy-ish",  # not a listed type: SageMaker keeps it in base64
        response=b'{"predictions": [1]}',
        response_type="application/json",
        text_types={"JSON": ["application/json"]},
        inference_id="order-42",
    )
    assert json.loads(line)["captureData"]["endpointInput"]["encoding"] == "BASE64"
    aws.backend("s3").put_object(
        _bucket(aws), capture_key("mlshift/data-capture/churn", "churn", "main", now), (line + "\n").encode()
    )
    old = capture_record(
        event_id="e-0",
        time=now - timedelta(hours=3),
        request=body,
        request_type="application/json",
        response=None,
        response_type="application/json",
    )
    aws.backend("s3").put_object(
        _bucket(aws),
        capture_key("mlshift/data-capture/churn", "churn", "main", now - timedelta(hours=3)),
        old.encode(),
    )
    records = list(
        sagemaker(client).endpoints.read_capture("churn", since=now - timedelta(hours=1), until=now)
    )
    assert records == [
        CapturedRequest(
            request_id="order-42",
            endpoint="churn",
            variant="main",
            timestamp=records[0].timestamp,
            content_type="application/x-npy-ish",
            request=body,
            response=b'{"predictions": [1]}',
        )
    ]
    assert abs((records[0].timestamp - (now - timedelta(seconds=5))).total_seconds()) < 0.001


def test_predict_sends_the_request_id_as_inference_id_and_labels_join_on_it(
    client: mlshift.Client, aws: FakeSageMaker, example: Any, churn: tuple[Path, Any]
) -> None:
    path, x_train = churn
    client.models.register(
        "churn", path, baseline=x_train[:500], baseline_labels=example.label(x_train[:500])
    )
    client.endpoints.deploy("churn", "churn:1", capture={"sample_rate": 1.0})
    rows = example.make_data(60, seed=50)
    answers = [
        client.endpoints.predict("churn", [row], request_id="order-0" if i == 0 else None)
        for i, row in enumerate(rows.tolist())
    ]
    ids = [a.request_id for a in answers]
    assert ids[0] == "order-0" and all(isinstance(i, str) and len(i) == 24 for i in ids[1:])
    files = _capture_keys(aws)
    sent = {
        json.loads(aws.backend("s3").get_object(_bucket(aws), k).value)["eventMetadata"]["inferenceId"]
        for k in files
    }
    assert sent == set(ids)
    client.monitors.labels("churn", dict(zip(ids, example.label(rows).tolist(), strict=True)))
    run = client.monitors.run(
        {
            "name": "churn-quality",
            "endpoint": "churn",
            "min_rows": 50,
            "model_quality": {"metric": "accuracy", "threshold": 0.8, "min_labels": 50},
        }
    )
    assert run.model_quality is not None and run.model_quality.judged
    assert run.model_quality.labelled_rows == 60
    predicted = [a.predictions[0] for a in answers]
    expected = sum(p == t for p, t in zip(predicted, example.label(rows).tolist(), strict=True)) / 60
    assert run.model_quality.value == pytest.approx(expected)
    # SageMaker's InferenceId is at most 64 characters: a longer id is refused before the call.
    mark = len(aws.calls)
    with pytest.raises(ConfigError, match="InferenceId") as info:
        client.endpoints.predict("churn", rows[:1].tolist(), request_id="x" * 65)
    assert info.value.field == "request_id" and len(aws.calls) == mark


def test_monitoring_storage_is_under_the_targets_prefix(client: mlshift.Client, aws: FakeSageMaker) -> None:
    adapter = sagemaker(client)
    assert isinstance(adapter, MonitoringStorage)
    adapter.monitoring_store().put("state/x.json", b"{}")
    assert "mlshift/monitoring/state/x.json" in aws.backend("s3").buckets[_bucket(aws)].keys
    assert adapter.monitoring_uri("state/x.json") == f"s3://{_bucket(aws)}/mlshift/monitoring/state/x.json"


@pytest.fixture
def no_capture_endpoint(client: mlshift.Client, churn: tuple[Path, Any]) -> Iterator[mlshift.Client]:
    _deploy(client, churn)
    yield client


def test_a_monitor_on_an_endpoint_without_capture_is_refused(no_capture_endpoint: mlshift.Client) -> None:
    with pytest.raises(ConfigError, match="does not capture") as err:
        no_capture_endpoint.monitors.apply({"name": "m", "endpoint": "churn"})
    assert err.value.field == "endpoint"
    assert no_capture_endpoint.monitors.list() == []


def test_records_as_sagemaker_writes_them_are_read() -> None:
    from mlshift_sagemaker._capture import parse_capture

    # As AWS documents them: whole-second UTC with a "Z", CSV kept as text, a BASE64 answer.
    line = {
        "captureData": {
            "endpointInput": {
                "observedContentType": "text/csv",
                "mode": "INPUT",
                "data": "1,2,3,4",
                "encoding": "CSV",
            },
            "endpointOutput": {
                "observedContentType": "application/json",
                "mode": "OUTPUT",
                "data": "eyJwcmVkaWN0aW9ucyI6IFsxXX0=",
                "encoding": "BASE64",
            },
        },
        "eventMetadata": {
            "eventId": "b5e7",
            "inferenceId": "order-7",
            "inferenceTime": "2026-12-06T08:00:05Z",
        },
        "eventVersion": "0",
    }
    (record,) = parse_capture((json.dumps(line) + "\nnot a record\n").encode())
    assert record.time == datetime(2026, 12, 6, 8, 0, 5, tzinfo=timezone.utc)
    assert (record.input, record.input_type) == (b"1,2,3,4", "text/csv")
    assert record.output == b'{"predictions": [1]}' and record.inference_id == "order-7"
