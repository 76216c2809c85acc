"""Refunds of gateway-side 502/504 (security-cases 93): only the windows that were charged, never below zero."""

from __future__ import annotations

import datetime as dt

import pytest

from gateway.clock import ManualClock
from gateway.quota import MemoryLimiter, Plan, RedisLimiter
from tests.quota.conftest import RedisNamespace

PLAN = Plan("t", per_minute=3, per_day=100)


def at(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()


async def used(limiter: MemoryLimiter | RedisLimiter, account: str) -> list[int]:
    return [w.used for w in (await limiter.usage(account, PLAN)).windows]


async def test_a_refund_gives_the_units_back_to_every_window_it_charged_and_never_below_zero() -> None:
    limiter = MemoryLimiter(ManualClock(start=at("2026-03-01T10:00:10")))
    first = await limiter.admit("usr_a", PLAN, 2)
    await limiter.admit("usr_a", PLAN, 1)
    assert not (await limiter.admit("usr_a", PLAN, 1)).allowed
    await limiter.refund("usr_a", PLAN, 2, first)
    assert await used(limiter, "usr_a") == [1, 1]
    await limiter.refund("usr_a", PLAN, 2, first)  # a second refund cannot go below zero
    assert await used(limiter, "usr_a") == [0, 0]


async def test_a_refund_after_the_minute_rolled_over_leaves_the_new_minute_alone() -> None:
    clock = ManualClock(start=at("2026-03-01T10:00:50"))
    limiter = MemoryLimiter(clock)
    charged = await limiter.admit("usr_a", PLAN, 1)
    clock.advance(20)  # a 504 after the first-byte timeout lands in the next minute
    await limiter.admit("usr_a", PLAN, 1)
    await limiter.refund("usr_a", PLAN, 1, charged)
    assert await used(limiter, "usr_a") == [1, 1]  # the minute keeps its own charge; the day gets the unit back


@pytest.mark.redis
async def test_the_shared_counter_refunds_in_one_script_on_the_windows_of_the_admission(
    redis_ns: RedisNamespace,
) -> None:
    limiter = RedisLimiter(redis_ns.client, prefix=redis_ns.prefix)
    account = redis_ns.account()
    first = await limiter.admit(account, PLAN, 3)
    assert not (await limiter.admit(account, PLAN, 1)).allowed
    await limiter.refund(account, PLAN, 2, first)
    assert await used(limiter, account) == [1, 1]
    assert (await limiter.admit(account, PLAN, 2)).allowed  # room again, all windows or none still holds
    assert not (await limiter.admit(account, PLAN, 1)).allowed
    stale = type(first)(allowed=True, retry_after=0, limits=first.limits, charged_at=first.charged_at - 120)
    await limiter.refund(account, PLAN, 3, stale)  # an admission two minutes back: only the day window
    assert await used(limiter, account) == [3, 0]
    for key in await redis_ns.keys():
        assert await redis_ns.client.ttl(key) > 0
