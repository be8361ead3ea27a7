"""vertex://PROJECT/LOCATION: the URI, the options and their sources, lazy imports, credentials."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import mlshift
from mlshift.errors import ConfigError
from mlshift_vertex import CAPABILITIES, VertexAdapter, VertexOptions
from mlshift_vertex.testing import FakeVertex

BUCKET = {"staging_bucket": "gs://my-bucket/ml"}


def adapter(uri: str, options: dict[str, Any] | None = None) -> VertexAdapter:
    from mlshift._registry import parse_target_uri

    return VertexAdapter.from_uri(parse_target_uri(uri), options or {}, base_dir=Path.cwd())


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("MLSHIFT_VERTEX_"):
            monkeypatch.delenv(key)


def test_uri_gives_project_location_and_options() -> None:
    a = adapter("vertex://my-project/europe-west4?staging_bucket=gs://b-1/pre&metric_lag=120")
    assert (a.project, a.location, a.parent) == (
        "my-project",
        "europe-west4",
        "projects/my-project/locations/europe-west4",
    )
    assert (a.options.bucket, a.options.prefix, a.options.metric_lag) == ("b-1", "pre", 120.0)
    assert a.capabilities == CAPABILITIES


@pytest.mark.parametrize(
    ("uri", "needle"),
    [
        ("vertex://", "no project"),
        ("vertex://My_Project/us-central1", "not a Google Cloud project id"),
        ("vertex://my-project", "no location"),
        ("vertex://my-project/mars", "not a Vertex AI location"),
        ("vertex+grpc://my-project/us-central1", "no 'grpc' variant"),
    ],
)
def test_malformed_uris_are_named(uri: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle) as info:
        adapter(uri, BUCKET)
    assert info.value.field == "target"


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({}, "target.options.staging_bucket"),
        ({"staging_bucket": "s3://nope"}, "target.options.staging_bucket"),
        ({**BUCKET, "service_account": "root"}, "target.options.service_account"),
        ({**BUCKET, "network": "default"}, "target.options.network"),
        ({**BUCKET, "encryption_key": "my-key"}, "target.options.encryption_key"),
        ({**BUCKET, "labels": {"Team": "ml"}}, "target.options.labels"),
        ({**BUCKET, "labels": {"mlshift-x": "1"}}, "target.options.labels"),
        ({**BUCKET, "api_endpoint": "http://example.com"}, "target.options.api_endpoint"),
        ({**BUCKET, "colour": "blue"}, "target.options.colour"),
    ],
)
def test_bad_options_are_named_before_any_call(options: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        adapter("vertex://my-project/us-central1", options)
    assert info.value.field == field, str(info.value)


def test_credentials_are_never_options() -> None:
    with pytest.raises(ConfigError, match="looks like a credential") as info:
        adapter("vertex://my-project/us-central1", {**BUCKET, "service_account_private_key": "-----BEGIN"})
    assert "BEGIN" not in str(info.value)


def test_sources_query_over_yaml_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLSHIFT_VERTEX_STAGING_BUCKET", "gs://from-env")
    monkeypatch.setenv("MLSHIFT_VERTEX_SERVICE_ACCOUNT", "deployer@my-project.iam.gserviceaccount.com")
    a = adapter(
        "vertex://my-project/us-central1?metric_lag=200", {"metric_lag": 100, "labels": {"team": "ml"}}
    )
    assert a.options.staging_bucket == "gs://from-env"
    assert a.options.service_account == "deployer@my-project.iam.gserviceaccount.com"
    assert a.options.metric_lag == 200
    assert a.options.labels == {"team": "ml"}
    assert VertexOptions.from_sources({}, BUCKET, environ={}).metric_lag == 360


def test_importing_the_adapter_imports_no_google_library() -> None:
    code = "import mlshift_vertex, mlshift_vertex.testing, mlshift_vertex.testing.pytest_plugin, sys, json\n"
    code += "print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    modules = json.loads(out.strip().splitlines()[-1])
    heavy = [
        m for m in modules if m.startswith(("google.cloud.aiplatform", "google.api_core", "google.auth"))
    ]
    assert heavy == []


def test_connect_makes_no_call_and_reads_no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    # No ADC on this machine would fail google.auth.default(); connect must not reach it.
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/adc.json")
    with mlshift.connect("vertex://my-project/us-central1?staging_bucket=gs://b-1") as client:
        assert client.adapter.name == "vertex"
        assert client.adapter.clients._clients == {}  # type: ignore[attr-defined]


def test_missing_credentials_are_an_auth_error_with_a_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlshift.errors import AuthError

    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/adc.json")
    with mlshift.connect("vertex://my-project/us-central1?staging_bucket=gs://b-1") as client:
        with pytest.raises(AuthError, match="Application Default Credentials") as info:
            client.models.list()
        assert "gcloud auth application-default login" in str(info.value)


def test_the_fake_points_targets_at_itself_and_restores_the_environment() -> None:
    import os

    with FakeVertex() as fake:
        assert os.environ["MLSHIFT_VERTEX_API_ENDPOINT"] == fake.url
        assert fake.url.startswith("http://127.0.0.1:")
    assert "MLSHIFT_VERTEX_API_ENDPOINT" not in os.environ


def test_each_client_is_made_once_and_pipeline_clients_talk_to_the_target(client: mlshift.Client) -> None:
    from google.cloud.aiplatform_v1.services.pipeline_service import PipelineServiceClient
    from google.cloud.aiplatform_v1.services.schedule_service import ScheduleServiceClient

    clients = client.adapter.clients  # type: ignore[attr-defined]
    pipelines = clients.client("pipeline")
    assert isinstance(pipelines, PipelineServiceClient)
    assert isinstance(clients.client("schedule"), ScheduleServiceClient)
    assert clients.client("pipeline") is pipelines
    # The pipeline service uses the same shared client, which answers from the fake.
    assert client.adapter.pipelines._client("pipeline") is pipelines  # type: ignore[attr-defined]
    assert list(pipelines.list_pipeline_jobs(parent="projects/my-project/locations/us-central1")) == []
    with pytest.raises(KeyError):
        clients.client("no-such-kind")
