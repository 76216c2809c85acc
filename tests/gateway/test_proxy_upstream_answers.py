"""What comes back from the upstream: streamed when its length is unknown, without headers that act on the
gateway's origin; and what a request costs once it reached the upstream."""

from __future__ import annotations

import asyncio
import json

import aiohttp
from aiohttp import web

from gateway.storage import Storage
from tests.gateway.test_quota import plan_overrides
from tests.support.gateway import running_gateway
from tests.support.oauth_flows import INIT, post_mcp, request
from tests.support.scripted_upstream import Behaviour, json_ok, jsonrpc, scripted_upstream, slow_stream, sse_endpoint

MCP_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
WAIT = 10.0
CHUNK = 64 * 1024
CHUNKS = 32


def lock_step_json(consumed: asyncio.Queue[int]) -> Behaviour:
    """A chunked JSON answer of ``CHUNKS * CHUNK`` bytes whose next chunk is written only once the client has
    read the previous one: a gateway that buffers the answer never gets past the first chunk."""

    async def behaviour(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(b'{"jsonrpc": "2.0", "id": 1, "result": {"blob": "')
        for _ in range(CHUNKS):
            await response.write(b"x" * CHUNK)
            await consumed.get()
        await response.write(b'"}}')
        await response.write_eof()
        return response

    return behaviour


async def test_a_chunked_json_answer_streams_to_the_client_chunk_by_chunk_instead_of_being_buffered(
    sqlite_storage: Storage,
):
    consumed: asyncio.Queue[int] = asyncio.Queue()
    async with (
        scripted_upstream(lock_step_json(consumed)) as upstream,
        running_gateway(storage=sqlite_storage, upstream_url=upstream.mcp_url) as gw,
    ):
        key = await gw.new_key(await gw.new_user())
        headers = {**MCP_HEADERS, "X-API-Key": key}
        received = bytearray()
        async with (
            asyncio.timeout(WAIT),
            aiohttp.ClientSession() as http,
            http.post(gw.mcp_url, data=jsonrpc("tools/call", {"name": "dump"}), headers=headers) as response,
        ):
            assert response.status == 200
            assert "Content-Length" not in response.headers
            for n in range(1, CHUNKS + 1):
                while len(received) < n * CHUNK:
                    received += await response.content.readany()
                # The gateway holds at most the chunk in flight: the client already has all the others.
                consumed.put_nowait(n)
            received += await response.content.read()
    assert len(json.loads(received)["result"]["blob"]) == CHUNKS * CHUNK


async def answers_with_origin_headers(request: web.Request) -> web.StreamResponse:
    return web.json_response(
        {"jsonrpc": "2.0", "id": 1, "result": {}},
        headers={
            "Strict-Transport-Security": "max-age=63072000; includeSubDomains",
            "Clear-Site-Data": '"cookies", "storage"',
            "Access-Control-Allow-Origin": "*",
            "Access-Control-Allow-Credentials": "true",
            "Alt-Svc": 'h3=":443"; ma=86400',
            "Content-Security-Policy": "default-src 'none'",
            "Cross-Origin-Resource-Policy": "cross-origin",
            "Service-Worker-Allowed": "/",
            "X-Accel-Redirect": "/internal/admin",
            "Set-Cookie": "__Host-gw_session=x; Path=/",
            "Location": "https://evil.example/",
            "X_Gateway_User_Id": "usr_admin",
            "Mcp-Session-Id": "s-1",
            "X-Upstream-Note": "kept",
        },
    )


async def test_upstream_headers_that_act_on_the_gateways_origin_never_reach_the_client(sqlite_storage: Storage):
    async with (
        scripted_upstream(answers_with_origin_headers) as upstream,
        running_gateway(storage=sqlite_storage, upstream_url=upstream.mcp_url) as gw,
    ):
        key = await gw.new_key(await gw.new_user())
        reply = await post_mcp(gw.url, {"X-API-Key": key}, INIT)
    assert reply.status == 200
    names = {name.lower() for name in reply.headers}
    assert "x-upstream-note" in names
    assert "mcp-session-id" in names
    for dropped in (
        "strict-transport-security",
        "clear-site-data",
        "access-control-allow-origin",
        "access-control-allow-credentials",
        "alt-svc",
        "content-security-policy",
        "cross-origin-resource-policy",
        "service-worker-allowed",
        "x-accel-redirect",
        "set-cookie",
        "location",
        "x_gateway_user_id",
    ):
        assert dropped not in names, dropped


async def test_head_on_the_legacy_sse_endpoint_opens_no_upstream_stream(sqlite_storage: Storage):
    async with (
        scripted_upstream(sse_endpoint("/messages/?session_id=s1")) as upstream,
        running_gateway(storage=sqlite_storage, upstream_url=upstream.mcp_url, upstream_sse_url=upstream.sse_url) as gw,
    ):
        key = await gw.new_key(await gw.new_user())
        reply = await asyncio.wait_for(request("HEAD", gw.sse_url, headers={"X-API-Key": key}), WAIT)
        assert reply.status == 405
        assert upstream.requests == []


async def test_head_on_the_mcp_endpoint_never_reaches_the_upstream(sqlite_storage: Storage):
    async with (
        scripted_upstream(json_ok) as upstream,
        running_gateway(storage=sqlite_storage, upstream_url=upstream.mcp_url) as gw,
    ):
        key = await gw.new_key(await gw.new_user())
        reply = await asyncio.wait_for(request("HEAD", gw.mcp_url, headers={"X-API-Key": key}), WAIT)
        assert reply.status == 405
        assert upstream.requests == []


async def test_a_tools_call_without_an_id_is_charged_and_a_real_notification_is_not(sqlite_storage: Storage):
    unnumbered = json.dumps({"jsonrpc": "2.0", "method": "tools/call", "params": {"name": "x"}}).encode()
    notification = json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}).encode()
    async with (
        scripted_upstream(json_ok) as upstream,
        running_gateway(storage=sqlite_storage, upstream_url=upstream.mcp_url, overrides=plan_overrides(5)) as gw,
    ):
        key = {"X-API-Key": await gw.new_key(await gw.new_user())}
        for body in (INIT, unnumbered, unnumbered, notification, INIT):
            last = await post_mcp(gw.url, key, body)
            assert last.status == 200
        assert len(upstream.requests) == 5
    assert last.headers["RateLimit"].split(",")[0].split(";r=")[1].split(";")[0] == "1"  # 5 - (1 + 1 + 1 + 0 + 1)


async def streams_on_get(request: web.Request) -> web.StreamResponse:
    return await (slow_stream(b"event: message\ndata: {}\n\n") if request.method == "GET" else json_ok)(request)


async def test_a_504_for_a_request_that_never_left_the_gateway_is_refunded(sqlite_storage: Storage):
    overrides = {**plan_overrides(5), "upstream": {"max_connections": 1, "first_byte_timeout": 0.3}}
    async with (
        scripted_upstream(streams_on_get) as upstream,
        running_gateway(storage=sqlite_storage, upstream_url=upstream.mcp_url, overrides=overrides) as gw,
        aiohttp.ClientSession() as http,
    ):
        key = {"X-API-Key": await gw.new_key(await gw.new_user())}
        async with http.get(gw.mcp_url, headers={**key, "Accept": "text/event-stream"}) as stream:
            assert await asyncio.wait_for(stream.content.readuntil(b"\n\n"), WAIT)
            # The only upstream connection is taken: the POST waits for one and never gets to send.
            waited = await asyncio.wait_for(post_mcp(gw.url, key, INIT), WAIT)
            assert waited.status == 504
            assert [r.method for r in upstream.requests] == ["GET"]
        upstream.behaviour = json_ok
        async with asyncio.timeout(WAIT):
            while (reply := await post_mcp(gw.url, key, INIT)).status == 504:  # until the stream's connection is free
                pass
    assert reply.status == 200
    assert reply.headers["RateLimit"].split(",")[0].split(";r=")[1].split(";")[0] == "3"  # 5 - stream - INIT


def head_first_then_event(release: asyncio.Event) -> Behaviour:
    """An event stream whose head goes out at once and whose first event only once the test releases it."""

    async def behaviour(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await release.wait()
        await response.write(b"event: message\r\ndata: {}\r\n\r\n")
        await response.write_eof()
        return response

    return behaviour


async def test_an_event_streams_head_reaches_the_client_before_any_event_when_the_upstream_sends_it_first(
    sqlite_storage: Storage,
):
    release = asyncio.Event()
    async with (
        scripted_upstream(head_first_then_event(release)) as upstream,
        running_gateway(storage=sqlite_storage, upstream_url=upstream.mcp_url) as gw,
    ):
        key = await gw.new_key(await gw.new_user())
        async with (
            aiohttp.ClientSession() as http,
            asyncio.timeout(WAIT),
            http.post(
                gw.mcp_url, data=jsonrpc("tools/call", {"name": "x"}), headers={**MCP_HEADERS, "X-API-Key": key}
            ) as response,
        ):
            assert (response.status, response.content_type) == (200, "text/event-stream")  # no event sent yet
            release.set()
            assert b"data: {}" in await response.content.read()
