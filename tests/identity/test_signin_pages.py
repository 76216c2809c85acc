"""People sign in to the gateway with an identity provider (the real oidc-provider), on the dashboard and in an MCP
client's OAuth consent flow, driven over plain HTTP like a browser."""

from __future__ import annotations

import base64
import hashlib
import logging
import sqlite3
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from gateway.flight.setup import FLIGHT
from gateway.identity.pending_seal import open_verifier
from gateway.identity.provider_http import ProviderError
from gateway.storage import Storage
from tests.identity.signin_support import DISPLAY_NAME, continue_with, gateway_with_provider, through_provider
from tests.support.gateway import TEST_PASSWORD
from tests.support.oauth_browser import Browser, Page, Redirect
from tests.support.oauth_flows import bearer, is_consent, new_pkce, post_mcp, register
from tests.support.oidc import sign_in

SESSION = "__Host-gw_session"


def session_of(browser: Browser) -> str | None:
    cookie = next((c for c in browser.session.cookie_jar if c.key == SESSION), None)
    return cookie.value if cookie is not None else None


async def test_a_person_signs_in_to_the_dashboard_with_the_provider_and_sees_the_linked_identity(
    any_storage: Storage, caplog: pytest.LogCaptureFixture
) -> None:
    async with gateway_with_provider(any_storage) as (gateway, idp), Browser(gateway.url) as browser:
        login = await browser.open(gateway.url + "/account/login")
        start = continue_with(login)
        assert start == "/account/login/corp"
        with caplog.at_level(logging.INFO, logger="gateway.audit"):
            account = await through_provider(browser, idp, start, "alice")
        assert isinstance(account, Page)
        assert account.url == gateway.url + "/account"
        assert "alice@example.com" in account.text
        assert DISPLAY_NAME in account.text.split('id="identities-title"')[1]
        user = await gateway.storage.get_user_by_email("alice@example.com")
        assert user is not None
        [link] = await gateway.storage.list_identity_links(user.id)
        assert (link.provider, link.subject, link.email) == (idp.issuer, "alice", "alice@example.com")
        events = [(r.__dict__["audit"], r.__dict__.get("reason")) for r in caplog.records if r.name == "gateway.audit"]
        assert ("login.succeeded", "provider:corp") in events
        assert ("identity.linked", None) in events


async def test_signing_in_with_the_provider_rotates_the_browser_session(sqlite_storage: Storage) -> None:
    async with gateway_with_provider(sqlite_storage) as (gateway, idp), Browser(gateway.url) as browser:
        await gateway.new_user("alice@example.com")
        page = await browser.open(gateway.url + "/account/login")
        assert isinstance(page, Page)
        await browser.submit(page, "/account/login", email="alice@example.com", password=TEST_PASSWORD)
        before = session_of(browser)
        assert before is not None
        account = await through_provider(browser, idp, "/account/login/corp", "alice")
        assert isinstance(account, Page)
        assert account.url == gateway.url + "/account"
        assert session_of(browser) not in (None, before)


async def test_an_mcp_clients_consent_flow_signs_in_with_the_provider_and_continues_to_consent(
    sqlite_storage: Storage,
) -> None:
    async with gateway_with_provider(sqlite_storage) as (gateway, idp), Browser(gateway.url) as browser:
        app = await register(gateway.url)
        pkce = new_pkce()
        login = await browser.open(app.authorization_url(pkce))
        start = continue_with(login)
        assert start.startswith("/login/corp?tx=")
        consent = await through_provider(browser, idp, start, "alice")
        assert is_consent(consent), consent
        assert isinstance(consent, Page)
        assert "alice@example.com" in consent.text
        back = await browser.submit(consent, "/consent", decision="approve")
        assert isinstance(back, Redirect), back
        assert "code" in back.params, back.location
        reply = await app.exchange(back.params["code"], pkce)
        assert reply.status == 200, reply.text
        access_token = reply.json()["access_token"]
        recorder = gateway.app[FLIGHT]
        await recorder.flush()
        steps = [(r.step, r.outcome, r.detail) for r in await recorder.client_trail(app.client_id)]
        assert ("sign_in", "ok", "provider:corp") in steps
        # The token is the provider-signed-in person's: the gateway accepts it (its upstream is not running).
        assert (await post_mcp(gateway.url, bearer(access_token))).status != 401


async def test_an_unverified_email_never_links_to_an_existing_account(sqlite_storage: Storage) -> None:
    async with gateway_with_provider(sqlite_storage) as (gateway, idp), Browser(gateway.url) as browser:
        alice = await gateway.new_user("alice@example.com")
        refused = await through_provider(browser, idp, "/account/login/corp", "mallory")
        assert isinstance(refused, Page)
        assert refused.status == 403
        assert "did not confirm your e-mail address" in refused.text
        assert 'href="/account/login"' in refused.text
        assert await gateway.storage.list_identity_links(alice.id) == []
        assert await gateway.storage.get_identity_link(idp.issuer, "mallory") is None
        assert alice.password_hash == (await gateway.storage.get_user(alice.id)).password_hash  # type: ignore[union-attr]
        assert session_of(browser) is None


async def test_an_email_outside_the_allowed_domains_gets_a_clear_page_and_no_account(sqlite_storage: Storage) -> None:
    allowed = {"allowed_email_domains": ["corp.example"]}
    async with (
        gateway_with_provider(sqlite_storage, accounts=allowed) as (gateway, idp),
        Browser(gateway.url) as browser,
    ):
        refused = await through_provider(browser, idp, "/account/login/corp", "alice")
        assert isinstance(refused, Page)
        assert refused.status == 403
        assert "only for e-mail addresses of corp.example" in refused.text
        assert await gateway.storage.get_user_by_email("alice@example.com") is None
        inside = await through_provider(browser, idp, "/account/login/corp", "carol")
        assert isinstance(inside, Page)
        assert inside.url == gateway.url + "/account"


async def test_with_local_passwords_off_the_password_forms_are_hidden_and_refused(sqlite_storage: Storage) -> None:
    off = {"local_passwords": False}
    async with gateway_with_provider(sqlite_storage, accounts=off) as (gateway, idp), Browser(gateway.url) as browser:
        await gateway.new_user("bob@example.com")
        page = await browser.open(gateway.url + "/account/login")
        assert isinstance(page, Page)
        assert continue_with(page) == "/account/login/corp"
        assert 'type="password"' not in page.text
        assert "/signup" not in page.text
        refused = await browser.submit(page, "/account/login", email="bob@example.com", password=TEST_PASSWORD)
        assert isinstance(refused, Page)
        assert refused.status == 403
        assert session_of(browser) is None
        signup = await browser.open(gateway.url + "/signup")
        assert isinstance(signup, Page)
        assert signup.status == 403

        app = await register(gateway.url)
        login = await browser.open(app.authorization_url(new_pkce()))
        assert isinstance(login, Page)
        assert 'type="password"' not in login.text
        tx = continue_with(login).split("tx=", 1)[1]
        refused = await browser.submit(login, "/login", tx=tx, email="bob@example.com", password=TEST_PASSWORD)
        assert isinstance(refused, Page)
        assert refused.status == 403

        account = await through_provider(browser, idp, "/account/login/corp", "alice")
        assert isinstance(account, Page)
        assert account.url == gateway.url + "/account"
        assert 'action="/account/password"' not in account.text
        fields = {"current_password": "", "new_password": "a-new-password-1", "new_password_again": "a-new-password-1"}
        change = await browser.submit(account, "/account/password", **fields)
        assert isinstance(change, Page)
        assert change.status == 403


async def test_a_replayed_forged_or_other_browsers_callback_is_refused(sqlite_storage: Storage) -> None:
    async with gateway_with_provider(sqlite_storage) as (gateway, idp), Browser(gateway.url) as browser:
        to_provider = await browser.open(gateway.url + "/account/login/corp")
        assert isinstance(to_provider, Redirect)
        back = await sign_in(idp, to_provider.location, login="alice")
        async with Browser(gateway.url) as stranger:
            other = await stranger.open(back)
            assert isinstance(other, Page)
            assert other.status == 400
            assert session_of(stranger) is None
        # The stranger's attempt used the sign-in up: the rightful browser must start again.
        again = await browser.open(back)
        assert isinstance(again, Page)
        assert again.status == 400
        forged = await browser.open(gateway.url + "/auth/corp/callback?code=x&state=forged&iss=" + idp.issuer)
        assert isinstance(forged, Page)
        assert forged.status == 400
        assert "not started in this browser" in forged.text
        unknown = await browser.open(gateway.url + "/auth/nope/callback?code=x&state=y")
        assert isinstance(unknown, Page)
        assert unknown.status == 404
        assert session_of(browser) is None


async def test_cancelling_at_the_provider_returns_to_the_consent_flows_sign_in(sqlite_storage: Storage) -> None:
    async with gateway_with_provider(sqlite_storage) as (gateway, idp), Browser(gateway.url) as browser:
        app = await register(gateway.url)
        start = continue_with(await browser.open(app.authorization_url(new_pkce())))
        to_provider = await browser.open(gateway.url + start)
        assert isinstance(to_provider, Redirect)
        back = await sign_in(idp, to_provider.location, approve=False)
        page = await browser.open(back)
        assert isinstance(page, Page)
        assert page.status == 400
        assert "You cancelled the sign-in at the provider." in page.text
        assert 'href="/login?tx=' in page.text
        recorder = gateway.app[FLIGHT]
        await recorder.flush()
        steps = [(r.step, r.outcome, r.detail) for r in await recorder.client_trail(app.client_id)]
        assert ("sign_in", "failed", "provider:corp:access_denied") in steps


async def test_a_sign_in_under_way_keeps_its_pkce_verifier_only_sealed_under_its_state(
    sqlite_storage: Storage, tmp_path: Path
) -> None:
    async with gateway_with_provider(sqlite_storage) as (gateway, _), Browser(gateway.url) as browser:
        leaving = await browser.open(gateway.url + continue_with(await browser.open(gateway.url + "/account/login")))
        assert isinstance(leaving, Redirect)
        query = parse_qs(urlsplit(leaving.location).query)
        [challenge], [state] = query["code_challenge"], query["state"]
        with sqlite3.connect(tmp_path / "gateway.db") as db:
            [(stored,)] = db.execute("SELECT code_verifier FROM identity_sign_ins").fetchall()
        assert stored.startswith("v1.")
        assert state not in stored
        digest = base64.urlsafe_b64encode(hashlib.sha256(stored.encode()).digest()).rstrip(b"=").decode()
        assert digest != challenge  # what the row holds is not the verifier the provider will check
        verifier = open_verifier(stored, state)
        assert verifier is not None
        opened = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        assert opened == challenge  # the callback, holding the state, opens it
        with pytest.raises(ProviderError):
            open_verifier(stored, state + "x")
