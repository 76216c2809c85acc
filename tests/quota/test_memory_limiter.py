"""The in-process limiter: the embedded default's semantics, on a clock the tests move."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from gateway.clock import ManualClock
from gateway.quota import MemoryLimiter, Plan


def at(text: str) -> float:
    """Epoch seconds of an ISO time in UTC."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()


def limiter_at(text: str) -> tuple[MemoryLimiter, ManualClock]:
    clock = ManualClock(start=at(text))
    return MemoryLimiter(clock), clock


PER_MINUTE_3 = Plan("t", per_minute=3, per_day=100)


async def test_admits_up_to_the_minute_limit_then_refuses_until_the_window_ends() -> None:
    limiter, _ = limiter_at("2026-03-10T12:00:20")
    decisions = [await limiter.admit("usr_a", PER_MINUTE_3, 1) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.limits[0].remaining for d in decisions] == [2, 1, 0, 0]
    assert decisions[-1].retry_after == 40
    assert decisions[-1].limits[0].reset_seconds == 40


async def test_a_refused_request_charges_no_window() -> None:
    limiter, _ = limiter_at("2026-03-10T12:00:00")
    for _ in range(3):
        await limiter.admit("usr_a", PER_MINUTE_3, 1)
    refused = await limiter.admit("usr_a", PER_MINUTE_3, 1)
    usage = await limiter.usage("usr_a", PER_MINUTE_3)
    assert not refused.allowed
    assert [(w.window, w.used) for w in usage.windows] == [("minute", 3), ("day", 3)]


async def test_a_cost_that_does_not_fit_is_refused_while_a_smaller_one_still_fits() -> None:
    limiter, _ = limiter_at("2026-03-10T12:00:00")
    plan = Plan("t", per_minute=10)
    assert (await limiter.admit("usr_a", plan, 8)).allowed
    assert not (await limiter.admit("usr_a", plan, 3)).allowed
    assert (await limiter.admit("usr_a", plan, 2)).allowed
    assert (await limiter.usage("usr_a", plan)).windows[0].used == 10


async def test_retry_after_waits_for_every_window_that_refused() -> None:
    limiter, _ = limiter_at("2026-03-10T23:59:30")
    plan = Plan("t", per_minute=2, per_day=2)
    await limiter.admit("usr_a", plan, 2)
    refused = await limiter.admit("usr_a", plan, 1)
    assert refused.retry_after == 30  # both the minute and the day end at midnight, 30 s away
    limiter, _ = limiter_at("2026-03-10T20:00:30")
    await limiter.admit("usr_a", plan, 2)
    assert (await limiter.admit("usr_a", plan, 1)).retry_after == 4 * 3600 - 30


async def test_the_minute_window_rolls_over_at_the_minute_boundary() -> None:
    limiter, clock = limiter_at("2026-03-10T12:00:59")
    for _ in range(3):
        await limiter.admit("usr_a", PER_MINUTE_3, 1)
    assert not (await limiter.admit("usr_a", PER_MINUTE_3, 1)).allowed
    clock.advance(1)
    after = await limiter.admit("usr_a", PER_MINUTE_3, 1)
    assert after.allowed
    assert after.limits[0].remaining == 2
    assert after.limits[1].used == 4  # the day goes on counting


async def test_the_day_window_resets_at_utc_midnight() -> None:
    limiter, clock = limiter_at("2026-03-10T23:59:58")
    plan = Plan("t", per_day=2)
    await limiter.admit("usr_a", plan, 2)
    refused = await limiter.admit("usr_a", plan, 1)
    assert (refused.allowed, refused.retry_after) == (False, 2)
    clock.advance(2)
    assert (await limiter.admit("usr_a", plan, 1)).limits[0].reset_seconds == 86_400


@pytest.mark.parametrize(
    ("start", "seconds_to_reset"),
    [
        ("2026-01-31T23:59:59", 1),
        ("2026-02-01T00:00:00", 28 * 86_400),  # February 2026: 28 days
        ("2028-02-15T00:00:00", 15 * 86_400),  # February 2028: 29 days
        ("2026-12-31T12:00:00", 12 * 3600),  # December rolls into next year's January
    ],
)
async def test_the_month_window_is_the_utc_calendar_month(start: str, seconds_to_reset: int) -> None:
    limiter, clock = limiter_at(start)
    plan = Plan("t", per_month=1)
    first = await limiter.admit("usr_a", plan, 1)
    assert first.limits[0].reset_seconds == seconds_to_reset
    assert not (await limiter.admit("usr_a", plan, 1)).allowed
    clock.advance(seconds_to_reset)
    assert (await limiter.admit("usr_a", plan, 1)).allowed


async def test_concurrent_admissions_admit_exactly_the_limit() -> None:
    limiter, _ = limiter_at("2026-03-10T12:00:00")
    plan = Plan("t", per_minute=100)
    start = asyncio.Event()

    async def one() -> bool:
        await start.wait()
        return (await limiter.admit("usr_a", plan, 1)).allowed

    tasks = [asyncio.create_task(one()) for _ in range(300)]
    await asyncio.sleep(0)
    start.set()
    assert sum(await asyncio.gather(*tasks)) == 100


async def test_accounts_have_separate_counters() -> None:
    limiter, _ = limiter_at("2026-03-10T12:00:00")
    await limiter.admit("usr_a", PER_MINUTE_3, 3)
    assert not (await limiter.admit("usr_a", PER_MINUTE_3, 1)).allowed
    assert (await limiter.admit("usr_b", PER_MINUTE_3, 1)).allowed


async def test_an_unlimited_plan_is_always_admitted_and_reports_no_windows() -> None:
    limiter, _ = limiter_at("2026-03-10T12:00:00")
    decision = await limiter.admit("usr_a", Plan("unlimited"), 10_000)
    assert (decision.allowed, decision.limits, len(limiter)) == (True, [], 0)


async def test_zero_cost_is_allowed_and_charges_nothing_even_when_exhausted() -> None:
    limiter, _ = limiter_at("2026-03-10T12:00:00")
    await limiter.admit("usr_a", PER_MINUTE_3, 3)
    decision = await limiter.admit("usr_a", PER_MINUTE_3, 0)
    assert decision.allowed
    assert decision.limits[0].used == 3


async def test_usage_reports_counts_without_charging_or_storing() -> None:
    limiter, _ = limiter_at("2026-03-10T12:00:10")
    assert [(w.used, w.remaining) for w in (await limiter.usage("usr_new", PER_MINUTE_3)).windows] == [(0, 3), (0, 100)]
    assert len(limiter) == 0
    await limiter.admit("usr_a", PER_MINUTE_3, 2)
    usage = await limiter.usage("usr_a", PER_MINUTE_3)
    assert (usage.plan, [w.used for w in usage.windows]) == ("t", [2, 2])
    assert usage.windows[0].reset_seconds == 50


async def test_a_lowered_limit_counts_what_was_already_used() -> None:
    limiter, _ = limiter_at("2026-03-10T12:00:00")
    await limiter.admit("usr_a", Plan("big", per_minute=10), 5)
    decision = await limiter.admit("usr_a", Plan("small", per_minute=3), 1)
    assert not decision.allowed
    assert (decision.limits[0].used, decision.limits[0].remaining) == (5, 0)


async def test_counters_of_ended_windows_are_swept() -> None:
    limiter, clock = limiter_at("2026-03-10T12:00:00")
    await limiter.admit("usr_a", Plan("t", per_minute=3), 1)
    await limiter.admit("usr_b", Plan("t", per_minute=3), 1)
    assert len(limiter) == 2
    clock.advance(120)
    await limiter.admit("usr_c", Plan("t", per_minute=3), 1)
    assert len(limiter) == 1


async def test_record_charges_without_checking() -> None:
    limiter, _ = limiter_at("2026-03-10T12:00:00")
    limiter.record("usr_a", PER_MINUTE_3, 5)
    decision = await limiter.admit("usr_a", PER_MINUTE_3, 1)
    assert (decision.allowed, decision.limits[0].used) == (False, 5)


@pytest.mark.parametrize("cost", [-1, True, 1.5])
async def test_a_cost_that_is_not_a_non_negative_integer_is_a_programming_error(cost: object) -> None:
    limiter, _ = limiter_at("2026-03-10T12:00:00")
    with pytest.raises(ValueError, match="cost"):
        await limiter.admit("usr_a", PER_MINUTE_3, cost)  # type: ignore[arg-type]
