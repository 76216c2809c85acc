"""Authorized Apps over HTTP: listing, revoking one app of three, signing out everywhere, IDOR (cases 96, 99)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gateway.clock import ManualClock
from gateway.dashboard.pages import when
from gateway.storage import Storage
from tests.support.dashboard import account, apps, csrf, keys, post, sign_in
from tests.support.gateway import GatewayHandle, running_gateway
from tests.support.oauth_browser import Browser, Page, Redirect
from tests.support.oauth_flows import approve, bearer, new_pkce, obtain_tokens, post_mcp, register
from tests.support.upstream import UpstreamProcess

ADA = "ada@example.com"
BOB = "bob@example.com"


async def _connect(gateway: GatewayHandle, browser: Browser, name: str, email: str = ADA) -> str:
    """Register a client called ``name``, approve it as ``email`` and return its access token."""
    client = await register(gateway.url, client_name=name)
    return str((await obtain_tokens(client, browser, email, scope="mcp:tools offline_access"))["access_token"])


async def _works(gateway: GatewayHandle, token: str) -> int:
    return (await post_mcp(gateway.url, bearer(token))).status


async def test_each_approved_app_is_listed_with_its_name_host_times_and_scopes(
    gateway: GatewayHandle, browser: Browser
) -> None:
    await gateway.new_user(ADA)
    token = await _connect(gateway, browser, "Claude Code")
    assert await _works(gateway, token) == 200
    page = await sign_in(browser, ADA)
    assert list(apps(page)) == ["Claude Code"]
    assert "approvals go to an app on this computer (port 43210)" in page.text  # the redirect URI's receiver
    assert "mcp:tools" in page.text
    assert "First approved" in page.text
    assert "Last used" in page.text


async def test_revoking_one_app_of_three_kills_only_its_tokens(gateway: GatewayHandle, browser: Browser) -> None:
    await gateway.new_user(ADA)
    tokens = {name: await _connect(gateway, browser, name) for name in ("Laptop", "Server", "Phone")}
    page = await account(browser)
    listed = apps(page)
    assert set(listed) == {"Laptop", "Server", "Phone"}

    reply = await post(browser, f"/account/apps/{listed['Server']}/revoke", {"csrf": csrf(page)})
    assert reply.status == 303

    assert await _works(gateway, tokens["Server"]) == 401
    assert await _works(gateway, tokens["Laptop"]) == 200
    assert await _works(gateway, tokens["Phone"]) == 200
    assert set(apps(await account(browser))) == {"Laptop", "Phone"}


async def test_revoking_an_app_forgets_its_consent_so_the_next_authorization_asks_again(
    gateway: GatewayHandle, browser: Browser
) -> None:
    await gateway.new_user(ADA)
    client = await register(gateway.url, client_name="Once")
    await obtain_tokens(client, browser, ADA)
    # prompt=none goes back to an app only when its consent is remembered.
    assert isinstance(await browser.open(client.authorization_url(new_pkce(), prompt="none")), Redirect)
    page = await account(browser)
    await post(browser, f"/account/apps/{apps(page)['Once']}/revoke", {"csrf": csrf(page)})
    assert apps(await account(browser)) == {}
    assert isinstance(await browser.open(client.authorization_url(new_pkce(), prompt="none")), Page)
    await obtain_tokens(client, browser, ADA)
    assert list(apps(await account(browser))) == ["Once"]


async def test_sign_out_everywhere_revokes_every_app(gateway: GatewayHandle, browser: Browser) -> None:
    await gateway.new_user(ADA)
    tokens = [await _connect(gateway, browser, name) for name in ("One", "Two")]
    page = await account(browser)
    reply = await post(browser, "/account/apps/revoke-all", {"csrf": csrf(page)})
    assert reply.status == 303
    assert [await _works(gateway, t) for t in tokens] == [401, 401]
    assert apps(await account(browser)) == {}


async def test_another_user_cannot_revoke_my_app_or_key_and_gets_404(
    gateway: GatewayHandle, browser: Browser, other_browser: Browser
) -> None:
    ada = await gateway.new_user(ADA)
    await gateway.new_user(BOB)
    token = await _connect(gateway, browser, "Ada's app")
    key = await gateway.new_key(ada, name="ada-key")
    ada_page = await account(browser)
    app_id, key_id = apps(ada_page)["Ada's app"], keys(ada_page)["ada-key"]

    bob_page = await sign_in(other_browser, BOB)
    assert apps(bob_page) == {}
    assert keys(bob_page) == {}
    for path in (f"/account/apps/{app_id}/revoke", f"/account/keys/{key_id}/revoke"):
        reply = await post(other_browser, path, {"csrf": csrf(bob_page)})
        assert reply.status == 404, path
        assert "Ada" not in reply.text
        assert key_id not in reply.text
    # Made-up ids: the same 404.
    for path in ("/account/apps/" + "0" * 32 + "/revoke", "/account/keys/key_0000000000000000/revoke"):
        assert (await post(other_browser, path, {"csrf": csrf(bob_page)})).status == 404

    assert await _works(gateway, token) == 200
    assert await _works(gateway, key) == 200  # X-API-Key style via Bearer works for keys too
    assert set(apps(await account(browser))) == {"Ada's app"}


async def test_an_app_with_a_private_use_redirect_uri_is_listed_with_the_app_that_receives_its_codes(
    gateway: GatewayHandle, browser: Browser
) -> None:
    """Issue 11 item 12: the same words as the consent page, never the authority a private-use URI spells."""
    await gateway.new_user(ADA)
    uri = "com.evil.app://claude.ai/callback"
    client = await register(gateway.url, redirect_uris=[uri], client_name="Claude")
    await approve(browser, client.authorization_url(new_pkce()), ADA)
    page = await account(browser)
    assert list(apps(page)) == ["Claude"]
    assert f"approvals go to the app that opens com.evil.app: links ({uri})" in page.text
    assert "claude.ai<" not in page.text


async def test_a_hostile_client_name_is_shown_as_escaped_text(gateway: GatewayHandle, browser: Browser) -> None:
    await gateway.new_user(ADA)
    hostile = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    await _connect(gateway, browser, hostile)
    page = await account(browser)
    assert "<script>alert" not in page.text
    assert "<img src=x" not in page.text
    assert "&lt;script&gt;" in page.text
    assert list(apps(page)) == [hostile]


@pytest.fixture
async def quick_gateway(
    sqlite_storage: Storage, upstream: UpstreamProcess, clock: ManualClock
) -> AsyncIterator[GatewayHandle]:
    """Last-used times written every 0.1 s instead of every 30 s."""
    overrides = {"api_keys": {"last_used_flush_interval": 0.1}}
    async with running_gateway(
        storage=sqlite_storage, upstream_url=upstream.mcp_url, overrides=overrides, clock=clock
    ) as gw:
        yield gw


async def test_last_used_follows_the_apps_calls_within_the_flush_interval(
    quick_gateway: GatewayHandle, clock: ManualClock
) -> None:
    gateway = quick_gateway
    await gateway.new_user(ADA)
    async with Browser(gateway.url) as browser:
        token = await _connect(gateway, browser, "Busy app")
        approved = await account(browser)
        assert approved.text.count(when(clock.now())) >= 2  # first approved == last used at first
        clock.advance(1800)  # within the access token's hour
        assert await _works(gateway, token) == 200
        used = when(clock.now())
        async with asyncio.timeout(10):  # generous: the flush interval is 0.1 s
            while used not in (await account(browser)).text:
                await asyncio.sleep(0.05)


async def test_revoking_an_app_also_kills_its_unredeemed_authorization_codes(
    gateway: GatewayHandle, browser: Browser
) -> None:
    await gateway.new_user(ADA)
    client = await register(gateway.url, client_name="Slow app")
    pkce = new_pkce()
    redirect = await approve(browser, client.authorization_url(pkce), ADA)
    page = await account(browser)
    assert (await post(browser, f"/account/apps/{apps(page)['Slow app']}/revoke", {"csrf": csrf(page)})).status == 303
    reply = await client.exchange(redirect.params["code"], pkce)
    assert reply.status == 400
    assert reply.json()["error"] == "invalid_grant"
