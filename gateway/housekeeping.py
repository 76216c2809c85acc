"""Periodic clean-up: expired tokens and codes, stale pending authorizations, forgotten MCP session bindings,
registered clients that never completed an authorization, and browser sign-in sessions that are over. Every
replica may run it; each step is an idempotent bulk delete."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Final

from aiohttp import web

from gateway.appkeys import CLOCK, CONFIG, STORAGE
from gateway.background import Backoff, Wait, background, repeat
from gateway.oauth.registration import reap_unused_clients
from gateway.storage.base import StorageError

log = logging.getLogger("gateway.housekeeping")

INTERVAL = 3600.0
RETRY: Final = Backoff(first=60.0, ceiling=INTERVAL)
"""After a failed sweep: the next one in a minute, then two, four... never later than the usual hour."""


async def sweep(app: web.Application) -> dict[str, int]:
    config, storage, clock = app[CONFIG], app[STORAGE], app[CLOCK]
    now = clock.now()
    return {
        "mcp_sessions": await storage.purge_sessions(created_before=now - config.limits.session_max_age),
        "tokens": await storage.purge_expired_tokens(before=now),
        "authorization_requests": await storage.purge_authorization_requests(expired_before=now),
        "app_sign_ins": await storage.purge_app_sign_ins(expired_before=now),
        "clients": await reap_unused_clients(storage, clock, config.oauth.registration.unused_client_ttl),
        "browser_sessions": await storage.purge_browser_sessions(
            ended_before=now, idle_since=now - config.oauth.login_session_idle_ttl
        ),
        "flight_steps": await storage.purge_trail(before=now - config.flight_recorder.retention),
    }


def interval(app: web.Application) -> float:
    """Hourly, or more often when unused clients must go sooner (a quarter of ``unused_client_ttl``, >= 60 s)."""
    return min(INTERVAL, max(60.0, app[CONFIG].oauth.registration.unused_client_ttl / 4))


async def run_housekeeping(app: web.Application, *, wait: Wait = asyncio.sleep) -> None:
    """Sweep now and every ``interval``; a failed sweep (any error) is logged and retried after ``RETRY``."""

    async def step() -> bool:
        try:
            removed = await sweep(app)
        except StorageError as exc:
            log.warning("housekeeping failed: %s", type(exc).__name__)
            return False
        if any(removed.values()):
            log.info("housekeeping removed rows", extra={"removed": removed})
        return True

    await repeat(step, name="housekeeping", interval=interval(app), backoff=RETRY, wait=wait, wait_first=False)


@contextlib.asynccontextmanager
async def housekeeping_ctx(app: web.Application) -> AsyncIterator[None]:
    async with background(run_housekeeping(app), name="housekeeping"):
        yield
