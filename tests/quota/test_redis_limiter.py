"""The shared counter on a real Redis: atomic, exact under concurrency, clean keys that always expire."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from redis.crc import key_slot

from gateway.quota import Plan, RedisLimiter, quota_redis_client
from gateway.quota.redis_limiter import DEFAULT_KEY_MARGIN, WINDOW_BOUNDS_LUA
from gateway.quota.windows import window_bounds
from tests.quota.conftest import RedisNamespace

pytestmark = pytest.mark.redis

PLAN = Plan("t", per_minute=100, per_day=1000, per_month=10_000)


async def test_two_replicas_admit_exactly_the_limit_under_barrier_started_concurrency(redis_ns: RedisNamespace) -> None:
    # Two replicas: two clients as production builds them, each with its own connection pool.
    clients = [redis_ns.adopt(quota_redis_client(redis_ns.url, timeout=5)) for _ in range(2)]
    assert clients[0].connection_pool is not clients[1].connection_pool
    replicas = [RedisLimiter(client, prefix=redis_ns.prefix) for client in clients]
    account = redis_ns.account()
    start = asyncio.Event()

    async def one(i: int) -> bool:
        await start.wait()
        return (await replicas[i % 2].admit(account, PLAN, 1)).allowed

    tasks = [asyncio.create_task(one(i)) for i in range(300)]
    await asyncio.sleep(0.05)  # every task is parked on the barrier
    start.set()
    admitted = await asyncio.gather(*tasks)
    assert sum(admitted) == 100
    usage = await replicas[0].usage(account, PLAN)
    assert [(w.window, w.used) for w in usage.windows] == [("minute", 100), ("day", 100), ("month", 100)]


async def test_a_refused_admission_charges_no_window(redis_ns: RedisNamespace) -> None:
    limiter = RedisLimiter(redis_ns.client, prefix=redis_ns.prefix)
    account = redis_ns.account()
    plan = Plan("t", per_minute=2, per_day=100)
    assert [(await limiter.admit(account, plan, 1)).allowed for _ in range(3)] == [True, True, False]
    keys = limiter.keys(account, plan)
    assert [await redis_ns.client.hget(key, "n") for key in keys] == [b"2", b"2"]
    refused = await limiter.admit(account, plan, 1)
    assert not refused.allowed
    assert 1 <= refused.retry_after <= 60
    assert [(w.used, w.remaining) for w in refused.limits] == [(2, 0), (2, 98)]


async def test_a_cost_that_does_not_fit_is_refused_while_a_smaller_one_fits(redis_ns: RedisNamespace) -> None:
    limiter = RedisLimiter(redis_ns.client, prefix=redis_ns.prefix)
    account = redis_ns.account()
    plan = Plan("t", per_minute=10, per_day=12)
    assert (await limiter.admit(account, plan, 8)).allowed
    assert not (await limiter.admit(account, plan, 5)).allowed  # the day has 4 left, the minute 2
    assert not (await limiter.admit(account, plan, 3)).allowed
    decision = await limiter.admit(account, plan, 2)
    assert decision.allowed
    assert [w.used for w in decision.limits] == [10, 10]


async def test_every_key_carries_a_ttl_no_longer_than_its_window_plus_the_margin(redis_ns: RedisNamespace) -> None:
    limiter = RedisLimiter(redis_ns.client, prefix=redis_ns.prefix)
    account = redis_ns.account()
    await limiter.admit(account, PLAN, 1)
    keys = await redis_ns.keys()
    assert keys == sorted(limiter.keys(account, PLAN))
    ttls = {key.rsplit(":", 1)[1]: await redis_ns.client.ttl(key) for key in keys}
    assert 0 < ttls["m"] <= 60 + DEFAULT_KEY_MARGIN
    assert 0 < ttls["d"] <= 86_400 + DEFAULT_KEY_MARGIN
    assert 0 < ttls["mo"] <= 31 * 86_400 + DEFAULT_KEY_MARGIN


async def test_keys_are_built_from_ids_only_and_hostile_ids_are_hashed_into_bounded_single_slot_keys(
    redis_ns: RedisNamespace,
) -> None:
    limiter = RedisLimiter(redis_ns.client, prefix=redis_ns.prefix)
    hostile = ["*", "usr_a b", "usr_a\nDEL x", "{usr_a}", "}{", "h_" + "0" * 32, "https://c.example/" + "x" * 2048, ""]
    plan = Plan("t", per_minute=1, per_day=5)
    for account in hostile:
        assert (await limiter.admit(account, plan, 1)).allowed
    for account in hostile:
        assert not (await limiter.admit(account, plan, 1)).allowed  # each id has a counter of its own
    keys = await redis_ns.keys()
    assert len(keys) == 2 * len(hostile)
    for account in hostile:
        own = limiter.keys(account, plan)
        assert len({key_slot(key.encode()) for key in own}) == 1
        for key in own:
            assert len(key) < 80
            assert key.count("{") == 1
            assert key.count("}") == 1
            assert key[len(redis_ns.prefix) + 1 :].startswith("{h_")
    assert limiter.keys("usr_AbC-123", plan)[0] == f"{redis_ns.prefix}:{{usr_AbC-123}}:m"


async def test_usage_reads_the_counters_without_creating_keys(redis_ns: RedisNamespace) -> None:
    limiter = RedisLimiter(redis_ns.client, prefix=redis_ns.prefix)
    account = redis_ns.account()
    fresh = await limiter.usage(account, PLAN)
    assert [(w.used, w.remaining) for w in fresh.windows] == [(0, 100), (0, 1000), (0, 10_000)]
    assert await redis_ns.keys() == []
    await limiter.admit(account, PLAN, 3)
    usage = await limiter.usage(account, PLAN)
    assert (usage.plan, [w.used for w in usage.windows]) == ("t", [3, 3, 3])


async def test_a_counter_left_from_an_earlier_window_counts_as_empty_and_is_replaced(redis_ns: RedisNamespace) -> None:
    limiter = RedisLimiter(redis_ns.client, prefix=redis_ns.prefix)
    account = redis_ns.account()
    plan = Plan("t", per_minute=5)
    (key,) = limiter.keys(account, plan)
    seconds, _ = await redis_ns.client.time()
    last_minute = window_bounds("minute", seconds)[0] - 60
    await redis_ns.client.hset(key, mapping={"s": last_minute, "n": 5})
    decision = await limiter.admit(account, plan, 1)
    assert (decision.allowed, decision.limits[0].used) == (True, 1)
    assert int(await redis_ns.client.hget(key, "s")) == last_minute + 60


async def test_resets_follow_redis_time(redis_ns: RedisNamespace) -> None:
    limiter = RedisLimiter(redis_ns.client, prefix=redis_ns.prefix)
    seconds, micros = await redis_ns.client.time()
    decision = await limiter.admit(redis_ns.account(), PLAN, 1)
    now = seconds + micros / 1e6
    for state in decision.limits:
        end = window_bounds(state.window, now)[1]
        assert abs(state.reset_seconds - (end - now)) <= 2


async def test_an_unlimited_plan_never_touches_redis(redis_ns: RedisNamespace) -> None:
    limiter = RedisLimiter(redis_ns.client, prefix=redis_ns.prefix)
    decision = await limiter.admit(redis_ns.account(), Plan("unlimited"), 50)
    assert (decision.allowed, decision.limits) == (True, [])
    assert await redis_ns.keys() == []


def _at(text: str) -> int:
    return int(dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp())


BOUNDARIES = [
    "1970-01-01T00:00:00",
    "2000-02-29T12:00:00",
    "2024-02-29T23:59:59",
    "2024-03-01T00:00:00",
    "2026-01-31T23:59:59",
    "2026-02-01T00:00:00",
    "2026-12-31T23:59:59",
    "2027-01-01T00:00:00",
    "2100-02-28T23:59:59",
    "2100-03-01T00:00:00",
    "2400-02-29T00:00:01",
]


@pytest.mark.parametrize("when", BOUNDARIES)
async def test_the_lua_windows_agree_with_the_python_windows(redis_ns: RedisNamespace, when: str) -> None:
    probe = WINDOW_BOUNDS_LUA + "\nlocal s, e = window_bounds(ARGV[1], tonumber(ARGV[2]))\nreturn {s, e}"
    for offset in (-1, 0, 1, 3600):
        t = _at(when) + offset
        for kind, code in (("minute", "m"), ("day", "d"), ("month", "mo")):
            got = await redis_ns.client.eval(probe, 0, code, t)
            assert tuple(got) == window_bounds(kind, t), (kind, t)  # type: ignore[arg-type]


def test_a_prefix_that_could_break_key_names_is_refused(redis_ns: RedisNamespace) -> None:
    for prefix in ("", "gw:{q}", "gw q", "x" * 33):
        with pytest.raises(ValueError, match="prefix"):
            RedisLimiter(redis_ns.client, prefix=prefix)
