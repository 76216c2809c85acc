"""The real SDK client with a minimal-scope API key, on every transport, through to the real example upstream:
the lists it gets (SSE answers on Streamable HTTP, the GET stream on legacy SSE) hold only what it may use."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from mcp.shared.exceptions import MCPError

from gateway.storage import Storage
from tests.policy.conftest import POLICY
from tests.support.gateway import running_gateway
from tests.support.mcp_clients import CLIENT_FACTORIES
from tests.support.upstream import UpstreamProcess


def text_of(result: object) -> str:
    return "".join(getattr(block, "text", "") for block in getattr(result, "content", []))


WAIT = 30.0


@pytest.mark.parametrize("transport", list(CLIENT_FACTORIES))
async def test_a_minimal_scope_key_lists_only_its_tools_prompts_and_resources_on_every_transport(
    sqlite_storage: Storage, upstream: UpstreamProcess, transport: str
):
    async with running_gateway(
        storage=sqlite_storage, upstream_url=upstream.mcp_url, upstream_sse_url=upstream.sse_url, overrides=POLICY
    ) as gw:
        user = await gw.new_user()
        _, minted = await gw.accounts.create_key(user, name="k", scope="tools:read")
        url = gw.sse_url if transport == "legacy-sse" else gw.mcp_url
        async with asyncio.timeout(WAIT), CLIENT_FACTORIES[transport](url, {"X-API-Key": minted.key}) as client:
            tools = sorted(t.name for t in (await client.list_tools()).tools)
            prompts = [p.name for p in (await client.list_prompts()).prompts]
            resources = [str(r.uri) for r in (await client.list_resources()).resources]
            echoed = await client.call_tool("echo", {"text": "hi"})
            seen = json.loads(text_of(await client.call_tool("whoami", {})))
            if transport != "legacy-sse":  # its refusal is the POST's 403 (see below): that SDK then waits forever
                # The SDK surfaces the 403's JSON-RPC error body.
                with pytest.raises(MCPError, match="scope this call needs"):
                    await client.call_tool("add", {"a": 1, "b": 2})
    assert tools == ["echo", "whoami"]
    assert prompts == ["summarize"]
    assert resources == ["info://server"]
    assert not echoed.is_error
    assert seen["identity"]["x-gateway-scope"] == "tools:read"  # the upstream's tools can check it too


async def test_a_forbidden_call_on_the_legacy_sse_transport_gets_the_403_challenge(
    sqlite_storage: Storage, upstream: UpstreamProcess
):
    async with running_gateway(
        storage=sqlite_storage, upstream_url=upstream.mcp_url, upstream_sse_url=upstream.sse_url, overrides=POLICY
    ) as gw:
        user = await gw.new_user()
        _, minted = await gw.accounts.create_key(user, name="k", scope="tools:read")
        headers = {"X-API-Key": minted.key}
        async with asyncio.timeout(WAIT), aiohttp.ClientSession() as http:
            async with http.get(gw.sse_url, headers=headers) as stream:
                endpoint = ""
                while not endpoint:
                    line = (await stream.content.readline()).decode().strip()
                    endpoint = line[6:] if line.startswith("data: ") else ""
                call = {"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "add", "arguments": {}}}
                async with http.post(endpoint, json=call, headers=headers) as response:
                    assert response.status == 403
                    assert 'scope="tools:math"' in response.headers["WWW-Authenticate"]
                    assert (await response.json())["id"] == 5
