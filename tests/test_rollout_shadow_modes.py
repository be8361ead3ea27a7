"""Shadow modes: a mirror-only target's shadow is judged on its errors and latency, never on agreement.

memory:// compares answers (``paired``); here its endpoint service is made to declare
``mirror-only``, as Azure ML does, so that the engine's and the planner's side of the decision
is tested without a cloud.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import mlshift
from mlshift.errors import ConfigError, RolloutFailed
from mlshift.specs.endpoint import EndpointSpec
from mlshift.specs.rollout import Shadow
from mlshift.testing.memory import MemoryAdapter
from rollout_models import predictor
from test_rollout_shadow import callers, hold


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("shadow-mode-models")
    return {kind: predictor(folder, kind) for kind in ("threshold-5", "threshold-2", "failing")}


@pytest.fixture
def client(models: dict[str, Path]) -> Iterator[mlshift.Client]:
    with mlshift.connect("memory://") as client:
        client.models.register("m", models["threshold-5"])  # m:1 serves
        client.models.register("m", models["threshold-2"])  # m:2 disagrees on 30% of rows, no errors
        client.models.register("m", models["failing"])  # m:3 answers 500
        client.endpoints.deploy("m", "m:1")
        yield client


@pytest.fixture
def mirror_only(client: mlshift.Client, monkeypatch: pytest.MonkeyPatch) -> mlshift.Client:
    service = type(MemoryAdapter.of(client).endpoints)
    monkeypatch.setattr(service, "shadow_mode", property(lambda self: "mirror-only"))
    assert client.adapter.endpoints.shadow_mode == "mirror-only"
    return client


def shadow(**extra: object) -> Shadow:
    return Shadow.model_validate({"percent": 100, "duration": 2, "gate": {"min_requests": 20}, **extra})


def test_the_default_mode_is_paired(client: mlshift.Client) -> None:
    assert client.adapter.endpoints.shadow_mode == "paired"


def test_paired_judges_agreement_and_mirror_only_does_not(
    client: mlshift.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    with callers(client), pytest.raises(RolloutFailed, match="agreement"):
        client.endpoints.deploy("m", "m:2", rollout=shadow(), checks=[hold(client)])
    service = type(MemoryAdapter.of(client).endpoints)
    monkeypatch.setattr(service, "shadow_mode", property(lambda self: "mirror-only"))
    # The same version, on a target that cannot compare answers: judged on its errors only.
    with callers(client) as seen:
        state = client.endpoints.deploy("m", "m:2", rollout=shadow(), checks=[hold(client)])
    assert state.weights == {"m-v2": 100}
    assert {k for k in seen if not k.startswith("m-v2")} == {"m-v1 v1-answer"}


def test_a_failing_candidate_fails_the_gate_in_mirror_only_mode(mirror_only: mlshift.Client) -> None:
    with callers(mirror_only) as seen, pytest.raises(RolloutFailed, match="error rate 100.0%"):
        mirror_only.endpoints.deploy("m", "m:3", rollout=shadow(duration=30))
    assert set(seen) == {"m-v1 v1-answer"}
    assert mirror_only.endpoints.get("m").weights == {"m-v1": 100}


@pytest.mark.parametrize("field", ["min_agreement", "max_relative_error"])
def test_asking_for_agreement_on_a_mirror_only_target_is_refused_at_plan_time(
    mirror_only: mlshift.Client, field: str
) -> None:
    spec = EndpointSpec.model_validate(
        {
            "name": "m",
            "variants": [{"name": "m-v2", "model": "m:2"}],
            "rollout": {"strategy": "shadow", field: 0.5},
        }
    )
    with pytest.raises(ConfigError, match="mirror-only") as info:
        mirror_only.plan(spec)
    assert info.value.field == f"rollout.{field}"
    spec = spec.model_copy(update={"rollout": Shadow(percent=10)})
    assert not mirror_only.plan(spec).is_empty  # without them, the plan is made


def test_a_shadow_shorter_than_the_metric_lag_is_refused_on_a_mirror_only_target(
    models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    with mlshift.connect("memory://?metric_lag=180&metric_resolution=60") as client:
        client.models.register("m", models["threshold-5"])
        client.models.register("m", models["threshold-2"])
        client.endpoints.deploy("m", "m:1")
        service = type(MemoryAdapter.of(client).endpoints)
        monkeypatch.setattr(service, "shadow_mode", property(lambda self: "mirror-only"))
        spec = EndpointSpec.model_validate(
            {"name": "m", "variants": [{"name": "m-v2", "model": "m:2"}], "rollout": {"strategy": "shadow"}}
        )
        with pytest.raises(ConfigError, match="180 s late") as info:
            client.plan(spec.model_copy(update={"rollout": Shadow(duration=60)}))
        assert info.value.field == "rollout.duration"
        assert not client.plan(spec.model_copy(update={"rollout": Shadow(duration=180)})).is_empty
