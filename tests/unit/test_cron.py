"""Cron expressions of the retraining schedule: crontab's meaning, in UTC, seconds optional."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest

from pipelines.schedule import next_fire_times, parse_cron

# A Thursday.
T0 = datetime(2026, 1, 1, 12, 0, 30, tzinfo=UTC)


def fires(expr: str, n: int = 3) -> list[str]:
    return [t.strftime("%a %Y-%m-%d %H:%M:%S") for t in next_fire_times(expr, n, after=T0)]


def test_five_fields_are_minute_hour_day_month_weekday_in_utc() -> None:
    assert fires("0 3 * * *") == [
        "Fri 2026-01-02 03:00:00",
        "Sat 2026-01-03 03:00:00",
        "Sun 2026-01-04 03:00:00",
    ]
    assert all(
        t.utcoffset() is not None and not t.utcoffset() for t in next_fire_times("0 3 * * *")
    )


def test_six_fields_put_seconds_first() -> None:
    assert fires("*/2 * * * * *") == [
        "Thu 2026-01-01 12:00:30",
        "Thu 2026-01-01 12:00:32",
        "Thu 2026-01-01 12:00:34",
    ]
    assert fires("15 30 4 * * *", 2) == ["Fri 2026-01-02 04:30:15", "Sat 2026-01-03 04:30:15"]


@pytest.mark.parametrize("weekday", ["0", "7", "sun", "SUN"])
def test_weekday_zero_and_seven_are_sunday_as_in_crontab(weekday: str) -> None:
    # APScheduler 3 by itself would read 0 as Monday.
    assert fires(f"0 3 * * {weekday}", 2) == ["Sun 2026-01-04 03:00:00", "Sun 2026-01-11 03:00:00"]


@pytest.mark.parametrize(
    ("weekday", "days"),
    [
        ("1-5", ["Fri", "Mon", "Tue", "Wed", "Thu", "Fri"]),
        ("5-7", ["Fri", "Sat", "Sun", "Fri", "Sat", "Sun"]),
        ("fri-sun", ["Fri", "Sat", "Sun", "Fri", "Sat", "Sun"]),
        ("*/2", ["Sat", "Sun", "Tue", "Thu", "Sat", "Sun"]),
        ("1,3", ["Mon", "Wed", "Mon", "Wed", "Mon", "Wed"]),
        ("mon-wed/2", ["Mon", "Wed", "Mon", "Wed", "Mon", "Wed"]),
    ],
)
def test_weekday_ranges_lists_and_steps(weekday: str, days: list[str]) -> None:
    assert [f[:3] for f in fires(f"0 3 * * {weekday}", 6)] == days


def test_next_fire_times_are_increasing_and_after_the_start() -> None:
    times = next_fire_times("*/15 * * * *", 5, after=T0)
    assert times[0] > T0
    assert all(b - a == times[1] - times[0] for a, b in itertools.pairwise(times))
    assert (times[1] - times[0]).total_seconds() == 900


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        ("0 3 * *", "4 fields"),
        ("0 0 3 * * * *", "7 fields"),
        ("", "0 fields"),
        ("61 * * * *", "59"),
        ("0 25 * * *", "23"),
        ("x * * * *", "minute"),
        ("0 3 * * 8", "0-7"),
        ("0 3 * * fri-mon", "empty range"),
        ("0 3 * * funday", "day name"),
        ("0 3 1 * mon", "both day of month and weekday"),
    ],
)
def test_invalid_expression_names_itself_and_the_problem(expr: str, problem: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_cron(expr)
    assert repr(expr) in str(err.value)
    assert problem in str(err.value)
