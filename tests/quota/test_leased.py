"""The leasing limiter on a real Redis: replicas spend slices locally, the counter stays exact and shared."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
from typing import Any

import pytest
from redis.asyncio import Redis

from gateway.clock import ManualClock
from gateway.quota import DegradingLimiter, MemoryLimiter, Plan, RedisLimiter, parse_quota_config, quota_redis_client
from gateway.quota.leased import LeasedLimiter
from tests.quota.conftest import RedisNamespace
from tests.quota.test_degrading import proxied_client, proxy  # noqa: F401  (fixture)
from tests.quota.test_redis_cluster import Clients, accounts_on_every_node, cluster_client  # noqa: F401
from tests.support.redis_cluster import RedisClusterNodes
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.redis

DAY = Plan("d", per_day=1000)
"""A day-only plan: no window rolls over inside a test (bar midnight)."""


def leased(redis_ns: RedisNamespace, clock: ManualClock, client: Redis | None = None, **kw: int) -> LeasedLimiter:
    return LeasedLimiter(client or redis_ns.client, clock=clock, prefix=redis_ns.prefix, **kw)


async def counted(redis_ns: RedisNamespace, account: str, plan: Plan) -> list[int]:
    """What the shared counter holds (charged or leased) for each window of the plan."""
    keys = RedisLimiter(redis_ns.client, prefix=redis_ns.prefix).keys(account, plan)
    return [int(await redis_ns.client.hget(key, "n") or 0) for key in keys]


async def burst(replicas: list[LeasedLimiter], account: str, plan: Plan, calls: int) -> list[bool]:
    start = asyncio.Event()

    async def one(i: int) -> bool:
        await start.wait()
        return (await replicas[i % len(replicas)].admit(account, plan, 1)).allowed

    tasks = [asyncio.create_task(one(i)) for i in range(calls)]
    await asyncio.sleep(0)  # every task is parked on the barrier
    start.set()
    return await asyncio.gather(*tasks)


@pytest.mark.parametrize("limit", [1, 7, 100, 1000])
async def test_three_replicas_leasing_admit_exactly_the_limit_of_a_burst_three_times_as_large(
    redis_ns: RedisNamespace, limit: int
) -> None:
    clock = ManualClock()
    clients = [redis_ns.adopt(quota_redis_client(redis_ns.url, timeout=5)) for _ in range(3)]
    replicas = [leased(redis_ns, clock, client, replicas=3) for client in clients]
    account, plan = redis_ns.account(), Plan("t", per_minute=None, per_day=limit, per_month=10 * limit)
    admitted = await burst(replicas, account, plan, 3 * limit)
    assert sum(admitted) == limit
    assert await counted(redis_ns, account, plan) == [limit, limit]
    assert sum(replica.held(account, plan) for replica in replicas) == 0


async def test_a_replica_spends_its_slice_locally_and_gives_back_what_it_did_not_spend_at_shutdown(
    redis_ns: RedisNamespace,
) -> None:
    limiter = leased(redis_ns, ManualClock(), replicas=2, k=4)  # slice: 1000 // 8 = 125
    account = redis_ns.account()
    decisions = [await limiter.admit(account, DAY, 1) for _ in range(10)]
    assert all(d.allowed for d in decisions)
    assert await counted(redis_ns, account, DAY) == [125]  # one lease, ten admissions
    assert limiter.held(account, DAY) == 115
    assert [(w.used, w.remaining) for w in decisions[-1].limits] == [(10, 990)]
    await limiter.aclose()
    assert await counted(redis_ns, account, DAY) == [10]


async def test_the_slice_shrinks_near_the_limit_until_every_admission_is_charged_on_its_own(
    redis_ns: RedisNamespace,
) -> None:
    limiter = leased(redis_ns, ManualClock(), replicas=2, k=4)
    account, plan = redis_ns.account(), Plan("t", per_day=20)
    await limiter.admit(account, plan, 1)
    assert await counted(redis_ns, account, plan) == [2]  # 20 // 8
    for _ in range(13):
        await limiter.admit(account, plan, 1)
    assert await counted(redis_ns, account, plan) == [14]  # below 8 left per slice of 1: held nothing
    assert limiter.held(account, plan) == 0


async def test_a_replica_holding_a_slice_refuses_elsewhere_only_until_it_goes_idle_and_gives_it_back(
    redis_ns: RedisNamespace,
) -> None:
    clock = ManualClock()
    one, two = leased(redis_ns, clock, replicas=1, k=1, idle_seconds=5), leased(redis_ns, clock, replicas=1, k=1)
    account, plan = redis_ns.account(), Plan("t", per_day=10)
    assert (await one.admit(account, plan, 1)).allowed  # leases all ten
    assert one.held(account, plan) == 9
    assert not (await two.admit(account, plan, 1)).allowed  # held elsewhere: refused, never over
    clock.advance(5)
    await one.admit(redis_ns.account(), plan, 1)  # any admission sweeps the idle holdings
    await one.aclose()
    assert (await two.admit(account, plan, 1)).allowed
    await two.aclose()
    assert await counted(redis_ns, account, plan) == [2]


async def test_a_refund_returns_the_units_to_the_slice_or_to_the_counter_once_the_lease_is_over(
    redis_ns: RedisNamespace,
) -> None:
    clock = ManualClock()
    limiter = leased(redis_ns, clock, replicas=2, k=4)
    account = redis_ns.account()
    admitted = await limiter.admit(account, DAY, 3)
    assert limiter.held(account, DAY) == 122
    await limiter.refund(account, DAY, 3, admitted)
    assert limiter.held(account, DAY) == 125
    await limiter.aclose()
    assert await counted(redis_ns, account, DAY) == [0]

    late = leased(redis_ns, clock, replicas=1, k=1000)  # slices of 1: charged per request
    admitted = await late.admit(account, DAY, 2)
    assert await counted(redis_ns, account, DAY) == [2]
    clock.advance(86_400)  # past the lease's deadline (the local clock only: Redis still sees the same day)
    await late.refund(account, DAY, 2, admitted)
    assert await counted(redis_ns, account, DAY) == [0]


async def test_usage_counts_this_replicas_unspent_units_as_unused_and_charges_nothing(
    redis_ns: RedisNamespace,
) -> None:
    limiter = leased(redis_ns, ManualClock(), replicas=2, k=4)
    account = redis_ns.account()
    assert (await limiter.usage(account, DAY)).windows[0].used == 0
    assert await redis_ns.keys() == []
    for _ in range(4):
        await limiter.admit(account, DAY, 1)
    usage = await limiter.usage(account, DAY)
    assert [(w.window, w.used, w.remaining) for w in usage.windows] == [("day", 4, 996)]
    await limiter.aclose()


async def test_leasing_and_per_request_replicas_share_one_counter(redis_ns: RedisNamespace) -> None:
    account, plan = redis_ns.account(), Plan("t", per_day=10)
    lessee = leased(redis_ns, ManualClock(), replicas=1, k=2)  # leases 5 of 10
    classic = RedisLimiter(redis_ns.client, prefix=redis_ns.prefix)
    assert (await lessee.admit(account, plan, 1)).allowed
    assert [(await classic.admit(account, plan, 1)).allowed for _ in range(6)] == [True] * 5 + [False]


async def test_with_redis_cut_the_leasing_limiter_degrades_to_the_replica_share_never_unlimited(
    redis_ns: RedisNamespace,
    proxy: TcpProxy,  # noqa: F811
) -> None:
    clock = ManualClock()
    limiter = DegradingLimiter(
        leased(redis_ns, clock, proxied_client(redis_ns, proxy), replicas=2),
        MemoryLimiter(clock),
        share=0.5,
        clock=clock,
        timeout=2.0,
    )
    account, plan = redis_ns.account(), Plan("t", per_day=10)
    assert (await limiter.admit(account, plan, 1)).allowed
    proxy.cut()
    statuses = [await limiter.admit(account, plan, 1) for _ in range(6)]
    assert [d.allowed for d in statuses] == [True] * 4 + [False] * 2  # 5 of 10 locally, one already spent
    assert all(d.degraded for d in statuses)


def test_quota_lease_is_on_by_default_and_anything_but_a_boolean_is_reported() -> None:
    assert parse_quota_config({})[0].lease is True
    assert parse_quota_config({"lease": False})[0].lease is False
    assert parse_quota_config({"lease": "yes"})[1] == ["quota.lease: expected true or false"]


async def test_units_a_failed_call_was_giving_back_are_never_spent_again(
    redis_ns: RedisNamespace,
    proxy: TcpProxy,  # noqa: F811
) -> None:
    clock = ManualClock()
    limiter = leased(redis_ns, clock, proxied_client(redis_ns, proxy), replicas=1, k=1)
    account, plan = redis_ns.account(), Plan("t", per_day=10)
    assert (await limiter.admit(account, plan, 1)).allowed
    assert limiter.held(account, plan) == 9
    clock.advance(86_400)  # the lease is over locally: the next admission gives its units back first
    proxy.cut()
    with pytest.raises(Exception):  # noqa: B017, PT011  (whatever the client raises for a cut connection)
        await limiter.admit(account, plan, 1)
    assert limiter.held(account, plan) == 0  # the script may have run: spending them again could go over
    assert await counted(redis_ns, account, plan) == [10]


async def test_two_leasing_replicas_on_a_cluster_admit_exactly_the_limit_for_accounts_on_every_primary(
    redis_cluster: RedisClusterNodes,
    cluster_client: Clients,  # noqa: F811
) -> None:
    space, clock, plan = f"gwl{secrets.token_hex(4)}:q", ManualClock(), Plan("t", per_day=100, per_month=1000)
    replicas = [LeasedLimiter(cluster_client(), clock=clock, prefix=space, replicas=2) for _ in range(2)]
    for account in accounts_on_every_node(redis_cluster, RedisLimiter(Redis(), prefix=space), plan).values():
        assert sum(await burst(replicas, account, plan, 300)) == 100
        assert sum(replica.held(account, plan) for replica in replicas) == 0


async def test_a_refund_landing_while_a_lease_call_is_out_is_neither_lost_nor_spent_in_the_wrong_windows(
    redis_ns: RedisNamespace,
) -> None:
    limiter = leased(redis_ns, ManualClock(), replicas=1, k=1)
    account, plan = redis_ns.account(), Plan("t", per_day=20)
    assert (await limiter.admit(account, plan, 1)).allowed  # leases all 20
    big = await limiter.admit(account, plan, 19)
    assert limiter.held(account, plan) == 0
    released, script = asyncio.Event(), limiter._script
    entered = asyncio.Event()

    async def held_back(**call: Any) -> Any:
        entered.set()
        await released.wait()
        return await script(**call)

    limiter._script = held_back  # type: ignore[assignment]
    call = asyncio.create_task(limiter.admit(account, plan, 1))  # nothing held: a lease call goes out
    await entered.wait()
    await limiter.refund(account, plan, 19, big)  # the 502 of the big one lands meanwhile
    released.set()
    assert (await call).allowed  # served by the 19 refunded units (Redis had nothing left)
    await limiter.aclose()
    assert await counted(redis_ns, account, plan) == [2]


async def test_a_waiter_the_finished_fetch_did_not_cover_fetches_again_instead_of_spinning(
    redis_ns: RedisNamespace,
) -> None:
    """A fetch that has finished but whose done-callback has not run yet: awaiting it never yields, so a waiter
    it did not cover must clear it and fetch again (this spun forever, holding the event loop)."""
    clock = ManualClock()
    limiter = leased(redis_ns, clock)
    account = redis_ns.account()
    first = await limiter.admit(account, DAY, 1)  # a lease, its slice partly spent
    assert first.allowed
    pool = limiter._pools[(account, DAY)]
    spent = dataclasses.replace(pool.lease, granted=1) if pool.lease is not None else None

    async def finished() -> Any:
        return spent

    done = asyncio.create_task(finished())
    await asyncio.wait({done})
    pool.left, pool.lease, pool.fetch = 0, spent, done  # finished, not yet cleared by its callback
    second = await asyncio.wait_for(limiter.admit(account, DAY, 1), 5)
    assert second.allowed
    await limiter.aclose()
