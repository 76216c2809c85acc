"""The whole path works the same on the embedded default (SQLite) and on PostgreSQL."""

from __future__ import annotations

import asyncio
import json

from gateway.storage import Storage
from tests.support.gateway import running_gateway
from tests.support.mcp_clients import legacy_sse_client, streamable_session_client
from tests.support.upstream import UpstreamProcess


async def test_keys_sessions_and_both_transports_work_on_each_storage_backend(
    any_storage: Storage, upstream: UpstreamProcess
):
    async with running_gateway(
        storage=any_storage, upstream_url=upstream.mcp_url, upstream_sse_url=upstream.sse_url
    ) as gw:
        user = await gw.new_user("grace@example.com")
        key = await gw.new_key(user)
        async with asyncio.timeout(30):
            async with streamable_session_client(gw.mcp_url, {"Authorization": f"Bearer {key}"}) as client:
                result = await client.call_tool("whoami", {})
                seen = json.loads(result.content[0].text)  # type: ignore[union-attr]
                assert seen["identity"]["x-gateway-user-id"] == user.id
            async with legacy_sse_client(gw.sse_url, {"X-API-Key": key}) as client:
                assert (await client.call_tool("echo", {"text": "pg"})).content[0].text == "pg"  # type: ignore[union-attr]
