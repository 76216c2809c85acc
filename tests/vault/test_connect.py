"""Connect and disconnect (issue 13 item 5), over HTTP against the real oidc-provider: ``/account`` lists the
services with Connect / Reconnect / Disconnect; connecting runs the provider's flow and fills the vault;
disconnecting revokes the grant at the provider (RFC 7009) and the next proxied call is refused; an app removes a
service with ``DELETE /v1/auth/{service}``; identity tokens list the live connections; the connect link is only
for the user it was made for."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from joserfc import jwt as jose_jwt

from gateway.audit import AUDIT
from gateway.identity.app_flow import APP_FLOW
from gateway.identity.web import IDENTITY
from gateway.storage.base import User
from gateway.vault.connect import connect_link
from gateway.vault.setup import VAULT
from tests.support.dashboard import page, sign_in
from tests.support.databases import Backend
from tests.support.gateway import UNUSED_UPSTREAM, GatewayHandle, bound_loopback_socket, running_gateway
from tests.support.oauth_browser import Browser, Redirect
from tests.support.oauth_flows import browser_post
from tests.support.oidc import OidcClient, OidcProvider, run_oidc_provider
from tests.support.oidc import sign_in as provider_sign_in
from tests.vault.conftest import SERVICE, Caller, overrides

CALLBACKS = ("/account/services/callback", "/v1/auth/services/callback")


@dataclass
class Setup:
    gateway: GatewayHandle
    idp: OidcProvider


@contextlib.asynccontextmanager
async def connectable(db: Backend, upstream_url: str = UNUSED_UPSTREAM, **extra: object) -> AsyncIterator[Setup]:
    """A gateway and a provider whose client accepts the gateway's connect callbacks."""
    from gateway.identity.sealing import generate_secret

    sock = bound_loopback_socket()
    public_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    client = OidcClient(redirect_uris=tuple(public_url + path for path in CALLBACKS))
    async with run_oidc_provider(clients=[client]) as idp:
        raw = overrides(idp, generate_secret("k1"), f"gw:test:{id(sock):x}")
        raw.update(extra)
        async with running_gateway(
            storage=await db.storage(), upstream_url=upstream_url, overrides=raw, sock=sock
        ) as gateway:
            yield Setup(gateway, idp)


async def caller_for(gateway: GatewayHandle, user: User) -> Caller:
    key, minted = await gateway.accounts.create_key(user, name="app")
    token = await gateway.app[IDENTITY].tokens.mint(subject=user.id, api_key_id=key.id)
    return Caller(user.id, minted.key, token)


async def connect_from_dashboard(browser: Browser, setup: Setup, action: str = "Connect") -> str:
    """Press Connect (or Reconnect) on /account, sign in at the provider, land back on /account."""
    account = page(await browser.open(browser.origin + "/account"))
    assert f'aria-label="{action} {SERVICE}"' in account.text
    to_provider = await browser.open(
        f"{browser.origin}/account/services/{SERVICE}/connect", data={"csrf": account.hidden()["csrf"]}
    )
    assert isinstance(to_provider, Redirect)
    assert "offline_access" in to_provider.location
    assert "prompt=consent" in to_provider.location
    back = await provider_sign_in(setup.idp, to_provider.location)
    landed = page(await browser.open(back))
    assert landed.status == 200, landed.text[:300]
    return landed.text


async def provider_refresh_status(idp: OidcProvider, refresh_token: str) -> int:
    basic = base64.b64encode(f"{idp.client.client_id}:{idp.client.client_secret}".encode()).decode()
    async with aiohttp.ClientSession() as http:
        async with http.post(
            idp.issuer + "/token",
            data={"grant_type": "refresh_token", "refresh_token": refresh_token},
            headers={"Authorization": f"Basic {basic}"},
        ) as response:
            return response.status


async def test_the_account_page_connects_then_disconnects_a_service_and_the_provider_grant_is_revoked(
    db: Backend, tmp_path: Path
) -> None:
    async with connectable(db) as setup, Browser(setup.gateway.url) as browser, aiohttp.ClientSession() as http:
        gw = setup.gateway
        audited: list[tuple[str, dict[str, object]]] = []
        gw.app[AUDIT].listen(lambda event, fields: audited.append((event, fields)))
        user = await gw.new_user()
        account = await sign_in(browser, user.email)
        assert 'aria-label="Connect corp"' in account.text
        assert "not connected" in account.text

        text = await connect_from_dashboard(browser, setup)
        assert "The service was connected." in text
        assert 'aria-label="Reconnect corp"' in text
        assert 'aria-label="Disconnect corp"' in text
        assert "alice@example.com" in text
        assert "offline_access" in text
        connection = await gw.app[VAULT].vault.connection(user.id, SERVICE)
        assert connection is not None
        assert connection.tokens.refresh_token
        refresh_token = connection.tokens.refresh_token

        caller = await caller_for(gw, user)
        async with http.get(f"{gw.url}/v1/proxy/{SERVICE}/profile", headers=caller.headers()) as response:
            assert response.status == 200
            assert (await response.json())["email"] == "alice@example.com"

        account = page(await browser.open(browser.origin + "/account"))
        done = await browser.open(
            f"{browser.origin}/account/services/{SERVICE}/disconnect", data={"csrf": account.hidden()["csrf"]}
        )
        done = page(done)
        assert "The service was disconnected" in done.text
        assert 'aria-label="Connect corp"' in done.text
        assert await gw.app[VAULT].vault.connection(user.id, SERVICE) is None
        async with http.get(f"{gw.url}/v1/proxy/{SERVICE}/profile", headers=caller.headers()) as response:
            assert response.status == 403
            assert (await response.json())["error"] == "service_not_connected"
        assert await provider_refresh_status(setup.idp, refresh_token) == 400  # revoked at the provider
        services = [(e, f["service"], f.get("revoked")) for e, f in audited if e.startswith("service.")]
        assert services == [("service.connected", SERVICE, None), ("service.disconnected", SERVICE, "yes")]
        assert refresh_token not in str(audited)


async def test_connect_and_disconnect_posts_without_the_session_csrf_token_are_refused(db: Backend) -> None:
    async with connectable(db) as setup, Browser(setup.gateway.url) as browser:
        user = await setup.gateway.new_user()
        await sign_in(browser, user.email)
        for action in ("connect", "disconnect"):
            reply = await browser_post(
                browser, f"/account/services/{SERVICE}/{action}", {"csrf": "forged"}, Origin=browser.origin
            )
            assert reply.status == 403


async def test_an_app_removes_a_service_with_its_key_and_the_identity_token(db: Backend) -> None:
    async with connectable(db) as setup, Browser(setup.gateway.url) as browser, aiohttp.ClientSession() as http:
        gw = setup.gateway
        user = await gw.new_user()
        await sign_in(browser, user.email)
        await connect_from_dashboard(browser, setup)
        caller = await caller_for(gw, user)
        async with http.delete(f"{gw.url}/v1/auth/{SERVICE}", headers={"X-API-Key": caller.api_key}) as response:
            assert response.status == 401
        async with http.delete(f"{gw.url}/v1/auth/{SERVICE}", headers=caller.headers()) as response:
            assert response.status == 204
        async with http.delete(f"{gw.url}/v1/auth/{SERVICE}", headers=caller.headers()) as response:
            assert response.status == 404
        async with http.get(f"{gw.url}/v1/proxy/{SERVICE}/profile", headers=caller.headers()) as response:
            assert (await response.json())["error"] == "service_not_connected"


async def test_identity_tokens_list_the_live_connections_and_not_the_broken_ones(db: Backend) -> None:
    async with connectable(db) as setup, Browser(setup.gateway.url) as browser:
        gw = setup.gateway
        user = await gw.new_user()
        await sign_in(browser, user.email)
        key, _ = await gw.accounts.create_key(user, name="app")
        flow = gw.app[APP_FLOW]

        async def listed() -> list[str]:
            code = await flow.tokens.new_code(user_id=user.id, api_key_id=key.id, redirect_uri="https://app/cb")
            pair = await flow.tokens.redeem(code, api_key_id=key.id, redirect_uri="https://app/cb")
            claims = jose_jwt.decode(pair.access_token, await _jwks(gw)).claims
            return list(claims["connected_services"])

        assert await listed() == []
        await connect_from_dashboard(browser, setup)
        assert await listed() == [SERVICE]
        vault = gw.app[VAULT].vault
        connection = await vault.connection(user.id, SERVICE)
        assert connection is not None
        assert await vault.mark_broken(connection)
        assert await listed() == []


async def _jwks(gw: GatewayHandle) -> object:
    from joserfc.jwk import KeySet

    return KeySet.import_key_set({"keys": await gw.app[IDENTITY].keys.published()})


async def test_the_connect_link_is_only_for_the_user_it_was_made_for(db: Backend) -> None:
    async with connectable(db) as setup, Browser(setup.gateway.url) as browser:
        gw = setup.gateway
        alice, mallory = await gw.new_user(), await gw.new_user()
        link = connect_link(gw.config.public_url, SERVICE, alice.id)
        assert link.startswith(gw.url + "/account/connect/corp?for=")
        signin_page = page(await browser.open(link))
        assert 'action="/account/login"' in signin_page.text  # not signed in: sign in first
        await sign_in(browser, mallory.email)
        refused = page(await browser.open(link))
        assert refused.status == 403
        assert "another account" in refused.text
        async with Browser(gw.url) as alices:
            await sign_in(alices, alice.email)
            offer = page(await alices.open(link))
            assert offer.status == 200
            assert 'aria-label="Connect corp"' in offer.text
            to_provider = await alices.open(
                f"{gw.url}/account/services/{SERVICE}/connect", data={"csrf": offer.hidden()["csrf"]}
            )
            assert isinstance(to_provider, Redirect)
            landed = page(await alices.open(await provider_sign_in(setup.idp, to_provider.location)))
            assert "The service was connected." in landed.text
