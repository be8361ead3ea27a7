"""The fake itself: Azure's rules, its credential, its faults, under the real SDK."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest

from mlshift_azureml.testing import FakeAzureML
from mlshift_azureml.testing._http import FakeCredential


def ml_client(fake: FakeAzureML) -> Any:
    from azure.ai.ml import MLClient

    return MLClient(fake.credential(), "sub", "rg", "ws", transport=fake.transport(), enable_telemetry=False)


def test_the_credential_hands_out_a_jwt_for_azure_ml() -> None:
    token = FakeCredential().get_token("https://management.azure.com/.default").token
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["aud"] == "https://ml.azure.com" and claims["exp"] > time.time()


def test_endpoint_names_and_traffic_follow_azures_rules(azure: FakeAzureML) -> None:
    from azure.ai.ml.entities import ManagedOnlineEndpoint
    from azure.core.exceptions import HttpResponseError

    ml = ml_client(azure)
    # The SDK checks names itself; the fake checks what reaches it, as Azure does.
    ws = "https://management.azure.com/subscriptions/sub/resourceGroups/rg/providers/"
    ws += "Microsoft.MachineLearningServices/workspaces/ws"
    for bad in ("ab", "1abc", "abc-", "a" * 33):
        reply = azure.handle("PUT", f"{ws}/onlineEndpoints/{bad}", {}, b'{"properties": {}}')
        assert reply.status == 400, bad
    ml.online_endpoints.begin_create_or_update(ManagedOnlineEndpoint(name="ep-one", auth_mode="key")).result()
    endpoint = ml.online_endpoints.get("ep-one")
    endpoint.traffic = {"ghost": 100}
    with pytest.raises(HttpResponseError, match="do not exist"):
        ml.online_endpoints.begin_create_or_update(endpoint).result()


def test_a_name_taken_in_the_region_is_refused(azure: FakeAzureML) -> None:
    from azure.ai.ml.entities import ManagedOnlineEndpoint
    from azure.core.exceptions import HttpResponseError

    azure.take_endpoint_name("Taken-ep")
    with pytest.raises(HttpResponseError, match="already in use in region eastus"):
        ml_client(azure).online_endpoints.begin_create_or_update(
            ManagedOnlineEndpoint(name="taken-ep", auth_mode="key")
        ).result()


def test_throttling_is_retried_by_the_sdk_without_sleeping(azure: FakeAzureML) -> None:
    from azure.ai.ml.entities import ManagedOnlineEndpoint

    ml = ml_client(azure)
    ml.online_endpoints.begin_create_or_update(ManagedOnlineEndpoint(name="ep-one", auth_mode="key")).result()
    azure.throttle(match="/onlineEndpoints/ep-one", times=2, retry_after=30)
    start = time.monotonic()
    assert ml.online_endpoints.get("ep-one").name == "ep-one"
    assert time.monotonic() - start < 10  # two Retry-After: 30 waits were not slept
    statuses = [c.status for c in azure.calls if c.url.split("?")[0].endswith("/onlineEndpoints/ep-one")]
    assert statuses[-3:] == [429, 429, 200]


def test_calls_are_recorded_with_what_they_change(azure: FakeAzureML) -> None:
    from azure.ai.ml.entities import ManagedOnlineEndpoint

    ml = ml_client(azure)
    ml.online_endpoints.begin_create_or_update(ManagedOnlineEndpoint(name="ep-one", auth_mode="key")).result()
    mark = len(azure.calls)
    ml.online_endpoints.get_keys("ep-one")
    assert azure.mutating_calls(since=mark) == []  # listKeys is a POST that reads
    assert [c.method for c in azure.mutating_calls()] == ["PUT"]


def test_the_sdks_own_uploads_land_in_the_fake_datastore(azure: FakeAzureML, tmp_path: Any) -> None:
    from azure.ai.ml.entities import Model

    model_file = tmp_path / "model.bin"
    model_file.write_bytes(b"weights" * 100)
    created = ml_client(azure).models.create_or_update(Model(name="raw", version="1", path=str(model_file)))
    assert created.version == "1"
    uploaded = [k for k in azure.blob_keys() if k.endswith("model.bin")]
    assert uploaded, azure.blob_keys()
    assert azure.uploaded_bytes() >= 700
