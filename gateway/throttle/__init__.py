"""Protective limits of the authorization server's open endpoints (security-cases 94).

budgets.py   Budget, the Budgets protocol; RedisBudgets (one Lua script), MemoryBudgets, FallbackBudgets
limits.py    ProtectiveLimits: the per-endpoint budgets, 429 ``Throttled`` errors, the ``throttled`` metric
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from gateway.appkeys import CLOCK, CONFIG
from gateway.metrics import METRICS
from gateway.oauth.limits import ENDPOINT_LIMITS
from gateway.oauth.registration import REGISTRATION_THROTTLE
from gateway.redis_clients import RedisClient
from gateway.throttle.budgets import Budget, Budgets, FallbackBudgets, MemoryBudgets, RedisBudgets
from gateway.throttle.limits import PROTECTIVE_LIMITS, ProtectiveLimits, Throttled, budget_key

__all__ = [
    "PROTECTIVE_LIMITS",
    "Budget",
    "Budgets",
    "FallbackBudgets",
    "MemoryBudgets",
    "ProtectiveLimits",
    "RedisBudgets",
    "Throttled",
    "budget_key",
    "setup_throttle",
]


def setup_throttle(app: web.Application, redis: web.AppKey[RedisClient]) -> None:
    """At startup, build the limits on the app's Redis client (``redis`` key; absent: in process only) and
    hand them to the OAuth endpoints (a registration throttle set before startup is kept)."""

    @contextlib.asynccontextmanager
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        config, clock = app[CONFIG], app[CLOCK]
        client = app.get(redis)
        budgets: Budgets
        if client is None:
            budgets = MemoryBudgets(clock)
        else:
            budgets = FallbackBudgets(
                RedisBudgets(client),
                MemoryBudgets(clock, share=config.quota.degraded_share),
                clock=clock,
                timeout=config.quota.redis_timeout,
                retry_interval=config.quota.redis_retry_interval,
            )
        limits = ProtectiveLimits(budgets, config, app[METRICS], config.quota.key_prefix)
        app[PROTECTIVE_LIMITS] = limits
        app[ENDPOINT_LIMITS] = limits
        if REGISTRATION_THROTTLE not in app:
            app[REGISTRATION_THROTTLE] = limits
        yield

    app.cleanup_ctx.append(ctx)
