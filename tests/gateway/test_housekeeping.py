"""The hourly sweep removes what is over and nothing else."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.appkeys import CLOCK, CONFIG, STORAGE
from gateway.background import background
from gateway.clock import ManualClock
from gateway.config import GatewayConfig
from gateway.housekeeping import INTERVAL, RETRY, run_housekeeping, sweep
from gateway.storage import BrowserSession, Storage
from tests.support.databases import Backend
from tests.support.gateway import UNUSED_UPSTREAM, running_gateway
from tests.support.timers import ManualTimer

BOUND = 5.0
"""A safety net so a broken loop fails the test instead of hanging it; nothing waits on real time."""


async def test_the_sweep_removes_browser_sessions_that_are_over_and_keeps_live_ones(tmp_path: Path):
    backend, clock = Backend("sqlite", tmp_path), ManualClock()
    sqlite_storage = await backend.storage()
    try:
        await _sweep_sessions(sqlite_storage, clock)
    finally:
        await backend.close()


async def _sweep_sessions(sqlite_storage: Storage, clock: ManualClock) -> None:
    async with running_gateway(storage=sqlite_storage, upstream_url=UNUSED_UPSTREAM, clock=clock) as gw:
        user = await gw.new_user()
        now = clock.now()
        live = BrowserSession(secrets.token_hex(32), user.id, created_at=now, last_seen_at=now, expires_at=now + 60)
        over = BrowserSession(secrets.token_hex(32), user.id, created_at=now, last_seen_at=now, expires_at=now + 1)
        await sqlite_storage.create_browser_session(live)
        await sqlite_storage.create_browser_session(over)
        clock.advance(2)
        removed = await sweep(gw.app)
        assert removed["browser_sessions"] == 1
        assert await sqlite_storage.get_browser_session(over.session_hash) is None
        assert await sqlite_storage.get_browser_session(live.session_hash) == live


class BrokenOnce:
    """The real storage, except that the first sweep's first step raises an error that is not a storage error."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.sweeps = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.storage, name)

    async def purge_sessions(self, *, created_before: float) -> int:
        self.sweeps += 1
        if self.sweeps == 1:
            raise RuntimeError("not a storage error")
        return await self.storage.purge_sessions(created_before=created_before)


async def test_a_sweep_that_raises_any_error_is_logged_and_retried_sooner_and_the_loop_runs_on(
    sqlite_storage: Storage,
) -> None:
    app, storage, timer = web.Application(), BrokenOnce(sqlite_storage), ManualTimer()
    app[CONFIG], app[STORAGE], app[CLOCK] = GatewayConfig(), storage, ManualClock()  # type: ignore[assignment]
    async with asyncio.timeout(BOUND), background(run_housekeeping(app, wait=timer), name="housekeeping-test"):
        assert await timer.next_wait() == RETRY.first  # the first sweep failed at once: retried in a minute
        timer.release()
        assert await timer.next_wait() == INTERVAL  # the retry swept: back to the hourly pace
        timer.release()
        assert await timer.next_wait() == INTERVAL
    assert storage.sweeps == 3
