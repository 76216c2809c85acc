"""Who may pass: API keys in X-API-Key or Authorization: Bearer, one credential per request."""

from __future__ import annotations

import aiohttp
import pytest
from multidict import CIMultiDict

from gateway.clock import ManualClock
from gateway.storage import Storage
from tests.support.gateway import GatewayHandle, running_gateway
from tests.support.scripted_upstream import jsonrpc
from tests.support.upstream import UpstreamProcess

INIT = jsonrpc(
    "initialize",
    {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
)
MCP_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


async def post_mcp(gw: GatewayHandle, headers: dict[str, str], body: bytes = INIT, path: str = "/mcp"):
    async with (
        aiohttp.ClientSession() as http,
        http.post(gw.url + path, data=body, headers={**MCP_HEADERS, **headers}) as response,
    ):
        return response.status, response.headers.copy(), await response.read()


async def test_a_request_without_a_credential_gets_401_with_a_json_error_and_a_challenge(gateway: GatewayHandle):
    status, headers, body = await post_mcp(gateway, {})
    assert status == 401
    assert headers["Content-Type"].startswith("application/json")
    assert b'"error": "unauthorized"' in body
    assert headers["WWW-Authenticate"].startswith("Bearer ")
    assert "error=" not in headers["WWW-Authenticate"]


@pytest.mark.parametrize("header", ["X-API-Key", "Authorization"])
async def test_a_valid_key_in_either_header_reaches_the_upstream(gateway: GatewayHandle, header: str):
    key = await gateway.new_key(await gateway.new_user())
    value = key if header == "X-API-Key" else f"bearer {key}"
    status, headers, _ = await post_mcp(gateway, {header: value})
    assert status == 200
    assert "Mcp-Session-Id" in headers


async def test_a_malformed_key_is_refused_without_a_storage_lookup(gateway: GatewayHandle):
    key = await gateway.new_key(await gateway.new_user())
    tampered = key[:-1] + ("A" if key[-1] != "A" else "B")
    calls: list[str] = []
    original = gateway.storage.get_api_key_by_hash

    async def counting(key_hash: str):
        calls.append(key_hash)
        return await original(key_hash)

    gateway.storage.get_api_key_by_hash = counting  # type: ignore[method-assign]
    try:
        for bad in (tampered, "mgw_short", "mgw_" + "x" * 38):
            status, headers, body = await post_mcp(gateway, {"X-API-Key": bad})
            assert status == 401
            assert b"invalid_token" in body
            assert 'error="invalid_token"' in headers["WWW-Authenticate"]
    finally:
        del gateway.storage.get_api_key_by_hash
    assert calls == []


async def test_an_unknown_but_well_formed_key_is_refused(gateway: GatewayHandle):
    unknown = gateway.accounts.key_format.mint().key
    status, _, body = await post_mcp(gateway, {"X-API-Key": unknown})
    assert (status, b"invalid_token" in body) == (401, True)


async def test_a_revoked_key_is_refused_once_the_one_second_cache_lapses(gateway: GatewayHandle, clock: ManualClock):
    user = await gateway.new_user()
    key = await gateway.new_key(user)
    assert (await post_mcp(gateway, {"X-API-Key": key}))[0] == 200
    (row,) = await gateway.storage.list_api_keys(user.id)
    assert await gateway.storage.revoke_api_key(row.id, now=clock.now())
    clock.advance(1.0)
    status, _, body = await post_mcp(gateway, {"X-API-Key": key})
    assert status == 401
    assert b"invalid_token" in body


async def test_an_expired_key_is_refused(gateway: GatewayHandle, clock: ManualClock):
    key = await gateway.new_key(await gateway.new_user(), expires_in=60)
    assert (await post_mcp(gateway, {"X-API-Key": key}))[0] == 200
    clock.advance(61)
    assert (await post_mcp(gateway, {"X-API-Key": key}))[0] == 401


async def test_a_disabled_owners_key_is_refused(gateway: GatewayHandle, clock: ManualClock):
    user = await gateway.new_user()
    key = await gateway.new_key(user)
    assert (await post_mcp(gateway, {"X-API-Key": key}))[0] == 200
    await gateway.storage.set_disabled(user.id, clock.now())
    clock.advance(1.0)
    assert (await post_mcp(gateway, {"X-API-Key": key}))[0] == 401


@pytest.mark.parametrize("second", ["X-API-Key", "Authorization"])
async def test_two_credentials_in_one_request_get_400(gateway: GatewayHandle, second: str):
    key = await gateway.new_key(await gateway.new_user())
    headers = CIMultiDict(MCP_HEADERS)
    headers.add("X-API-Key", key)
    headers.add(second, key if second == "X-API-Key" else f"Bearer {key}")
    async with aiohttp.ClientSession() as http, http.post(gateway.mcp_url, data=INIT, headers=headers) as response:
        assert response.status == 400
        assert (await response.json())["error"] == "invalid_request"


@pytest.mark.parametrize("scheme", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "Token abc"])
async def test_a_wrong_or_empty_authorization_scheme_gets_401(gateway: GatewayHandle, scheme: str):
    status, headers, _ = await post_mcp(gateway, {"Authorization": scheme})
    assert status == 401
    assert "WWW-Authenticate" in headers


async def test_a_key_in_the_query_string_or_a_cookie_is_ignored(gateway: GatewayHandle):
    key = await gateway.new_key(await gateway.new_user())
    for path in (f"/mcp?api_key={key}", f"/mcp?access_token={key}"):
        status, _, _ = await post_mcp(gateway, {}, path=path)
        assert status == 401
    status, _, _ = await post_mcp(gateway, {"Cookie": f"access_token={key}"})
    assert status == 401


async def test_key_use_is_written_as_last_used_in_batches_and_on_shutdown(
    sqlite_storage: Storage, upstream: UpstreamProcess
):
    async with running_gateway(storage=sqlite_storage, upstream_url=upstream.mcp_url) as gw:
        user = await gw.new_user()
        key = await gw.new_key(user)
        for _ in range(3):
            assert (await post_mcp(gw, {"X-API-Key": key}))[0] == 200
        (row,) = await sqlite_storage.list_api_keys(user.id)
        assert row.last_used_at is None
    (row,) = await sqlite_storage.list_api_keys(user.id)
    assert row.last_used_at is not None
