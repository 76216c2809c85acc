"""The MCP SDK's OAuth client through the gateway: 401 → discovery → registration → sign-in and consent
→ token → tools/call → refresh → revoke → 401."""

from __future__ import annotations

import asyncio
import json

import aiohttp

from gateway.clock import ManualClock
from tests.support.gateway import GatewayHandle
from tests.support.oauth_browser import Browser
from tests.support.oauth_clients import BrowserDrivenAuth, MemoryTokenStorage, oauth_mcp_client, provider_for
from tests.support.scripted_upstream import jsonrpc

WAIT = 30.0
MCP_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
INIT = jsonrpc(
    "initialize", {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
)


async def mcp_status(gateway: GatewayHandle, access_token: str) -> int:
    headers = {**MCP_HEADERS, "Authorization": f"Bearer {access_token}"}
    async with aiohttp.ClientSession() as http, http.post(gateway.mcp_url, data=INIT, headers=headers) as response:
        await response.read()
        return response.status


async def form_post(url: str, fields: dict[str, str]) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as http, http.post(url, data=fields) as response:
        body = await response.read()
        return response.status, json.loads(body) if body else {}


async def test_an_sdk_client_connects_with_oauth_refreshes_and_is_cut_off_by_revocation(
    gateway: GatewayHandle, clock: ManualClock
):
    await gateway.new_user("ada@example.com")
    storage = MemoryTokenStorage()
    async with Browser(gateway.url) as browser:
        auth = BrowserDrivenAuth(browser, "ada@example.com")
        provider = provider_for(gateway.mcp_url, auth, storage, client_name="Ada's laptop")
        async with asyncio.timeout(WAIT), oauth_mcp_client(gateway.mcp_url, provider) as client:
            result = await client.call_tool("whoami", {})
            seen = json.loads(result.content[0].text)  # type: ignore[union-attr]
        consent = next(page for page in browser.pages if 'action="/consent"' in page.text)

    assert len(auth.authorization_urls) == 1
    assert "Ada&#39;s laptop" in consent.text
    assert "Unverified application" in consent.text
    assert consent.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in consent.headers["Content-Security-Policy"]
    assert seen["identity"]["x-gateway-auth-method"] == "oauth"
    assert seen["identity"]["x-gateway-user-email"] == "ada@example.com"
    assert storage.client_info is not None
    client_id = storage.client_info.client_id
    assert seen["identity"]["x-gateway-client-id"] == client_id
    assert not {"authorization", "cookie"} & set(seen["header_names"])

    tokens = storage.tokens
    assert tokens is not None
    assert tokens.access_token.startswith("gwat_")
    assert tokens.refresh_token is not None
    assert tokens.refresh_token.startswith("gwrt_")
    assert tokens.expires_in == 3600

    status, refreshed = await form_post(
        f"{gateway.url}/token",
        {"grant_type": "refresh_token", "refresh_token": tokens.refresh_token, "client_id": client_id},
    )
    assert status == 200
    assert refreshed["refresh_token"] != tokens.refresh_token
    new_access = str(refreshed["access_token"])
    assert await mcp_status(gateway, new_access) == 200

    status, _ = await form_post(
        f"{gateway.url}/revoke", {"token": str(refreshed["refresh_token"]), "client_id": client_id}
    )
    assert status == 200
    clock.advance(1.0)
    assert await mcp_status(gateway, new_access) == 401
    assert await mcp_status(gateway, tokens.access_token) == 401


async def test_an_unauthenticated_call_gets_the_challenge_that_leads_to_discovery(gateway: GatewayHandle):
    async with aiohttp.ClientSession() as http:
        async with http.post(gateway.mcp_url, data=INIT, headers=MCP_HEADERS) as response:
            assert response.status == 401
            challenge = response.headers["WWW-Authenticate"]
        prm_url = f"{gateway.url}/.well-known/oauth-protected-resource/mcp"
        assert f'resource_metadata="{prm_url}"' in challenge
        assert 'scope="mcp:tools"' in challenge
        async with http.get(prm_url) as response:
            prm = await response.json()
        assert prm["resource"] == gateway.mcp_url
        assert prm["authorization_servers"] == [gateway.url]
        for path in ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"):
            async with http.get(gateway.url + path) as response:
                metadata = await response.json()
            assert metadata["issuer"] == gateway.url
            assert metadata["code_challenge_methods_supported"] == ["S256"]
            assert metadata["authorization_response_iss_parameter_supported"] is True
            assert metadata["token_endpoint_auth_methods_supported"] == ["none"]
