"""Quota windows: fixed windows in UTC, named by kind and identified by their start.

A fixed window is exact under concurrency (one counter per window, compared and charged atomically) and
needs no per-request history, unlike a sliding log. The price is the classic edge burst: a client can
spend a minute's quota at 12:00:59 and again at 12:01:00. Plans that care pair the minute with a day
window, which bounds the damage.

* ``minute``: ``[⌊t/60⌋·60, +60)``.
* ``day``: the UTC calendar day.
* ``month``: the UTC calendar month (28 to 31 days).

The Redis script (``redis_limiter.py``) computes the same bounds in Lua from Redis ``TIME``; the test suite
checks both implementations agree.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Final, Literal

WindowKind = Literal["minute", "day", "month"]

WINDOW_KINDS: Final[tuple[WindowKind, ...]] = ("minute", "day", "month")

NOMINAL_SECONDS: Final[dict[WindowKind, int]] = {"minute": 60, "day": 86_400, "month": 30 * 86_400}
"""Window lengths advertised in ``RateLimit-Policy`` (``w``); a calendar month is given as 30 days."""

_UTC = dt.UTC


def window_bounds(kind: WindowKind, now: float) -> tuple[int, int]:
    """``(start, end)`` in epoch seconds of the window of ``kind`` containing ``now`` (start ≤ now < end)."""
    second = math.floor(now)
    if kind == "minute":
        start = second - second % 60
        return start, start + 60
    if kind == "day":
        start = second - second % 86_400
        return start, start + 86_400
    if kind == "month":
        day = dt.datetime.fromtimestamp(second, _UTC).date()
        first = day.replace(day=1)
        following = (
            first.replace(year=first.year + 1, month=1) if first.month == 12 else first.replace(month=first.month + 1)
        )
        return _epoch(first), _epoch(following)
    raise ValueError(f"unknown window kind {kind!r}")


def seconds_until_end(end: int, now: float) -> int:
    """Whole seconds until ``end``, rounded up: what ``t`` and ``Retry-After`` carry (at least 1)."""
    return max(1, math.ceil(end - now))


def _epoch(day: dt.date) -> int:
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=_UTC).timestamp())
