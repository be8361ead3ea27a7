"""Rollout strategies and health gates: how traffic moves from the old version to the new one."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, PlainSerializer, WithJsonSchema

from mlshift.specs._base import SpecModel

__all__ = [
    "AllAtOnce",
    "BlueGreen",
    "Canary",
    "Duration",
    "HealthGate",
    "Linear",
    "Probe",
    "RolloutStrategy",
    "Shadow",
    "parse_duration",
]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")


def parse_duration(value: Any) -> Any:
    """``"250ms"``, ``"30s"``, ``"5m"``, ``"1h"`` or a number of seconds → seconds (float).

    Raises:
        ValueError: for anything else, with the accepted forms.
    """
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or text such as '250ms', '30s', '5m'")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match[1]) * _UNITS[match[2] or "s"]
    raise ValueError(f"invalid duration {value!r}: write a number of seconds or '250ms', '30s', '5m', '1h'")


def _format_duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(_format_duration, return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": r"^\d+(\.\d+)?(ms|s|m|h)?$"},
            ],
            "description": "seconds, or text such as '250ms', '30s', '5m'",
        }
    ),
]


class Probe(SpecModel):
    """Synthetic requests sent to the new variant directly while it bakes.

    Probes keep a gate meaningful when live traffic is thin, and let blue/green check the new
    fleet before any live request reaches it. They need a target with ``TARGETED_INVOKE``.

    Attributes:
        payload: A request body the model accepts (``{"instances": [[...]]}`` or rows).
        rate: Requests per second.
    """

    payload: dict[str, Any] | list[Any]
    rate: float = Field(default=5.0, gt=0, le=200)


class HealthGate(SpecModel):
    """When a new version counts as healthy, judged over each bake window.

    Besides absolute limits, the gate judges the new version against the baseline (the version
    serving before), over the same window: a version that refuses requests its predecessor
    answered (HTTP 4xx, e.g. a changed input schema) fails even though it never answers 5xx.

    Attributes:
        max_error_rate: Highest share of 5xx answers (0.01 = 1%).
        max_client_error_increase: Highest rise of the share of 4xx answers over the
            baseline's, in absolute terms (0.01 = 1 percentage point); ``None`` turns it off.
        max_p99: Highest 99th-percentile latency, when set.
        max_p99_ratio: Highest p99 latency as a multiple of the baseline's (2 = twice as slow),
            when set.
        min_requests: Fewest requests the judgement may rest on; fewer fails the gate (an
            unobserved version is not a healthy one).
        probe: Synthetic requests to the new variant during the bake.
    """

    max_error_rate: float = Field(default=0.01, ge=0, le=1)
    max_client_error_increase: float | None = Field(default=0.01, ge=0, le=1)
    max_p99: Duration | None = Field(default=None, gt=0)
    max_p99_ratio: float | None = Field(default=None, ge=1)
    min_requests: int = Field(default=20, ge=0)
    probe: Probe | None = None


class _Strategy(SpecModel):
    gate: HealthGate = Field(default_factory=HealthGate)

    def stages(self) -> list[int]:
        """The new version's share of traffic at each step, ending at 100."""
        raise NotImplementedError

    def bake_for(self, stage: int) -> float:
        """Seconds to watch the gate after moving to ``stage`` percent."""
        raise NotImplementedError


class AllAtOnce(_Strategy):
    """Move all traffic at once; no bake, no gate (the default)."""

    strategy: Literal["all-at-once"] = "all-at-once"

    def stages(self) -> list[int]:
        return [100]

    def bake_for(self, stage: int) -> float:
        return 0.0


class Canary(_Strategy):
    """Send ``percent`` of traffic to the new version, bake, then move the rest.

    Attributes:
        percent: The canary's share during the bake.
        bake: How long to watch the canary before promoting it.
    """

    strategy: Literal["canary"] = "canary"
    percent: int = Field(default=10, ge=1, le=99)
    bake: Duration = Field(default=300.0, gt=0)

    def stages(self) -> list[int]:
        return [self.percent, 100]

    def bake_for(self, stage: int) -> float:
        return self.bake if stage < 100 else 0.0


class Linear(_Strategy):
    """Move traffic in equal steps, baking after each.

    Attributes:
        step_percent: How much traffic each step moves.
        interval: How long to watch after each step.
    """

    strategy: Literal["linear"] = "linear"
    step_percent: int = Field(default=20, ge=1, le=99)
    interval: Duration = Field(default=60.0, gt=0)

    def stages(self) -> list[int]:
        steps = list(range(self.step_percent, 100, self.step_percent))
        return [*steps, 100]

    def bake_for(self, stage: int) -> float:
        return self.interval if stage < 100 else 0.0


class BlueGreen(_Strategy):
    """Bring up the new fleet beside the old, switch all traffic, bake, then retire the old.

    The old fleet keeps running through the bake, so a failed gate switches back at once.
    With a probe, the new fleet is checked before any live request reaches it.

    Attributes:
        bake: How long to watch the new fleet after the switch.
    """

    strategy: Literal["blue-green"] = "blue-green"
    bake: Duration = Field(default=300.0, gt=0)

    def stages(self) -> list[int]:
        return [0, 100] if self.gate.probe is not None else [100]

    def bake_for(self, stage: int) -> float:
        return self.bake


def _strategy_name(value: Any) -> Any:
    return {"strategy": value} if isinstance(value, str) else value


class Shadow(_Strategy):
    """Mirror a share of live traffic to the new version first; promote it only if it agrees.

    The new version gets a copy of ``percent`` of the requests, sent after the serving version
    has answered; its answers are compared with the serving version's on the same requests and
    never returned to callers. After ``duration``, the new version is promoted the way ``then``
    says — or removed, when it failed the gate: errors, latency, client errors beside the serving
    version's, or agreement below ``min_agreement``. Needs a target with ``SHADOW_TRAFFIC``.

    A target that discards mirrored answers (shadow mode ``mirror-only``: Azure ML) judges the
    new version on its own errors and latency from its metrics, against the serving version's
    over the same window; it cannot measure agreement, so setting ``min_agreement`` or
    ``max_relative_error`` there is refused at plan time, and ``duration`` must outlast the
    metrics' lag (docs/rollouts.md).

    Attributes:
        percent: Share of live requests copied to the new version (1-100).
        duration: How long to compare before deciding.
        min_agreement: Lowest share of rows on which both versions agree (0.99 = 99%).
        max_relative_error: Numbers (regression outputs, scores) agree when they differ by at
            most this share of the larger one; labels agree when equal.
        then: How traffic moves once the shadow phase passed: ``all-at-once`` (default) or a
            ``Canary`` (``then="canary"`` or ``Canary(percent=10, bake="5m")``).
        gate: Judges the new version's answers to the mirrored requests (``min_requests`` of
            them at least; ``max_client_error_increase`` against the serving version's answers to
            the same requests).
    """

    strategy: Literal["shadow"] = "shadow"
    percent: int = Field(default=10, ge=1, le=100)
    duration: Duration = Field(default=300.0, gt=0)
    min_agreement: float = Field(default=0.99, ge=0, le=1)
    max_relative_error: float = Field(default=0.01, ge=0)
    then: Annotated[AllAtOnce | Canary, BeforeValidator(_strategy_name), Field(discriminator="strategy")] = (
        Field(default_factory=AllAtOnce)
    )

    def stages(self) -> list[int]:
        return self.then.stages()

    def bake_for(self, stage: int) -> float:
        return self.then.bake_for(stage)


RolloutStrategy = Annotated[
    AllAtOnce | Canary | Linear | BlueGreen | Shadow,
    Field(discriminator="strategy"),
]
