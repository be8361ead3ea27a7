"""The rollout engine: move traffic in stages, watch a health gate, roll back by itself.

A :class:`~mlshift.plan.Rollout` action expands into adapter primitives::

    add new variants at 0% → [set weights → bake → gate] per stage → promote → remove old

Every step is written to the endpoint's journal (:class:`~mlshift.adapter.RolloutRecord`)
*before* it is carried out. If the process dies, the next plan finds the open record and rolls
back to the baseline — or, if the gate had already passed, finishes the promotion — so an
endpoint is never left with two copies of a variant or with nothing serving.

Targets that run rollouts themselves (``NATIVE_ROLLOUT``) get the whole rollout handed over,
unless the plan decided otherwise (:attr:`~mlshift.plan.Rollout.native`: the target said why it
cannot run this one, e.g. SageMaker when the variant names change); the engine then runs it here.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from mlshift._routing import SampleSummary, spread_weights, summarize
from mlshift.adapter import (
    Capability,
    EndpointState,
    NativeRollout,
    ResolvedVariant,
    RolloutPhase,
    RolloutRecord,
    ShadowMetrics,
    VariantMetrics,
    VariantState,
)
from mlshift.errors import ConfigError, MlshiftError, ProviderError, RolloutFailed, UnsupportedOperation
from mlshift.plan._actions import PlannedVariant, RecoverRollout, Rollout
from mlshift.specs.model import ModelVersion
from mlshift.specs.rollout import HealthGate, Shadow

if TYPE_CHECKING:
    from mlshift.adapter import Adapter
    from mlshift.specs.endpoint import EndpointSpec

__all__ = [
    "GateCheck",
    "GateReading",
    "Journal",
    "check_gate_observable",
    "gate_thresholds",
    "new_record_id",
    "owner_id",
    "poll_interval",
    "recover_rollout",
    "run_rollout",
]


def owner_id() -> str:
    """Who is changing an endpoint: ``pid N on HOST``."""
    return f"pid {os.getpid()} on {socket.gethostname()}"


_last_stamp = [""]


def new_record_id() -> str:
    """A unique journal id that sorts by time (microseconds; strictly increasing per process)."""
    stamp = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S.%f}"
    if stamp <= _last_stamp[0]:
        base, _, micros = _last_stamp[0].partition(".")
        stamp = f"{base}.{int(micros) + 1:06d}"
    _last_stamp[0] = stamp
    return f"{stamp}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class GateReading:
    """What the gate saw of the new version during one bake, beside the baseline's numbers.

    Attributes:
        errors: 5xx answers of the new version.
        client_errors: 4xx answers of the new version.
        baseline_requests: Requests the baseline (the variants serving before) answered in the
            same window; when it had none there (blue/green after the switch), the window
            before the rollout started.
        window: Seconds the target's metrics really covered (``read_metrics`` may widen the
            window asked for, e.g. to whole minutes); ``None`` when judged on probes.
    """

    stage: int
    elapsed: float
    requests: int
    errors: int
    p50_ms: float | None = None
    p99_ms: float | None = None
    client_errors: int = 0
    baseline_requests: int = 0
    baseline_client_errors: int = 0
    baseline_p99_ms: float | None = None
    rows: int = 0
    agreed_rows: int = 0
    window: float | None = None

    @property
    def agreement(self) -> float | None:
        """Share of compared rows on which the new version agreed with the serving one (shadow
        rollouts; ``None`` when nothing was compared)."""
        return self.agreed_rows / self.rows if self.rows else None

    @property
    def error_rate(self) -> float:
        """The new version's share of 5xx answers."""
        return self.errors / self.requests if self.requests else 0.0

    @property
    def client_error_rate(self) -> float:
        """The new version's share of 4xx answers."""
        return self.client_errors / self.requests if self.requests else 0.0

    @property
    def baseline_client_error_rate(self) -> float:
        """The baseline's share of 4xx answers (0 when it answered nothing)."""
        return self.baseline_client_errors / self.baseline_requests if self.baseline_requests else 0.0

    def as_measurements(self) -> dict[str, float]:
        data = {
            "stage_percent": float(self.stage),
            "elapsed_s": round(self.elapsed, 3),
            "requests": float(self.requests),
            "errors": float(self.errors),
            "error_rate": round(self.error_rate, 4),
            "client_errors": float(self.client_errors),
            "client_error_rate": round(self.client_error_rate, 4),
            "baseline_requests": float(self.baseline_requests),
            "baseline_client_error_rate": round(self.baseline_client_error_rate, 4),
        }
        if self.p99_ms is not None:
            data["p99_ms"] = round(self.p99_ms, 2)
        if self.p50_ms is not None:
            data["p50_ms"] = round(self.p50_ms, 2)
        if self.baseline_p99_ms is not None:
            data["baseline_p99_ms"] = round(self.baseline_p99_ms, 2)
        if self.window is not None:
            data["window_s"] = round(self.window, 3)
        if self.agreement is not None:
            data["rows"] = float(self.rows)
            data["agreement"] = round(self.agreement, 4)
        return data

    def with_baseline(self, other: _Group) -> GateReading:
        """This reading with the baseline's numbers taken from ``other``."""
        return replace(
            self,
            baseline_requests=other.requests,
            baseline_client_errors=other.client_errors,
            baseline_p99_ms=other.p99_ms,
        )


@dataclass(frozen=True)
class _Group:
    """Summed numbers of a group of variants (the candidates, or the baseline)."""

    requests: int = 0
    errors: int = 0
    client_errors: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    window: float | None = None

    @classmethod
    def of(cls, parts: Sequence[VariantMetrics | SampleSummary]) -> _Group:
        def get(part: VariantMetrics | SampleSummary, key: str) -> Any:
            return part[key] if isinstance(part, dict) else getattr(part, key)  # type: ignore[literal-required]

        p50s = [get(p, "p50_ms") for p in parts if get(p, "p50_ms") is not None]
        p99s = [get(p, "p99_ms") for p in parts if get(p, "p99_ms") is not None]
        windows = [p.window_seconds for p in parts if isinstance(p, VariantMetrics)]
        return cls(
            requests=sum(get(p, "requests") for p in parts),
            errors=sum(get(p, "errors") for p in parts),
            client_errors=sum(get(p, "client_errors") for p in parts),
            # The worst variant's percentile: a conservative stand-in for the group's.
            p50_ms=max(p50s) if p50s else None,
            p99_ms=max(p99s) if p99s else None,
            window=max(windows) if windows else None,
        )

    def reading(self, stage: int, elapsed: float, baseline: _Group) -> GateReading:
        return GateReading(
            stage=stage,
            elapsed=elapsed,
            requests=self.requests,
            errors=self.errors,
            client_errors=self.client_errors,
            p50_ms=self.p50_ms,
            p99_ms=self.p99_ms,
            window=self.window,
        ).with_baseline(baseline)


def gate_thresholds(gate: HealthGate, shadow: Shadow | None = None) -> dict[str, float]:
    """The gate's limits, as ``RolloutFailed.measurements`` carries them beside the readings."""
    data = {"max_error_rate": gate.max_error_rate, "min_requests": float(gate.min_requests)}
    if shadow is not None:
        data["min_agreement"] = shadow.min_agreement
    if gate.max_client_error_increase is not None:
        data["max_client_error_increase"] = gate.max_client_error_increase
    if gate.max_p99 is not None:
        data["max_p99_ms"] = gate.max_p99 * 1000
    if gate.max_p99_ratio is not None:
        data["max_p99_ratio"] = gate.max_p99_ratio
    return data


#: A user check: called with the latest reading; ``False`` or a message fails the gate.
GateCheck = Callable[[GateReading], "bool | str | None"]


class _GateFailed(Exception):
    def __init__(self, reason: str, reading: GateReading | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.reading = reading


class Journal:
    """The open journal record of one rollout, rewritten before each step."""

    def __init__(self, adapter: Adapter, record: RolloutRecord) -> None:
        self._adapter = adapter
        self.record = record
        adapter.endpoints.record_rollout(record)

    def step(self, text: str) -> None:
        """Record that ``text`` is about to happen."""
        self._save(steps=(*self.record.steps, text))

    def added(self, variant: str) -> None:
        self._save(added=(*self.record.added, variant))

    def phase(self, phase: RolloutPhase, **changes: Any) -> None:
        if phase not in ("running", "promoting"):
            changes.setdefault("finished_at", datetime.now(timezone.utc))
        self._save(phase=phase, **changes)

    def _save(self, **changes: Any) -> None:
        self.record = self.record.model_copy(update=changes)
        self._adapter.endpoints.record_rollout(self.record)


def check_gate_observable(adapter: Adapter, spec: EndpointSpec, *, native: bool | None = None) -> None:
    """Refuse, at plan time, a gate the target could never evaluate.

    Args:
        native: Whether the target runs this rollout itself (then it judges the gate its own
            way); ``None``: it does when it declares ``NATIVE_ROLLOUT``.

    Raises:
        UnsupportedOperation: probes on a target without ``TARGETED_INVOKE``.
        ConfigError: a gate that needs requests when neither metrics nor probes can count any.
    """
    strategy = spec.rollout
    if strategy is None or strategy.strategy == "all-at-once":
        return
    if isinstance(strategy, Shadow):
        # The shadow phase is judged on mirrored live traffic (read_shadow), not on metrics or
        # probes; what follows it is judged like any rollout.
        if strategy.gate.probe is not None:
            raise ConfigError(
                f"endpoint {spec.name!r}: a shadow phase is judged on mirrored live traffic, not probes",
                field="rollout.gate.probe",
                hint="put the probe in rollout.then.gate (a canary after the shadow phase)",
            )
        if adapter.endpoints.shadow_mode == "mirror-only":
            _check_mirror_only(adapter, spec, strategy)
        check_gate_observable(adapter, spec.model_copy(update={"rollout": strategy.then}), native=False)
        return
    gate = strategy.gate
    caps = adapter.capabilities
    if native is None:
        native = Capability.NATIVE_ROLLOUT in caps
    if native:
        return
    if gate.probe is not None and Capability.TARGETED_INVOKE not in caps:
        raise UnsupportedOperation(
            f"endpoint {spec.name!r}: rollout.gate.probe sends requests to one variant directly "
            f"(TARGETED_INVOKE), which {adapter.uri.raw} does not support"
        )
    if gate.min_requests > 0 and gate.probe is None and Capability.METRICS not in caps:
        raise ConfigError(
            f"endpoint {spec.name!r}: the gate needs at least {gate.min_requests} requests, but "
            f"{adapter.uri.raw} cannot count the new variant's requests (no METRICS)",
            field="rollout.gate",
            hint="add rollout.gate.probe with a sample payload, or set min_requests: 0",
        )
    lag = adapter.endpoints.metrics_timing.lag if Capability.METRICS in caps else 0.0
    if _reads_metrics(adapter, strategy) and lag > 0:
        for field_name in ("bake", "interval"):
            bake = getattr(strategy, field_name, None)
            if isinstance(bake, (int, float)) and bake < lag:
                raise ConfigError(
                    f"endpoint {spec.name!r}: rollout.{field_name} is {bake:g} s, but "
                    f"{adapter.name}'s metrics arrive up to {lag:g} s late: "
                    f"{field_name} at least {lag:g} s",
                    field=f"rollout.{field_name}",
                    hint=f"a shorter {field_name} would end before its requests were counted; or add "
                    "rollout.gate.probe: probes are judged on their own answers, without the lag",
                )


def _check_mirror_only(adapter: Adapter, spec: EndpointSpec, strategy: Shadow) -> None:
    """What a shadow phase on a ``mirror-only`` target cannot do, refused at plan time.

    The target discards the shadow's answers: it is judged on its metrics, so agreement asked
    for explicitly cannot be measured, and the phase must outlast the metrics' lag.

    Raises:
        ConfigError: naming the field.
    """
    asked = sorted({"min_agreement", "max_relative_error"} & strategy.model_fields_set)
    if asked:
        raise ConfigError(
            f"endpoint {spec.name!r}: rollout.{asked[0]}: {adapter.uri.raw} mirrors traffic but discards "
            "the shadow's answers (shadow mode 'mirror-only'), so agreement with the serving version "
            "cannot be measured",
            field=f"rollout.{asked[0]}",
            hint="remove min_agreement and max_relative_error: the shadow is judged on its own errors and "
            "latency (rollout.gate); or shadow on a target that compares answers (local, sagemaker)",
        )
    if Capability.METRICS not in adapter.capabilities:
        raise ConfigError(
            f"endpoint {spec.name!r}: a shadow on {adapter.uri.raw} is judged on its metrics, which the "
            "target cannot read (no METRICS)",
            field="rollout",
        )
    lag = adapter.endpoints.metrics_timing.lag
    if strategy.duration < lag:
        raise ConfigError(
            f"endpoint {spec.name!r}: rollout.duration is {strategy.duration:g} s, but the shadow is "
            f"judged on {adapter.name}'s metrics, which arrive up to {lag:g} s late: "
            f"duration at least {lag:g} s",
            field="rollout.duration",
            hint="a shorter shadow phase would end before its mirrored requests were counted",
        )


def _reads_metrics(adapter: Adapter, strategy: Any) -> bool:
    """Whether mlshift's engine judges this strategy's gate on ``read_metrics``.

    It does on a target with ``METRICS``, except for a gate with a probe on a target whose
    metrics lag: that one is judged on the probes' own answers, which arrive at once.
    """
    if Capability.METRICS not in adapter.capabilities:
        return False
    return strategy.gate.probe is None or adapter.endpoints.metrics_timing.lag <= 0


# ---------------------------------------------------------------------------------------------
# Measuring


class _Prober:
    """Sends the gate's probe payload to the new variants at a fixed rate, in a thread.

    Every fourth request goes to a baseline variant instead, so that the same payload's answers
    can be compared (a payload the old version refuses too is the probe's fault, not the new
    version's).
    """

    def __init__(
        self,
        adapter: Adapter,
        endpoint: str,
        variants: Sequence[str],
        payload: Any,
        rate: float,
        baseline: Sequence[str] = (),
    ) -> None:
        import json

        self._adapter = adapter
        self._endpoint = endpoint
        self._variants = list(variants)
        self._baseline = list(baseline)
        body = payload if isinstance(payload, dict) else {"instances": payload}
        self._body = json.dumps(body).encode()
        self._interval = 1.0 / rate
        self._stop = threading.Event()
        self.samples: list[tuple[float, int, float, str]] = []
        self._thread = threading.Thread(target=self._run, name="mlshift-probe", daemon=True)

    def __enter__(self) -> _Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _next(self, i: int) -> str:
        if self._baseline and i % 4 == 3:
            return self._baseline[(i // 4) % len(self._baseline)]
        return self._variants[i % len(self._variants)]

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            variant = self._next(i)
            i += 1
            start = time.monotonic()
            try:
                inv = self._adapter.endpoints.invoke(self._endpoint, self._body, variant=variant, timeout=10)
                status = inv.status_code
            except MlshiftError:
                status = 599
            self.samples.append((start, status, (time.monotonic() - start) * 1000, variant))
            self._stop.wait(max(0.0, self._interval - (time.monotonic() - start)))

    def group(self, since: float, variants: Sequence[str]) -> _Group:
        picked = [(t, status, ms) for t, status, ms, v in list(self.samples) if v in variants]
        return _Group.of([summarize(picked, since)])


def _metrics_group(adapter: Adapter, endpoint: str, variants: Sequence[str], window: float) -> _Group:
    parts = [adapter.endpoints.read_metrics(endpoint, name, max(window, 0.001)) for name in variants]
    return _Group.of([m for m in parts if m is not None])


def _judge(gate: HealthGate, reading: GateReading, done: bool, where: str) -> str | None:
    """The reason the gate fails, or ``None`` while it holds."""
    enough = reading.requests >= max(gate.min_requests, 1)
    if enough and reading.error_rate > gate.max_error_rate:
        return (
            f"gate failed at {where}: error rate {reading.error_rate:.1%} > {gate.max_error_rate:.1%} "
            f"({reading.errors} of {reading.requests} requests failed)"
        )
    if enough and gate.max_client_error_increase is not None:
        increase = reading.client_error_rate - reading.baseline_client_error_rate
        if increase > gate.max_client_error_increase:
            base = (
                f"{reading.baseline_client_error_rate:.1%} on the baseline"
                if reading.baseline_requests
                else "none measured on the baseline"
            )
            return (
                f"gate failed at {where}: client errors (4xx) {reading.client_error_rate:.1%} vs {base}, "
                f"+{increase * 100:.1f} points > {gate.max_client_error_increase * 100:g} "
                f"({reading.client_errors} of {reading.requests} requests refused)"
            )
    if (
        enough
        and gate.max_p99 is not None
        and reading.p99_ms is not None
        and reading.p99_ms > gate.max_p99 * 1000
    ):
        return (
            f"gate failed at {where}: p99 latency {reading.p99_ms:.0f}ms > {gate.max_p99 * 1000:g}ms "
            f"over {reading.requests} requests"
        )
    if (
        enough
        and gate.max_p99_ratio is not None
        and reading.p99_ms is not None
        and reading.baseline_p99_ms
        and reading.baseline_requests >= max(gate.min_requests, 1)
        and reading.p99_ms > gate.max_p99_ratio * reading.baseline_p99_ms
    ):
        ratio = reading.p99_ms / reading.baseline_p99_ms
        return (
            f"gate failed at {where}: p99 latency {reading.p99_ms:.0f}ms is {ratio:.1f}x the baseline's "
            f"{reading.baseline_p99_ms:.0f}ms > {gate.max_p99_ratio:g}x"
        )
    if done and reading.requests < gate.min_requests:
        covered = (
            f" (the target's metrics covered {reading.window:.0f}s)"
            if reading.window is not None and reading.window > reading.elapsed + 1
            else ""
        )
        return (
            f"gate failed at {where}: only {reading.requests} requests in {reading.elapsed:.0f}s{covered}, "
            f"the gate needs at least {gate.min_requests} to judge"
        )
    return None


# ---------------------------------------------------------------------------------------------
# The engine


@dataclass
class _Context:
    adapter: Adapter
    action: Rollout
    journal: Journal
    emit: Callable[[dict[str, Any]], None]
    checks: Sequence[GateCheck]
    timeout: float
    staged: dict[str, str] = field(default_factory=dict)
    #: The baseline's numbers before the rollout started, for bakes in which it serves nothing.
    before: _Group = field(default_factory=_Group)

    @property
    def endpoint(self) -> str:
        return self.action.endpoint

    def baseline_names(self) -> list[str]:
        """The variants serving before the rollout (they keep their names while it runs)."""
        return [v.name for v in self.action.baseline]

    def live_names(self) -> list[str]:
        """The candidates' names while they run beside the baseline."""
        return [self.action.staging.get(v.name, v.name) for v in self.action.candidates]


def _stage_plan(action: Rollout) -> list[int]:
    final_share = sum(action.final_weights[v.name] for v in action.candidates)
    stages: list[int] = []
    for percent in action.strategy.stages():
        share = min(percent, final_share)
        if not stages or share > stages[-1] or (share == 0 and not stages):
            stages.append(share)
    if not stages or stages[-1] != final_share:
        stages.append(final_share)
    return stages


def _weights_at(ctx: _Context, share: int, current: Sequence[str]) -> dict[str, int]:
    """Every live variant's weight when the candidates carry ``share`` percent in total."""
    action = ctx.action
    live = ctx.live_names()
    final_share = sum(action.final_weights[v.name] for v in action.candidates)
    if share >= final_share:
        weights = {action.staging.get(n, n): w for n, w in action.final_weights.items()}
        for name in action.staging:
            weights[name] = 0  # the in-place variant's weight runs under its temporary name
    else:
        cand = {action.staging.get(v.name, v.name): action.final_weights[v.name] for v in action.candidates}
        weights = spread_weights(share, cand)
        weights.update(spread_weights(100 - share, {v.name: v.weight for v in action.baseline}))
    return {n: weights.get(n, 0) for n in dict.fromkeys([*current, *live])}


def _set_weights(ctx: _Context, weights: Mapping[str, int]) -> EndpointState:
    ctx.journal.step("set weights " + " ".join(f"{n}={w}" for n, w in weights.items()))
    return ctx.adapter.endpoints.set_weights(ctx.endpoint, weights).wait(ctx.timeout)


def poll_interval(bake: float, grain: float) -> float:
    """Seconds between gate readings in a bake of ``bake`` seconds, on metrics of ``grain`` seconds.

    One reading per datapoint (a reading cannot change faster), but at least 20 per bake, so
    that a short bake (or a probe gate, at a 1-second grain) still trips early.
    """
    return min(grain, max(0.05, bake / 20))


def _measured(reading: GateReading) -> dict[str, Any]:
    """What a progress event says about a reading (requests, errors, 4xx, p99 vs the baseline)."""
    return {
        "requests": reading.requests,
        "errors": reading.errors,
        "error_rate": round(reading.error_rate, 4),
        "client_errors": reading.client_errors,
        "client_error_rate": round(reading.client_error_rate, 4),
        "baseline_client_error_rate": round(reading.baseline_client_error_rate, 4),
        "p99_ms": None if reading.p99_ms is None else round(reading.p99_ms, 2),
        "baseline_p99_ms": None if reading.baseline_p99_ms is None else round(reading.baseline_p99_ms, 2),
    }


def _bake(ctx: _Context, share: int, seconds: float) -> GateReading | None:
    gate = _traffic_strategy(ctx.action).gate
    where = f"{share}% traffic" if share else "pre-traffic probes"
    names = ctx.live_names()
    use_metrics = _reads_metrics(ctx.adapter, _traffic_strategy(ctx.action))
    start_wall = time.monotonic()
    grain = ctx.adapter.endpoints.metrics_timing.resolution if use_metrics else 1.0
    poll = poll_interval(seconds, grain)
    baseline = ctx.baseline_names()
    prober = (
        _Prober(ctx.adapter, ctx.endpoint, names, gate.probe.payload, gate.probe.rate, baseline)
        if gate.probe
        else None
    )
    reading: GateReading | None = None
    ctx.journal.step(f"bake {seconds:g}s at {share}%")
    first = True
    try:
        if prober is not None:
            prober.__enter__()
        while True:
            elapsed = time.monotonic() - start_wall
            # The first reading is never the last: the gate checks see every bake at least once
            # before it is judged over, even when this thread got to it only after the bake's
            # time (a short bake on a loaded machine).
            done = elapsed >= seconds and not first
            first = False
            if use_metrics:
                new = _metrics_group(ctx.adapter, ctx.endpoint, names, elapsed)
                old = _metrics_group(ctx.adapter, ctx.endpoint, baseline, elapsed)
            elif prober is not None:
                new, old = prober.group(start_wall, names), prober.group(start_wall, baseline)
            else:
                new = old = _Group()
            reading = new.reading(share, elapsed, old if old.requests else ctx.before)
            ctx.emit(
                {
                    "stage_percent": share,
                    "elapsed_s": round(elapsed, 2),
                    "bake_s": seconds,
                    **_measured(reading),
                }
            )
            reason = _judge(gate, reading, done, where)
            if reason is None:
                state = ctx.adapter.endpoints.observe(ctx.endpoint)
                broken = [
                    v for v in (state.variants if state else ()) if v.name in names and v.status == "failed"
                ]
                if broken:
                    detail = broken[0].detail or "not running"
                    reason = f"variant {broken[0].name} failed during the bake: {detail}"
            for check in ctx.checks if reason is None else ():
                verdict = check(reading)
                if verdict is False or isinstance(verdict, str):
                    label = getattr(check, "__name__", "check")
                    reason = f"check {label} failed at {where}" + (
                        f": {verdict}" if isinstance(verdict, str) else ""
                    )
                    break
            if reason is not None:
                raise _GateFailed(reason, reading)
            if done:
                return reading
            time.sleep(max(0.01, min(poll, seconds - (time.monotonic() - start_wall))))
    finally:
        if prober is not None:
            prober.__exit__()


def _traffic_strategy(action: Rollout) -> Any:
    """The strategy that moves traffic: a shadow rollout's ``then``, else the rollout's own."""
    strategy = action.strategy
    return strategy.then if isinstance(strategy, Shadow) else strategy


def _shadow_reading(m: ShadowMetrics | None, elapsed: float) -> GateReading:
    if m is None:
        return GateReading(stage=0, elapsed=elapsed, requests=0, errors=0)
    return GateReading(
        stage=0,
        elapsed=elapsed,
        requests=m.requests,
        errors=m.errors,
        client_errors=m.client_errors,
        p99_ms=m.p99_ms,
        # Paired: the baseline answered the very same requests; mirror-only: its own count.
        baseline_requests=m.requests if m.baseline_requests is None else m.baseline_requests,
        baseline_client_errors=m.baseline_client_errors,
        baseline_p99_ms=m.baseline_p99_ms,
        rows=m.rows,
        agreed_rows=m.agreed_rows,
    )


def _shadow_phase(ctx: _Context, strategy: Shadow) -> GateReading:
    """Mirror live traffic to the candidate for ``strategy.duration`` and judge its answers.

    Raises:
        _GateFailed: errors, latency or client errors beyond the gate, agreement below
            ``min_agreement``, or too few mirrored requests to judge.
    """
    endpoints = ctx.adapter.endpoints
    name = ctx.live_names()[0]
    gate = strategy.gate
    where = "the shadow phase"
    ctx.journal.step(f"mirror {strategy.percent}% of traffic to {name}")
    endpoints.set_shadow(ctx.endpoint, name, strategy.percent, tolerance=strategy.max_relative_error).wait(
        ctx.timeout
    )
    ctx.emit({"shadow_percent": strategy.percent, "shadow": name})
    # Mirror-only: judged on metrics, which change once per datapoint and cannot be compared.
    paired = endpoints.shadow_mode != "mirror-only"
    start = time.monotonic()
    poll = (
        min(1.0, max(0.05, strategy.duration / 20))
        if paired
        else poll_interval(strategy.duration, endpoints.metrics_timing.resolution)
    )
    first = True
    try:
        while True:
            elapsed = time.monotonic() - start
            done = elapsed >= strategy.duration and not first  # as in a bake: checks see it once
            first = False
            reading = _shadow_reading(endpoints.read_shadow(ctx.endpoint, name, max(elapsed, 0.001)), elapsed)
            ctx.emit(
                {
                    "phase": "shadow",
                    "stage_percent": 0,
                    "shadow_percent": strategy.percent,
                    "elapsed_s": round(elapsed, 2),
                    "bake_s": strategy.duration,
                    **_measured(reading),
                    "rows": reading.rows,
                    "agreement": None if reading.agreement is None else round(reading.agreement, 4),
                }
            )
            reason = _judge(gate, reading, done, where)
            # Agreement is judged over the whole phase: early windows of a good version can
            # hold a disagreement or two that the full sample would absorb.
            if paired and reason is None and done and reading.requests >= gate.min_requests:
                agreement = reading.agreement
                if agreement is None:
                    reason = f"gate failed in {where}: no answer of {name} could be compared"
                elif agreement < strategy.min_agreement:
                    reason = (
                        f"gate failed in {where}: agreement {agreement:.1%} < {strategy.min_agreement:.1%} "
                        f"({reading.agreed_rows} of {reading.rows} rows agreed with the serving version)"
                    )
            for check in ctx.checks if reason is None else ():
                verdict = check(reading)
                if verdict is False or isinstance(verdict, str):
                    label = getattr(check, "__name__", "check")
                    reason = f"check {label} failed in {where}" + (
                        f": {verdict}" if isinstance(verdict, str) else ""
                    )
            if reason is not None:
                raise _GateFailed(reason, reading)
            if done:
                return reading
            time.sleep(poll)
    finally:
        ctx.journal.step(f"stop mirroring to {name}")
        try:
            endpoints.set_shadow(ctx.endpoint, name, 0).wait(ctx.timeout)
        except MlshiftError:
            pass  # removing the variant (rollback) stops its mirror as well


def _resolved(variant: PlannedVariant, registered: Mapping[str, ModelVersion], name: str) -> ResolvedVariant:
    return variant.resolved(registered, name=name, weight=0)


def _rollback(adapter: Adapter, journal: Journal, baseline: Sequence[VariantState], timeout: float) -> None:
    """Put traffic back on the baseline and remove what the rollout added."""
    endpoint = journal.record.endpoint
    state = adapter.endpoints.observe(endpoint)
    if state is None:
        return
    live = {v.name for v in state.variants}
    base = {v.name: v.weight for v in baseline if v.name in live}
    if sum(base.values()) != 100:
        raise ProviderError(
            f"cannot roll back {endpoint!r}: baseline variants "
            f"{sorted({v.name for v in baseline} - live)} are gone",
            hint="set traffic by hand with `mlshift endpoints traffic`",
        )
    weights = {n: base.get(n, 0) for n in live}
    if weights != state.weights:
        journal.step("restore weights " + " ".join(f"{n}={w}" for n, w in weights.items()))
        adapter.endpoints.set_weights(endpoint, weights).wait(timeout)
    for name in journal.record.added:
        if name in live and name not in base:
            journal.step(f"remove variant {name}")
            adapter.endpoints.remove_variant(endpoint, name).wait(timeout)


def run_rollout(
    adapter: Adapter,
    action: Rollout,
    registered: Mapping[str, ModelVersion],
    *,
    emit: Callable[[dict[str, Any]], None],
    checks: Sequence[GateCheck] = (),
    timeout: float = 1800.0,
) -> EndpointState:
    """Carry out a :class:`Rollout`, rolling back on a failed gate, an error or Ctrl-C.

    Raises:
        RolloutFailed: after rolling back, with the reason and the gate's numbers.
    """
    target = tuple(
        VariantState(
            name=n,
            model=next(
                (v.model_label for v in action.candidates if v.name == n),
                next((b.model for b in action.baseline if b.name == n), "?"),
            ),
            weight=w,
            compute=next(
                (v.compute for v in action.candidates if v.name == n),
                next((b.compute for b in action.baseline if b.name == n), None),
            )
            or action.baseline[0].compute,
            # Kept so that finishing an interrupted promotion restarts nothing without it.
            batching=next(
                (v.batching for v in action.candidates if v.name == n),
                next((b.batching for b in action.baseline if b.name == n), None),
            ),
        )
        for n, w in action.final_weights.items()
    )
    journal = Journal(
        adapter,
        RolloutRecord(
            id=new_record_id(),
            endpoint=action.endpoint,
            strategy=action.strategy.strategy,
            settings=action.strategy.model_dump(mode="json"),
            started_at=datetime.now(timezone.utc),
            baseline=action.baseline,
            target=target,
            owner=owner_id(),
        ),
    )
    ctx = _Context(adapter, action, journal, emit, checks, timeout)
    endpoints = adapter.endpoints
    gate = action.strategy.gate

    native = action.native if action.native is not None else Capability.NATIVE_ROLLOUT in adapter.capabilities
    if native and checks:
        # A target that runs the rollout itself never calls mlshift's checks: rather than ignore
        # them, run it here (a plan made with the checks known says so already).
        journal.step("checks= were given, which only mlshift's engine calls: run the rollout here")
        emit({"engine_reason": "checks= were given, which only mlshift's engine calls"})
        native = False
    if native:
        journal.step("hand the rollout to the target")
        request = NativeRollout(
            endpoint=action.endpoint,
            strategy=action.strategy.model_dump(mode="json"),
            candidates=tuple(_resolved(v, registered, v.name) for v in action.candidates),
            final_weights=action.final_weights,
            remove=action.remove,
        )
        try:
            state = endpoints.native_rollout(action.endpoint, request).wait(timeout)
        except RolloutFailed as exc:
            journal.phase("rolled_back", reason=exc.reason or str(exc), measurements=exc.measurements)
            raise
        except (MlshiftError, KeyboardInterrupt) as exc:
            # Refused (a hand-made plan the target cannot run) or failed: never leave the record
            # open, or the next plan would try to recover a rollout that never started.
            journal.phase("failed", reason=f"{type(exc).__name__}: {exc}")
            raise
        journal.phase("succeeded")
        return state

    reading: GateReading | None = None
    if Capability.METRICS in adapter.capabilities and action.strategy.strategy != "all-at-once":
        # What the baseline answered before anything changed: the comparison to use in a bake
        # where it serves nothing (blue/green after the switch).
        window = max(60.0, max((action.strategy.bake_for(s) for s in _stage_plan(action)), default=0.0))
        try:
            ctx.before = _metrics_group(adapter, action.endpoint, ctx.baseline_names(), window)
        except MlshiftError:
            ctx.before = _Group()
    try:
        for v in action.candidates:
            name = action.staging.get(v.name, v.name)
            journal.step(f"add variant {name} ({v.model_label}) at 0%")
            journal.added(name)
            endpoints.add_variant(action.endpoint, _resolved(v, registered, name)).wait(timeout)
        if isinstance(action.strategy, Shadow):
            reading = _shadow_phase(ctx, action.strategy)
        for share in _stage_plan(action):
            current = [
                v.name for v in (endpoints.observe(action.endpoint) or EndpointState(name="")).variants
            ]
            weights = _weights_at(ctx, share, current)
            _set_weights(ctx, weights)
            emit({"stage_percent": share, "weights": weights})
            bake = _traffic_strategy(action).bake_for(share)
            if bake > 0:
                reading = _bake(ctx, share, bake) or reading
    except (_GateFailed, MlshiftError, KeyboardInterrupt) as exc:
        if isinstance(exc, _GateFailed):
            reason, reading = exc.reason, exc.reading or reading
        elif isinstance(exc, KeyboardInterrupt):
            reason = "interrupted"
        else:
            reason = f"{type(exc).__name__}: {exc}"
        shadow = action.strategy if isinstance(action.strategy, Shadow) else None
        phase_gate = gate if shadow is not None and (reading is None or reading.stage == 0) else None
        thresholds = gate_thresholds(phase_gate or _traffic_strategy(action).gate, shadow)
        measurements = {**(reading.as_measurements() if reading else {}), **thresholds}
        emit({"rollback": reason})
        journal.step(f"roll back: {reason}")
        _rollback(adapter, journal, action.baseline, timeout)
        journal.phase("rolled_back", reason=reason, measurements=measurements)
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise RolloutFailed(
            f"rollout of {action.endpoint!r} rolled back: {reason}",
            reason=reason,
            measurements=measurements,
            hint="the previous version serves all traffic again; "
            f"see `mlshift endpoints history {action.endpoint}`",
        ) from (None if isinstance(exc, _GateFailed) else exc)

    journal.phase("promoting", measurements=reading.as_measurements() if reading else {})
    state = _promote(ctx, registered)
    journal.phase("succeeded")
    return state


def _promote(ctx: _Context, registered: Mapping[str, ModelVersion]) -> EndpointState:
    """After the gate: move in-place variants back to their names and remove the old ones.

    A staged variant's final name still holds the old version, at 0%. Where the target swaps a
    model in place (``IN_PLACE_UPDATE``) that variant takes the new version; elsewhere it is
    removed and added again with it. Either way the staged copy carries the traffic until the
    weights move back, then goes.
    """
    action, journal, endpoints = ctx.action, ctx.journal, ctx.adapter.endpoints
    in_place = Capability.IN_PLACE_UPDATE in ctx.adapter.capabilities
    for v in action.candidates:
        staged = action.staging.get(v.name)
        if staged is None:
            continue
        if in_place:
            journal.step(f"variant {v.name}: model -> {v.model_label}")
            endpoints.replace_variant(action.endpoint, _resolved(v, registered, v.name)).wait(ctx.timeout)
        else:
            journal.step(f"remove variant {v.name}")
            endpoints.remove_variant(action.endpoint, v.name).wait(ctx.timeout)
            journal.step(f"add variant {v.name} ({v.model_label}) at 0%")
            endpoints.add_variant(action.endpoint, _resolved(v, registered, v.name)).wait(ctx.timeout)
        state = endpoints.observe(action.endpoint)
        assert state is not None
        weights = dict(state.weights)
        weights[v.name], weights[staged] = weights[staged], 0
        _set_weights(ctx, weights)
        journal.step(f"remove variant {staged}")
        endpoints.remove_variant(action.endpoint, staged).wait(ctx.timeout)
    for name in action.remove:
        journal.step(f"remove variant {name}")
        endpoints.remove_variant(action.endpoint, name).wait(ctx.timeout)
    state = endpoints.observe(action.endpoint)
    assert state is not None
    return state


def recover_rollout(adapter: Adapter, action: RecoverRollout, *, timeout: float = 1800.0) -> None:
    """Roll back (or finish) a rollout that a dead process left open."""
    record = next(
        (r for r in adapter.endpoints.rollouts(action.endpoint, limit=5) if r.id == action.record_id), None
    )
    if record is None or not record.is_open:
        return
    journal = Journal(adapter, record)
    if action.mode == "close":
        journal.phase(
            "interrupted", reason="the process applying it stopped; a later apply converged from live state"
        )
        return
    if action.mode == "rollback":
        journal.step("recover: roll back to the baseline")
        _rollback(adapter, journal, record.baseline, timeout)
        journal.phase(
            "rolled_back", reason="interrupted before its gate passed; rolled back by a later apply"
        )
        return
    # "complete": the gate had passed; converge on the target, all at once.
    from mlshift.plan._apply import converge_to

    journal.step("recover: finish the promotion")
    converge_to(adapter, action.endpoint, record.target, timeout=timeout)
    journal.phase("succeeded", reason="finished by a later apply after an interruption")
