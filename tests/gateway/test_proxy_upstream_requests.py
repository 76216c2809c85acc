"""What reaches the upstream: the bytes the gateway parsed and charged, and only the headers it allows."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import zlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from multidict import CIMultiDict

from gateway.config import ConfigError, parse_config
from gateway.storage import Storage
from tests.gateway.test_http_framing import raw_exchange
from tests.gateway.test_quota import plan_overrides
from tests.support.gateway import GatewayHandle, running_gateway
from tests.support.scripted_upstream import ScriptedUpstream, json_ok, jsonrpc, opens_session, scripted_upstream

MCP_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
WAIT = 10.0
BATCH = json.dumps([json.loads(jsonrpc("tools/list", id_=n)) for n in range(1, 4)]).encode()


@contextlib.asynccontextmanager
async def gateway_before(
    scripted: ScriptedUpstream, storage: Storage, **overrides: Any
) -> AsyncIterator[tuple[GatewayHandle, str]]:
    async with running_gateway(
        storage=storage, upstream_url=scripted.mcp_url, upstream_sse_url=scripted.sse_url, overrides=overrides
    ) as gw:
        yield gw, await gw.new_key(await gw.new_user())


async def post(
    gw: GatewayHandle, key: str, body: bytes, headers: list[tuple[str, str]] | None = None
) -> tuple[int, dict[str, Any], CIMultiDict[str]]:
    sent = CIMultiDict({**MCP_HEADERS, "X-API-Key": key})
    for name, value in headers or []:
        sent.add(name, value)
    async with (
        aiohttp.ClientSession(auto_decompress=False) as http,
        http.post(gw.mcp_url, data=body, headers=sent, skip_auto_headers=("Content-Type",)) as response,
    ):
        text = await response.text()
        return response.status, json.loads(text) if text.startswith("{") else {}, CIMultiDict(response.headers)


async def exchange_until_closed(gw: GatewayHandle, request: bytes) -> bytes:
    """Everything the gateway answers on one connection until it closes it (bounded by ``WAIT``)."""
    parts = urlsplit(gw.url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), WAIT)
    finally:
        writer.close()
        await writer.wait_closed()


def remaining(headers: CIMultiDict[str]) -> int:
    return int(headers["RateLimit"].split(",")[0].split(";r=")[1].split(";")[0])


async def test_a_gzip_body_is_decoded_once_charged_as_parsed_and_forwarded_decoded_without_its_coding(
    sqlite_storage: Storage,
):
    async with (
        scripted_upstream(json_ok) as upstream,
        gateway_before(upstream, sqlite_storage, **plan_overrides(10)) as (
            gw,
            key,
        ),
    ):
        for coding, encoded in (("gzip", gzip.compress(BATCH)), ("deflate", zlib.compress(BATCH))):
            status, _, headers = await post(gw, key, encoded, [("Content-Encoding", coding)])
            assert status == 200
            assert upstream.requests[-1].body == BATCH
            assert "Content-Encoding" not in upstream.requests[-1].headers
        assert remaining(headers) == 10 - 2 * 3  # each batch of three requests was charged three units


async def test_a_doubly_gzipped_batch_is_a_parse_error_and_never_reaches_the_upstream(sqlite_storage: Storage):
    async with scripted_upstream(json_ok) as upstream, gateway_before(upstream, sqlite_storage) as (gw, key):
        twice = gzip.compress(gzip.compress(BATCH))
        status, body, _ = await post(gw, key, twice, [("Content-Encoding", "gzip")])
        assert (status, body["error"]["code"]) == (400, -32700)
        for codings in ([("Content-Encoding", "gzip, gzip")], [("Content-Encoding", "gzip")] * 2):
            status, body, headers = await post(gw, key, twice, codings)
            assert (status, body["error"]["code"]) == (415, -32600)
            assert headers["Accept-Encoding"] == "gzip, deflate"
        for unsupported in ("compress", "x-gzip", "br"):  # aiohttp itself refuses br (400) unless Brotli is installed
            status, _, _ = await post(gw, key, BATCH, [("Content-Encoding", unsupported)])
            assert status in (400, 415)
        assert upstream.requests == []


async def test_a_body_that_does_not_match_its_content_encoding_gets_400_not_500_and_closes_the_connection(
    sqlite_storage: Storage, caplog: pytest.LogCaptureFixture
):
    async with scripted_upstream(json_ok) as upstream, gateway_before(upstream, sqlite_storage) as (gw, key):
        status, body, _ = await post(gw, key, BATCH, [("Content-Encoding", "gzip")])
        assert status == 400
        assert body["jsonrpc"] == "2.0"
        pipelined = (
            b"POST /mcp HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
            + f"X-API-Key: {key}\r\nContent-Length: {len(BATCH)}\r\n\r\n".encode()
            + BATCH
            + b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n"
        )
        answer = await exchange_until_closed(gw, pipelined)
        assert answer.startswith(b"HTTP/1.1 400 ")
        assert answer.count(b"HTTP/1.1") == 1  # the framing is lost: nothing after the body is read as a request
        assert upstream.requests == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_bodies_that_parsers_could_read_differently_are_refused_before_the_upstream(sqlite_storage: Storage):
    async with scripted_upstream(json_ok) as upstream, gateway_before(upstream, sqlite_storage) as (gw, key):
        duplicate = b'{"jsonrpc": "2.0", "id": 1, "method": "tools/list", "method": "tools/call"}'
        deep = b"[" * 100_000 + b"]" * 100_000
        utf16 = jsonrpc("tools/list").decode().encode("utf-16")
        for body in (duplicate, deep, utf16, b'{"id": NaN}', b"not json", b""):
            status, reply, _ = await post(gw, key, body)
            assert (status, reply["error"]["code"]) == (400, -32700), body[:40]
        assert upstream.requests == []


async def test_the_upstream_receives_only_allowed_headers_never_underscore_or_routing_look_alikes(
    sqlite_storage: Storage,
):
    sent = [
        ("X_Gateway_User_Id", "usr_admin"),
        ("X_Forwarded_For", "10.0.0.1"),
        ("X-Original-URL", "/admin"),
        ("X-Rewrite-URL", "/admin"),
        ("X-Forwarded-Prefix", "/admin"),
        ("X-Forwarded-Host", "evil.example"),
        ("X-Forwarded-Port", "8443"),
        ("X-HTTP-Method-Override", "DELETE"),
        ("Forwarded", "for=10.0.0.1;host=evil.example"),
        ("Accept-Encoding", "gzip"),
        ("Referer", "https://evil.example/"),
        ("X-Custom", "1"),
        ("X-Tenant", "acme"),
        ("User-Agent", "probe/1"),
        ("MCP-Protocol-Version", "2025-06-18"),
        ("Mcp-Param-Region", "eu"),
        ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        ("tracestate", "a=b"),
    ]
    async with (
        scripted_upstream(json_ok) as upstream,
        gateway_before(upstream, sqlite_storage, upstream={"forward_headers": ["X-Tenant"]}) as (gw, key),
    ):
        status, _, _ = await post(gw, key, jsonrpc("tools/list"), sent)
        assert status == 200
    (seen,) = upstream.requests
    names = {name.lower() for name in seen.headers} - {"host", "content-length"}
    gateway_set = {f"x-gateway-{n}" for n in ("user-id", "user-email", "auth-method", "credential-id")}
    gateway_set |= {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"}
    forwarded = {"accept", "content-type", "x-tenant", "user-agent", "mcp-protocol-version", "mcp-param-region"}
    assert names == gateway_set | forwarded | {"traceparent", "tracestate"}
    assert seen.headers["X-Forwarded-Host"] == gw.url.split("//")[1]
    assert seen.headers["X-Gateway-User-Id"] != "usr_admin"


def test_forward_headers_refuses_credentials_identity_and_underscore_names() -> None:
    bad = ["Cookie", "Authorization", "X-Gateway-User-Id", "X_Tenant", "Content-Encoding", "Host"]
    with pytest.raises(ConfigError) as caught:
        parse_config({"upstream": {"forward_headers": bad}})
    assert all(f"upstream.forward_headers[{i}]" in str(caught.value) for i in range(len(bad)))


async def test_x_forwarded_for_lines_are_joined_before_the_last_hop_is_taken(sqlite_storage: Storage):
    trusted = {"security": {"trusted_proxies": ["127.0.0.1"]}}
    async with scripted_upstream(json_ok) as upstream, gateway_before(upstream, sqlite_storage, **trusted) as (gw, key):
        # The client wrote the first line; the trusted proxy (HAProxy style) appended its own.
        lines = [("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-For", "198.51.100.1, 203.0.113.9")]
        status, _, _ = await post(gw, key, jsonrpc("tools/list"), lines)
        assert status == 200
    assert upstream.requests[-1].headers["X-Forwarded-For"] == "203.0.113.9"


async def test_repeated_mcp_session_method_or_name_headers_get_400_and_nothing_is_forwarded(sqlite_storage: Storage):
    call = jsonrpc("tools/call", {"name": "safe", "arguments": {}})
    async with scripted_upstream(opens_session) as upstream, gateway_before(upstream, sqlite_storage) as (gw, key):
        assert (await post(gw, key, jsonrpc("initialize")))[0] == 200
        forwarded = len(upstream.requests)
        for repeated in (
            [("Mcp-Session-Id", "s-123"), ("Mcp-Session-Id", "s-other")],
            [("Mcp-Method", "tools/call"), ("Mcp-Method", "tools/list")],
            [("Mcp-Method", "tools/call"), ("Mcp-Name", "safe"), ("Mcp-Name", "danger")],
            [("Mcp-Param-Region", "eu"), ("Mcp-Param-Region", "us")],
        ):
            status, body, _ = await post(gw, key, call, repeated)
            assert (status, body.get("error", {}).get("code")) == (400, -32600), (repeated, status, body)
        assert len(upstream.requests) == forwarded
        assert (await post(gw, key, call, [("Mcp-Session-Id", "s-123"), ("Mcp-Name", "safe")]))[0] == 200


async def test_a_session_id_that_is_not_visible_ascii_is_an_unknown_session_not_a_500(sqlite_storage: Storage):
    async with scripted_upstream(json_ok) as upstream, gateway_before(upstream, sqlite_storage) as (gw, key):
        body = jsonrpc("tools/list")
        for session_id in (b"caf\xc3\xa9", b"\xff\xfe", b"a\x01b"):
            request = (
                b"POST /mcp HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nConnection: close\r\n"
                + f"X-API-Key: {key}\r\nContent-Length: {len(body)}\r\n".encode()
                + b"Mcp-Session-Id: "
                + session_id
                + b"\r\n\r\n"
                + body
            )
            answer = await raw_exchange(gw, request)
            assert answer.split(b" ", 2)[1] in (b"400", b"404"), answer[:200]
        assert upstream.requests == []
