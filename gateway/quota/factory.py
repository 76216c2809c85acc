"""Building the quota limiter from configuration: Redis when configured (degrading), else in process."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from gateway.clock import Clock
from gateway.quota.config import QuotaConfig
from gateway.quota.degrading import DegradingLimiter
from gateway.quota.leased import LeasedLimiter
from gateway.quota.limiter import QuotaLimiter
from gateway.quota.memory_limiter import MemoryLimiter
from gateway.quota.redis_limiter import RedisLimiter

DEFAULT_MAX_CONNECTIONS = 128


def quota_redis_client(url: str, *, timeout: float, max_connections: int = DEFAULT_MAX_CONNECTIONS) -> Redis:
    """A Redis client fit for admission: short socket timeouts, no client-side retries, a blocking pool.

    redis-py 6+ retries a failed command up to 10 times with backoff by default, which would hold every
    request for seconds on a dead Redis; here ``DegradingLimiter`` decides what happens instead. The pool
    waits (at most ``timeout``) for a free connection rather than failing at once when all are busy, so a
    burst is not mistaken for an outage.
    """
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )
    return Redis.from_pool(pool)


def make_limiter(
    config: QuotaConfig,
    *,
    clock: Clock,
    redis: Redis | None,
    on_degraded_change: Callable[[bool], None] | None = None,
    on_close: list[Callable[[], Awaitable[None]]] | None = None,
) -> QuotaLimiter:
    """``DegradingLimiter(LeasedLimiter or RedisLimiter, MemoryLimiter)`` with Redis, ``MemoryLimiter``
    without. ``on_close`` collects what must run at shutdown (the leases' give-back)."""
    if redis is None:
        return MemoryLimiter(clock)
    shared: QuotaLimiter = RedisLimiter(redis, prefix=config.key_prefix)
    if config.lease:
        replicas = max(1, round(1 / config.degraded_share))
        shared = leased = LeasedLimiter(redis, clock=clock, prefix=config.key_prefix, replicas=replicas)
        if on_close is not None:
            on_close.append(leased.aclose)
    return DegradingLimiter(
        shared,
        MemoryLimiter(clock),
        share=config.degraded_share,
        min_limit=config.degraded_min_limit,
        timeout=config.redis_timeout,
        retry_interval=config.redis_retry_interval,
        clock=clock,
        on_change=on_degraded_change,
    )
