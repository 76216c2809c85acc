"""The hourly sweep removes what is over and nothing else."""

from __future__ import annotations

import secrets
from pathlib import Path

from gateway.clock import ManualClock
from gateway.housekeeping import sweep
from gateway.storage import BrowserSession, Storage
from tests.support.databases import Backend
from tests.support.gateway import UNUSED_UPSTREAM, running_gateway


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
