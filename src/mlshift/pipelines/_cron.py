"""Cron schedules: five fields (``minute hour day-of-month month day-of-week``) and ``@daily`` & co.

The syntax is Vixie cron's, the one every cloud scheduler accepts in some form: ``*``, lists
(``1,15``), ranges (``1-5``), steps (``*/10``, ``0-30/5``), month and weekday names
(``jan``, ``mon-fri``), and ``7`` for Sunday. When both day fields are restricted a day matches
if *either* does, as in cron.

Standard library only (the step worker imports the DSL, which validates schedules).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone, tzinfo

from mlshift.errors import ConfigError

__all__ = ["CronSchedule", "parse_cron"]

_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = {
    m: i + 1
    for i, m in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
    )
}
_DAYS = {d: i for i, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),
)
#: How far to look for the next or previous tick: ``0 0 29 2 *`` fires once in four years, and
#: ``0 0 30 2 *`` never does (it is refused when parsed).
_HORIZON_DAYS = 366 * 8


class CronSchedule:
    """A parsed cron expression that can find its ticks.

    Attributes:
        expression: The text it was parsed from.
        timezone: The zone its fields are read in.
    """

    def __init__(
        self,
        expression: str,
        fields: tuple[frozenset[int], ...],
        restricted: tuple[bool, bool],
        zone: tzinfo,
    ) -> None:
        self.expression = expression
        self.timezone = zone
        self._minutes, self._hours, self._days, self._months, self._weekdays = fields
        self._dom_restricted, self._dow_restricted = restricted
        self._sorted_minutes = sorted(self._minutes)
        self._sorted_hours = sorted(self._hours)

    def __repr__(self) -> str:
        return f"CronSchedule({self.expression!r})"

    def _day_matches(self, day: datetime) -> bool:
        if day.month not in self._months:
            return False
        dom = day.day in self._days
        dow = (day.isoweekday() % 7) in self._weekdays
        if self._dom_restricted and self._dow_restricted:
            return dom or dow
        return dom and dow

    def next_after(self, moment: datetime) -> datetime:
        """The first tick strictly after ``moment`` (an aware datetime), in ``moment``'s zone."""
        local = moment.astimezone(self.timezone).replace(second=0, microsecond=0) + timedelta(minutes=1)
        day = local.replace(hour=0, minute=0)
        for _ in range(_HORIZON_DAYS):
            if self._day_matches(day):
                for hour in self._sorted_hours:
                    for minute in self._sorted_minutes:
                        tick = day.replace(hour=hour, minute=minute)
                        if tick >= local:
                            return tick.astimezone(moment.tzinfo)
            day = (day + timedelta(days=1)).replace(hour=0, minute=0)
        raise ConfigError(f"schedule {self.expression!r} has no tick in the next eight years")

    def latest_at_or_before(self, moment: datetime) -> datetime:
        """The last tick at or before ``moment`` (an aware datetime), in ``moment``'s zone."""
        local = moment.astimezone(self.timezone).replace(second=0, microsecond=0)
        day = local.replace(hour=0, minute=0)
        for _ in range(_HORIZON_DAYS):
            if self._day_matches(day):
                for hour in reversed(self._sorted_hours):
                    for minute in reversed(self._sorted_minutes):
                        tick = day.replace(hour=hour, minute=minute)
                        if tick <= local:
                            return tick.astimezone(moment.tzinfo)
            day = day - timedelta(days=1)
        raise ConfigError(f"schedule {self.expression!r} has no tick in the last eight years")


def _parse_field(text: str, name: str, low: int, high: int, names: dict[str, int], expr: str) -> set[int]:
    def number(token: str) -> int:
        value = names.get(token.lower()) if names else None
        if value is None:
            if not token.isdigit():
                raise ConfigError(
                    f"schedule {expr!r}: {name} {token!r} is not a number"
                    + (f" or a name ({', '.join(names)})" if names else ""),
                    field="schedule",
                )
            value = int(token)
        if not low <= value <= high:
            raise ConfigError(
                f"schedule {expr!r}: {name} {value} is out of range {low}-{high}", field="schedule"
            )
        return value

    out: set[int] = set()
    for part in text.split(","):
        base, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ConfigError(
                    f"schedule {expr!r}: step {step_text!r} in the {name} field must be a positive number",
                    field="schedule",
                )
            step = int(step_text)
        if base == "*":
            first, last = low, high
        elif "-" in base:
            a, _, b = base.partition("-")
            first, last = number(a), number(b)
            if first > last:
                raise ConfigError(
                    f"schedule {expr!r}: range {base!r} in the {name} field runs backwards", field="schedule"
                )
        elif base:
            first = number(base)
            last = high if slash else first
        else:
            raise ConfigError(f"schedule {expr!r}: empty {name} field item", field="schedule")
        out.update(range(first, last + 1, step))
    return out


def parse_cron(expression: str, tz: str = "UTC") -> CronSchedule:
    """Parse a cron expression read in the IANA time zone ``tz``.

    Raises:
        ConfigError: naming the field (``minute``, ``hour``, ...) and the value that is wrong,
            with ``field="schedule"`` (or ``"timezone"``).
    """
    if not isinstance(expression, str):
        raise ConfigError(
            f"schedule must be a cron string, got {type(expression).__name__}", field="schedule"
        )
    text = " ".join(expression.split())
    text = _ALIASES.get(text.lower(), text)
    parts = text.split(" ")
    if len(parts) != 5:
        raise ConfigError(
            f"schedule {expression!r} has {len(parts)} fields; cron needs 5: "
            "minute hour day-of-month month day-of-week (or @hourly, @daily, @weekly, @monthly, @yearly)",
            field="schedule",
        )
    values = [
        _parse_field(part, name, low, high, names, expression)
        for part, (name, low, high, names) in zip(parts, _FIELDS, strict=True)
    ]
    if 7 in values[4]:  # both 0 and 7 mean Sunday
        values[4].discard(7)
        values[4].add(0)
    if tz in ("UTC", "Etc/UTC", "Z"):
        zone: tzinfo = timezone.utc
    else:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            zone = ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(
                f"unknown time zone {tz!r} for schedule {expression!r}",
                field="timezone",
                hint="use an IANA name such as UTC, Europe/Paris or America/New_York",
            ) from None
    schedule = CronSchedule(
        expression,
        tuple(frozenset(v) for v in values),
        (parts[2] != "*", parts[4] != "*"),
        zone,
    )
    # A day-of-month that never exists in the chosen months (``30 2``) would never fire.
    probe = datetime(2000, 1, 1, tzinfo=timezone.utc)
    try:
        schedule.next_after(probe)
    except ConfigError:
        raise ConfigError(
            f"schedule {expression!r} never fires (no such day in those months)", field="schedule"
        ) from None
    return schedule
