"""Building the quota limiter from configuration: Redis when configured (degrading), else in process."""

from __future__ import annotations

from collections.abc import Callable

from gateway.clock import Clock
from gateway.quota.config import QuotaConfig
from gateway.quota.degrading import DegradingLimiter
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
) -> QuotaLimiter:
    """``DegradingLimiter(RedisLimiter, MemoryLimiter)`` with Redis (degrading per shard on a cluster),
    ``MemoryLimiter`` without."""
    if redis is None:
        return MemoryLimiter(clock)
    shared = RedisLimiter(redis, prefix=config.key_prefix)
    return DegradingLimiter(
        shared,
        MemoryLimiter(clock),
        share=config.degraded_share,
        min_limit=config.degraded_min_limit,
        timeout=config.redis_timeout,
        retry_interval=config.redis_retry_interval,
        clock=clock,
        on_change=on_degraded_change,
        shard=shared.shard,
    )
