"""The MCP chain (issue 13 item 6) with the real ``mcp`` SDK client: MCP client → gateway → ``upstream_mcp``'s
``provider_profile`` tool → token exchange and ``/v1/proxy`` on the gateway → the stand-in provider API of the
real oidc-provider. Not connected: the tool answers with a URL-mode elicitation naming the gateway's connect link.
Disconnected: the next call is refused and the grant is dead at the provider."""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from mcp.shared.exceptions import MCPError, UrlElicitationRequiredError

from gateway.identity.sealing import generate_secret
from gateway.storage.base import User
from gateway.vault.setup import VAULT
from tests.support.dashboard import page, sign_in
from tests.support.databases import Backend
from tests.support.gateway import GatewayHandle, bound_loopback_socket, running_gateway
from tests.support.mcp_clients import streamable_session_client
from tests.support.oauth_browser import Browser
from tests.support.oidc import OidcClient, OidcProvider, run_oidc_provider
from tests.support.upstream import run_upstream
from tests.vault.conftest import SERVICE, overrides
from tests.vault.test_connect import CALLBACKS, Setup, connect_from_dashboard, provider_refresh_status


@dataclass
class Chain:
    setup: Setup
    user: User
    user_key: str
    """The person's own API key, used by their MCP client."""

    @property
    def gateway(self) -> GatewayHandle:
        return self.setup.gateway

    @property
    def idp(self) -> OidcProvider:
        return self.setup.idp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def chain(db: Backend, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Chain]:
    sock = bound_loopback_socket()
    public_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    upstream_port = _free_port()
    client = OidcClient(redirect_uris=tuple(public_url + path for path in CALLBACKS))
    async with run_oidc_provider(clients=[client]) as idp:
        raw = overrides(idp, generate_secret("k1"), f"gw:test:{upstream_port:x}")
        async with running_gateway(
            storage=await db.storage(), upstream_url=f"http://127.0.0.1:{upstream_port}/mcp", overrides=raw, sock=sock
        ) as gw:
            operator = await gw.new_user("upstream-service@example.com")
            assert await gw.storage.set_role(operator.id, "admin")
            monkeypatch.setenv("UPSTREAM_GATEWAY_KEY", await gw.new_key(operator, name="upstream"))
            user = await gw.new_user()
            user_key = await gw.new_key(user, name="mcp client")
            args = ["--port", str(upstream_port), "--gateway-url", gw.url]
            async with run_upstream(extra_args=args):
                yield Chain(Setup(gw, idp), user, user_key)


async def call_profile(chain: Chain) -> dict[str, object]:
    async with streamable_session_client(chain.gateway.mcp_url, {"X-API-Key": chain.user_key}) as client:
        result = await client.call_tool("provider_profile", {"service": SERVICE})
    assert not result.is_error, result
    return dict(json.loads(result.content[0].text))  # type: ignore[union-attr]


async def test_an_mcp_tool_reads_the_users_connected_service_through_the_gateway(
    db: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with chain(db, monkeypatch) as c, Browser(c.gateway.url) as browser:
        await sign_in(browser, c.user.email)
        await connect_from_dashboard(browser, c.setup)
        answer = await call_profile(c)
        assert answer["email"] == "alice@example.com"  # the stand-in provider API's answer


async def test_when_the_service_is_not_connected_the_tool_answers_with_the_connect_link(
    db: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with chain(db, monkeypatch) as c, Browser(c.gateway.url) as browser:
        async with streamable_session_client(c.gateway.mcp_url, {"X-API-Key": c.user_key}) as client:
            with pytest.raises(MCPError) as raised:
                await client.call_tool("provider_profile", {"service": SERVICE})
        elicitation = UrlElicitationRequiredError.from_error(raised.value.error).elicitations[0]
        assert elicitation.url == f"{c.gateway.config.public_url}/account/connect/{SERVICE}?for={c.user.id}"
        await sign_in(browser, c.user.email)
        offer = page(await browser.open(elicitation.url))  # what the person opens: a Connect button
        assert offer.status == 200
        assert f'aria-label="Connect {SERVICE}"' in offer.text


async def test_after_disconnect_the_tool_is_refused_and_the_grant_is_revoked_at_the_provider(
    db: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with chain(db, monkeypatch) as c, Browser(c.gateway.url) as browser, aiohttp.ClientSession():
        await sign_in(browser, c.user.email)
        await connect_from_dashboard(browser, c.setup)
        assert (await call_profile(c))["email"] == "alice@example.com"
        connection = await c.gateway.app[VAULT].vault.connection(c.user.id, SERVICE)
        assert connection is not None
        assert connection.tokens.refresh_token
        account = page(await browser.open(browser.origin + "/account"))
        await browser.open(
            f"{browser.origin}/account/services/{SERVICE}/disconnect", data={"csrf": account.hidden()["csrf"]}
        )
        async with streamable_session_client(c.gateway.mcp_url, {"X-API-Key": c.user_key}) as client:
            with pytest.raises(MCPError) as raised:
                await client.call_tool("provider_profile", {"service": SERVICE})
        assert UrlElicitationRequiredError.from_error(raised.value.error).elicitations
        assert await provider_refresh_status(c.idp, connection.tokens.refresh_token) == 400


def test_the_upstream_refuses_to_start_with_a_gateway_url_but_no_service_key(monkeypatch: pytest.MonkeyPatch) -> None:
    from upstream_mcp.__main__ import main

    monkeypatch.delenv("UPSTREAM_GATEWAY_KEY", raising=False)
    assert main(["--port", "0", "--gateway-url", "http://127.0.0.1:9"]) == 2
