"""Stream leases (security-cases 95): a cap shared through Redis, leases that expire, a local fallback."""

from __future__ import annotations

import pytest

from gateway.clock import ManualClock
from gateway.quota import quota_redis_client
from gateway.quota.streams import StreamSlots
from tests.quota.conftest import RedisNamespace
from tests.support.tcp_proxy import tcp_proxy


async def test_without_redis_leases_are_counted_locally_and_expire_unless_refreshed() -> None:
    clock = ManualClock()
    slots = StreamSlots(None, clock=clock, prefix="gw:q", lease_seconds=60)
    first, second = await slots.acquire("usr_a", 2), await slots.acquire("usr_a", 2)
    assert first is not None
    assert second is not None
    assert await slots.acquire("usr_a", 2) is None
    assert await slots.acquire("usr_b", 2) is not None
    clock.advance(50)
    await slots.refresh(first)
    clock.advance(20)  # the second lease (a crashed stream) expired; the refreshed one lives
    assert slots.local_count("usr_a") == 1
    await slots.release(first)
    assert slots.local_count("usr_a") == 0


@pytest.mark.redis
async def test_replicas_share_one_cap_and_every_lease_key_expires(redis_ns: RedisNamespace) -> None:
    clock = ManualClock()
    one, two = (
        StreamSlots(client, clock=clock, prefix=redis_ns.prefix, lease_seconds=30)
        for client in (redis_ns.adopt(quota_redis_client(redis_ns.url, timeout=5)) for _ in range(2))
    )
    hostile = "usr_a b*{}\n" + "x" * 2048
    leases = [await one.acquire(hostile, 3), await two.acquire(hostile, 3), await one.acquire(hostile, 3)]
    assert all(lease is not None and lease.shared for lease in leases)
    assert await two.acquire(hostile, 3) is None
    assert leases[0] is not None
    await one.release(leases[0])
    assert await two.acquire(hostile, 3) is not None
    keys = await redis_ns.keys()
    assert keys == [one.key(hostile)]
    assert len(keys[0]) < 80
    assert not any(char in keys[0] for char in "* \n")
    assert 0 < await redis_ns.client.pttl(keys[0]) <= 30_000


@pytest.mark.redis
async def test_while_redis_is_cut_leases_are_taken_locally_at_the_degraded_share(redis_ns: RedisNamespace) -> None:
    clock = ManualClock()
    async with tcp_proxy("127.0.0.1", 6379) as proxy:
        client = redis_ns.adopt(quota_redis_client(f"redis://127.0.0.1:{proxy.port}/0", timeout=2))
        slots = StreamSlots(client, clock=clock, prefix=redis_ns.prefix, lease_seconds=30, share=0.5)
        account = redis_ns.account()
        assert (await slots.acquire(account, 4)) is not None
        proxy.cut()
        local = [await slots.acquire(account, 4) for _ in range(3)]
        assert [lease is not None and not lease.shared for lease in local] == [True, True, False]
