"""Gates that judge the new version against the baseline: client errors (4xx) and p99 ratio."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import mlshift
from mlshift.errors import RolloutFailed
from mlshift.plan import GateReading
from mlshift.specs.endpoint import EndpointSpec
from mlshift.specs.rollout import Canary, HealthGate, Probe
from mlshift.testing.memory import MemoryAdapter
from mlshift.testing.rollouts import hold_bake_for_requests
from rollout_models import predictor, wide_models


@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return wide_models(tmp_path_factory.mktemp("wide"))


@pytest.fixture
def client(wide: dict[str, Any]) -> Iterator[mlshift.Client]:
    with mlshift.connect("memory://") as client:
        client.models.register("wide", wide["v1"])  # wide:1 takes 20 features
        client.models.register("wide", wide["v2"])  # wide:2 takes 5
        client.models.register("wide", wide["v1"], tags={"copy": "1"})  # wide:3, the same inputs as wide:1
        client.endpoints.deploy("wide", "wide:1")
        yield client


def canary(payload: Any, **gate: Any) -> Canary:
    probe = Probe(payload={"instances": payload}, rate=100)
    return Canary(percent=20, bake=30, gate=HealthGate(min_requests=8, probe=probe, **gate))


def test_version_refusing_what_the_baseline_answers_is_rolled_back(
    client: mlshift.Client, wide: dict[str, Any]
) -> None:
    with pytest.raises(RolloutFailed) as info:
        client.endpoints.deploy("wide", "wide:2", rollout=canary(wide["rows"][:1]), allow_schema_change=True)
    exc = info.value
    assert exc.reason is not None
    assert exc.reason.startswith(
        "gate failed at 20% traffic: client errors (4xx) 100.0% vs 0.0% on the baseline, +100.0 points > 1 ("
    )
    assert exc.measurements["client_error_rate"] == 1.0
    assert exc.measurements["baseline_client_error_rate"] == 0.0
    assert exc.measurements["baseline_requests"] >= 1
    assert exc.measurements["max_client_error_increase"] == 0.01
    assert exc.measurements["errors"] == 0  # not one 5xx: the old gate would have promoted it
    assert client.endpoints.get("wide").weights == {"wide-v1": 100}


def test_the_client_error_check_can_be_turned_off(client: mlshift.Client, wide: dict[str, Any]) -> None:
    rollout = canary(wide["rows"][:1], max_client_error_increase=None)
    rollout = rollout.model_copy(update={"bake": 0.5})
    hold = hold_bake_for_requests(client, "wide", 8)  # the bake ends with the gate's 8 probes counted
    state = client.endpoints.deploy(
        "wide", "wide:2", rollout=rollout, allow_schema_change=True, checks=[hold]
    )
    assert state.weights == {"wide-v2": 100}


def test_requests_the_baseline_refuses_too_do_not_fail_the_new_version(client: mlshift.Client) -> None:
    rollout = canary([[1.0, 2.0, 3.0]]).model_copy(update={"bake": 1.0})  # 3 values: both answer 400
    state = client.endpoints.deploy(
        "wide", "wide:3", rollout=rollout, checks=[hold_bake_for_requests(client, "wide", 8)]
    )
    assert state.weights == {"wide-v3": 100}
    record = client.endpoints.history("wide")[0]
    assert record.measurements["client_error_rate"] == 1.0
    assert record.measurements["baseline_client_error_rate"] == 1.0


def test_slow_version_fails_the_p99_ratio(tmp_path: Path) -> None:
    with mlshift.connect("memory://") as client:
        client.models.register("m", predictor(tmp_path, "good"))  # m:1
        client.models.register("m", predictor(tmp_path, "slow"))  # m:2 takes 60 ms a request
        client.endpoints.deploy("m", "m:1")
        with pytest.raises(RolloutFailed, match=r"p99 latency \d+ms is [\d.]+x the baseline's \d+ms > 2x"):
            client.endpoints.deploy("m", "m:2", rollout=canary([[0.0] * 4], max_p99_ratio=2))
        exc_state = client.endpoints.get("m")
        assert exc_state.weights == {"m-v1": 100}
        record = client.endpoints.history("m")[0]
        assert record.measurements["p99_ms"] > 2 * record.measurements["baseline_p99_ms"]
        assert record.measurements["max_p99_ratio"] == 2


def test_progress_line_shows_client_errors_and_the_baseline() -> None:
    from mlshift.cli._output import ApplyProgress as _Progress

    text = _Progress._bake_text(
        {
            "stage_percent": 20,
            "elapsed_s": 1.0,
            "bake_s": 5.0,
            "requests": 40,
            "errors": 0,
            "error_rate": 0.0,
            "client_errors": 40,
            "client_error_rate": 1.0,
            "baseline_client_error_rate": 0.0,
            "p99_ms": 3.0,
            "baseline_p99_ms": 2.5,
        }
    )
    assert (
        "40 requests · 0 errors (0.0%) · 40 4xx (100.0%, baseline 0.0%) · p99 3.0ms (baseline 2.5ms)" in text
    )


def test_checks_with_a_rollout_the_target_would_run_natively_run_on_the_engine(tmp_path: Path) -> None:
    caps = "traffic_split,targeted_invoke,metrics,native_rollout"
    with mlshift.connect(f"memory://?capabilities={caps}") as client:
        client.models.register("m", predictor(tmp_path, "good"))
        client.models.register("m", predictor(tmp_path, "good"), tags={"v": "2"})
        client.models.register("m", predictor(tmp_path, "good"), tags={"v": "3"})
        client.endpoints.deploy("m", "m:1")
        seen: list[int] = []

        def watched(reading: GateReading) -> None:
            seen.append(reading.requests)

        rollout = canary([[0.0] * 4]).model_copy(update={"bake": 0.3})
        spec = EndpointSpec.model_validate(
            {"name": "m", "variants": [{"name": "m-v2", "model": "m:2"}], "rollout": rollout}
        )
        planned = client.plan(spec, checks=True)
        assert "mlshift runs it: checks= were given" in planned.render()
        # The 0.3 s bake ends with the gate's 8 probes counted, however slow the machine.
        hold = hold_bake_for_requests(client, "m", 8)
        client.endpoints.deploy("m", "m:2", rollout=rollout, checks=[watched, hold])
        assert seen, "the check was never called"
        assert "native_rollout" not in [c[0] for c in MemoryAdapter.of(client).calls]

        # A plan made without knowing of the checks is run on the engine all the same.
        seen.clear()
        plan = client.plan(
            EndpointSpec.model_validate(
                {"name": "m", "variants": [{"name": "m-v3", "model": "m:3"}], "rollout": rollout}
            )
        )
        assert "runs it natively" in plan.render()
        client.apply(plan, checks=[watched, hold_bake_for_requests(client, "m", 8)])
        assert seen and "native_rollout" not in [c[0] for c in MemoryAdapter.of(client).calls]
        assert client.endpoints.get("m").weights == {"m-v3": 100}
