"""The validation cache: reused while the revocation watermark stays put, dropped within a second of a revocation
even when no announcement arrives."""

from __future__ import annotations

import asyncio
import time

from gateway.credentials import DEFAULT_CACHE_TTL
from gateway.storage import Storage
from tests.support.counting_storage import CountingStorage, ticks
from tests.support.gateway import running_gateway
from tests.support.oauth_flows import post_mcp
from tests.support.upstream import UpstreamProcess

BOUND = 1.0
FAST_TICKS = {"revocation": {"stream_recheck_interval": 0.05}}


async def test_a_busy_credential_is_not_looked_up_while_nothing_is_revoked_yet_a_silent_revocation_bites_in_a_second(
    sqlite_storage: Storage, upstream: UpstreamProcess
):
    storage = CountingStorage(sqlite_storage)
    async with running_gateway(storage=storage, upstream_url=upstream.mcp_url, overrides=FAST_TICKS) as gw:  # type: ignore[arg-type]
        user = await gw.new_user()
        key = await gw.new_key(user)
        headers = {"X-API-Key": key}
        await ticks(storage, 1)
        assert (await post_mcp(gw.url, headers)).status == 200
        lookups, started = storage.key_lookups, time.monotonic()
        while time.monotonic() - started < 2 * DEFAULT_CACHE_TTL:  # well past the cache lifetime
            await ticks(storage, 1)
            assert (await post_mcp(gw.url, headers)).status == 200
        assert storage.key_lookups == lookups

        [row] = await sqlite_storage.list_api_keys(user.id)
        assert await sqlite_storage.revoke_api_key(row.id, now=time.time())  # no announcement: as if lost
        revoked_at = time.monotonic()
        async with asyncio.timeout(5):
            while (await post_mcp(gw.url, headers)).status == 200:
                pass
        assert time.monotonic() - revoked_at <= BOUND
        assert (await post_mcp(gw.url, headers)).status == 401
