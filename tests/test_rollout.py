"""The rollout engine on the in-memory target: strategies, gates, rollback, journal, recovery."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

import mlshift
from mlshift.adapter import RolloutRecord
from mlshift.errors import ConfigError, NotFound, RolloutFailed, UnsupportedOperation
from mlshift.plan import ApplyEvent, GateReading
from mlshift.specs.rollout import BlueGreen, Canary, HealthGate, Linear, Probe
from mlshift.testing.memory import MemoryAdapter
from mlshift.testing.rollouts import hold_bake_for_requests
from rollout_models import predictor

PROBE = Probe(payload={"instances": [[5.1, 3.5, 1.4, 0.2]]}, rate=100)
ROWS = [[5.1, 3.5, 1.4, 0.2]]


def fast_gate(**extra: Any) -> HealthGate:
    return HealthGate(**{"min_requests": 5, "probe": PROBE, **extra})


@pytest.fixture
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("predictors")
    return {kind: predictor(folder, kind) for kind in ("good", "failing", "slow")}


@pytest.fixture
def client(models: dict[str, Path], iris: dict[str, Any]) -> Iterator[mlshift.Client]:
    with mlshift.connect("memory://") as client:
        client.models.register("iris", iris["v1"])  # iris:1
        client.models.register("iris", models["good"])  # iris:2
        client.models.register("iris", models["failing"])  # iris:3
        client.models.register("iris", models["slow"])  # iris:4
        client.endpoints.deploy("iris", "iris:1")
        yield client


class Recorder:
    def __init__(self) -> None:
        self.events: list[ApplyEvent] = []

    def __call__(self, event: ApplyEvent) -> None:
        self.events.append(event)

    @property
    def splits(self) -> list[dict[str, int]]:
        return [e.detail["weights"] for e in self.events if e.detail and "weights" in e.detail]


def test_good_canary_promotes(client: mlshift.Client) -> None:
    seen = Recorder()
    state = client.endpoints.deploy(
        "iris",
        "iris:2",
        rollout=Canary(percent=25, bake=0.5, gate=fast_gate()),
        on_event=seen,
        # The bake ends with the gate's 5 probe answers counted, however slow the machine.
        checks=[hold_bake_for_requests(client, "iris", 5)],
    )
    assert state.weights == {"iris-v2": 100}
    assert seen.splits == [{"iris-v1": 75, "iris-v2": 25}, {"iris-v1": 0, "iris-v2": 100}]
    record = client.endpoints.history("iris")[0]
    assert (record.strategy, record.phase) == ("canary", "succeeded")
    assert [v.model for v in record.baseline] == ["iris:1"]
    assert record.measurements["requests"] >= 5 and record.measurements["errors"] == 0
    assert record.steps[0] == "add variant iris-v2 (iris:2) at 0%"
    assert record.steps[-1] == "remove variant iris-v1"


def test_gate_checks_see_a_bake_the_engine_got_to_only_after_its_time(
    client: mlshift.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On a loaded machine the engine's thread may get to a short bake's first reading only
    # after the bake's time: the checks (e.g. hold_bake_for_requests) still see that bake
    # before it is judged over, instead of it failing at once on too few requests.
    service = type(MemoryAdapter.of(client).endpoints)
    record_rollout = service.record_rollout

    def descheduled_after_the_bake_starts(self: Any, record: RolloutRecord) -> None:
        record_rollout(self, record)
        if record.steps and record.steps[-1].startswith("bake "):
            time.sleep(0.5)  # stands for a thread descheduled past the 0.3 s bake

    monkeypatch.setattr(service, "record_rollout", descheduled_after_the_bake_starts)
    body = json.dumps({"instances": ROWS}).encode()

    def brings_the_requests(reading: GateReading) -> bool:
        for _ in range(5 - reading.requests):
            client.adapter.endpoints.invoke("iris", body, variant="iris-v2")
        return True

    state = client.endpoints.deploy(
        "iris",
        "iris:2",
        rollout=Canary(percent=10, bake=0.3, gate=HealthGate(min_requests=5)),
        checks=[brings_the_requests],
    )
    assert state.weights == {"iris-v2": 100}


def test_failing_version_is_rolled_back(client: mlshift.Client) -> None:
    with pytest.raises(RolloutFailed) as info:
        client.endpoints.deploy("iris", "iris:3", rollout=Canary(percent=10, bake=30, gate=fast_gate()))
    exc = info.value
    assert "gate failed at 10% traffic: error rate 100.0% > 1.0%" in str(exc)
    assert exc.measurements["errors"] >= 5 and exc.measurements["error_rate"] == 1.0
    state = client.endpoints.get("iris")
    assert state.weights == {"iris-v1": 100}  # the old version serves everything again
    assert client.endpoints.predict("iris", ROWS).variant == "iris-v1"
    record = client.endpoints.history("iris")[0]
    assert record.phase == "rolled_back" and "error rate" in (record.reason or "")
    assert record.measurements["elapsed_s"] < 30  # tripped early, not at the end of the bake


def test_slow_version_trips_the_latency_gate(client: mlshift.Client) -> None:
    gate = fast_gate(max_p99="20ms")
    with pytest.raises(RolloutFailed, match=r"p99 latency \d+ms > 20ms") as info:
        client.endpoints.deploy("iris", "iris:4", rollout=Canary(percent=10, bake=30, gate=gate))
    assert info.value.measurements["p99_ms"] > 20
    assert client.endpoints.get("iris").weights == {"iris-v1": 100}


def test_too_little_traffic_fails_the_gate(client: mlshift.Client) -> None:
    with pytest.raises(RolloutFailed, match=r"only 0 requests in 0s, the gate needs at least 20"):
        client.endpoints.deploy("iris", "iris:2", rollout=Canary(percent=10, bake=0.3))
    assert client.endpoints.get("iris").weights == {"iris-v1": 100}


def test_linear_moves_in_steps(client: mlshift.Client) -> None:
    seen = Recorder()
    client.endpoints.deploy(
        "iris",
        "iris:2",
        rollout=Linear(step_percent=30, interval=0.2, gate=fast_gate(min_requests=1)),
        on_event=seen,
        checks=[hold_bake_for_requests(client, "iris", 1)],  # each 0.2 s step counts its probe
    )
    assert [s["iris-v2"] for s in seen.splits] == [30, 60, 90, 100]


def test_blue_green_checks_the_new_fleet_before_traffic(client: mlshift.Client) -> None:
    seen = Recorder()
    # The gate passes only with 5 probe answers from the new fleet by the end of the bake: 3 s
    # leaves room for a first answer that loads the model and for a descheduled prober on a
    # loaded machine (at 100 probes/s it takes 0.1 s when idle).
    client.endpoints.deploy("iris", "iris:2", rollout=BlueGreen(bake=3, gate=fast_gate()), on_event=seen)
    assert [s["iris-v2"] for s in seen.splits] == [0, 100]
    passed = client.endpoints.history("iris")[0]
    assert passed.phase == "succeeded" and passed.measurements["requests"] >= 5
    # A failing fleet trips the gate as soon as 5 probes failed; the long bake is only a deadline.
    with pytest.raises(RolloutFailed, match="pre-traffic probes") as info:
        client.endpoints.deploy("iris", "iris:3", rollout=BlueGreen(bake=120, gate=fast_gate()))
    assert info.value.measurements["elapsed_s"] < 120
    assert client.endpoints.get("iris").weights == {"iris-v2": 100}


def test_user_check_can_fail_the_gate(client: mlshift.Client) -> None:
    def business_kpi(reading: GateReading) -> str | None:
        return "conversion dropped" if reading.requests >= 5 else None

    with pytest.raises(RolloutFailed, match="check business_kpi failed at 10% traffic: conversion dropped"):
        client.endpoints.deploy(
            "iris", "iris:2", rollout=Canary(percent=10, bake=5, gate=fast_gate()), checks=[business_kpi]
        )
    assert client.endpoints.get("iris").weights == {"iris-v1": 100}


def test_interrupt_rolls_back_then_reraises(client: mlshift.Client) -> None:
    def ctrl_c(reading: GateReading) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        client.endpoints.deploy("iris", "iris:2", rollout=Canary(bake=5, gate=fast_gate()), checks=[ctrl_c])
    assert client.endpoints.get("iris").weights == {"iris-v1": 100}
    assert client.endpoints.history("iris")[0].reason == "interrupted"


def test_canary_with_a_partial_target_share(client: mlshift.Client) -> None:
    seen = Recorder()
    state = client.endpoints.deploy(
        "iris",
        "iris:2",
        traffic=20,
        rollout=Canary(percent=10, bake=0.3, gate=fast_gate()),
        on_event=seen,
        checks=[hold_bake_for_requests(client, "iris", 5)],  # each 0.3 s bake counts 5 probes
    )
    assert [s["iris-v2"] for s in seen.splits] == [10, 20]
    assert state.weights == {"iris-v1": 80, "iris-v2": 20}


def test_model_change_in_place_keeps_the_variant_name(client: mlshift.Client) -> None:
    spec = mlshift.EndpointSpec.model_validate(
        {
            "name": "iris",
            "variants": [{"name": "iris-v1", "model": "iris:2"}],
            "rollout": {"strategy": "canary", "percent": 50, "bake": 0.3, "gate": fast_gate().model_dump()},
        }
    )
    plan = client.plan(spec)
    assert [a.kind for a in plan.actions] == ["rollout"]
    assert "roll out iris-v1=iris:2: canary 50%" in plan.render()
    client.apply(plan, checks=[hold_bake_for_requests(client, "iris", 5)])  # 5 probes each 0.3 s bake
    state = client.endpoints.get("iris")
    assert [(v.name, v.model, v.weight) for v in state.variants] == [("iris-v1", "iris:2", 100)]
    assert client.plan(spec).is_empty


def test_unobservable_gates_are_refused_at_plan_time(iris: dict[str, Any]) -> None:
    with mlshift.connect("memory://?capabilities=traffic_split,targeted_invoke") as blind:
        blind.models.register("iris", iris["v1"])
        blind.models.register("iris", iris["v2"])
        blind.endpoints.deploy("iris", "iris:1")
        with pytest.raises(ConfigError, match="cannot count the new variant's requests") as info:
            blind.endpoints.deploy("iris", "iris:2", rollout=Canary(bake=1))
        assert info.value.field == "rollout.gate"
    with mlshift.connect("memory://?capabilities=traffic_split,metrics") as no_target:
        no_target.models.register("iris", iris["v1"])
        no_target.models.register("iris", iris["v2"])
        no_target.endpoints.deploy("iris", "iris:1")
        with pytest.raises(UnsupportedOperation, match="TARGETED_INVOKE"):
            no_target.endpoints.deploy("iris", "iris:2", rollout=Canary(bake=1, gate=fast_gate()))
        assert no_target.endpoints.get("iris").weights == {"iris-v1": 100}


def test_native_rollouts_are_handed_to_the_target(iris: dict[str, Any]) -> None:
    with mlshift.connect("memory://?capabilities=traffic_split,metrics,native_rollout") as native:
        native.models.register("iris", iris["v1"])
        native.models.register("iris", iris["v2"])
        native.endpoints.deploy("iris", "iris:1")
        state = native.endpoints.deploy("iris", "iris:2", rollout=Canary(bake=600))
        assert state.weights == {"iris-v2": 100}
        assert ("native_rollout", "iris", "canary") in MemoryAdapter.of(native).calls
        MemoryAdapter.of(native).fail_native_rollout = "alarm iris-5xx fired"
        with pytest.raises(RolloutFailed, match="alarm iris-5xx fired"):
            native.endpoints.deploy("iris", "iris:1", rollout=Canary(bake=600))
        assert native.endpoints.history("iris")[0].phase == "rolled_back"


def _interrupted(client: mlshift.Client, phase: str) -> RolloutRecord:
    """Leave the endpoint as a process killed mid-canary would: candidate at 10%, record open."""
    adapter = client.adapter
    baseline = client.endpoints.get("iris").variants
    version = client.models.get("iris:2")
    from mlshift.adapter import ResolvedVariant

    adapter.endpoints.add_variant("iris", ResolvedVariant(name="iris-v2", model=version, weight=0)).wait()
    weights = {"iris-v1": 90, "iris-v2": 10} if phase == "running" else {"iris-v1": 0, "iris-v2": 100}
    adapter.endpoints.set_weights("iris", weights).wait()
    target = tuple(
        v.model_copy(update={"name": "iris-v2", "model": "iris:2", "weight": 100}) for v in baseline
    )
    record = RolloutRecord(
        id="20260101T000000-dead00",
        endpoint="iris",
        strategy="canary",
        phase=phase,  # type: ignore[arg-type]
        started_at=datetime.now(timezone.utc),
        baseline=baseline,
        target=target,
        added=("iris-v2",),
        owner="pid 999999 on lost-laptop",
    )
    adapter.endpoints.record_rollout(record)
    return record


def test_an_interrupted_rollout_is_rolled_back_by_the_next_apply(client: mlshift.Client) -> None:
    _interrupted(client, "running")
    assert client.endpoints.get("iris").weights == {"iris-v1": 90, "iris-v2": 10}
    state = client.endpoints.deploy("iris", "iris:1")  # the same or any apply
    assert state.weights == {"iris-v1": 100}
    assert [v.name for v in state.variants] == ["iris-v1"]
    old = next(r for r in client.endpoints.history("iris") if r.id == "20260101T000000-dead00")
    assert old.phase == "rolled_back" and "interrupted" in (old.reason or "")


def test_an_interrupted_promotion_is_finished_and_not_duplicated(client: mlshift.Client) -> None:
    _interrupted(client, "promoting")
    plan = client.plan(
        mlshift.EndpointSpec.model_validate(
            {"name": "iris", "variants": [{"name": "iris-v2", "model": "iris:2"}]}
        )
    )
    assert plan.actions[0].kind == "recover_rollout"
    assert "finish (its gate had passed) the interrupted canary rollout" in plan.render()
    assert "lost-laptop" in plan.render()
    client.apply(plan)
    state = client.endpoints.get("iris")
    assert [(v.name, v.model, v.weight) for v in state.variants] == [("iris-v2", "iris:2", 100)]


def test_rollback_on_demand_and_history(client: mlshift.Client) -> None:
    client.endpoints.deploy("iris", "iris:2")
    assert client.endpoints.rollback("iris").weights == {"iris-v1": 100}
    history = client.endpoints.history("iris")
    assert [r.strategy for r in history] == ["rollback", "all-at-once", "create"]
    assert all(r.phase == "succeeded" for r in history)
    assert client.endpoints.rollback("iris").weights == {"iris-v2": 100}  # rolling back a rollback undoes it


def test_a_variant_keeps_its_batching_through_rollbacks_and_traffic_changes(client: mlshift.Client) -> None:
    settings = {"max_batch_size": 8, "max_latency_ms": 2}
    batching = mlshift.specs.Batching(**settings)
    batched = mlshift.EndpointSpec.model_validate(
        {"name": "batched", "variants": [{"name": "blue", "model": "iris:1", "batching": settings}]}
    )
    client.apply(batched)

    def blue() -> Any:
        found = client.endpoints.get("batched").variant("blue")
        assert found is not None, "variant blue is gone"
        return (found.model, found.weight, found.batching)

    # A failing canary is rolled back: blue serves everything, batching as before.
    with pytest.raises(RolloutFailed):
        client.endpoints.deploy("batched", "iris:3", rollout=Canary(percent=10, bake=30, gate=fast_gate()))
    assert blue() == ("iris:1", 100, batching)
    assert client.plan(batched).is_empty
    # A new version beside it, then a traffic change: blue is kept as it is, not restarted.
    client.endpoints.deploy("batched", "iris:2", traffic=20)
    assert blue() == ("iris:1", 80, batching)
    client.endpoints.set_traffic("batched", {"blue": 50, "iris-v2": 50})
    assert blue() == ("iris:1", 50, batching)
    # The new version takes everything (blue goes); a rollback rebuilds blue from its record.
    client.endpoints.deploy("batched", "iris:2")
    assert client.endpoints.get("batched").variant("blue") is None
    client.endpoints.rollback("batched")
    assert blue() == ("iris:1", 50, batching)
    both = mlshift.EndpointSpec.model_validate(
        {
            "name": "batched",
            "variants": [
                {"name": "blue", "model": "iris:1", "weight": 50, "batching": settings},
                {"name": "iris-v2", "model": "iris:2", "weight": 50},
            ],
        }
    )
    assert client.plan(both).is_empty


def test_rollback_without_history(memory: mlshift.Client, iris: dict[str, Any]) -> None:
    memory.models.register("iris", iris["v1"])
    memory.endpoints.deploy("iris", "iris:1")
    with pytest.raises(NotFound, match="no earlier deployment"):
        memory.endpoints.rollback("iris")


def test_strategy_specs_validate() -> None:
    assert Canary(bake="5m").bake == 300
    assert Linear(step_percent=25).stages() == [25, 50, 75, 100]
    with pytest.raises(ConfigError, match="invalid duration"):
        Canary(bake="soon")
    with pytest.raises(ConfigError, match="less than or equal to 99"):
        Canary(percent=100)
    spec = mlshift.EndpointSpec.model_validate(
        {
            "name": "e",
            "variants": [{"name": "a", "model": "m:1"}],
            "rollout": {"strategy": "linear", "interval": "30s"},
        }
    )
    assert spec.model_dump(mode="json")["rollout"]["interval"] == "30s"
