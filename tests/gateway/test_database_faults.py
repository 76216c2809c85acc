"""Infrastructure faults are 503 with Retry-After, never a 401 that would send clients to re-authenticate."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from gateway.clock import ManualClock
from tests.support.databases import postgres_behind_proxy
from tests.support.gateway import running_gateway
from tests.support.scripted_upstream import json_ok, jsonrpc, scripted_upstream, sse_endpoint


@pytest.mark.postgres
async def test_a_valid_key_gets_503_not_401_while_postgresql_is_unreachable_and_works_again_after(
    clock: ManualClock,
):
    async with postgres_behind_proxy(connect_timeout=2) as (storage, proxy):
        async with (
            scripted_upstream(json_ok) as upstream,
            running_gateway(storage=storage, upstream_url=upstream.mcp_url, clock=clock) as gw,
            aiohttp.ClientSession() as http,
        ):
            key = await gw.new_key(await gw.new_user())
            headers = {"X-API-Key": key, "Content-Type": "application/json"}
            proxy.cut()
            clock.advance(1.0)
            async with http.post(gw.mcp_url, data=jsonrpc("tools/list"), headers=headers) as response:
                assert response.status == 503
                assert response.headers["Retry-After"].isdigit()
                assert (await response.json())["error"] == "temporarily_unavailable"
            async with http.get(f"{gw.url}/readyz") as ready:
                assert ready.status == 503
            proxy.restore()
            async with http.post(gw.mcp_url, data=jsonrpc("tools/list"), headers=headers) as response:
                assert response.status == 200


@pytest.mark.postgres
async def test_an_open_stream_ends_with_an_unavailable_event_not_a_revocation_soon_after_postgresql_goes_away():
    async with postgres_behind_proxy(connect_timeout=1) as (storage, proxy):
        async with (
            scripted_upstream(sse_endpoint("/messages/?session_id=s1")) as upstream,
            running_gateway(storage=storage, upstream_url=upstream.mcp_url, upstream_sse_url=upstream.sse_url) as gw,
            aiohttp.ClientSession() as http,
        ):
            key = await gw.new_key(await gw.new_user())
            async with http.get(gw.sse_url, headers={"X-API-Key": key}) as stream:
                async with asyncio.timeout(10):
                    await stream.content.readuntil(b"\n\n")
                proxy.cut()
                cut_at = time.monotonic()
                async with asyncio.timeout(10):
                    rest = await stream.read()
                closed_after = time.monotonic() - cut_at
            # Trusted for the cache lifetime (one second) plus one re-check interval, then ended.
            assert closed_after <= 2.0
            assert rest.endswith(b'event: error\ndata: {"error": "credential store unavailable"}\n\n')
            async with http.post(gw.mcp_url, data=jsonrpc("tools/list"), headers={"X-API-Key": key}) as again:
                assert again.status == 503
