"""Liveness (``/healthz``) and readiness (``/readyz``).

Readiness is 503 when storage or the upstream is unreachable: this replica cannot serve. When Redis (``redis.url``)
is unreachable the replica still serves correctly (validation from storage with the one-second cache, quota on a
per-replica share), so readiness stays 200 with ``"status": "degraded"`` and ``"redis": "degraded"``: taking every
replica out of the load balancer for a Redis outage would turn it into a full outage.
"""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from gateway.appkeys import CONFIG, STORAGE, UPSTREAM_SESSION
from gateway.errors import NO_STORE
from gateway.revocation import REVOCATIONS
from gateway.revocation_redis import RedisRevocationBus
from gateway.storage.base import StorageError

READY_TIMEOUT = 2.0


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"}, headers=NO_STORE)


async def _storage_ok(app: web.Application) -> bool:
    try:
        async with asyncio.timeout(READY_TIMEOUT):
            await app[STORAGE].ping()
    except (StorageError, TimeoutError):
        return False
    return True


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
    storage, upstream, redis = await asyncio.gather(
        _storage_ok(request.app), _upstream_ok(request.app), _redis_ok(request.app)
    )
    checks = {"storage": "ok" if storage else "unavailable", "upstream": "ok" if upstream else "unavailable"}
    if redis is not None:
        checks["redis"] = "ok" if redis else "degraded"
    ready = storage and upstream
    status = ("ready" if redis is not False else "degraded") if ready else "not_ready"
    return web.json_response(
        {"status": status, "checks": checks},
        status=200 if ready else 503,
        headers=NO_STORE,
    )


def setup_health(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
