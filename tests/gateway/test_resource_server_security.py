"""The MCP endpoint as an OAuth resource server under attack (security-cases 70, 71, 73-75, 77, 78): the
discovery challenge, bad/expired/revoked tokens, tokens in the wrong place, header grammar, insufficient
scope, spoofed identity and proxy headers, and browser origins. Tokens come from real code flows."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from multidict import CIMultiDict

from gateway.clock import ManualClock
from gateway.storage import Storage
from tests.support.gateway import GatewayHandle, running_gateway
from tests.support.mcp_clients import streamable_session_client
from tests.support.oauth_browser import Browser
from tests.support.oauth_flows import (
    INIT,
    MCP_HEADERS,
    TWO_SCOPES,
    OAuthApp,
    Reply,
    bearer,
    obtain_tokens,
    post_mcp,
    register,
    request,
)
from tests.support.scripted_upstream import json_ok, jsonrpc, scripted_upstream
from tests.support.upstream import UpstreamProcess

EMAIL = "ada@example.com"
WAIT = 30.0


@pytest.fixture
async def app(gateway: GatewayHandle) -> OAuthApp:
    await gateway.new_user(EMAIL)
    return await register(gateway.url, client_name="RS test client")


@pytest.fixture
async def tokens(gateway: GatewayHandle, app: OAuthApp) -> dict[str, Any]:
    async with Browser(gateway.url) as browser:
        return await obtain_tokens(app, browser, EMAIL)


def prm_url(gateway: GatewayHandle) -> str:
    return f"{gateway.url}/.well-known/oauth-protected-resource/mcp"


def assert_challenge(reply: Reply, gateway: GatewayHandle, error: str | None) -> None:
    challenge = reply.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer ")
    assert f'resource_metadata="{prm_url(gateway)}"' in challenge
    assert 'scope="mcp:tools"' in challenge
    if error is None:
        assert "error=" not in challenge
    else:
        assert f'error="{error}"' in challenge
    assert reply.headers["Cache-Control"] == "no-store"


# --- 70: no credentials ---------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["POST", "GET", "DELETE"])
async def test_a_call_without_credentials_gets_401_with_the_discovery_challenge_and_no_error_code(
    gateway: GatewayHandle, method: str
):
    """Case 70 (RFC 9728 §5.1, OAuth 2.1 §5.3.2)."""
    reply = await request(method, gateway.mcp_url, data=INIT if method == "POST" else None, headers=MCP_HEADERS)
    assert reply.status == 401
    assert_challenge(reply, gateway, error=None)
    prm = await request("GET", prm_url(gateway))
    assert prm.json()["resource"] == gateway.mcp_url


async def test_a_browser_client_at_an_allowed_origin_can_read_the_challenge_through_cors(gateway: GatewayHandle):
    """Case 70, CORS part: a browser MCP client needs ``WWW-Authenticate`` exposed to find discovery."""
    reply = await post_mcp(gateway.url, {"Origin": gateway.url})
    assert reply.status == 401
    assert "www-authenticate" in reply.headers.get("Access-Control-Expose-Headers", "").lower()


# --- 71: bad, expired, revoked --------------------------------------------------------------------------


async def assert_refused_every_time(gateway: GatewayHandle, token: str, times: int = 50) -> None:
    replies = await asyncio.gather(*(post_mcp(gateway.url, bearer(token)) for _ in range(times)))
    assert {reply.status for reply in replies} == {401}
    assert len({reply.body for reply in replies}) == 1
    for reply in replies:
        assert_challenge(reply, gateway, error="invalid_token")


async def test_garbage_and_other_secret_types_as_a_bearer_token_get_401_invalid_token_every_time(
    gateway: GatewayHandle, tokens: dict[str, Any]
):
    """Case 71: garbage, an unknown well-formed token, and the refresh token presented as an access token."""
    for token in ("garbage", "gwat_" + "A" * 43, "gwac_" + "A" * 43, tokens["refresh_token"], "x" * 4000):
        await assert_refused_every_time(gateway, token)


async def test_an_expired_access_token_gets_401_invalid_token_every_time_it_is_resent(
    gateway: GatewayHandle, tokens: dict[str, Any], clock: ManualClock
):
    """Case 71: some clients never refresh and resend the expired token; the answer never changes."""
    assert (await post_mcp(gateway.url, bearer(tokens["access_token"]))).status == 200
    clock.advance(tokens["expires_in"] + 1)
    await assert_refused_every_time(gateway, tokens["access_token"])


async def test_a_revoked_access_token_gets_401_invalid_token_within_a_second(
    gateway: GatewayHandle, app: OAuthApp, tokens: dict[str, Any], clock: ManualClock
):
    """Case 71 (one replica here; the cross-replica bound is the same one-second validation cache)."""
    access = tokens["access_token"]
    assert (await post_mcp(gateway.url, bearer(access))).status == 200
    assert (await app.revoke(access)).status == 200
    clock.advance(1.0)
    await assert_refused_every_time(gateway, access)


async def test_revoking_the_refresh_token_cuts_off_its_access_token_within_a_second(
    gateway: GatewayHandle, app: OAuthApp, tokens: dict[str, Any], clock: ManualClock
):
    assert (await post_mcp(gateway.url, bearer(tokens["access_token"]))).status == 200
    assert (await app.revoke(tokens["refresh_token"])).status == 200
    clock.advance(1.0)
    await assert_refused_every_time(gateway, tokens["access_token"], times=5)


# --- 73-74: where the token may be, and the Authorization header grammar ----------------------------------


async def test_a_token_in_the_query_a_form_field_or_a_cookie_is_treated_as_absent_and_the_query_is_not_logged(
    sqlite_storage: Storage, upstream: UpstreamProcess, caplog: pytest.LogCaptureFixture
):
    """Case 73 (MCP authorization: never in the query string; OAuth 2.1 §5.1): 401 with the challenge and
    no error code, exactly as if no token had been sent. The access log is switched on here."""
    overrides = {"logging": {"access_log": True}}
    async with running_gateway(storage=sqlite_storage, upstream_url=upstream.mcp_url, overrides=overrides) as gw:
        await gw.new_user(EMAIL)
        app = await register(gw.url)
        async with Browser(gw.url) as browser:
            access = (await obtain_tokens(app, browser, EMAIL))["access_token"]
        caplog.set_level(logging.DEBUG)
        attempts = [
            await post_mcp(gw.url, {}, path=f"/mcp?access_token={access}"),
            await post_mcp(
                gw.url,
                {"Content-Type": "application/x-www-form-urlencoded"},
                f"access_token={access}".encode(),
            ),
            await post_mcp(gw.url, {"Cookie": f"access_token={access}"}),
        ]
        for reply in attempts:
            assert reply.status == 401
            assert_challenge(reply, gw, error=None)
        # X-API-Key is for API keys; an access token there is refused, not accepted.
        misplaced = await post_mcp(gw.url, {"X-API-Key": access})
        assert misplaced.status == 401
        assert_challenge(misplaced, gw, error="invalid_token")
        assert (await post_mcp(gw.url, bearer(access))).status == 200
    logged = [record for record in caplog.records if record.name == "gateway.access"]
    assert logged, "the access log was expected to record the requests"
    for record in caplog.records:
        assert access not in record.getMessage()
        assert access not in json.dumps(record.__dict__, default=str)


@pytest.mark.parametrize(
    "header",
    ["Bearer {t}", "bearer {t}", "BEARER {t}", "Bearer  {t}", "Bearer {t} "],
    ids=["canonical", "lower", "upper", "two-spaces", "trailing-space"],
)
async def test_the_bearer_scheme_is_case_insensitive_and_tolerates_extra_spaces(
    gateway: GatewayHandle, tokens: dict[str, Any], header: str
):
    """Case 74 (RFC 9110 §11.1: the scheme is case-insensitive); the header name too (``authorization``)."""
    value = header.format(t=tokens["access_token"])
    assert (await post_mcp(gateway.url, {"authorization": value})).status == 200


@pytest.mark.parametrize("header", ["Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Token {t}", "Bearer {t} {t}", "{t}"])
async def test_an_empty_token_or_another_scheme_gets_401_with_the_challenge(
    gateway: GatewayHandle, tokens: dict[str, Any], header: str
):
    """Case 74."""
    reply = await post_mcp(gateway.url, {"Authorization": header.format(t=tokens["access_token"])})
    assert reply.status == 401
    assert "WWW-Authenticate" in reply.headers
    assert f'resource_metadata="{prm_url(gateway)}"' in reply.headers["WWW-Authenticate"]


async def test_two_credentials_in_one_request_get_400_invalid_request(gateway: GatewayHandle, tokens: dict[str, Any]):
    """Case 74 (OAuth 2.1 §5.3.2, RFC 6750 §2): two Authorization headers, or a token plus an API key."""
    access = tokens["access_token"]
    key = await gateway.new_key(await gateway.accounts.require_user(EMAIL))
    two_tokens: CIMultiDict[str] = CIMultiDict(MCP_HEADERS)
    two_tokens.add("Authorization", f"Bearer {access}")
    two_tokens.add("Authorization", f"Bearer {access}")
    for headers in (two_tokens, {**MCP_HEADERS, **bearer(access), "X-API-Key": key}):
        reply = await request("POST", gateway.mcp_url, data=INIT, headers=headers)
        assert reply.status == 400
        assert reply.json()["error"] == "invalid_request"


# --- 75: insufficient scope -----------------------------------------------------------------------------


@pytest.fixture
async def scoped_gateway(sqlite_storage: Storage, upstream: UpstreamProcess) -> AsyncIterator[GatewayHandle]:
    async with running_gateway(storage=sqlite_storage, upstream_url=upstream.mcp_url, overrides=TWO_SCOPES) as gw:
        await gw.new_user(EMAIL)
        yield gw


async def test_a_token_without_the_required_scope_gets_403_insufficient_scope_naming_every_needed_scope(
    scoped_gateway: GatewayHandle,
):
    """Case 75. The gateway needs one scope for the whole MCP endpoint (the configured defaults, here
    ``mcp:tools``); it does not map tools to scopes, so a batch is refused as a whole and nothing in it is
    authorised by its first element."""
    gw = scoped_gateway
    app = await register(gw.url)
    async with Browser(gw.url) as browser:
        read_only = await obtain_tokens(app, browser, EMAIL, scope="mcp:read")
        full = await obtain_tokens(app, browser, EMAIL, scope="mcp:read mcp:tools")
    assert read_only["scope"] == "mcp:read"
    batch = json.dumps([json.loads(jsonrpc("tools/list")), json.loads(jsonrpc("tools/call", {"name": "echo"}, 2))])
    for body in (INIT, batch.encode()):
        reply = await post_mcp(gw.url, bearer(read_only["access_token"]), body)
        assert reply.status == 403
        challenge = reply.headers["WWW-Authenticate"]
        assert 'error="insufficient_scope"' in challenge
        assert 'scope="mcp:tools"' in challenge
        assert f'resource_metadata="{gw.url}/.well-known/oauth-protected-resource/mcp"' in challenge
        assert reply.json()["error"] == "insufficient_scope"
    assert (await post_mcp(gw.url, bearer(full["access_token"]))).status == 200


# --- 77-78: spoofed identity and forwarding headers; browser origins -----------------------------------


async def test_spoofed_identity_and_forwarding_headers_never_reach_the_upstream(
    gateway: GatewayHandle, app: OAuthApp, tokens: dict[str, Any]
):
    """Case 77, against the real upstream's ``whoami``: the gateway's identity headers are its own."""
    spoof = {
        **bearer(tokens["access_token"]),
        "X-Gateway-User-Email": "admin@example.com",
        "X-Gateway-User-Id": "usr_admin",
        "X-Gateway-Client-Id": "trusted-client",
        "X-Gateway-Auth-Method": "api_key",
        "X-Gateway-Role": "admin",
        "Forwarded": "for=10.0.0.1;host=evil.example",
        "X-Real-IP": "10.0.0.1",
        "X-Forwarded-For": "10.0.0.1",
        "X-Forwarded-Host": "evil.example",
    }
    async with asyncio.timeout(WAIT), streamable_session_client(gateway.mcp_url, spoof) as client:
        result = await client.call_tool("whoami", {})
    seen = json.loads(result.content[0].text)  # type: ignore[union-attr]
    identity = seen["identity"]
    assert identity["x-gateway-user-email"] == EMAIL
    assert identity["x-gateway-user-id"] != "usr_admin"
    assert identity["x-gateway-client-id"] == app.client_id
    assert identity["x-gateway-auth-method"] == "oauth"
    assert "x-gateway-role" not in identity
    assert not {"forwarded", "x-real-ip", "authorization", "cookie"} & set(seen["header_names"])


async def test_forwarding_headers_reaching_the_upstream_describe_the_real_peer_and_the_public_url(
    sqlite_storage: Storage,
):
    """Case 77: ``X-Forwarded-*`` are overwritten (no trusted proxy is configured by default)."""
    async with (
        scripted_upstream(json_ok) as upstream,
        running_gateway(storage=sqlite_storage, upstream_url=upstream.mcp_url) as gw,
    ):
        await gw.new_user(EMAIL)
        app = await register(gw.url)
        async with Browser(gw.url) as browser:
            access = (await obtain_tokens(app, browser, EMAIL))["access_token"]
        spoof = {"X-Forwarded-For": "10.0.0.1", "X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"}
        assert (await post_mcp(gw.url, {**bearer(access), **spoof}, jsonrpc("tools/list"))).status == 200
    (seen,) = upstream.requests
    assert seen.headers["X-Forwarded-For"] == "127.0.0.1"
    assert seen.headers["X-Forwarded-Host"] == gw.url.removeprefix("http://")
    assert seen.headers["X-Forwarded-Proto"] == "http"


@pytest.mark.parametrize(
    ("origin", "status"),
    [("https://evil.example", 403), ("null", 403), ("http://127.0.0.1:1", 403), ("{own}", 200), (None, 200)],
)
async def test_a_valid_token_from_a_foreign_browser_origin_gets_403(
    gateway: GatewayHandle, tokens: dict[str, Any], origin: str | None, status: int
):
    """Case 78 (MCP transports: DNS-rebinding protection)."""
    headers = bearer(tokens["access_token"])
    if origin is not None:
        headers["Origin"] = origin.format(own=gateway.url)
    reply = await post_mcp(gateway.url, headers)
    assert reply.status == status
    if status == 403:
        assert reply.json()["error"] == "forbidden"


async def test_a_configured_allowed_origin_is_accepted(sqlite_storage: Storage, upstream: UpstreamProcess):
    """Case 78, with ``security.allowed_origins``."""
    overrides = {"security": {"allowed_origins": ["https://app.example"]}}
    async with running_gateway(storage=sqlite_storage, upstream_url=upstream.mcp_url, overrides=overrides) as gw:
        await gw.new_user(EMAIL)
        app = await register(gw.url)
        async with Browser(gw.url) as browser:
            access = (await obtain_tokens(app, browser, EMAIL))["access_token"]
        assert (await post_mcp(gw.url, {**bearer(access), "Origin": "https://app.example"})).status == 200
        assert (await post_mcp(gw.url, {**bearer(access), "Origin": "https://app.example.evil"})).status == 403
