"""The upstream's identity JWT through a real gateway and the real example upstream: ``whoami`` (started with
``--identity-jwks`` pointing at the gateway) verifies it for an API key and an OAuth token (real ``mcp`` SDK
clients, both transports), still after a signing-key rotation (it re-fetches the key set on the new ``kid``); the
token is re-used across requests of one credential; a client can never send its own."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from multidict import CIMultiDict

from gateway.clock import ManualClock
from gateway.identity.sealing import generate_secret
from gateway.identity.web import IDENTITY
from gateway.proxy.context import PROXY
from gateway.revocation import REVOCATIONS, Revocation
from gateway.storage import Storage
from gateway.storage.base import User
from tests.support.gateway import GatewayHandle, bound_loopback_socket, running_gateway
from tests.support.mcp_clients import legacy_sse_client, streamable_session_client
from tests.support.oauth_browser import Browser
from tests.support.oauth_clients import BrowserDrivenAuth, MemoryTokenStorage, oauth_mcp_client, provider_for
from tests.support.scripted_upstream import jsonrpc, scripted_upstream
from tests.support.upstream import UpstreamProcess, run_upstream

WAIT = 30.0
FORGED = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9."
SIGNING = {"identity": {"encryption_keys": generate_secret("k1")}}


@dataclass
class Setup:
    gateway: GatewayHandle
    upstream: UpstreamProcess
    user: User
    api_key: str

    async def whoami(self, transport: str = "streamable", headers: dict[str, str] | None = None) -> dict[str, Any]:
        sent = {"X-API-Key": self.api_key, **(headers or {})}
        opener = (
            legacy_sse_client(self.gateway.sse_url, sent)
            if transport == "sse"
            else streamable_session_client(self.gateway.mcp_url, sent)
        )
        async with asyncio.timeout(WAIT), opener as client:
            result = await client.call_tool("whoami", {})
        seen: dict[str, Any] = json.loads(result.content[0].text)  # type: ignore[union-attr]
        return seen


@pytest.fixture
async def setup(sqlite_storage: Storage, clock: ManualClock) -> AsyncIterator[Setup]:
    """The upstream must know the gateway's key set URL before the gateway knows the upstream's: the gateway's
    socket is bound first."""
    sock = bound_loopback_socket()
    gateway_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    jwks_args = ["--identity-jwks", f"{gateway_url}/.well-known/jwks.json", "--identity-issuer", gateway_url]
    async with (
        run_upstream(extra_args=jwks_args) as upstream,
        running_gateway(
            storage=sqlite_storage,
            upstream_url=upstream.mcp_url,
            upstream_sse_url=upstream.sse_url,
            clock=clock,
            overrides=SIGNING,
            sock=sock,
        ) as gateway,
    ):
        user = await gateway.new_user("ada@example.com")
        yield Setup(gateway, upstream, user, await gateway.new_key(user))


def verified_claims(seen: dict[str, Any]) -> dict[str, Any]:
    report = seen["identity_token"]
    assert report is not None, "the upstream received no identity token"
    assert report["verified"], report["error"]
    claims: dict[str, Any] = report["claims"]
    return claims


async def test_whoami_verifies_the_identity_jwt_of_an_api_key_on_both_transports(setup: Setup) -> None:
    claims = verified_claims(await setup.whoami())
    keys = await setup.gateway.storage.list_api_keys(setup.user.id)
    assert claims["sub"] == setup.user.id
    assert claims["api_key_id"] == keys[0].id
    assert "client_id" not in claims
    assert claims["iss"] == setup.gateway.config.public_url
    assert claims["aud"] == setup.upstream.base_url  # the default: the upstream's origin
    assert claims["scope"] == "mcp:tools"  # a key has the gateway's default scopes
    assert claims["connected_services"] == []
    assert claims["exp"] - claims["iat"] == 300
    assert verified_claims(await setup.whoami("sse"))["sub"] == setup.user.id


async def test_one_credential_s_token_is_signed_once_and_re_used_across_its_requests(setup: Setup) -> None:
    first = verified_claims(await setup.whoami())
    second = verified_claims(await setup.whoami("sse"))
    third = verified_claims(await setup.whoami())
    assert first["jti"] == second["jti"] == third["jti"]
    identity = setup.gateway.app[PROXY].identity
    assert identity is not None
    assert identity.signed == 1


async def test_after_a_signing_key_rotation_the_upstream_fetches_the_new_key_and_still_verifies(
    setup: Setup,
) -> None:
    before = await setup.whoami()
    new_kid, _ = await setup.gateway.app[IDENTITY].keys.rotate()
    after = await setup.whoami()
    assert before["identity_token"]["key_id"] != new_kid
    assert after["identity_token"]["key_id"] == new_kid
    assert verified_claims(after)["jti"] != verified_claims(before)["jti"]


async def test_a_revocation_on_the_bus_drops_the_credential_s_cached_token(setup: Setup) -> None:
    first = verified_claims(await setup.whoami())
    revocation = Revocation(account_id=setup.user.id, committed_at=0.0, api_key_ids=(first["api_key_id"],))
    await setup.gateway.app[REVOCATIONS].announce(revocation)
    identity = setup.gateway.app[PROXY].identity
    assert identity is not None
    assert len(identity) == 0


async def test_a_client_sent_identity_header_never_reaches_the_upstream(setup: Setup) -> None:
    seen = await setup.whoami(headers={"X-MCP-Identity": FORGED, "X_MCP_Identity": FORGED})
    assert verified_claims(seen)["sub"] == setup.user.id
    assert "x_mcp_identity" not in seen["header_names"]


async def test_whoami_verifies_the_identity_jwt_of_an_oauth_token(setup: Setup) -> None:
    storage = MemoryTokenStorage()
    async with Browser(setup.gateway.url) as browser:
        provider = provider_for(setup.gateway.mcp_url, BrowserDrivenAuth(browser, "ada@example.com"), storage)
        async with asyncio.timeout(WAIT), oauth_mcp_client(setup.gateway.mcp_url, provider) as client:
            result = await client.call_tool("whoami", {})
    claims = verified_claims(json.loads(result.content[0].text))  # type: ignore[union-attr]
    assert storage.client_info is not None
    assert claims["sub"] == setup.user.id
    assert claims["client_id"] == storage.client_info.client_id
    assert claims["scope"] == "mcp:tools"
    assert "api_key_id" not in claims


@pytest.mark.parametrize("identity_header", ["X-MCP-Identity", None])
async def test_no_spelling_of_the_identity_header_sent_by_a_client_is_forwarded(
    sqlite_storage: Storage, clock: ManualClock, identity_header: str | None
) -> None:
    """Whatever the case or an underscore, on POST, GET and DELETE: the upstream sees the gateway's one token, or
    (disabled) none."""
    received: list[tuple[str, str]] = []

    async def recording(request: web.Request) -> web.StreamResponse:
        received.extend((name.decode().lower(), value.decode()) for name, value in request.raw_headers)
        return web.json_response({"jsonrpc": "2.0", "id": 1, "result": {}})

    async with scripted_upstream(recording) as upstream:
        overrides = {**SIGNING, "upstream": {"identity_header": identity_header}}
        async with running_gateway(
            storage=sqlite_storage, upstream_url=upstream.mcp_url, clock=clock, overrides=overrides
        ) as gateway:
            key = await gateway.new_key(await gateway.new_user())
            headers: CIMultiDict[str] = CIMultiDict(
                {"X-API-Key": key, "Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
            )
            for name in ("X-MCP-Identity", "x-mcp-identity", "X-Mcp-IDENTITY", "X_MCP_Identity", "x_mcp_identity"):
                headers.add(name, FORGED)
            async with aiohttp.ClientSession() as http:
                for method in ("POST", "GET", "DELETE"):
                    body = jsonrpc("ping") if method == "POST" else None
                    async with http.request(method, gateway.mcp_url, data=body, headers=headers) as response:
                        assert response.status == 200, method
            jwks = await fetch_jwks(gateway)
    assert [request.method for request in upstream.requests] == ["POST", "GET", "DELETE"]
    assert not [name for name, _ in received if name.replace("_", "-") == "x-mcp-identity" and "_" in name]
    assert FORGED not in [value for _, value in received]
    tokens = [value for name, value in received if name == "x-mcp-identity"]
    if identity_header is None:
        assert tokens == []
    else:
        assert len(tokens) == 3  # one per request
        assert len(set(tokens)) == 1  # the same one: signed once
        kid = jwt.get_unverified_header(tokens[0])["kid"]
        key = next(k for k in jwt.PyJWKSet.from_dict(jwks).keys if k.key_id == kid)
        claims = jwt.decode(tokens[0], key.key, algorithms=["ES256"], audience=upstream.url)
        assert claims["iss"] == gateway.config.public_url


async def fetch_jwks(gateway: GatewayHandle) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(f"{gateway.url}/.well-known/jwks.json") as response:
        body: dict[str, Any] = await response.json(content_type=None)
    return body
