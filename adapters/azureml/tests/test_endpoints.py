"""Endpoints on the fake: what the SDK sends, Azure's rules, and each fault as a named error."""

from __future__ import annotations

from typing import Any

import pytest

import mlshift
from conftest import TARGET, azureml
from mlshift.errors import AuthError, ConfigError, QuotaExceeded
from mlshift.specs.endpoint import EndpointSpec
from mlshift_azureml import DeploymentUnhealthy, EndpointBusy, EndpointNameTaken, Throttled
from mlshift_azureml.testing import FakeAzureML


@pytest.fixture
def registered(client: mlshift.Client, iris: dict[str, Any]) -> mlshift.Client:
    """iris:1 and iris:2 registered, nothing deployed."""
    client.models.register("iris", iris["v1"], framework="sklearn")
    client.models.register("iris", iris["v2"], framework="sklearn")
    return client


def spec(**weights: int) -> EndpointSpec:
    variants = [{"name": f"iris-v{n[1:]}", "model": f"iris:{n[1:]}", "weight": w} for n, w in weights.items()]
    return EndpointSpec.model_validate({"name": "iris-ep", "variants": variants, "tags": {"team": "ml"}})


def arm(azure: FakeAzureML, since: int) -> list[str]:
    """``METHOD path-after-workspace`` of the control-plane calls since ``since``."""
    out = []
    for call in azure.calls[since:]:
        if call.service == "arm":
            path = call.url.split("?")[0].split("/workspaces/ml-ws")[-1] or "/"
            out.append(f"{call.method} {path}")
    return out


def test_reapplying_an_unchanged_spec_sends_nothing_that_changes_anything(
    registered: mlshift.Client, azure: FakeAzureML
) -> None:
    mark = len(azure.calls)
    registered.apply(spec(v1=80, v2=20))
    changes = [c for c in arm(azure, mark) if not c.startswith("GET")]
    environment = changes[1].rsplit("/", 1)[-1]
    assert changes == [
        "PUT /onlineEndpoints/iris-ep",
        f"PUT /environments/mlshift-serve/versions/{environment}",
        "PUT /onlineEndpoints/iris-ep/deployments/iris-v1",
        "PUT /onlineEndpoints/iris-ep/deployments/iris-v2",
        "PUT /onlineEndpoints/iris-ep",  # the traffic, once every deployment is up
    ]
    mark = len(azure.calls)
    assert not registered.apply(spec(v1=80, v2=20)).changed
    with mlshift.connect(TARGET) as other:  # a fresh process reads it back the same
        assert other.plan(spec(v1=80, v2=20)).is_empty
    assert azure.mutating_calls(since=mark) == []
    assert azure.uploaded_bytes(since=mark) == 0
    assert all(c.startswith("GET") for c in arm(azure, mark))


def test_weights_are_the_endpoints_traffic_and_invoke_can_target(
    registered: mlshift.Client, azure: FakeAzureML, iris: dict[str, Any]
) -> None:
    registered.apply(spec(v1=70, v2=30))
    raw = azure.endpoint_state("sub-0000", "ml-rg", "ml-ws", "iris-ep")
    assert raw is not None and raw["properties"]["traffic"] == {"iris-v1": 70, "iris-v2": 30}
    answer = registered.endpoints.predict("iris-ep", iris["rows"], variant="iris-v2")
    assert (answer.variant, answer.predictions) == ("iris-v2", iris["expected_v2"])


def test_traffic_changes_are_read_back_until_azure_shows_them(iris: dict[str, Any]) -> None:
    with FakeAzureML(traffic_lag=3) as azure, mlshift.connect(TARGET) as client:
        client.models.register("iris", iris["v1"], framework="sklearn")
        client.models.register("iris", iris["v2"], framework="sklearn")
        client.endpoints.deploy("iris-ep", "iris:1")
        state = client.endpoints.deploy("iris-ep", "iris:2", traffic=20)
        assert state.weights == {"iris-v1": 80, "iris-v2": 20}
        assert azure.endpoint_state("sub-0000", "ml-rg", "ml-ws", "iris-ep") is not None


def test_changes_wait_while_the_endpoint_is_updating(registered: mlshift.Client, azure: FakeAzureML) -> None:
    registered.apply(spec(v1=100, v2=0))
    azure.hold_busy("iris-ep", reads=4)
    mark = len(azure.calls)
    azureml(registered).endpoints.set_weights("iris-ep", {"iris-v1": 50, "iris-v2": 50})
    assert registered.endpoints.get("iris-ep").weights == {"iris-v1": 50, "iris-v2": 50}
    sent = arm(azure, mark)
    # Four reads saw "Updating" before the one change went out; Azure refused nothing.
    assert sent.index("PUT /onlineEndpoints/iris-ep") >= 5
    assert [c for c in azure.calls[mark:] if c.status == 409] == []


def test_an_endpoint_that_stays_busy_is_its_own_error(iris: dict[str, Any]) -> None:
    with FakeAzureML() as azure, mlshift.connect(TARGET + "?wait_timeout=0.05&poll_interval=0") as client:
        client.models.register("iris", iris["v1"], framework="sklearn")
        client.endpoints.deploy("iris-ep", "iris:1")
        azure.hold_busy("iris-ep", reads=10**6)
        with pytest.raises(EndpointBusy, match="stayed 'updating'"):
            azureml(client).endpoints.set_weights("iris-ep", {"iris-v1": 100})


def test_weights_that_do_not_sum_to_100_are_refused(registered: mlshift.Client) -> None:
    registered.apply(spec(v1=100))
    with pytest.raises(ConfigError, match="sum to 90"):
        azureml(registered).endpoints.set_weights("iris-ep", {"iris-v1": 90})


def test_a_name_taken_in_the_region_is_its_own_error(registered: mlshift.Client, azure: FakeAzureML) -> None:
    azure.take_endpoint_name("iris-ep")
    with pytest.raises(EndpointNameTaken) as info:
        registered.apply(spec(v1=100))
    assert "unique per Azure region" in str(info.value.hint)
    assert registered.adapter.endpoints.observe("iris-ep") is None


def test_quota_is_named_and_leaves_nothing_half_made(registered: mlshift.Client, azure: FakeAzureML) -> None:
    azure.exhaust_quota()
    with pytest.raises(QuotaExceeded, match="quota"):
        registered.apply(spec(v1=100))
    assert registered.adapter.endpoints.observe("iris-ep") is None
    registered.apply(spec(v1=100))  # the next apply converges
    assert registered.endpoints.get("iris-ep").weights == {"iris-v1": 100}


def test_a_deployment_that_never_gets_healthy_fails_with_its_logs(
    registered: mlshift.Client, azure: FakeAzureML, iris: dict[str, Any]
) -> None:
    registered.apply(spec(v1=100))
    azure.never_healthy("iris-v2", logs="loading model\nModuleNotFoundError: No module named 'xgboost'\n")
    with pytest.raises(DeploymentUnhealthy) as info:
        registered.endpoints.deploy("iris-ep", "iris:2", traffic=10)
    message = str(info.value)
    assert "No module named 'xgboost'" in message and "readiness GET /ready" in message
    state = registered.endpoints.get("iris-ep")
    assert [(v.name, v.weight) for v in state.variants] == [("iris-v1", 100)]  # nothing half-made
    assert registered.endpoints.predict("iris-ep", iris["rows"]).predictions == iris["expected_v1"]
    registered.endpoints.deploy("iris-ep", "iris:2", traffic=10)  # and the next try converges
    assert registered.endpoints.get("iris-ep").weights == {"iris-v1": 90, "iris-v2": 10}


def test_model_errors_come_back_with_the_containers_status(
    registered: mlshift.Client, azure: FakeAzureML
) -> None:
    registered.apply(spec(v1=100))
    answer = registered.adapter.endpoints.invoke("iris-ep", b'{"instances": [[1.0]]}')
    assert answer.status_code == 400 and answer.variant == "iris-v1"
    assert [c.status for c in azure.calls if c.service == "score"][-1] == 424  # what Azure sent


def test_sizes_map_to_instance_types_and_exact_types_pass_through(
    registered: mlshift.Client, azure: FakeAzureML
) -> None:
    exact = spec(v1=100).model_copy(
        update={"provider_options": {"azureml": {"instance_type": "Standard_F8s_v2"}}}
    )
    registered.apply(exact)
    ml = azureml(registered).clients.ml()
    assert ml.online_deployments.get("iris-v1", "iris-ep").instance_type == "Standard_F8s_v2"
    assert registered.plan(exact).is_empty
    other = spec(v1=100).model_copy(
        update={"provider_options": {"azureml": {"instance_type": "Standard_F4s_v2"}}}
    )
    with pytest.raises(ConfigError, match="cannot change a live deployment's instance type"):
        registered.plan(other)
    bad = spec(v1=100).model_copy(update={"provider_options": {"azureml": {"serverless": {}}}})
    with pytest.raises(ConfigError, match="no serverless mode"):
        registered.plan(bad)


def test_throttling_is_retried_then_named(registered: mlshift.Client, azure: FakeAzureML) -> None:
    azure.throttle(match="/onlineEndpoints/iris-ep", times=3, retry_after=60)
    registered.apply(spec(v1=100))  # the SDK retried each 429 after its Retry-After (not slept here)
    assert [c.status for c in azure.calls].count(429) == 3
    azure.throttle(match="/onlineEndpoints/iris-ep", times=None)
    with pytest.raises(Throttled, match="throttled"):
        registered.apply(spec(v1=50, v2=50))
    azure.faults.clear()
    registered.apply(spec(v1=50, v2=50))  # and converges once Azure lets it
    assert registered.endpoints.get("iris-ep").weights == {"iris-v1": 50, "iris-v2": 50}


def test_a_missing_role_is_an_auth_error_with_a_hint(registered: mlshift.Client, azure: FakeAzureML) -> None:
    azure.deny("/onlineEndpoints/iris-ep", times=None)
    with pytest.raises(AuthError) as info:
        registered.apply(spec(v1=100))
    assert "AzureML Data Scientist" in str(info.value.hint)
    assert "fake-key" not in str(info.value) and "Bearer" not in str(info.value)


def test_tags_change_in_place_and_mlshifts_own_stay(registered: mlshift.Client, azure: FakeAzureML) -> None:
    registered.apply(spec(v1=100))
    retagged = spec(v1=100).model_copy(update={"tags": {"team": "ai"}})
    plan = registered.plan(retagged)
    assert [a.kind for a in plan.actions] == ["update_tags"]
    registered.apply(plan)
    raw = azure.endpoint_state("sub-0000", "ml-rg", "ml-ws", "iris-ep")
    assert raw is not None and raw["tags"]["team"] == "ai" and raw["tags"]["mlshift:managed"] == "true"
    assert registered.endpoints.get("iris-ep").tags == {"team": "ai"}
    assert registered.plan(retagged).is_empty


def test_a_change_refused_as_updating_is_sent_again(registered: mlshift.Client, azure: FakeAzureML) -> None:
    registered.apply(spec(v1=100, v2=0))
    azure.refuse_as_updating("iris-ep", times=2)
    azureml(registered).endpoints.set_weights("iris-ep", {"iris-v1": 60, "iris-v2": 40})
    assert registered.endpoints.get("iris-ep").weights == {"iris-v1": 60, "iris-v2": 40}
    assert [c.status for c in azure.calls if c.method == "PUT"][-3:] == [409, 409, 200]


def test_a_variants_batching_goes_to_the_deployments_environment(registered: mlshift.Client) -> None:
    batched = EndpointSpec.model_validate(
        {
            "name": "iris-ep",
            "variants": [
                {
                    "name": "iris-v1",
                    "model": "iris:1",
                    "batching": {"max_batch_size": 16, "max_latency_ms": 3},
                }
            ],
        }
    )
    registered.apply(batched)
    ml = azureml(registered).clients.ml()
    env = ml.online_deployments.get("iris-v1", "iris-ep").environment_variables
    assert (env["MLSHIFT_MAX_BATCH_SIZE"], env["MLSHIFT_MAX_LATENCY_MS"]) == ("16", "3")
