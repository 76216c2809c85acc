"""Periodic clean-up: expired tokens and codes, stale pending authorizations, forgotten MCP session bindings,
registered clients that never completed an authorization, and browser sign-in sessions that are over. Every
replica may run it; each step is an idempotent bulk delete."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from gateway.appkeys import CLOCK, CONFIG, STORAGE
from gateway.background import background
from gateway.oauth.registration import reap_unused_clients
from gateway.storage.base import StorageError

log = logging.getLogger("gateway.housekeeping")

INTERVAL = 3600.0


async def sweep(app: web.Application) -> dict[str, int]:
    config, storage, clock = app[CONFIG], app[STORAGE], app[CLOCK]
    now = clock.now()
    return {
        "mcp_sessions": await storage.purge_sessions(created_before=now - config.limits.session_max_age),
        "tokens": await storage.purge_expired_tokens(before=now),
        "authorization_requests": await storage.purge_authorization_requests(expired_before=now),
        "clients": await reap_unused_clients(storage, clock, config.oauth.registration.unused_client_ttl),
        "browser_sessions": await storage.purge_browser_sessions(
            ended_before=now, idle_since=now - config.oauth.login_session_idle_ttl
        ),
    }


def interval(app: web.Application) -> float:
    """Hourly, or more often when unused clients must go sooner (a quarter of ``unused_client_ttl``, >= 60 s)."""
    return min(INTERVAL, max(60.0, app[CONFIG].oauth.registration.unused_client_ttl / 4))


async def _run(app: web.Application) -> None:
    while True:
        try:
            removed = await sweep(app)
            if any(removed.values()):
                log.info("housekeeping removed rows", extra={"removed": removed})
        except StorageError as exc:
            log.warning("housekeeping failed: %s", type(exc).__name__)
        await asyncio.sleep(interval(app))


@contextlib.asynccontextmanager
async def housekeeping_ctx(app: web.Application) -> AsyncIterator[None]:
    async with background(_run(app), name="housekeeping"):
        yield
