"""A small 5-field cron parser for PingSource schedules (no new dependency).

Fields: minute hour day-of-month month day-of-week, each ``*``, a number, a range ``a-b``, a
step ``*/n`` or ``a-b/n``, or a comma list of those; day-of-week 0-7 with 0 and 7 Sunday. As
in Vixie cron and robfig/cron (which Knative's PingSource uses): when both day fields are
restricted, a day matches if *either* does. The ``@hourly``/``@daily``/``@weekly``/
``@monthly``/``@yearly`` shortcuts and a ``CRON_TZ=``/``TZ=`` prefix are accepted too.
Times are evaluated on the wall clock of the schedule's time zone (UTC by default: the
PingSource adapter runs in a UTC container); a local time skipped by a DST jump never fires.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day-of-month", 1, 31), ("month", 1, 12))
_SHORTCUTS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_SEARCH_DAYS = 366 * 8  # long enough to reach the next 29 February


class CronError(ValueError):
    """A schedule the parser does not accept; the message names the offending field."""


@dataclass(frozen=True)
class CronSchedule:
    expression: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    days_restricted: bool
    weekdays_restricted: bool
    zone: ZoneInfo | timezone

    def next_after(self, moment: datetime) -> datetime:
        """The first scheduled time strictly after ``moment`` (timezone-aware, in the zone)."""
        if moment.tzinfo is None:
            raise ValueError("next_after needs a timezone-aware datetime")
        local = moment.astimezone(self.zone)
        day = local.date()
        for offset in range(_SEARCH_DAYS):
            candidate_day = day + timedelta(days=offset)
            if not self._day_matches(candidate_day):
                continue
            found = self._first_time_on(candidate_day, moment)
            if found is not None:
                return found
        raise CronError(f"schedule {self.expression!r} never fires")

    def _day_matches(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        dom = day.day in self.days
        dow = (day.isoweekday() % 7) in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return dom or dow
        return dom and dow

    def _first_time_on(self, day: date, after: datetime) -> datetime | None:
        for hour in self.hours:
            for minute in self.minutes:
                naive = datetime(day.year, day.month, day.day, hour, minute)
                aware = naive.replace(tzinfo=self.zone)
                if (
                    aware.astimezone(timezone.utc).astimezone(self.zone).replace(tzinfo=None)
                    != naive
                ):
                    continue  # skipped by a DST jump
                if aware > after:
                    return aware
        return None


def parse_cron(expression: str, tz: str | None = None) -> CronSchedule:
    """Parse ``expression``; ``tz`` is an IANA zone name (PingSource ``spec.timezone``)."""
    text = " ".join(expression.split())
    for prefix in ("CRON_TZ=", "TZ="):
        if text.startswith(prefix):
            zone_name, _, text = text[len(prefix) :].partition(" ")
            tz = tz or zone_name
    text = _SHORTCUTS.get(text, text)
    parts = text.split(" ")
    if len(parts) != 5:
        raise CronError(
            f"schedule {expression!r} must have 5 fields "
            "(minute hour day-of-month month day-of-week)"
        )
    values = [
        _parse_field(part, name, low, high)
        for part, (name, low, high) in zip(parts[:4], _FIELDS, strict=True)
    ]
    weekdays = {d % 7 for d in _parse_field(parts[4], "day-of-week", 0, 7)}
    return CronSchedule(
        expression=expression,
        minutes=tuple(sorted(values[0])),
        hours=tuple(sorted(values[1])),
        days=frozenset(values[2]),
        months=frozenset(values[3]),
        weekdays=frozenset(weekdays),
        days_restricted=not parts[2].startswith("*"),
        weekdays_restricted=not parts[4].startswith("*"),
        zone=_zone(tz),
    )


def _zone(name: str | None) -> ZoneInfo | timezone:
    if not name or name.upper() == "UTC":
        return timezone.utc
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise CronError(f"unknown time zone {name!r}") from exc


def _parse_field(text: str, name: str, low: int, high: int) -> set[int]:
    result: set[int] = set()
    for item in text.split(","):
        result.update(_parse_item(item, name, low, high))
    return result


def _parse_item(item: str, name: str, low: int, high: int) -> range:
    base, slash, step_text = item.partition("/")
    step = _number(step_text, name) if slash else 1
    if step < 1:
        raise CronError(f"{name}: step must be at least 1 in {item!r}")
    if base == "*":
        start, end = low, high
    elif "-" in base:
        first, _, last = base.partition("-")
        start, end = _number(first, name), _number(last, name)
    else:
        start = _number(base, name)
        end = high if slash else start
    if not (low <= start <= high and low <= end <= high) or start > end:
        raise CronError(f"{name}: {item!r} is outside {low}-{high}")
    return range(start, end + 1, step)


def _number(text: str, name: str) -> int:
    if not text.isdigit():
        raise CronError(f"{name}: {text!r} is not a number")
    return int(text)
