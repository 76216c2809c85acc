"""Liveness (``/healthz``) and readiness (``/readyz``: storage and upstream reachable)."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from gateway.appkeys import CONFIG, STORAGE, UPSTREAM_SESSION
from gateway.errors import NO_STORE
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


async def readyz(request: web.Request) -> web.Response:
    storage, upstream = await asyncio.gather(_storage_ok(request.app), _upstream_ok(request.app))
    checks = {"storage": "ok" if storage else "unavailable", "upstream": "ok" if upstream else "unavailable"}
    ready = storage and upstream
    return web.json_response(
        {"status": "ready" if ready else "not_ready", "checks": checks},
        status=200 if ready else 503,
        headers=NO_STORE,
    )


def setup_health(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
