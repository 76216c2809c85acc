"""Fixed UTC windows: minute, day and calendar month bounds."""

from __future__ import annotations

import datetime as dt

import pytest

from gateway.quota.windows import seconds_until_end, window_bounds


def at(text: str) -> int:
    return int(dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp())


@pytest.mark.parametrize(
    ("kind", "now", "start", "end"),
    [
        ("minute", "2026-03-10T12:34:56", "2026-03-10T12:34:00", "2026-03-10T12:35:00"),
        ("day", "2026-03-10T12:34:56", "2026-03-10T00:00:00", "2026-03-11T00:00:00"),
        ("month", "2026-03-10T12:34:56", "2026-03-01T00:00:00", "2026-04-01T00:00:00"),
        ("month", "2024-02-29T23:59:59", "2024-02-01T00:00:00", "2024-03-01T00:00:00"),
        ("month", "2026-12-31T23:59:59", "2026-12-01T00:00:00", "2027-01-01T00:00:00"),
        ("month", "2027-01-01T00:00:00", "2027-01-01T00:00:00", "2027-02-01T00:00:00"),
    ],
)
def test_a_window_contains_now_and_starts_on_its_utc_boundary(kind: str, now: str, start: str, end: str) -> None:
    assert window_bounds(kind, at(now) + 0.25) == (at(start), at(end))  # type: ignore[arg-type]


def test_seconds_until_the_end_round_up_and_are_never_zero() -> None:
    assert seconds_until_end(60, 0.0) == 60
    assert seconds_until_end(60, 59.001) == 1
    assert seconds_until_end(60, 60.0) == 1
