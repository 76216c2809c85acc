"""The quota and the stream leases on a real Redis Cluster (three primaries, ``tests/support/redis_cluster.py``).

Every key one script touches carries the account's hash tag, so the Lua scripts run on the primary that holds
the account's slot (no ``CROSSSLOT``); two clients (two replicas) count exactly; and when one primary dies only
the accounts whose keys it held degrade, each replica's other accounts keep exact shared counting.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Redis
from redis.crc import key_slot

from gateway.clock import ManualClock
from gateway.quota import DegradingLimiter, MemoryLimiter, Plan, RedisLimiter, quota_redis_client
from gateway.quota.streams import StreamSlots
from gateway.redis_clients import RedisClient
from tests.support.redis_cluster import RedisClusterNodes

pytestmark = pytest.mark.redis

PLAN = Plan("t", per_minute=None, per_day=10, per_month=1000)
"""Day and month windows: several keys per script, and no window rolls over in a test (bar midnight UTC)."""

Clients = Callable[[], RedisClient]


@pytest.fixture
async def cluster_client(redis_cluster: RedisClusterNodes) -> AsyncIterator[Clients]:
    """Makes cluster clients as the gateway does (``redis.cluster: true``), closed after the test."""
    made: list[RedisClient] = []

    def make() -> RedisClient:
        made.append(quota_redis_client(redis_cluster.url, timeout=2.0, cluster=True))
        return made[-1]

    yield make
    for client in made:
        await client.aclose()


def prefix() -> str:
    return f"gwc{secrets.token_hex(4)}:q"


def accounts_on_every_node(nodes: RedisClusterNodes, limiter: RedisLimiter, plan: Plan) -> dict[int, str]:
    """One fresh account per primary (port -> account id), found by where its quota keys hash."""
    found: dict[int, str] = {}
    while len(found) < len(nodes.ports):
        account = f"usr_{secrets.token_hex(8)}"
        found.setdefault(nodes.node_of(limiter.keys(account, plan)[0]), account)
    return found


def test_an_accounts_quota_windows_and_stream_leases_hash_to_one_cluster_slot() -> None:
    limiter = RedisLimiter(Redis(), prefix="gw:q")  # key names only: never connects
    slots = StreamSlots(None, clock=ManualClock(), prefix="gw:q", lease_seconds=30)
    monthly = Plan("all", per_minute=5, per_day=50, per_month=500)
    for account in ("usr_abc", "x{y}z", "}{", "{}", "a b*\n" + "x" * 2048, "h_0123"):
        keys = [*limiter.keys(account, monthly), slots.key(account)]
        assert len({key_slot(key.encode()) for key in keys}) == 1, keys
    # Different accounts spread over the slots (the tag is the account, not the prefix).
    assert len({key_slot(slots.key(f"usr_{i:04d}").encode()) for i in range(50)}) > 40


async def test_two_replicas_on_a_cluster_admit_exactly_the_limit_for_accounts_on_every_primary(
    redis_cluster: RedisClusterNodes, cluster_client: Clients
) -> None:
    space = prefix()
    one, two = RedisLimiter(cluster_client(), prefix=space), RedisLimiter(cluster_client(), prefix=space)
    for account in accounts_on_every_node(redis_cluster, one, PLAN).values():
        decisions = [await limiter.admit(account, PLAN, 1) for limiter in (one, two) * 8]
        assert [d.allowed for d in decisions] == [True] * 10 + [False] * 6
        usage = await two.usage(account, PLAN)
        assert [(w.window, w.used) for w in usage.windows] == [("day", 10), ("month", 10)]
        await one.refund(account, PLAN, 1, decisions[0])
        assert (await two.admit(account, PLAN, 1)).allowed


async def test_stream_leases_on_a_cluster_cap_an_account_across_two_replicas(
    redis_cluster: RedisClusterNodes, cluster_client: Clients
) -> None:
    space, clock = prefix(), ManualClock()
    one, two = (
        StreamSlots(cluster_client(), clock=clock, prefix=space, lease_seconds=30, timeout=2.0) for _ in range(2)
    )
    account = "usr_" + secrets.token_hex(8)
    first, second = await one.acquire(account, 2), await two.acquire(account, 2)
    assert first is not None
    assert first.shared
    assert second is not None
    assert second.shared
    assert await one.acquire(account, 2) is None
    await two.refresh(second)
    await one.release(first)
    assert await two.acquire(account, 2) is not None


async def test_killing_one_primary_degrades_only_the_accounts_whose_keys_it_held(
    redis_cluster: RedisClusterNodes, cluster_client: Clients
) -> None:
    space, clock, changes = prefix(), ManualClock(), list[bool]()

    def replica(client: RedisClient, on_change: Callable[[bool], None] | None = None) -> DegradingLimiter:
        shared = RedisLimiter(client, prefix=space)
        return DegradingLimiter(
            shared,
            MemoryLimiter(clock),
            share=0.5,
            clock=clock,
            timeout=2.0,
            retry_interval=1.0,
            on_change=on_change,
            shard=shared.shard,
        )

    clients = [cluster_client(), cluster_client()]
    one, two = replica(clients[0], changes.append), replica(clients[1])
    by_node = accounts_on_every_node(redis_cluster, RedisLimiter(clients[0], prefix=space), PLAN)
    dead, *alive = redis_cluster.ports
    streams = StreamSlots(clients[0], clock=clock, prefix=space, lease_seconds=30, share=0.5, timeout=2.0)
    for account in by_node.values():  # warm: every replica knows the cluster's layout
        assert (await one.admit(account, PLAN, 1)).allowed
        assert (await two.admit(account, PLAN, 1)).allowed
    redis_cluster.kill(dead)
    try:
        lost = by_node[dead]
        degraded = [await one.admit(lost, PLAN, 1) for _ in range(4)]
        # A per-replica share of the plan (5 a day), of which the warm local copy already holds 1.
        assert [(d.allowed, d.degraded) for d in degraded] == [(True, True)] * 4
        assert not (await one.admit(lost, PLAN, 1)).allowed
        assert one.degraded
        assert changes == [True]
        lease = await streams.acquire(lost, 2)
        assert lease is not None
        assert not lease.shared
        for port in alive:
            account = by_node[port]
            decisions = [await limiter.admit(account, PLAN, 1) for limiter in (one, two) * 5]
            assert [(d.allowed, d.degraded) for d in decisions] == [(True, False)] * 8 + [(False, False)] * 2
            assert (await one.usage(account, PLAN)).windows[0].used == 10
            kept = await streams.acquire(account, 2)
            assert kept is not None
            assert kept.shared
    finally:
        redis_cluster.restart(dead)
    clock.advance(1.0)  # the retry interval: the next call for the dead shard's accounts probes it again
    back = await one.admit(by_node[dead], PLAN, 1)
    assert back.allowed
    assert not back.degraded
    assert not one.degraded
    assert changes == [True, False]
