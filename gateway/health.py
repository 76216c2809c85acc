"""Liveness (``/healthz``) and readiness (``/readyz``).

Readiness is 503 when storage or the upstream is unreachable: this replica cannot serve. When Redis (``redis.url``)
is unreachable the replica still serves correctly (validation from storage with the one-second cache, quota on a
per-replica share), so readiness stays 200 with ``"status": "degraded"`` and ``"redis": "degraded"``: taking every
replica out of the load balancer for a Redis outage would turn it into a full outage.

Expiries are checked on the replica's clock, so a replica whose clock differs from PostgreSQL's by more than
``security.max_clock_skew`` is not ready (``"clock": "skewed"``): the load balancer takes it out before it can
accept a token later than that past its expiry (security-cases 115).
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp
from aiohttp import web

from gateway.appkeys import CLOCK, CONFIG, STORAGE, UPSTREAM_SESSION
from gateway.errors import NO_STORE
from gateway.revocation import REVOCATIONS
from gateway.revocation_redis import RedisRevocationBus
from gateway.storage.base import StorageError

log = logging.getLogger("gateway.health")

READY_TIMEOUT = 2.0


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"}, headers=NO_STORE)


async def _storage_ok(app: web.Application) -> tuple[bool, bool | None]:
    """(reachable, clock in step: None when the database shares this host's clock)."""
    try:
        async with asyncio.timeout(READY_TIMEOUT):
            sent = app[CLOCK].now()
            server_time = await app[STORAGE].ping()
            received = app[CLOCK].now()
    except (StorageError, TimeoutError):
        return False, None
    if server_time is None:
        return True, None
    # The server read its clock between ``sent`` and ``received``; anything outside that span (plus the
    # allowance) is skew, however slow the round trip was.
    allowance = app[CONFIG].security.max_clock_skew
    return True, sent - allowance <= server_time <= received + allowance


async def _upstream_ok(app: web.Application) -> bool:
    """Any HTTP answer means the upstream is reachable; only connection failures count against it."""
    try:
        async with asyncio.timeout(READY_TIMEOUT):
            async with app[UPSTREAM_SESSION].head(app[CONFIG].upstream.url, allow_redirects=False) as response:
                response.release()
    except (aiohttp.ClientError, OSError, TimeoutError):
        return False
    return True


async def _redis_ok(app: web.Application) -> bool | None:
    """None when Redis is not configured."""
    bus = app[REVOCATIONS]
    return await bus.healthy() if isinstance(bus, RedisRevocationBus) else None


async def readyz(request: web.Request) -> web.Response:
    (storage, clock_in_step), upstream, redis = await asyncio.gather(
        _storage_ok(request.app), _upstream_ok(request.app), _redis_ok(request.app)
    )
    checks = {"storage": "ok" if storage else "unavailable", "upstream": "ok" if upstream else "unavailable"}
    if redis is not None:
        checks["redis"] = "ok" if redis else "degraded"
    if clock_in_step is False:
        checks["clock"] = "skewed"
        log.warning("clock differs from the database's by more than security.max_clock_skew; not ready")
    ready = storage and upstream and clock_in_step is not False
    status = ("ready" if redis is not False else "degraded") if ready else "not_ready"
    return web.json_response(
        {"status": status, "checks": checks},
        status=200 if ready else 503,
        headers=NO_STORE,
    )
