"""Building the quota limiter from configuration: Redis when configured (degrading), else in process."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from gateway.clock import Clock
from gateway.quota.config import QuotaConfig
from gateway.quota.degrading import DegradingLimiter
from gateway.quota.leased import LeasedLimiter
from gateway.quota.limiter import QuotaLimiter
from gateway.quota.memory_limiter import MemoryLimiter
from gateway.quota.redis_limiter import RedisLimiter
from gateway.redis_clients import DEFAULT_MAX_CONNECTIONS, RedisClient, redis_client


def quota_redis_client(
    url: str, *, timeout: float, cluster: bool = False, max_connections: int = DEFAULT_MAX_CONNECTIONS
) -> RedisClient:
    """The client of the quota, the stream leases and the protective limits (``redis.url``, and
    ``redis.cluster``: a Redis Cluster reached through any one node). See ``gateway.redis_clients``: short
    timeouts, no client-side retries (``DegradingLimiter`` decides what a failure means), a blocking pool on
    one server."""
    return redis_client(url, cluster=cluster, timeout=timeout, max_connections=max_connections)


def make_limiter(
    config: QuotaConfig,
    *,
    clock: Clock,
    redis: RedisClient | None,
    on_degraded_change: Callable[[bool], None] | None = None,
    on_close: list[Callable[[], Awaitable[None]]] | None = None,
) -> QuotaLimiter:
    """``DegradingLimiter(LeasedLimiter or RedisLimiter, MemoryLimiter)`` with Redis (degrading per shard on a
    cluster), ``MemoryLimiter`` without. ``on_close`` collects what must run at shutdown (the leases' give-back)."""
    if redis is None:
        return MemoryLimiter(clock)
    shared = RedisLimiter(redis, prefix=config.key_prefix)
    primary: QuotaLimiter = shared
    if config.lease:
        replicas = max(1, round(1 / config.degraded_share))
        primary = leased = LeasedLimiter(redis, clock=clock, prefix=config.key_prefix, replicas=replicas)
        if on_close is not None:
            on_close.append(leased.aclose)
    return DegradingLimiter(
        primary,
        MemoryLimiter(clock),
        share=config.degraded_share,
        min_limit=config.degraded_min_limit,
        timeout=config.redis_timeout,
        retry_interval=config.redis_retry_interval,
        clock=clock,
        on_change=on_degraded_change,
        shard=shared.shard,
    )
