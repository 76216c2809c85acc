"""Open streams end cleanly (a final ``error`` event, then the end of the response) when their credential is
revoked or expires, and when the server shuts down; in one process, without Redis."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from gateway.clock import ManualClock
from gateway.storage import Storage
from tests.support.counting_storage import CountingStorage, ticks
from tests.support.gateway import GatewayHandle, running_gateway
from tests.support.oauth_browser import Browser
from tests.support.oauth_flows import EMAIL, INIT, MCP_HEADERS, OAuthApp, bearer, obtain_tokens, post_mcp
from tests.support.scripted_upstream import jsonrpc, scripted_upstream, sse_endpoint
from tests.support.upstream import UpstreamProcess

BOUND = 1.0
WAIT = 10.0


@contextlib.asynccontextmanager
async def get_stream(gw: GatewayHandle, headers: dict[str, str]) -> AsyncIterator[aiohttp.ClientResponse]:
    """A standalone ``GET /mcp`` stream on a session opened with ``initialize`` (the real upstream)."""
    async with aiohttp.ClientSession() as http:
        async with http.post(gw.mcp_url, data=INIT, headers={**MCP_HEADERS, **headers}) as opened:
            assert opened.status == 200, await opened.text()
            session = opened.headers["Mcp-Session-Id"]
            await opened.read()
        session_headers = {**headers, "Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-06-18"}
        initialized = jsonrpc("notifications/initialized")
        async with http.post(gw.mcp_url, data=initialized, headers={**MCP_HEADERS, **session_headers}) as done:
            assert done.status in (200, 202), await done.text()
        async with http.get(gw.mcp_url, headers={**session_headers, "Accept": "text/event-stream"}) as stream:
            assert stream.status == 200, await stream.text()
            assert stream.content_type == "text/event-stream"
            yield stream


async def read_to_end(stream: aiohttp.ClientResponse) -> bytes:
    async with asyncio.timeout(WAIT):
        return await stream.read()


async def test_an_open_get_stream_ends_with_an_error_event_within_a_second_of_its_token_being_revoked(
    gateway: GatewayHandle, app: OAuthApp
):
    async with Browser(gateway.url) as browser:
        tokens = await obtain_tokens(app, browser, EMAIL)
    async with get_stream(gateway, bearer(tokens["access_token"])) as stream:
        assert (await app.revoke(tokens["access_token"])).status == 200
        revoked_at = time.monotonic()
        rest = await read_to_end(stream)
        closed_after = time.monotonic() - revoked_at
    assert closed_after <= BOUND
    assert rest.endswith(b'event: error\ndata: {"error": "credential revoked or expired"}\n\n')
    assert (await post_mcp(gateway.url, bearer(tokens["access_token"]))).status == 401


async def test_a_stream_ends_within_a_second_once_its_api_key_expires_mid_stream(
    sqlite_storage: Storage, clock: ManualClock
):
    async with (
        scripted_upstream(sse_endpoint("/messages/?session_id=s1")) as upstream,
        running_gateway(
            storage=sqlite_storage, upstream_url=upstream.mcp_url, upstream_sse_url=upstream.sse_url, clock=clock
        ) as gw,
        aiohttp.ClientSession() as http,
    ):
        key = await gw.new_key(await gw.new_user(), expires_in=60)
        async with http.get(gw.sse_url, headers={"X-API-Key": key}) as stream:
            async with asyncio.timeout(WAIT):
                await stream.content.readuntil(b"\n\n")
            clock.advance(61)
            expired_at = time.monotonic()
            rest = await read_to_end(stream)
            closed_after = time.monotonic() - expired_at
    assert closed_after <= BOUND
    assert b"event: error" in rest


async def test_shutdown_lets_in_flight_requests_finish_and_ends_open_streams_with_a_final_event(
    sqlite_storage: Storage,
):
    release = asyncio.Event()

    async def slow_answer(request: web.Request) -> web.StreamResponse:
        if request.path == "/sse":
            return await sse_endpoint("/messages/?session_id=s1")(request)
        await release.wait()
        return web.json_response({"jsonrpc": "2.0", "id": 1, "result": {}})

    async with scripted_upstream(slow_answer) as upstream, aiohttp.ClientSession() as http:
        stack = contextlib.AsyncExitStack()
        gw = await stack.enter_async_context(
            running_gateway(storage=sqlite_storage, upstream_url=upstream.mcp_url, upstream_sse_url=upstream.sse_url)
        )
        key = await gw.new_key(await gw.new_user())
        stream = await http.get(gw.sse_url, headers={"X-API-Key": key})
        async with asyncio.timeout(WAIT):
            await stream.content.readuntil(b"\n\n")
        in_flight = asyncio.create_task(
            http.post(gw.mcp_url, data=jsonrpc("tools/list"), headers={**MCP_HEADERS, "X-API-Key": key})
        )
        async with asyncio.timeout(WAIT):
            while len(upstream.requests) < 2:  # the POST reached the upstream and waits for its answer
                await asyncio.sleep(0.01)
        shutdown = asyncio.create_task(stack.aclose())
        rest = await read_to_end(stream)
        stream.close()
        release.set()
        async with asyncio.timeout(WAIT):
            answered = await in_flight
            await shutdown
        assert answered.status == 200
        answered.close()
    assert rest.endswith(b'event: error\ndata: {"error": "server shutting down"}\n\n')


async def test_quiet_checks_read_one_watermark_and_a_revocation_without_announcement_still_closes_its_stream(
    sqlite_storage: Storage, upstream: UpstreamProcess
):
    storage = CountingStorage(sqlite_storage)
    overrides = {"revocation": {"stream_recheck_interval": 0.05}}
    async with running_gateway(storage=storage, upstream_url=upstream.mcp_url, overrides=overrides) as gw:  # type: ignore[arg-type]
        users = [await gw.new_user() for _ in range(3)]
        keys = [await gw.new_key(user) for user in users]
        async with contextlib.AsyncExitStack() as stack:
            streams = [await stack.enter_async_context(get_stream(gw, {"X-API-Key": key})) for key in keys]
            await ticks(storage, 3)  # each new stream re-checked once
            before = storage.key_lookups
            await ticks(storage, 10)
            assert storage.key_lookups == before  # nothing revoked: no credential looked up again

            # Revoked behind the gateway's back (no announcement, as if the broadcast were lost).
            bystander = await gw.new_user()
            row, _ = await gw.accounts.create_key(bystander, name="other")
            assert await sqlite_storage.revoke_api_key(row.id, now=time.time())
            await ticks(storage, 2)
            assert storage.key_lookups >= before + 3  # the watermark moved: every stream re-checked, all still fine
            victim = await sqlite_storage.list_api_keys(users[0].id)
            assert await sqlite_storage.revoke_api_key(victim[0].id, now=time.time())
            revoked_at = time.monotonic()
            rest = await read_to_end(streams[0])
            assert time.monotonic() - revoked_at <= BOUND
            assert rest.endswith(b'event: error\ndata: {"error": "credential revoked or expired"}\n\n')
            for survivor in streams[1:]:
                assert not survivor.content.at_eof()
