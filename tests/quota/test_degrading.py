"""Redis outage: the quota degrades to a per-replica share of the plan, never unlimited, never an outage.

Redis sits behind a TCP proxy the test cuts and restores (tests/support/tcp_proxy.py); the limiter's
clock is a ManualClock, so the retry interval passes when the test says so.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.clock import ManualClock
from gateway.quota import Decision, DegradingLimiter, MemoryLimiter, Plan, RedisLimiter, Usage, quota_redis_client
from tests.quota.conftest import RedisNamespace
from tests.support.tcp_proxy import TcpProxy, tcp_proxy

PLAN = Plan("t", per_minute=10, per_day=1000)
LOGGER = "gateway.quota"


@pytest.fixture
async def proxy(redis_ns: RedisNamespace) -> AsyncIterator[TcpProxy]:
    target = urlsplit(redis_ns.url)
    async with tcp_proxy(target.hostname or "127.0.0.1", target.port or 6379) as running:
        yield running


def proxied_client(redis_ns: RedisNamespace, proxy: TcpProxy) -> Redis:
    return redis_ns.adopt(quota_redis_client(f"redis://127.0.0.1:{proxy.port}/0", timeout=2.0))


def degrading(
    redis_ns: RedisNamespace,
    client: Redis,
    clock: ManualClock,
    *,
    share: float = 0.5,
    changes: list[bool] | None = None,
) -> DegradingLimiter:
    return DegradingLimiter(
        RedisLimiter(client, prefix=redis_ns.prefix),
        MemoryLimiter(clock),
        share=share,
        clock=clock,
        timeout=2.0,
        retry_interval=1.0,
        on_change=None if changes is None else changes.append,
    )


def quota_records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.levelno == level]


async def shared_used(redis_ns: RedisNamespace, account: str) -> int:
    usage = await RedisLimiter(redis_ns.client, prefix=redis_ns.prefix).usage(account, PLAN)
    return usage.windows[0].used


@pytest.mark.redis
async def test_while_redis_is_cut_requests_are_admitted_up_to_the_degraded_share_and_never_more(
    redis_ns: RedisNamespace, proxy: TcpProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    limiter = degrading(redis_ns, proxied_client(redis_ns, proxy), ManualClock(start=time.time()))
    account = redis_ns.account()
    assert (await limiter.admit(account, PLAN, 1)).allowed
    assert not limiter.degraded
    proxy.cut()
    decisions = [await limiter.admit(account, PLAN, 1) for _ in range(20)]
    assert limiter.degraded
    assert all(d.degraded for d in decisions)
    assert sum(d.allowed for d in decisions) == 4  # 10 x 0.5 = 5 per replica, one already spent on Redis
    refused = decisions[-1]
    assert refused.retry_after >= 1
    assert [(w.window, w.limit) for w in refused.limits] == [("minute", 5), ("day", 500)]
    warnings = quota_records(caplog, logging.WARNING)
    assert len(warnings) == 1
    assert "degraded" in warnings[0].getMessage()


@pytest.mark.redis
async def test_the_local_bucket_is_warm_when_redis_goes_away(redis_ns: RedisNamespace, proxy: TcpProxy) -> None:
    limiter = degrading(redis_ns, proxied_client(redis_ns, proxy), ManualClock(start=time.time()))
    account = redis_ns.account()
    for _ in range(5):
        assert (await limiter.admit(account, PLAN, 1)).allowed
    proxy.cut()
    decision = await limiter.admit(account, PLAN, 1)
    assert (decision.degraded, decision.allowed) == (True, False)  # this replica already served its share


@pytest.mark.redis
async def test_after_restore_the_shared_counter_resumes_by_itself(
    redis_ns: RedisNamespace, proxy: TcpProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    clock = ManualClock(start=time.time())
    changes: list[bool] = []
    limiter = degrading(redis_ns, proxied_client(redis_ns, proxy), clock, changes=changes)
    account = redis_ns.account()
    await limiter.admit(account, PLAN, 2)
    proxy.cut()
    assert (await limiter.admit(account, PLAN, 1)).degraded
    proxy.restore()
    assert (await limiter.admit(account, PLAN, 1)).degraded  # Redis is not retried before the interval
    assert await shared_used(redis_ns, account) == 2
    clock.advance(1.0)
    back = await limiter.admit(account, PLAN, 1)
    assert (back.degraded, back.allowed, limiter.degraded) == (False, True, False)
    assert back.limits[0].used == 3
    assert await shared_used(redis_ns, account) == 3
    assert changes == [True, False]
    assert len(quota_records(caplog, logging.WARNING)) == 1
    assert len(quota_records(caplog, logging.INFO)) == 1


@pytest.mark.redis
async def test_two_replicas_at_half_share_together_stay_within_the_plan_during_an_outage(
    redis_ns: RedisNamespace, proxy: TcpProxy
) -> None:
    clock = ManualClock(start=time.time())
    replicas = [degrading(redis_ns, proxied_client(redis_ns, proxy), clock, share=0.5) for _ in range(2)]
    account = redis_ns.account()
    proxy.cut()
    admitted = 0
    for _ in range(30):
        for replica in replicas:
            admitted += (await replica.admit(account, PLAN, 1)).allowed
    assert admitted == PLAN.per_minute


@pytest.mark.redis
async def test_usage_falls_back_to_the_local_counts_while_degraded(redis_ns: RedisNamespace, proxy: TcpProxy) -> None:
    limiter = degrading(redis_ns, proxied_client(redis_ns, proxy), ManualClock(start=time.time()))
    account = redis_ns.account()
    await limiter.admit(account, PLAN, 2)
    shared = await limiter.usage(account, PLAN)
    assert (shared.degraded, shared.windows[0].used, shared.windows[0].limit) == (False, 2, 10)
    proxy.cut()
    local = await limiter.usage(account, PLAN)
    assert (local.degraded, local.windows[0].used, local.windows[0].limit) == (True, 2, 5)


async def test_a_redis_that_never_answers_holds_a_request_no_longer_than_the_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accept, read, never answer
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = quota_redis_client(f"redis://127.0.0.1:{port}/0", timeout=5.0)
    clock = ManualClock(start=time.time())
    limiter = DegradingLimiter(RedisLimiter(client), MemoryLimiter(clock), share=0.5, clock=clock, timeout=0.2)
    try:
        started = time.monotonic()
        decision = await limiter.admit("usr_silent", PLAN, 1)
        elapsed = time.monotonic() - started
        assert (decision.allowed, decision.degraded) == (True, True)
        assert 0.2 <= elapsed < 2.0
        started = time.monotonic()
        await limiter.admit("usr_silent", PLAN, 1)  # inside the retry interval: Redis is not even tried
        assert time.monotonic() - started < 0.1
    finally:
        await client.aclose()
        server.close()
        await server.wait_closed()


class FailingPrimary:
    """A primary whose Redis is down; ``gate`` holds calls until the test releases them."""

    def __init__(self) -> None:
        self.calls = 0
        self.gate = asyncio.Event()
        self.gate.set()

    async def admit(self, account_id: str, plan: Plan, cost: int) -> Decision:
        self.calls += 1
        await self.gate.wait()
        raise RedisConnectionError("Connection refused")

    async def usage(self, account_id: str, plan: Plan) -> Usage:
        raise RedisConnectionError("Connection refused")


async def test_while_degraded_redis_is_probed_by_one_request_per_retry_interval() -> None:
    clock = ManualClock()
    primary = FailingPrimary()
    limiter = DegradingLimiter(primary, MemoryLimiter(clock), share=0.5, clock=clock, retry_interval=1.0)
    plan = Plan("t", per_minute=1000)
    for _ in range(10):
        await limiter.admit("usr_a", plan, 1)
    assert primary.calls == 1
    clock.advance(1.0)
    primary.gate.clear()
    probe = asyncio.create_task(limiter.admit("usr_a", plan, 1))
    await asyncio.sleep(0)
    others = [await limiter.admit("usr_a", plan, 1) for _ in range(10)]  # answered locally meanwhile
    primary.gate.set()
    assert (await probe).degraded
    assert all(d.degraded and d.allowed for d in others)
    assert primary.calls == 2


async def test_a_share_outside_zero_to_one_is_refused() -> None:
    clock = ManualClock()
    for share in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="share"):
            DegradingLimiter(FailingPrimary(), MemoryLimiter(clock), share=share, clock=clock)


class ShardedPrimary(MemoryLimiter):
    """A shared counter whose shard ``down`` fails (as a cluster primary that died), counting calls per shard."""

    def __init__(self, clock: ManualClock) -> None:
        super().__init__(clock)
        self.down: set[str] = {"b"}
        self.calls = {"a": 0, "b": 0}

    @staticmethod
    def shard(account_id: str) -> str:
        return account_id.rsplit("_", 1)[-1]

    async def admit(self, account_id: str, plan: Plan, cost: int) -> Decision:
        self.calls[self.shard(account_id)] += 1
        if self.shard(account_id) in self.down:
            raise RedisConnectionError("Connection refused")
        return await super().admit(account_id, plan, cost)


async def test_a_failing_shard_degrades_only_its_accounts_and_is_probed_on_its_own() -> None:
    clock, changes = ManualClock(), list[bool]()
    primary = ShardedPrimary(clock)
    limiter = DegradingLimiter(
        primary, MemoryLimiter(clock), share=0.5, clock=clock, on_change=changes.append, shard=primary.shard
    )
    plan = Plan("t", per_minute=1000)
    down = [await limiter.admit("usr_1_b", plan, 1) for _ in range(5)]
    up = [await limiter.admit("usr_2_a", plan, 1) for _ in range(5)]
    assert all(d.degraded for d in down)
    assert not any(d.degraded for d in up)
    assert primary.calls == {"a": 5, "b": 1}  # shard b probed once per retry interval; shard a every call
    assert limiter.degraded
    assert changes == [True]
    primary.down.clear()
    clock.advance(1.0)
    assert not (await limiter.admit("usr_3_b", plan, 1)).degraded
    assert not limiter.degraded
    assert changes == [True, False]
