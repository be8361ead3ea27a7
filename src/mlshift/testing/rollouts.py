"""Gated rollouts under load, for tests: traffic, enough requests for the gate, what callers saw.

A canary's gate judges a fixed bake, and it needs ``min_requests`` requests on the new version
to judge at all. A test that sends load while the canary bakes, and then asserts that it was
promoted (or rolled back for a reason other than too few requests), depends on the machine's
speed: on a loaded machine the load may not reach the gate's minimum within the bake. The
helpers here remove that dependency without touching the gate::

    from mlshift.testing.rollouts import canary_under_load
    from mlshift.specs.rollout import Canary, HealthGate

    outcome = canary_under_load(
        client, "iris-ep", "iris:2", Canary(percent=20, bake=2, gate=HealthGate(min_requests=5)),
        rows=[[5.1, 3.5, 1.4, 0.2]],
    )
    assert outcome.failure is None
    assert [(v.model, v.weight) for v in outcome.state.variants] == [("iris:2", 100)]
    assert outcome.served("iris-v2") > 0 and not outcome.errors

:func:`hold_bake_for_requests` is the gate check doing the waiting; use it alone with
``client.endpoints.deploy(..., checks=[...])`` when the load comes from elsewhere (another
process, a load generator). :func:`send_traffic` is the load alone, and
:func:`failing_predictor` a model version whose every prediction fails, to see a gate roll back.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlshift._client import Client
from mlshift.adapter import EndpointState
from mlshift.errors import MlshiftError, NotFound, RolloutFailed
from mlshift.plan import ApplyEvent, GateCheck, GateReading
from mlshift.specs.rollout import RolloutStrategy

__all__ = [
    "CanaryOutcome",
    "canary_under_load",
    "failing_predictor",
    "hold_bake_for_requests",
    "send_traffic",
]

_FAILING_PREDICTOR = """\
class Predictor:
    signature = {{'inputs': [{{'dtype': 'float64'}}] * {columns}}}
    def load(self, path):
        pass
    def predict(self, batch):
        raise RuntimeError('this version is broken')
"""


def failing_predictor(folder: Path, *, columns: int = 4) -> Path:
    """Write a model whose every prediction fails: register it to see a gate roll back.

    The model is a ``predictor`` folder (``predictor.py`` with a ``Predictor`` class) that
    loads and takes rows of ``columns`` float64 values, so a rollout accepts it in place of a
    model with that signature, and raises ``RuntimeError('this version is broken')`` on every
    prediction (the model server answers 500)::

        client.models.register("iris", failing_predictor(tmp_path / "broken"), framework="predictor")

    Args:
        folder: Where to write it; made if missing.
        columns: How many values a row has.

    Returns:
        ``folder``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "predictor.py").write_text(_FAILING_PREDICTOR.format(columns=columns))
    return folder


def _variant_names(client: Client, endpoint: str) -> list[str]:
    try:
        return [v.name for v in client.endpoints.get(endpoint).variants]
    except NotFound:
        return []


def _counted(client: Client, endpoint: str, variants: Sequence[str], window: float) -> int:
    total = 0
    for name in variants:
        metrics = client.adapter.endpoints.read_metrics(endpoint, name, window)
        total += metrics.requests if metrics is not None else 0
    return total


def hold_bake_for_requests(
    client: Client, endpoint: str, min_requests: int, *, timeout: float = 300.0, poll: float = 0.05
) -> GateCheck:
    """A gate check that holds each bake until the gate has enough requests to judge.

    Pass it in ``checks=``. On the first reading of each bake it waits until the target's
    metrics (the same ``read_metrics`` the engine judges on) count ``min_requests`` requests
    on the new variants since the bake began, and as many on the baseline while the baseline
    still serves (a latency-ratio gate compares the two). The engine's next reading covers a
    window at least as long, so the bake ends with enough requests on any machine, however
    slowly the load arrives; when the load is fast the bake is as long as the spec
    says. The check judges nothing itself: the gate still decides.

    Args:
        client: The client deploying.
        endpoint: The endpoint being rolled out.
        min_requests: The gate's ``min_requests``.
        timeout: Longest wait, in seconds, for the load to bring that many requests; only a
            bound on a hang (no load at all). The check then fails the gate, saying so.
        poll: Seconds between metric reads while waiting.

    A shadow phase is held the same way, on its first reading, until the target's shadow
    numbers (``read_shadow``, what the engine judges the phase on) count ``min_requests``
    mirrored requests since the phase began.

    Returns:
        A check for ``deploy(..., checks=[...])`` / ``apply(..., checks=[...])``. It holds
        bakes judged on the target's metrics (``METRICS``) and shadow phases, not a bake
        judged on its probes' answers alone (the check cannot count those).
    """
    held: set[int | str] = set()

    def hold_bake_for_requests(reading: GateReading) -> bool | str:
        if reading.window is None:
            # Not the target's metrics: a shadow phase (held on read_shadow) or a bake judged
            # on the engine's own probes, which this check cannot count. A shadow phase's
            # readings are at stage 0; only the first one is looked at.
            if reading.stage != 0 or "shadow" in held:
                return True
            held.add("shadow")
            shadow = _mirrored_variant(client, endpoint)
            if shadow is None:
                return True
            return _hold_shadow(client, endpoint, shadow, min_requests, reading.elapsed, timeout, poll)
        if reading.stage in held:
            return True
        held.add(reading.stage)
        # The open journal record names the variants that served before this rollout; every
        # other live variant is a candidate (under its staging name, if it has one).
        record = next((r for r in client.endpoints.history(endpoint, limit=5) if r.is_open), None)
        baseline = {v.name for v in record.baseline} if record is not None else set()
        start = time.monotonic() - reading.elapsed
        deadline = time.monotonic() + timeout
        while True:
            live = client.endpoints.get(endpoint).variants
            new = [v.name for v in live if v.name not in baseline]
            # A baseline variant the rollout gives no traffic cannot bring requests.
            old = [v.name for v in live if v.name in baseline and v.weight > 0]
            window = max(time.monotonic() - start, poll)
            new_count = _counted(client, endpoint, new, window)
            # At 100% the baseline serves nothing: the engine compares with what it saw before.
            old_enough = (
                reading.stage >= 100 or not old or _counted(client, endpoint, old, window) >= min_requests
            )
            if new_count >= min_requests and old_enough:
                return True
            if time.monotonic() > deadline:
                return (
                    f"the test's load brought only {new_count} requests to "
                    f"{', '.join(new) or 'the new version'} in {timeout:g} s; the gate needs {min_requests}"
                )
            time.sleep(poll)

    return hold_bake_for_requests


def _mirrored_variant(client: Client, endpoint: str) -> str | None:
    """The variant a shadow phase of the open rollout mirrors to now, else ``None``."""
    record = next((r for r in client.endpoints.history(endpoint, limit=5) if r.is_open), None)
    if record is None or record.strategy != "shadow" or not record.steps:
        return None
    # The engine records "mirror P% of traffic to NAME" as the phase begins and
    # "stop mirroring to NAME" as it ends.
    last = record.steps[-1]
    return last.rsplit(" ", 1)[-1] if last.startswith("mirror ") and " to " in last else None


def _hold_shadow(
    client: Client,
    endpoint: str,
    variant: str,
    min_requests: int,
    elapsed: float,
    timeout: float,
    poll: float,
) -> bool | str:
    start = time.monotonic() - elapsed
    deadline = time.monotonic() + timeout
    while True:
        window = max(time.monotonic() - start, poll)
        metrics = client.adapter.endpoints.read_shadow(endpoint, variant, window)
        count = metrics.requests if metrics is not None else 0
        if count >= min_requests:
            return True
        if time.monotonic() > deadline:
            return (
                f"the test's load brought only {count} mirrored requests to {variant} in {timeout:g} s; "
                f"the gate needs {min_requests}"
            )
        time.sleep(poll)


@contextlib.contextmanager
def send_traffic(
    client: Client, endpoint: str, rows: Any, *, first_answer_timeout: float = 120.0
) -> Iterator[Counter[str]]:
    """Predictions sent to ``endpoint`` from a thread for the duration of the block.

    Yields a counter of what the callers saw, filled as answers come: ``"VARIANT PREDICTIONS"``
    for an answer (e.g. ``"iris-v2 [0, 0]"``), ``"error ERRORCLASS"`` for an mlshift error and
    ``"crash REPR"`` for any other exception. The block starts once the first answer is back.
    """
    seen: Counter[str] = Counter()
    stop, first = threading.Event(), threading.Event()

    def send() -> None:
        while not stop.is_set():
            try:
                answer = client.endpoints.predict(endpoint, rows)
                seen[f"{answer.variant} {answer.predictions}"] += 1
            except MlshiftError as exc:
                seen[f"error {type(exc).__name__}"] += 1
            except Exception as exc:  # the target itself broke: counted, so the test fails on it
                seen[f"crash {exc!r}"] += 1
            first.set()
            stop.wait(0.002)

    thread = threading.Thread(target=send, name=f"traffic-{endpoint}", daemon=True)
    thread.start()
    try:
        if not first.wait(first_answer_timeout):
            raise AssertionError(f"no prediction came back from {endpoint!r} in {first_answer_timeout:g} s")
        yield seen
    finally:
        stop.set()
        thread.join(60)


@dataclass
class CanaryOutcome:
    """What a rollout under load ended in, and what callers saw meanwhile.

    Attributes:
        state: The endpoint after a successful rollout; ``None`` when it failed.
        failure: The ``RolloutFailed`` of a rolled-back rollout; ``None`` when it succeeded.
        answers: The traffic's answers as :func:`send_traffic` counts them (empty when the
            caller brought its own load).
        events: Every apply event of the deploy.
        traffic_back_after: Seconds from the first weights giving the new version traffic to
            the end of the deploy (the rollback included); ``None`` if it never got any.
        load: What the caller's ``load`` context manager yielded (its own counts), else ``None``.
    """

    state: EndpointState | None
    failure: RolloutFailed | None
    answers: Counter[str]
    events: list[ApplyEvent] = field(default_factory=list)
    traffic_back_after: float | None = None
    load: Any = None

    @property
    def splits(self) -> list[dict[str, int]]:
        """The weights the rollout set, in order."""
        return [dict(e.detail["weights"]) for e in self.events if e.detail and "weights" in e.detail]

    def served(self, variant: str) -> int:
        """Answers callers got from ``variant``."""
        return sum(n for key, n in self.answers.items() if key.split(" ", 1)[0] == variant)

    @property
    def errors(self) -> Counter[str]:
        """Failed calls by kind: ``"error ERRORCLASS"`` and ``"crash ..."`` keys of ``answers``."""
        return Counter({k: n for k, n in self.answers.items() if k.startswith(("error ", "crash "))})


def canary_under_load(
    client: Client,
    endpoint: str,
    model: str,
    rollout: RolloutStrategy,
    *,
    rows: Any = None,
    load: AbstractContextManager[Any] | None = None,
    hold_timeout: float = 300.0,
    checks: Sequence[GateCheck] = (),
    on_event: Callable[[ApplyEvent], None] | None = None,
    **deploy: Any,
) -> CanaryOutcome:
    """Deploy ``model`` to ``endpoint`` with a gated ``rollout`` while traffic flows.

    The traffic is :func:`send_traffic` with ``rows`` (or the ``load`` context manager given,
    e.g. a load generator in another process). The gate gets
    :func:`hold_bake_for_requests` for its ``min_requests``, so the outcome depends on what
    the new version answered, not on how fast the machine sent requests.

    Args:
        client: The client to deploy with (and to send the traffic through).
        endpoint: An existing endpoint, serving the baseline.
        model: The new version, ``NAME:VERSION``.
        rollout: The strategy, with its gate.
        rows: The rows each prediction sends; required without ``load``.
        load: Traffic of the caller's own, entered around the deploy instead.
        hold_timeout: Longest wait for the gate's requests (a bound on a hang only).
        checks: More gate checks.
        on_event: Also receives every apply event.
        **deploy: Other arguments of ``client.endpoints.deploy`` (``variant=``, ...).

    Returns:
        The outcome; a ``RolloutFailed`` is returned in it, any other error is raised.
    """
    if load is None and rows is None:
        raise TypeError("canary_under_load needs rows= to send, or a load= of its own")
    baseline = set(_variant_names(client, endpoint))
    events: list[ApplyEvent] = []
    first_traffic: list[float] = []

    def record(event: ApplyEvent) -> None:
        events.append(event)
        weights = (event.detail or {}).get("weights", {})
        if not first_traffic and any(w for name, w in weights.items() if name not in baseline):
            first_traffic.append(time.monotonic())
        if on_event is not None:
            on_event(event)

    hold = hold_bake_for_requests(client, endpoint, rollout.gate.min_requests, timeout=hold_timeout)
    answers: Counter[str] = Counter()
    yielded: Any = None
    state: EndpointState | None = None
    failure: RolloutFailed | None = None
    traffic = load if load is not None else send_traffic(client, endpoint, rows)
    with traffic as seen:
        if load is None:
            answers = seen
        else:
            yielded = seen
        try:
            state = client.endpoints.deploy(
                endpoint, model, rollout=rollout, checks=[hold, *checks], on_event=record, **deploy
            )
        except RolloutFailed as exc:
            failure = exc
        ended = time.monotonic()
    back = ended - first_traffic[0] if first_traffic else None
    return CanaryOutcome(state, failure, answers, events, back, yielded)
