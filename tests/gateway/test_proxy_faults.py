"""What the proxy does when the upstream, the client or the input misbehaves."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator

import aiohttp

from gateway.storage import Storage
from tests.support.gateway import GatewayHandle, running_gateway
from tests.support.scripted_upstream import (
    ScriptedUpstream,
    answers_401,
    json_ok,
    jsonrpc,
    never_answers,
    opens_session,
    scripted_upstream,
    slow_stream,
    sse_endpoint,
)

MCP_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
WAIT = 10.0


@contextlib.asynccontextmanager
async def gateway_before(upstream: ScriptedUpstream, storage: Storage, **upstream_cfg: object):
    async with running_gateway(
        storage=storage,
        upstream_url=upstream.mcp_url,
        upstream_sse_url=upstream.sse_url,
        overrides={"upstream": upstream_cfg},
    ) as gw:
        user = await gw.new_user()
        yield gw, await gw.new_key(user)


@contextlib.asynccontextmanager
async def post(gw: GatewayHandle, key: str, body: bytes, **headers: str) -> AsyncIterator[aiohttp.ClientResponse]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(gw.mcp_url, data=body, headers={**MCP_HEADERS, "X-API-Key": key, **headers}) as response,
    ):
        yield response


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_an_upstream_that_refuses_connections_gives_502_with_a_jsonrpc_error(sqlite_storage: Storage):
    url = f"http://127.0.0.1:{closed_port()}/mcp"
    async with running_gateway(storage=sqlite_storage, upstream_url=url) as gw:
        key = await gw.new_key(await gw.new_user())
        async with post(gw, key, jsonrpc("tools/list")) as response:
            assert response.status == 502
            body = await response.json()
    assert body["jsonrpc"] == "2.0"
    assert body["error"]["message"] == "Upstream MCP server unavailable"


async def test_a_silent_upstream_gives_504_after_the_first_byte_timeout_and_is_not_retried(sqlite_storage: Storage):
    async with (
        scripted_upstream(never_answers) as upstream,
        gateway_before(upstream, sqlite_storage, first_byte_timeout=0.3) as (gw, key),
        post(gw, key, jsonrpc("tools/call", {"name": "x"})) as response,
    ):
        assert response.status == 504
        assert (await response.json())["error"]["code"] == -32000
        assert len(upstream.requests) == 1


async def test_a_client_that_disconnects_cancels_its_upstream_request(sqlite_storage: Storage):
    async with (
        scripted_upstream(slow_stream(b"event: message\ndata: {}\n\n")) as upstream,
        gateway_before(upstream, sqlite_storage) as (gw, key),
    ):
        async with post(gw, key, jsonrpc("tools/call", {"name": "slow"})) as response:
            assert response.status == 200
            assert await asyncio.wait_for(response.content.readline(), WAIT) == b"event: message\n"
        async with asyncio.timeout(WAIT):
            await upstream.cancelled.wait()


async def test_a_client_that_disconnects_before_the_first_byte_cancels_the_upstream_request(
    sqlite_storage: Storage,
):
    async with (
        scripted_upstream(never_answers) as upstream,
        gateway_before(upstream, sqlite_storage) as (gw, key),
        aiohttp.ClientSession() as http,
    ):
        request = asyncio.ensure_future(
            http.post(gw.mcp_url, data=jsonrpc("tools/call"), headers={**MCP_HEADERS, "X-API-Key": key})
        )
        await asyncio.wait_for(upstream.received.wait(), WAIT)
        request.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await request
        async with asyncio.timeout(WAIT):
            await upstream.cancelled.wait()


async def test_an_upstream_401_becomes_a_502_and_its_challenge_and_cookies_never_reach_the_client(
    sqlite_storage: Storage,
):
    async with (
        scripted_upstream(answers_401) as upstream,
        gateway_before(upstream, sqlite_storage) as (gw, key),
        post(gw, key, jsonrpc("tools/list")) as response,
    ):
        assert response.status == 502
        assert "WWW-Authenticate" not in response.headers
        assert "Set-Cookie" not in response.headers
        assert (await response.json())["error"]["message"] == "Upstream authentication failed"


async def test_an_oversize_body_gets_413_and_nothing_is_forwarded(sqlite_storage: Storage):
    async with (
        scripted_upstream(json_ok) as upstream,
        running_gateway(
            storage=sqlite_storage, upstream_url=upstream.mcp_url, overrides={"limits": {"max_body_bytes": 4096}}
        ) as gw,
    ):
        key = await gw.new_key(await gw.new_user())
        async with post(gw, key, b"{" + b" " * 10_000 + b"}") as response:
            assert response.status == 413
            assert (await response.json())["jsonrpc"] == "2.0"
        assert upstream.requests == []


async def test_mcp_routing_headers_that_contradict_the_body_get_400_with_code_minus_32020(sqlite_storage: Storage):
    async with scripted_upstream(json_ok) as upstream, gateway_before(upstream, sqlite_storage) as (gw, key):
        call = jsonrpc("tools/call", {"name": "danger", "arguments": {}})
        async with post(gw, key, call, **{"Mcp-Method": "tools/list"}) as response:
            assert response.status == 400
            assert (await response.json())["error"]["code"] == -32020
        async with post(gw, key, call, **{"Mcp-Method": "tools/call", "Mcp-Name": "safe"}) as response:
            assert response.status == 400
        assert upstream.requests == []
        async with post(
            gw, key, call, **{"Mcp-Method": "tools/call", "Mcp-Name": "danger", "Mcp-Param-Region": "eu"}
        ) as response:
            assert response.status == 200
        (forwarded,) = upstream.requests
        assert forwarded.headers["Mcp-Method"] == "tools/call"
        assert forwarded.headers["Mcp-Name"] == "danger"
        assert forwarded.headers["Mcp-Param-Region"] == "eu"


async def test_client_credentials_cookies_and_spoofed_identity_never_reach_the_upstream(sqlite_storage: Storage):
    async with scripted_upstream(json_ok) as upstream, gateway_before(upstream, sqlite_storage) as (gw, key):
        spoof = {
            "Cookie": "session=abc",
            "X-Gateway-User-Id": "usr_admin",
            "X-Forwarded-For": "10.0.0.1",
            "Forwarded": "for=10.0.0.1",
            "X-Real-IP": "10.0.0.1",
            "Connection": "keep-alive, X-Hop",
            "X-Hop": "1",
        }
        async with post(gw, key, jsonrpc("tools/list"), **spoof) as response:
            assert response.status == 200
        (seen,) = upstream.requests
        names = {name.lower() for name in seen.headers}
        assert not names & {"authorization", "x-api-key", "cookie", "forwarded", "x-real-ip", "x-hop"}
        assert seen.headers["X-Gateway-User-Id"] != "usr_admin"
        assert seen.headers["X-Gateway-User-Id"].startswith("usr_")
        assert seen.headers["X-Forwarded-For"] == "127.0.0.1"


async def test_a_browser_origin_that_is_not_allowed_gets_403(sqlite_storage: Storage):
    async with scripted_upstream(json_ok) as upstream, gateway_before(upstream, sqlite_storage) as (gw, key):
        async with post(gw, key, jsonrpc("tools/list"), Origin="https://evil.example") as response:
            assert response.status == 403
        async with post(gw, key, jsonrpc("tools/list"), Origin=gw.url) as response:
            assert response.status == 200
        assert len(upstream.requests) == 1


async def test_a_legacy_endpoint_on_another_origin_closes_the_stream_with_an_error(sqlite_storage: Storage):
    async with (
        scripted_upstream(sse_endpoint("https://evil.example/messages/?session_id=s1")) as upstream,
        gateway_before(upstream, sqlite_storage) as (gw, key),
        aiohttp.ClientSession() as http,
        http.get(gw.sse_url, headers={"X-API-Key": key, "Accept": "text/event-stream"}) as response,
    ):
        assert response.status == 200
        body = await asyncio.wait_for(response.read(), WAIT)
    assert b"evil.example" not in body
    assert b"event: error" in body


async def test_a_legacy_endpoint_is_rewritten_to_the_gateway_and_bound_to_its_opener(sqlite_storage: Storage):
    async with (
        scripted_upstream(sse_endpoint("/messages/?session_id=s1")) as upstream,
        gateway_before(upstream, sqlite_storage) as (gw, key),
        aiohttp.ClientSession() as http,
    ):
        async with http.get(gw.sse_url, headers={"X-API-Key": key, "Accept": "text/event-stream"}) as response:
            event = await asyncio.wait_for(response.content.readuntil(b"\n\n"), WAIT)
            assert event == f"event: endpoint\ndata: {gw.url}/mcp/sse/messages?session_id=s1\n\n".encode()
            upstream.behaviour = json_ok
            stranger = await gw.new_key(await gw.new_user())
            url = f"{gw.url}/mcp/sse/messages?session_id=s1"
            async with http.post(url, data=jsonrpc("tools/list"), headers={"X-API-Key": stranger}) as denied:
                assert denied.status == 404
            assert [r.path for r in upstream.requests] == ["/sse"]
            async with http.post(url, data=jsonrpc("tools/list"), headers={"X-API-Key": key}) as allowed:
                assert allowed.status == 200
            assert upstream.requests[-1].path == "/messages/?session_id=s1"


async def test_an_upstream_error_body_is_json_shaped_for_jsonrpc_clients(sqlite_storage: Storage):
    url = f"http://127.0.0.1:{closed_port()}/mcp"
    async with running_gateway(storage=sqlite_storage, upstream_url=url) as gw:
        key = await gw.new_key(await gw.new_user())
        async with post(gw, key, jsonrpc("tools/list")) as response:
            text = await response.text()
    assert json.loads(text)["error"]["code"] == -32000


async def test_a_session_id_presented_by_another_principal_is_not_forwarded(sqlite_storage: Storage):
    async with scripted_upstream(opens_session) as upstream, gateway_before(upstream, sqlite_storage) as (gw, key):
        async with post(gw, key, jsonrpc("initialize")) as response:
            assert response.headers["Mcp-Session-Id"] == "s-123"
        stranger = await gw.new_key(await gw.new_user())
        async with post(gw, stranger, jsonrpc("tools/list"), **{"Mcp-Session-Id": "s-123"}) as response:
            assert response.status == 404
        async with post(gw, stranger, jsonrpc("tools/list"), **{"Mcp-Session-Id": "never-issued"}) as response:
            assert response.status == 404
        assert len(upstream.requests) == 1
        async with post(gw, key, jsonrpc("tools/list"), **{"Mcp-Session-Id": "s-123"}) as response:
            assert response.status == 200
        assert len(upstream.requests) == 2
