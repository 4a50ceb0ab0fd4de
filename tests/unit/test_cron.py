"""PingSource schedules: when does the next tick happen?"""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from chamberlain.runtime.local.cron import CronError, parse_cron

UTC = timezone.utc


def _at(*args: int, tz: ZoneInfo | timezone = UTC) -> datetime:
    return datetime(*args, tzinfo=tz)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("* * * * *", _at(2026, 3, 1, 10, 0, 30), _at(2026, 3, 1, 10, 1)),
        ("* * * * *", _at(2026, 3, 1, 10, 1), _at(2026, 3, 1, 10, 2)),  # strictly after
        ("*/5 * * * *", _at(2026, 3, 1, 10, 3), _at(2026, 3, 1, 10, 5)),
        ("*/5 * * * *", _at(2026, 3, 1, 23, 57), _at(2026, 3, 2, 0, 0)),
        ("0 * * * *", _at(2026, 3, 1, 10, 0), _at(2026, 3, 1, 11, 0)),
        ("@hourly", _at(2026, 3, 1, 10, 59), _at(2026, 3, 1, 11, 0)),
        ("@daily", _at(2026, 12, 31, 12, 0), _at(2027, 1, 1, 0, 0)),
        ("15,45 9-17/4 * * *", _at(2026, 3, 1, 13, 46), _at(2026, 3, 1, 17, 15)),
        ("0 0 29 2 *", _at(2026, 3, 1), _at(2028, 2, 29)),  # next leap day
        ("0 12 * * 1-5", _at(2026, 3, 6, 12, 0), _at(2026, 3, 9, 12, 0)),  # Fri -> Mon
        ("0 0 * * 7", _at(2026, 3, 2), _at(2026, 3, 8)),  # 7 is Sunday too
        # both day fields restricted: either may match (1st of the month OR a Monday)
        ("0 0 1 * 1", _at(2026, 3, 2, 1, 0), _at(2026, 3, 9)),
        ("0 0 1 * 1", _at(2026, 3, 30, 1, 0), _at(2026, 4, 1)),
        ("30 2 * * *", _at(2026, 1, 1), _at(2026, 1, 1, 2, 30)),
    ],
)
def test_next_after(expression: str, after: datetime, expected: datetime) -> None:
    assert parse_cron(expression).next_after(after) == expected


def test_timezone_shifts_the_wall_clock() -> None:
    paris = ZoneInfo("Europe/Paris")
    schedule = parse_cron("0 9 * * *", "Europe/Paris")
    assert schedule.next_after(_at(2026, 1, 15, 9, 0)) == _at(2026, 1, 16, 9, 0, tz=paris)
    assert schedule.next_after(_at(2026, 1, 15, 7, 0)) == _at(2026, 1, 15, 8, 0)  # 09:00 CET
    assert parse_cron("CRON_TZ=Europe/Paris 0 9 * * *") .next_after(
        _at(2026, 1, 15, 7, 0)
    ) == _at(2026, 1, 15, 8, 0)  # fmt: skip


def test_a_time_skipped_by_daylight_saving_never_fires() -> None:
    # 29 March 2026, Paris: 02:00 jumps to 03:00, so "30 2 * * *" skips that day
    schedule = parse_cron("30 2 * * *", "Europe/Paris")
    fired = schedule.next_after(_at(2026, 3, 28, 12, 0))
    assert fired.date().isoformat() == "2026-03-30"
    assert (fired.hour, fired.minute) == (2, 30)


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_cron("* * * * *").next_after(datetime(2026, 1, 1))


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("* * * *", "5 fields"),
        ("60 * * * *", "minute"),
        ("* 24 * * *", "hour"),
        ("* * 0 * *", "day-of-month"),
        ("* * * 13 *", "month"),
        ("* * * * 8", "day-of-week"),
        ("*/0 * * * *", "step"),
        ("5-1 * * * *", "minute"),
        ("a * * * *", "not a number"),
        ("0 0 * JAN *", "not a number"),
    ],
)
def test_invalid_expressions_name_the_field(expression: str, message: str) -> None:
    with pytest.raises(CronError, match=message):
        parse_cron(expression)


def test_unknown_time_zone() -> None:
    with pytest.raises(CronError, match="unknown time zone"):
        parse_cron("* * * * *", "Nowhere/Special")


def test_a_schedule_that_can_never_fire_says_so() -> None:
    with pytest.raises(CronError, match="never fires"):
        parse_cron("0 0 31 2 *").next_after(_at(2026, 1, 1))
