"""The real MCP client SDK talks through the gateway to the real example upstream, on every transport."""

from __future__ import annotations

import asyncio
import json
from contextlib import AbstractAsyncContextManager

import aiohttp
import pytest
from mcp import Client

from tests.support.gateway import GatewayHandle
from tests.support.mcp_clients import CLIENT_FACTORIES, ProgressRecorder
from tests.support.scripted_upstream import jsonrpc

WAIT = 30.0
TRANSPORTS = list(CLIENT_FACTORIES)
# The SDK's legacy SSE client caps one event at 1 MiB, so its large result is a little smaller.
LARGE_KIB = {"streamable-session": 2048, "stateless-2026": 2048, "legacy-sse": 768}


def connect(gateway: GatewayHandle, transport: str, key: str) -> AbstractAsyncContextManager[Client]:
    url = gateway.sse_url if transport == "legacy-sse" else gateway.mcp_url
    return CLIENT_FACTORIES[transport](url, {"X-API-Key": key})


def text_of(result: object) -> str:
    return "".join(getattr(block, "text", "") for block in getattr(result, "content", []))


@pytest.fixture
async def key(gateway: GatewayHandle) -> str:
    return await gateway.new_key(await gateway.new_user("ada@example.com"))


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_client_lists_and_calls_tools_through_the_gateway(gateway: GatewayHandle, key: str, transport: str):
    async with asyncio.timeout(WAIT), connect(gateway, transport, key) as client:
        tools = {tool.name for tool in (await client.list_tools()).tools}
        assert {"echo", "add", "slow_count", "big_text", "whoami"} <= tools
        assert text_of(await client.call_tool("echo", {"text": "héllo"})) == "héllo"
        assert float(text_of(await client.call_tool("add", {"a": 2, "b": 3}))) == 5


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_large_result_arrives_intact(gateway: GatewayHandle, key: str, transport: str):
    from upstream_mcp.server import big_text

    kib = LARGE_KIB[transport]
    async with asyncio.timeout(WAIT), connect(gateway, transport, key) as client:
        text = text_of(await client.call_tool("big_text", {"kib": kib}))
    assert len(text) == kib * 1024
    assert text == big_text(kib)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_the_first_progress_notification_arrives_while_the_tool_is_still_running(
    gateway: GatewayHandle, key: str, transport: str
):
    recorder = ProgressRecorder()
    async with asyncio.timeout(WAIT), connect(gateway, transport, key) as client:
        call = asyncio.create_task(
            client.call_tool("slow_count", {"steps": 3, "delay": 0.5}, progress_callback=recorder)
        )
        await recorder.first.wait()
        assert not call.done(), "the gateway held back the progress notification until the result"
        assert text_of(await call) == "counted to 3"
    assert [event.progress for event in recorder.events] == [1, 2, 3]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_the_upstream_learns_who_calls_but_never_sees_the_clients_credentials(
    gateway: GatewayHandle, key: str, transport: str
):
    async with asyncio.timeout(WAIT), connect(gateway, transport, key) as client:
        seen = json.loads(text_of(await client.call_tool("whoami", {})))
    assert seen["identity"]["x-gateway-user-email"] == "ada@example.com"
    assert seen["identity"]["x-gateway-auth-method"] == "api_key"
    assert not {"authorization", "x-api-key", "cookie"} & set(seen["header_names"])


MCP_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
INIT = jsonrpc(
    "initialize", {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
)


async def open_session(http: aiohttp.ClientSession, gateway: GatewayHandle, key: str) -> str:
    async with http.post(gateway.mcp_url, data=INIT, headers={**MCP_HEADERS, "X-API-Key": key}) as response:
        assert response.status == 200
        await response.read()
        return response.headers["Mcp-Session-Id"]


async def test_another_principal_presenting_a_session_id_gets_404(gateway: GatewayHandle, key: str):
    stranger = await gateway.new_key(await gateway.new_user())
    async with aiohttp.ClientSession() as http:
        session_id = await open_session(http, gateway, key)
        headers = {**MCP_HEADERS, "Mcp-Session-Id": session_id, "MCP-Protocol-Version": "2025-06-18"}
        async with http.post(
            gateway.mcp_url, data=jsonrpc("tools/list", id_=2), headers={**headers, "X-API-Key": stranger}
        ) as response:
            assert response.status == 404
            assert (await response.json())["error"]["message"] == "Session not found"
        async with http.post(
            gateway.mcp_url, data=jsonrpc("tools/list", id_=2), headers={**headers, "X-API-Key": key}
        ) as response:
            assert response.status == 200


async def test_a_long_lived_get_stream_opens_unbuffered_and_delete_ends_the_session(gateway: GatewayHandle, key: str):
    async with aiohttp.ClientSession() as http:
        session_id = await open_session(http, gateway, key)
        headers = {"X-API-Key": key, "Mcp-Session-Id": session_id, "MCP-Protocol-Version": "2025-06-18"}
        async with asyncio.timeout(WAIT):
            async with http.get(gateway.mcp_url, headers={**headers, "Accept": "text/event-stream"}) as stream:
                assert stream.status == 200
                assert stream.headers["Content-Type"].startswith("text/event-stream")
                assert stream.headers["X-Accel-Buffering"] == "no"
            async with http.delete(gateway.mcp_url, headers=headers) as deleted:
                assert deleted.status in (200, 204)
            async with http.post(
                gateway.mcp_url, data=jsonrpc("tools/list", id_=3), headers={**MCP_HEADERS, **headers}
            ) as response:
                assert response.status == 404
