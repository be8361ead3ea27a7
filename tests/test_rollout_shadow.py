"""Shadow rollouts on the in-memory target: mirrored traffic, agreement gate, callers untouched."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import mlshift
from mlshift._routing import MirrorShare, compare_answers
from mlshift.errors import ConfigError, RolloutFailed, UnsupportedOperation
from mlshift.plan import ApplyEvent, GateCheck
from mlshift.specs.endpoint import EndpointSpec
from mlshift.specs.rollout import Canary, HealthGate, Shadow
from mlshift.testing.memory import MemoryAdapter
from mlshift.testing.rollouts import hold_bake_for_requests
from rollout_models import predictor, shadow_rows

ROWS = shadow_rows()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("shadow-models")
    kinds = ("threshold-5", "threshold-2", "threshold-5.01", "failing")
    return {kind: predictor(folder, kind) for kind in kinds}


@pytest.fixture
def client(models: dict[str, Path]) -> Iterator[mlshift.Client]:
    with mlshift.connect("memory://") as client:
        client.models.register("m", models["threshold-5"])  # m:1 serves
        client.models.register("m", models["threshold-2"])  # m:2 disagrees on 30% of rows
        client.models.register("m", models["threshold-5.01"])  # m:3 agrees on 99.5%
        client.models.register("m", models["failing"])  # m:4 answers 500
        client.endpoints.deploy("m", "m:1")
        yield client


@contextmanager
def callers(client: mlshift.Client) -> Iterator[Counter[str]]:
    """Predictions of all ROWS at once from another thread, so that every request compares the
    same rows; counts (variant, whether the answer is m:1's)."""
    seen: Counter[str] = Counter()
    stop = threading.Event()
    v1_answer = [int(row[0] >= 5) for row in ROWS]

    def send() -> None:
        while not stop.is_set():
            try:
                answer = client.endpoints.predict("m", ROWS)
                seen[f"{answer.variant} {'v1-answer' if answer.predictions == v1_answer else 'other'}"] += 1
            except mlshift.MlshiftError as exc:
                seen[f"error {type(exc).__name__}"] += 1

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join(30)


class Events:
    def __init__(self) -> None:
        self.details: list[dict[str, object]] = []

    def __call__(self, event: ApplyEvent) -> None:
        if event.detail:
            self.details.append(event.detail)


def hold(client: mlshift.Client) -> GateCheck:
    """The shadow phase ends with the gate's 20 mirrored requests counted, however slow the machine."""
    return hold_bake_for_requests(client, "m", 20)


def shadow(**extra: object) -> Shadow:
    return Shadow.model_validate(
        {"percent": 100, "duration": 2, "min_agreement": 0.99, "gate": {"min_requests": 20}, **extra}
    )


def test_a_version_that_disagrees_is_rejected_with_the_measured_agreement(client: mlshift.Client) -> None:
    with callers(client) as seen, pytest.raises(RolloutFailed) as info:
        client.endpoints.deploy("m", "m:2", rollout=shadow(), checks=[hold(client)])
    exc = info.value
    assert exc.reason is not None
    assert exc.reason.startswith("gate failed in the shadow phase: agreement ")
    assert exc.measurements["agreement"] == 0.7  # 60 of every 200 rows disagree
    assert exc.measurements["min_agreement"] == 0.99 and exc.measurements["rows"] >= 20 * 200
    assert client.endpoints.get("m").weights == {"m-v1": 100}  # m:2 removed
    assert set(seen) == {"m-v1 v1-answer"}  # callers only ever saw m:1's answers


def test_a_version_that_agrees_is_promoted(client: mlshift.Client) -> None:
    events = Events()
    with callers(client) as seen:
        state = client.endpoints.deploy("m", "m:3", rollout=shadow(), on_event=events, checks=[hold(client)])
    assert state.weights == {"m-v3": 100}
    shadow_phase = [d for d in events.details if d.get("phase") == "shadow"]
    assert shadow_phase and shadow_phase[-1]["agreement"] == 0.995
    record = client.endpoints.history("m")[0]
    assert record.phase == "succeeded" and record.measurements["agreement"] == 0.995
    # Until the switch, callers saw m:1 only; afterwards m:3, whose answers may differ.
    assert {k for k in seen if not k.startswith("m-v3")} == {"m-v1 v1-answer"}
    assert "set_shadow" in [c[0] for c in MemoryAdapter.of(client).calls]


def test_then_canary_moves_traffic_in_stages_after_the_shadow_phase(client: mlshift.Client) -> None:
    events = Events()
    rollout = shadow(then=Canary(percent=25, bake=0.5, gate=HealthGate(min_requests=5)))
    with callers(client):
        client.endpoints.deploy(
            "m", "m:3", rollout=rollout, on_event=events, checks=[hold_bake_for_requests(client, "m", 5)]
        )
    order = [
        ("shadow" if "shadow" in d else "weights") for d in events.details if "shadow" in d or "weights" in d
    ]
    assert order[0] == "shadow"
    splits = [d["weights"] for d in events.details if "weights" in d]
    assert splits[-2:] == [{"m-v1": 75, "m-v3": 25}, {"m-v1": 0, "m-v3": 100}]


def test_a_crashing_candidate_never_fails_a_caller(client: mlshift.Client) -> None:
    with callers(client) as seen, pytest.raises(RolloutFailed, match="error rate 100.0% > 1.0%"):
        client.endpoints.deploy("m", "m:4", rollout=shadow(duration=30))
    assert set(seen) == {"m-v1 v1-answer"}
    assert client.endpoints.get("m").weights == {"m-v1": 100}


def test_too_little_traffic_fails_the_shadow_phase(client: mlshift.Client) -> None:
    with pytest.raises(RolloutFailed, match="only 0 requests"):
        client.endpoints.deploy("m", "m:3", rollout=shadow(duration=0.3))
    assert client.endpoints.get("m").weights == {"m-v1": 100}


def test_the_test_helper_holds_the_shadow_phase_until_its_requests_are_counted(
    client: mlshift.Client,
) -> None:
    # With no traffic at all, the hold waits for mirrored requests (and gives up, saying so)
    # instead of letting the phase end at its duration.
    check = hold_bake_for_requests(client, "m", 20, timeout=1)
    with pytest.raises(RolloutFailed, match="only 0 mirrored requests to m-v3 in 1 s; the gate needs 20"):
        client.endpoints.deploy("m", "m:3", rollout=shadow(duration=0.3), checks=[check])
    assert client.endpoints.get("m").weights == {"m-v1": 100}


def test_the_plan_shows_the_shadow_phase(client: mlshift.Client) -> None:
    spec = EndpointSpec.model_validate(
        {
            "name": "m",
            "variants": [{"name": "m-v3", "model": "m:3"}],
            "rollout": {"strategy": "shadow", "percent": 20, "duration": "5m", "then": "canary"},
        }
    )
    plan = client.plan(spec)
    text = plan.render()
    assert "shadow 20% of traffic for 300s (answers never returned; agreement >= 99%" in text
    assert "then canary 10% for 300s, then all" in text
    rollout = next(a for a in plan.to_json()["actions"] if a["kind"] == "rollout")
    assert rollout["strategy"]["strategy"] == "shadow" and rollout["strategy"]["then"]["strategy"] == "canary"


def test_a_target_without_shadow_traffic_refuses_it_at_plan_time(models: dict[str, Path]) -> None:
    with mlshift.connect("memory://?capabilities=traffic_split,targeted_invoke,metrics") as client:
        client.models.register("m", models["threshold-5"])
        client.models.register("m", models["threshold-5.01"])
        client.endpoints.deploy("m", "m:1")
        with pytest.raises(
            UnsupportedOperation, match=r"a shadow rollout \(SHADOW_TRAFFIC\).*targets that do: .*local"
        ):
            client.endpoints.deploy("m", "m:2", rollout=shadow())
        assert client.endpoints.get("m").weights == {"m-v1": 100}


def test_probes_belong_to_the_canary_after_the_shadow_phase(client: mlshift.Client) -> None:
    with pytest.raises(ConfigError, match="judged on mirrored live traffic"):
        client.endpoints.deploy(
            "m", "m:3", rollout=shadow(gate={"probe": {"payload": {"instances": [[1, 2, 3, 4]]}}})
        )


def test_mirror_share_is_exact_and_even() -> None:
    share = MirrorShare(20)
    picks = [share.pick() for _ in range(100)]
    assert sum(picks) == 20 and picks[:5] == [False, False, False, False, True]


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (b'{"predictions": [1, 0, 2]}', b'{"predictions": [1, 1, 2]}', (3, 2)),
        (b'{"predictions": [1.0, 2.0]}', b'{"predictions": [1.005, 2.5]}', (2, 1)),
        (b'{"predictions": [[0.2, 0.8]]}', b'{"predictions": [[0.2, 0.8001]]}', (1, 1)),
        (b'{"predictions": ["a"]}', b'{"predictions": ["b"]}', (1, 0)),
        (b"1,0\n", b"1,0\n", (1, 1)),
    ],
)
def test_compare_answers(a: bytes, b: bytes, expected: tuple[int, int]) -> None:
    assert compare_answers(a, b, 0.01) == expected


def test_cli_strategy_shadow_takes_percent_and_bake_as_duration() -> None:
    from mlshift.cli._endpoints import _rollout_options

    spec = _rollout_options("shadow", 20, None, "5s", None, None, None, None, None)
    assert spec == {"strategy": "shadow", "gate": {}, "percent": 20, "duration": "5s"}
    assert Shadow.model_validate(spec).duration == 5.0
