"""Hostile HTTP framing and oversize input never reach the upstream (security cases 84 and 85)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import aiohttp
import pytest

from gateway.storage import Storage
from tests.support.gateway import GatewayHandle, running_gateway
from tests.support.scripted_upstream import ScriptedUpstream, json_ok, jsonrpc, scripted_upstream

WAIT = 10.0


@pytest.fixture
async def fronted(sqlite_storage: Storage) -> AsyncIterator[tuple[GatewayHandle, ScriptedUpstream, str]]:
    async with (
        scripted_upstream(json_ok) as upstream,
        running_gateway(storage=sqlite_storage, upstream_url=upstream.mcp_url) as gw,
    ):
        key = await gw.new_key(await gw.new_user())
        yield gw, upstream, key


async def raw_exchange(gw: GatewayHandle, request: bytes) -> bytes:
    parts = urlsplit(gw.url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(65536), WAIT)
    finally:
        writer.close()
        await writer.wait_closed()


@pytest.mark.parametrize(
    "framing",
    [
        b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        b"Content-Length: 5\r\nContent-Length: 6\r\n",
        b"Transfer-Encoding: chunked, identity\r\n",
    ],
)
async def test_ambiguous_framing_is_refused_with_400_and_nothing_is_forwarded(
    fronted: tuple[GatewayHandle, ScriptedUpstream, str], framing: bytes
):
    gw, upstream, key = fronted
    request = (
        b"POST /mcp HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
        + f"X-API-Key: {key}\r\n".encode()
        + framing
        + b"\r\n0\r\n\r\n"
    )
    answer = await raw_exchange(gw, request)
    assert answer.split(b" ", 2)[1] == b"400"
    assert upstream.requests == []


async def test_an_oversize_header_or_too_many_headers_are_refused_before_anything_is_forwarded(
    fronted: tuple[GatewayHandle, ScriptedUpstream, str],
):
    gw, upstream, _ = fronted
    huge = b"X-Big: " + b"a" * 65536 + b"\r\n"
    many = b"".join(f"X-H{i}: 1\r\n".encode() for i in range(200))
    for extra in (huge, many):
        request = b"POST /mcp HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\n" + extra + b"\r\n{}"
        answer = await raw_exchange(gw, request)
        assert answer.split(b" ", 2)[1] in (b"400", b"431")
    assert upstream.requests == []


async def test_an_upgrade_request_is_not_proxied_as_an_upgrade(fronted: tuple[GatewayHandle, ScriptedUpstream, str]):
    gw, upstream, key = fronted
    headers = {"X-API-Key": key, "Upgrade": "websocket", "Connection": "Upgrade", "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as http, http.post(gw.mcp_url, data=jsonrpc("ping"), headers=headers) as r:
        assert r.status == 200
    (seen,) = upstream.requests
    assert "Upgrade" not in seen.headers
