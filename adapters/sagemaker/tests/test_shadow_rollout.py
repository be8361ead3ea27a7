"""Shadow rollouts on SageMaker: the candidate as a shadow variant, compared from data capture."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import mlshift
from mlshift.adapter import ResolvedVariant
from mlshift.errors import ConfigError, RolloutFailed
from mlshift.plan import ApplyEvent, GateCheck
from mlshift.specs import EndpointSpec
from mlshift.specs.rollout import Shadow
from mlshift.testing.rollouts import failing_predictor, hold_bake_for_requests, send_traffic
from mlshift_sagemaker.testing import FakeSageMaker


@pytest.fixture(scope="module")
def lookalike(tmp_path_factory: pytest.TempPathFactory, iris: dict[str, Any]) -> Path:
    """A classifier trained apart from iris:1 that gives the same answers on the sample rows."""
    skops_io = pytest.importorskip("skops.io")
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=400, C=0.9).fit(x, y)
    assert model.predict(iris["rows"]).tolist() == iris["expected_v1"]
    path = tmp_path_factory.mktemp("lookalike") / "iris-v3.skops"
    skops_io.dump(model, path)
    return path


def hold(client: mlshift.Client) -> GateCheck:
    """The shadow phase ends with the gate's 5 mirrored requests counted, however slow the machine."""
    return hold_bake_for_requests(client, "iris-ep", 5)


def shadow(**extra: Any) -> Shadow:
    return Shadow.model_validate(
        {"percent": 100, "duration": 2, "min_agreement": 0.99, "gate": {"min_requests": 5}, **extra}
    )


def capture_files(aws: FakeSageMaker, variant: str) -> list[str]:
    bucket = aws.backend("s3").get_bucket(f"sagemaker-us-east-1-{aws.account_id}")
    return [k for k in list(bucket.keys) if f"/iris-ep/{variant}/" in k]


def test_a_disagreeing_version_is_discarded_and_callers_only_see_the_serving_one(
    deployed: mlshift.Client, aws: FakeSageMaker, iris: dict[str, Any]
) -> None:
    with send_traffic(deployed, "iris-ep", iris["rows"]) as seen, pytest.raises(RolloutFailed) as info:
        deployed.endpoints.deploy("iris-ep", "iris:2", rollout=shadow(), checks=[hold(deployed)])
    exc = info.value
    assert exc.reason is not None and exc.reason.startswith("gate failed in the shadow phase: agreement ")
    same = sum(a == b for a, b in zip(iris["expected_v1"], iris["expected_v2"], strict=True))
    assert exc.measurements["agreement"] == same / len(iris["rows"]) < 0.99
    assert exc.measurements["min_agreement"] == 0.99
    # The candidate got copies of live requests, answered them (captured under its own name),
    # and none of its answers reached a caller.
    assert aws.mirrored[("iris-ep", "iris-v2")] >= 5
    assert aws.invocations[("iris-ep", "iris-v2")] == 0
    assert capture_files(aws, "iris-v2")
    assert set(seen) == {f"iris-v1 {iris['expected_v1']}"}
    state = deployed.endpoints.get("iris-ep")
    assert [(v.name, v.model, v.weight) for v in state.variants] == [("iris-v1", "iris:1", 100)]
    backend = aws.backend()
    live = backend.endpoint_configs[backend.endpoints["iris-ep"].endpoint_config_name]
    assert [v["VariantName"] for v in live.production_variants] == ["iris-v1"]
    assert not live.data_capture_config  # the shadow phase's capture ended with it


def test_an_agreeing_version_is_promoted(
    deployed: mlshift.Client, aws: FakeSageMaker, iris: dict[str, Any], lookalike: Path
) -> None:
    deployed.models.register("iris", lookalike, framework="sklearn")  # iris:3
    events: list[dict[str, Any]] = []

    def on_event(event: ApplyEvent) -> None:
        if event.detail:
            events.append(dict(event.detail))

    with send_traffic(deployed, "iris-ep", iris["rows"]) as seen:
        state = deployed.endpoints.deploy(
            "iris-ep", "iris:3", rollout=shadow(), on_event=on_event, checks=[hold(deployed)]
        )
    assert state.weights == {"iris-v3": 100}
    phase = [e for e in events if e.get("phase") == "shadow"]
    assert phase and phase[-1]["agreement"] == 1.0 and phase[-1]["rows"] >= 5 * len(iris["rows"])
    assert deployed.endpoints.history("iris-ep")[0].phase == "succeeded"
    assert aws.mirrored[("iris-ep", "iris-v3")] >= 5
    # Every answer was the right one; iris:3 answered callers only once it was promoted.
    assert {k.partition(" ")[2] for k in seen} == {str(iris["expected_v1"])}
    assert {k.partition(" ")[0] for k in seen} <= {"iris-v1", "iris-v3"}


def test_the_shadow_variant_gets_its_share_and_never_answers(
    deployed: mlshift.Client, aws: FakeSageMaker, iris: dict[str, Any]
) -> None:
    endpoints = deployed.adapter.endpoints
    candidate = ResolvedVariant(name="cand", model=deployed.models.get("iris:2"), weight=0)
    endpoints.add_variant("iris-ep", candidate).wait(60)
    endpoints.set_shadow("iris-ep", "cand", 25).wait(60)
    backend = aws.backend()
    config_name = backend.endpoints["iris-ep"].endpoint_config_name
    described = deployed.adapter.clients.client("sagemaker").describe_endpoint_config(
        EndpointConfigName=config_name
    )
    assert [(v["VariantName"], v["InitialVariantWeight"]) for v in described["ProductionVariants"]] == [
        ("iris-v1", 100.0)
    ]
    assert [(v["VariantName"], v["InitialVariantWeight"]) for v in described["ShadowProductionVariants"]] == [
        ("cand", 25.0)
    ]
    assert described["DataCaptureConfig"]["InitialSamplingPercentage"] == 100
    for _ in range(20):
        assert deployed.endpoints.predict("iris-ep", iris["rows"]).variant == "iris-v1"
    assert aws.mirrored[("iris-ep", "cand")] == 5
    state = deployed.endpoints.get("iris-ep")
    assert state.weights == {"iris-v1": 100, "cand": 0}
    # Records in SageMaker's capture format: the production record and the shadow's share the
    # request's event id.
    files = capture_files(aws, "cand")
    assert len(files) == 5
    bucket = f"sagemaker-us-east-1-{aws.account_id}"
    record = json.loads(aws.backend("s3").get_object(bucket, files[0]).value)
    assert record["captureData"]["endpointOutput"]["encoding"] == "JSON"
    assert json.loads(record["captureData"]["endpointInput"]["data"])["instances"] == iris["rows"]
    production_ids = {
        json.loads(aws.backend("s3").get_object(bucket, key).value)["eventMetadata"]["eventId"]
        for key in capture_files(aws, "iris-v1")
    }
    assert record["eventMetadata"]["eventId"] in production_ids
    measured = endpoints.read_shadow("iris-ep", "cand", 300)
    assert measured is not None and (measured.requests, measured.errors) == (5, 0)
    same = sum(a == b for a, b in zip(iris["expected_v1"], iris["expected_v2"], strict=True))
    assert (measured.rows, measured.agreed_rows) == (5 * len(iris["rows"]), 5 * same)
    # Stopping puts the candidate back among the production variants, at 0%.
    endpoints.set_shadow("iris-ep", "cand", 0).wait(60)
    described = deployed.adapter.clients.client("sagemaker").describe_endpoint_config(
        EndpointConfigName=backend.endpoints["iris-ep"].endpoint_config_name
    )
    assert "ShadowProductionVariants" not in described
    assert deployed.endpoints.get("iris-ep").weights == {"iris-v1": 100, "cand": 0}
    assert endpoints.read_shadow("iris-ep", "cand", 300) is None


def test_a_crashing_shadow_never_fails_a_caller(
    deployed: mlshift.Client, aws: FakeSageMaker, iris: dict[str, Any], tmp_path: Path
) -> None:
    folder = failing_predictor(tmp_path / "failing-predictor")
    deployed.models.register("broken", folder)
    with send_traffic(deployed, "iris-ep", iris["rows"]) as seen, pytest.raises(RolloutFailed) as info:
        deployed.endpoints.deploy("iris-ep", "broken:1", rollout=shadow(), checks=[hold(deployed)])
    assert info.value.measurements["errors"] >= 5
    assert set(seen) == {f"iris-v1 {iris['expected_v1']}"}
    assert deployed.endpoints.get("iris-ep").weights == {"iris-v1": 100}


def test_shadowing_beside_two_variants_is_refused_at_plan_time(
    registered: mlshift.Client, aws: FakeSageMaker
) -> None:
    spec = EndpointSpec.model_validate(
        {
            "name": "iris-ep",
            "variants": [
                {"name": "a", "model": "iris:1", "weight": 50},
                {"name": "b", "model": "iris:2", "weight": 50},
            ],
            "rollout": {"strategy": "shadow", "duration": 5},
        }
    )
    mark = len(aws.calls)
    with pytest.raises(ConfigError, match="one production variant to one shadow variant"):
        registered.plan(spec)
    assert not aws.mutating_calls(since=mark)
