"""Wires the quota into the app: ``setup_quota(app)`` publishes ``QUOTA_GATE`` (the MCP endpoints charge it, the
dashboard shows it) and ``USAGE_HISTORY`` (the daily counts behind the dashboard's chart)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from gateway.appkeys import CLOCK, CONFIG, REDIS, STORAGE
from gateway.metrics import METRICS
from gateway.quota.factory import make_limiter
from gateway.quota.gate import QuotaGate
from gateway.quota.streams import StreamSlots
from gateway.usage_history import USAGE_HISTORY, UsageRecorder

QUOTA_GATE = web.AppKey("quota_gate", QuotaGate)


@contextlib.asynccontextmanager
async def _quota_ctx(app: web.Application) -> AsyncIterator[None]:
    """One counter per account: in Redis when ``redis.url`` is set (degrading to a per-replica share while it
    is unreachable), otherwise in this process; the same for the stream leases."""
    config, clock, metrics, redis = app[CONFIG], app[CLOCK], app[METRICS], app.get(REDIS)
    metrics.quota_degraded.set(0)
    closers: list[Callable[[], Awaitable[None]]] = []
    limiter = make_limiter(
        config.quota,
        clock=clock,
        redis=redis,
        on_degraded_change=lambda degraded: metrics.quota_degraded.set(1 if degraded else 0),
        on_close=closers,
    )
    slots = StreamSlots(
        redis,
        clock=clock,
        prefix=config.quota.key_prefix,
        lease_seconds=config.quota.stream_lease_seconds,
        share=config.quota.degraded_share,
        timeout=config.quota.redis_timeout,
        retry_interval=config.quota.redis_retry_interval,
    )
    usage = app[USAGE_HISTORY] = UsageRecorder(app[STORAGE], clock, interval=config.accounts.usage_flush_interval)
    app[QUOTA_GATE] = QuotaGate(limiter, config.quota, slots, metrics, on_admit=usage.record)
    async with usage.running():
        yield
    for close in closers:
        with contextlib.suppress(Exception):  # a give-back that fails strands units until the window ends
            await close()


def setup_quota(app: web.Application) -> None:
    app.cleanup_ctx.append(_quota_ctx)
