"""E-mail addresses with control, escape or bidi characters: refused at every entrance, harmless when already
stored (issue 11 item 9)."""

from __future__ import annotations

import pytest

from gateway.storage import Storage
from tests.support.dashboard import page
from tests.support.gateway import TEST_PASSWORD, GatewayHandle, running_gateway
from tests.support.oauth_browser import Browser
from tests.support.oauth_flows import post_mcp
from tests.support.scripted_upstream import json_ok, jsonrpc, scripted_upstream

UNSAFE_ADDRESSES = [
    "\x1b[31mred@example.com",  # terminal escape
    "ev\u202eil@example.com",  # bidi override
    "zero\u200bwidth@example.com",  # zero-width space
    "nul\x00@example.com",
    "line\u2028sep@example.com",
]


@pytest.mark.parametrize("email", UNSAFE_ADDRESSES)
async def test_signing_up_with_a_control_escape_or_bidi_character_in_the_address_gets_a_400_page(
    gateway: GatewayHandle, browser: Browser, email: str
) -> None:
    form = page(await browser.open(gateway.url + "/signup"))
    refused = page(
        await browser.submit(form, "/signup", email=email, password=TEST_PASSWORD, password_again=TEST_PASSWORD)
    )
    assert refused.status == 400
    assert "cannot be used" in refused.text
    assert await gateway.storage.list_users() == []


async def test_signing_in_with_a_control_character_in_the_address_is_an_ordinary_failure(
    gateway: GatewayHandle, browser: Browser
) -> None:
    form = page(await browser.open(gateway.url + "/account/login"))
    refused = page(await browser.submit(form, "/account/login", email="\x1b[2Ja@example.com", password=TEST_PASSWORD))
    assert refused.status == 401
    assert "Invalid email or password" in refused.text


async def test_an_account_stored_with_an_escape_in_its_address_still_reaches_the_upstream_without_the_address(
    sqlite_storage: Storage,
) -> None:
    """A row written before addresses were checked: its calls are not 500s, and the upstream gets no header
    it could not parse (nor one the HTTP writer refuses)."""
    async with (
        scripted_upstream(json_ok) as upstream,
        running_gateway(storage=sqlite_storage, upstream_url=upstream.mcp_url) as gw,
    ):
        user = await sqlite_storage.create_user(
            user_id="usr_old", email="\x1b[31mold@example.com", password_hash="x", now=0.0
        )
        key = await gw.new_key(user)
        reply = await post_mcp(gw.url, {"X-API-Key": key}, jsonrpc("tools/list"))
        assert reply.status == 200
    (seen,) = upstream.requests
    assert seen.headers["X-Gateway-User-Id"] == "usr_old"
    assert "X-Gateway-User-Email" not in seen.headers
