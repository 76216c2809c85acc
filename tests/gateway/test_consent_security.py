"""Sign-in and consent under attack (security-cases 31-36, 38-40): per-client approval, page content and
headers, CSRF and replays, tampering, browser binding and expiry, denial, password guessing, session fixation
and cookie attributes, password bounds."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from yarl import URL

from gateway.accounts import AccountError
from gateway.clock import ManualClock
from gateway.oauth.flow import AUTHORIZATION_FLOW
from tests.support.gateway import TEST_PASSWORD, GatewayHandle
from tests.support.oauth_browser import Browser, Page, Redirect
from tests.support.oauth_flows import (
    EMAIL,
    REDIRECT_URI,
    STATE,
    OAuthApp,
    Reply,
    approve,
    bearer,
    browser_post,
    dump_database,
    is_consent,
    is_error_page,
    is_login,
    login_post,
    new_pkce,
    post_mcp,
    register,
    row_count,
    set_cookie,
    sign_in_page,
    until_consent,
)

SAME_ORIGIN = "same-origin"


# --- 31: approval is per client, redirect URI, resource and scope -----------------------------------------


async def test_approving_one_client_never_approves_another_and_is_reused_only_for_the_same_request(
    scoped_gateway: GatewayHandle, tmp_path: Path
):
    """Case 31 (confused deputy): B, registered by an attacker, gets a consent page of its own."""
    gw = scoped_gateway
    a = await register(gw.url, redirect_uris=[REDIRECT_URI, "https://a.example/cb"], client_name="A")
    b = await register(gw.url, redirect_uris=["https://attacker.example/cb"], client_name="B")
    async with Browser(gw.url) as browser:
        await approve(browser, a.authorization_url(new_pkce(), scope="mcp:read"), EMAIL)
        again = await browser.open(a.authorization_url(new_pkce(), scope="mcp:read"))
        assert isinstance(again, Redirect)
        assert "code" in again.params
        for url in (
            b.authorization_url(new_pkce(), scope="mcp:read"),
            a.authorization_url(new_pkce(), scope="mcp:read mcp:tools"),
            a.authorization_url(new_pkce(), scope="mcp:read", redirect_uri="https://a.example/cb"),
            a.authorization_url(new_pkce(), scope="mcp:read", prompt="consent"),
        ):
            assert is_consent(await browser.open(url)), url
    b_page = browser.pages[-4]
    assert ">B</span>" in b_page.text
    assert "attacker.example" in b_page.text
    codes = dump_database(tmp_path / "gateway.db")["authorization_codes"]
    assert [row["client_id"] for row in codes] == [a.client_id, a.client_id]


# --- 32: what the consent page shows, and the headers of every page ---------------------------------------


async def test_the_consent_page_names_the_client_escaped_and_unverified_with_redirect_host_scopes_and_resource(
    gateway: GatewayHandle,
):
    """Case 32 for a DCR client (a CIMD client's published host is covered with the CIMD tests)."""
    await gateway.new_user(EMAIL)
    name = '<img src=x onerror=alert(1)> "Claude"'
    loopback = await register(gateway.url, client_name=name)
    remote = await register(gateway.url, redirect_uris=["https://c.example/cb"], client_name="Remote")
    async with Browser(gateway.url) as browser:
        page = await until_consent(browser, loopback.authorization_url(new_pkce()), EMAIL)
        login = browser.pages[0]
        remote_page = await until_consent(browser, remote.authorization_url(new_pkce()), EMAIL)
    assert "<img" not in page.text
    assert "<img" not in login.text
    assert "&lt;img src=x onerror=alert(1)&gt; &#34;Claude&#34;" in page.text
    assert "Unverified application" in page.text
    assert "<dd>an app on this computer (port 43210)</dd>" in page.text
    assert "Approve only if you just started this application yourself" in page.text
    assert gateway.mcp_url in page.text
    assert "Access all MCP tools" in page.text
    assert "<dd>c.example</dd>" in remote_page.text
    assert "on this computer" not in remote_page.text


async def test_the_consent_page_names_the_app_behind_a_private_use_scheme_not_the_host_its_uri_spells(
    gateway: GatewayHandle,
):
    """Issue 11 item 12: ``com.evil.app://claude.ai/callback`` goes to whichever app claims ``com.evil.app:``,
    not to claude.ai; the page says so, shows the whole URI, and warns that any app can claim a scheme."""
    await gateway.new_user(EMAIL)
    uri = "com.evil.app://claude.ai/callback"
    app = await register(gateway.url, redirect_uris=[uri], client_name="Claude")
    async with Browser(gateway.url) as browser:
        page = await until_consent(browser, app.authorization_url(new_pkce()), EMAIL)
    assert f"<dd>the app that opens com.evil.app: links ({uri})</dd>" in page.text
    assert "<dd>claude.ai</dd>" not in page.text
    assert "Any app on this device can claim that kind of link" in page.text


async def test_login_consent_and_error_pages_forbid_framing_caching_and_referrers(
    gateway: GatewayHandle, app: OAuthApp
):
    """Case 32 (OAuth 2.1 §7.11, RFC 9700 §4.2)."""
    async with Browser(gateway.url) as browser:
        await until_consent(browser, app.authorization_url(new_pkce()), EMAIL)
        await browser.open(gateway.url + "/consent?tx=unknown")
        await browser.open(app.authorization_url(new_pkce(), redirect_uri="https://evil.example/cb"))
    login, consent, expired, invalid = browser.pages
    assert is_login(login)
    assert is_consent(consent)
    assert is_error_page(expired)
    assert is_error_page(invalid)
    for page in browser.pages:
        assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
        assert page.headers["X-Frame-Options"] == "DENY"
        assert page.headers["Referrer-Policy"] == "no-referrer"
        assert page.headers["Cache-Control"] == "no-store"


# --- 33-34: CSRF, replays, two tabs, tampering ------------------------------------------------------------


async def test_consent_posts_without_the_csrf_token_of_this_browser_or_from_another_site_get_403(
    gateway: GatewayHandle, app: OAuthApp, tmp_path: Path
):
    """Case 33."""
    await gateway.new_user("eve@example.com")
    async with Browser(gateway.url) as victim, Browser(gateway.url) as attacker:
        page = await until_consent(victim, app.authorization_url(new_pkce()), EMAIL)
        theirs = await until_consent(attacker, app.authorization_url(new_pkce()), "eve@example.com")
        fields = {**page.hidden(), "decision": "approve"}
        same = {"Origin": gateway.url, "Sec-Fetch-Site": SAME_ORIGIN}
        attempts = [
            ({"tx": fields["tx"], "decision": "approve"}, same),
            ({**fields, "csrf": theirs.hidden()["csrf"]}, same),
            (fields, {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}),
            (fields, {"Origin": "https://evil.example"}),
            (fields, {"Sec-Fetch-Site": "cross-site"}),
            (fields, {"Sec-Fetch-Site": "same-site"}),
        ]
        for form, headers in attempts:
            assert (await browser_post(victim, "/consent", form, **headers)).status == 403, (form, headers)
        assert row_count(tmp_path / "gateway.db", "authorization_codes") == 0
        reply = await browser_post(victim, "/consent", fields, **same)
    assert reply.status == 303
    assert reply.headers["Location"].startswith(REDIRECT_URI + "?code=")


async def test_a_replayed_consent_post_gets_an_error_page_and_exactly_one_code_exists(
    gateway: GatewayHandle, app: OAuthApp, tmp_path: Path
):
    """Case 33: double submit."""
    async with Browser(gateway.url) as browser:
        page = await until_consent(browser, app.authorization_url(new_pkce()), EMAIL)
        first = await browser.submit(page, "/consent", decision="approve")
        second = await browser.submit(page, "/consent", decision="approve")
        denied_after = await browser.submit(page, "/consent", decision="deny")
    assert isinstance(first, Redirect)
    assert is_error_page(second)
    assert is_error_page(denied_after)
    assert row_count(tmp_path / "gateway.db", "authorization_codes") == 1


async def test_two_tabs_with_two_transactions_can_both_be_approved_in_either_order(
    gateway: GatewayHandle, app: OAuthApp
):
    """Case 33: loading a second consent page never invalidates the first one's CSRF token."""
    one, two = new_pkce(), new_pkce()
    async with Browser(gateway.url) as browser:
        tab1 = await until_consent(browser, app.authorization_url(one, state="tab1"), EMAIL)
        tab2 = await until_consent(browser, app.authorization_url(two, state="tab2"), EMAIL)
        reloaded = await browser.open(f"{gateway.url}/consent?tx={tab1.hidden()['tx']}")
        assert isinstance(reloaded, Page)
        assert reloaded.hidden() == tab1.hidden()
        second = await browser.submit(tab2, "/consent", decision="approve")
        first = await browser.submit(tab1, "/consent", decision="approve")
    assert isinstance(first, Redirect)
    assert isinstance(second, Redirect)
    assert (first.params["state"], second.params["state"]) == ("tab1", "tab2")
    assert (await app.exchange(first.params["code"], one)).status == 200
    assert (await app.exchange(second.params["code"], two)).status == 200


async def test_fields_added_to_the_consent_post_change_nothing_the_code_is_bound_to(
    scoped_gateway: GatewayHandle,
):
    """Case 34: the server-side pending request is the only source of what is approved."""
    gw = scoped_gateway
    app = await register(gw.url)
    other = await register(gw.url, redirect_uris=["https://evil.example/cb"], client_name="Other")
    pkce, evil_pkce = new_pkce(), new_pkce()
    async with Browser(gw.url) as browser:
        page = await until_consent(browser, app.authorization_url(pkce, scope="mcp:read"), EMAIL)
        result = await browser.submit(
            page,
            "/consent",
            decision="approve",
            redirect_uri="https://evil.example/cb",
            scope="mcp:tools mcp:read",
            client_id=other.client_id,
            resource="https://other.example/mcp",
            code_challenge=evil_pkce.challenge,
            state="forged",
        )
    assert isinstance(result, Redirect)
    assert result.location.startswith(REDIRECT_URI + "?")
    assert result.params["state"] == STATE
    code = result.params["code"]
    assert (await other.exchange(code, evil_pkce)).status == 400
    assert (await app.exchange(code, evil_pkce)).status == 400
    reply = await app.exchange(code, pkce)
    assert reply.status == 200, reply.text
    assert reply.json()["scope"] == "mcp:read"
    assert (await post_mcp(gw.url, bearer(reply.json()["access_token"]))).status == 403


# --- 35-36: browser binding, expiry, denial --------------------------------------------------------------


async def test_a_transaction_started_in_another_browser_cannot_be_opened_or_approved(
    gateway: GatewayHandle, app: OAuthApp, tmp_path: Path
):
    """Case 35: the attacker starts a flow and lures a signed-in victim to its consent URL or form."""
    async with Browser(gateway.url) as attacker, Browser(gateway.url) as victim:
        started = await attacker.open(app.authorization_url(new_pkce()))
        assert is_login(started)
        assert isinstance(started, Page)
        stolen = started.hidden()
        await approve(victim, app.authorization_url(new_pkce()), EMAIL)
        assert is_error_page(await victim.open(f"{gateway.url}/consent?tx={stolen['tx']}"))
        assert is_error_page(await victim.open(f"{gateway.url}/login?tx={stolen['tx']}"))
        forged = await victim.open(gateway.url + "/consent", data={**stolen, "decision": "approve"})
        assert is_error_page(forged)
        login = await victim.open(gateway.url + "/login", data={**stolen, "email": EMAIL, "password": TEST_PASSWORD})
        assert is_error_page(login)
    assert row_count(tmp_path / "gateway.db", "authorization_codes") == 1


async def test_a_consent_submitted_after_the_ten_minute_lifetime_gets_an_error_page_and_no_code(
    gateway: GatewayHandle, app: OAuthApp, clock: ManualClock, tmp_path: Path
):
    """Case 35."""
    async with Browser(gateway.url) as browser:
        page = await until_consent(browser, app.authorization_url(new_pkce()), EMAIL)
        clock.advance(601)
        assert is_error_page(await browser.open(f"{gateway.url}/consent?tx={page.hidden()['tx']}"))
        assert is_error_page(await browser.submit(page, "/consent", decision="approve"))
    assert row_count(tmp_path / "gateway.db", "authorization_codes") == 0


async def test_deny_redirects_access_denied_with_state_and_iss_and_leaves_no_grant_or_remembered_consent(
    gateway: GatewayHandle, app: OAuthApp, tmp_path: Path
):
    """Case 36 (OAuth 2.1 §4.1.2.1)."""
    async with Browser(gateway.url) as browser:
        page = await until_consent(browser, app.authorization_url(new_pkce()), EMAIL)
        reply = await browser_post(browser, "/consent", {**page.hidden(), "decision": "deny"}, Origin=gateway.url)
        assert reply.status == 303
        denied = Redirect(reply.headers["Location"])
        assert denied.location.startswith(REDIRECT_URI + "?")
        assert denied.params == {
            "error": "access_denied",
            "error_description": "The user denied the request",
            "state": STATE,
            "iss": gateway.url,
        }
        assert is_consent(await browser.open(app.authorization_url(new_pkce())))
        assert is_error_page(await browser.open(app.authorization_url(new_pkce(), prompt="none")))
    rows = dump_database(tmp_path / "gateway.db")
    assert rows["authorization_codes"] == rows["consents"] == rows["token_families"] == []


# --- 38-40: sign-in failures, throttling, session fixation, cookies, redirects, password bounds -----------


async def test_a_wrong_password_an_unknown_user_and_a_disabled_user_get_the_same_generic_401(
    gateway: GatewayHandle, app: OAuthApp, clock: ManualClock
):
    """Case 38. Latency is not measured (timed tests are flaky); an unknown user still costs one Argon2
    verification against a dummy hash, see ``Passwords.verify``."""
    disabled = await gateway.new_user("off@example.com")
    await gateway.storage.set_disabled(disabled.id, clock.now())
    answers = []
    async with Browser(gateway.url) as browser:
        page = await sign_in_page(browser, app.authorization_url(new_pkce()))
        for email, password in (
            (EMAIL, "wrong password!"),
            ("nobody@example.com", "wrong password!"),
            ("off@example.com", TEST_PASSWORD),
            ("not an email", TEST_PASSWORD),
        ):
            reply = await login_post(browser, page, email, password)
            assert reply.status == 401
            answers.append(reply.text.replace(email, "EMAIL"))
    assert len(set(answers)) == 1
    assert "Invalid email or password." in answers[0]
    assert "Test client" in answers[0], "the form shown again must still name the application"


async def test_five_failures_lock_the_account_whatever_address_is_claimed_until_the_window_passes(
    gateway: GatewayHandle, app: OAuthApp, clock: ManualClock
):
    """Case 38: per-account backoff that expires by itself; a client-supplied ``X-Forwarded-For`` (rotating
    addresses) changes nothing. Even the right password waits until the window has passed."""
    async with Browser(gateway.url) as browser:
        page = await sign_in_page(browser, app.authorization_url(new_pkce()))
        for i in range(5):
            wrong = await login_post(browser, page, EMAIL, "wrong password!", **{"X-Forwarded-For": f"10.0.0.{i}"})
            assert wrong.status == 401
        locked = await login_post(browser, page, EMAIL.upper(), TEST_PASSWORD)
        assert locked.status == 429
        assert 0 < int(locked.headers["Retry-After"]) <= 900
        assert "Too many attempts" in locked.text
        clock.advance(901)
        later = await login_post(
            browser, await sign_in_page(browser, app.authorization_url(new_pkce())), EMAIL, TEST_PASSWORD
        )
    assert later.status == 303
    assert later.headers["Location"].startswith("/consent?tx=")


async def test_thirty_failures_from_one_address_across_accounts_throttle_that_address(
    gateway: GatewayHandle, app: OAuthApp, clock: ManualClock
):
    """Case 38: per-address limit (credential stuffing over many accounts)."""
    async with Browser(gateway.url) as browser:
        page = await sign_in_page(browser, app.authorization_url(new_pkce()))
        for i in range(30):
            assert (await login_post(browser, page, f"guess{i}@example.com", "wrong password!")).status == 401
        locked = await login_post(browser, page, EMAIL, TEST_PASSWORD)
        assert locked.status == 429
        assert int(locked.headers["Retry-After"]) > 0
        clock.advance(901)
        page = await sign_in_page(browser, app.authorization_url(new_pkce()))
        assert (await login_post(browser, page, EMAIL, TEST_PASSWORD)).status == 303


async def test_a_sign_in_post_without_this_browsers_csrf_token_or_from_another_site_gets_403(
    gateway: GatewayHandle, app: OAuthApp
):
    """Cases 33 and 39 for the sign-in form (login CSRF: signing a victim into someone else's account)."""
    async with Browser(gateway.url) as browser, Browser(gateway.url) as other:
        page = await sign_in_page(browser, app.authorization_url(new_pkce()))
        theirs = await sign_in_page(other, app.authorization_url(new_pkce()))
        credentials = {"email": EMAIL, "password": TEST_PASSWORD}
        for fields in ({"tx": page.hidden()["tx"]}, {**page.hidden(), "csrf": theirs.hidden()["csrf"]}):
            assert (await browser_post(browser, "/login", {**fields, **credentials}, Origin=gateway.url)).status == 403
        assert (await login_post(browser, page, EMAIL, TEST_PASSWORD, Origin="https://evil.example")).status == 403
        cross = await login_post(browser, page, EMAIL, TEST_PASSWORD, **{"Sec-Fetch-Site": "cross-site"})
        assert cross.status == 403
        assert (await login_post(browser, page, EMAIL, TEST_PASSWORD)).status == 303


async def test_signing_in_issues_a_fresh_host_cookie_and_ends_the_session_the_browser_had(
    gateway: GatewayHandle, app: OAuthApp
):
    """Case 39 (session fixation): a session planted in the victim's browser is replaced and ended."""
    await gateway.new_user("eve@example.com")
    async with Browser(gateway.url) as attacker:
        await approve(attacker, app.authorization_url(new_pkce()), "eve@example.com")
        planted = next(c.value for c in attacker.session.cookie_jar if c.key == "__Host-gw_session")
    async with Browser(gateway.url) as victim:
        victim.session.cookie_jar.update_cookies({"__Host-gw_session": planted}, URL(gateway.url))
        url = app.authorization_url(new_pkce(), prompt="login")
        async with victim.session.get(url, allow_redirects=False) as response:
            started = Reply(response.status, response.headers.copy(), b"")
        page = await sign_in_page(victim, f"{gateway.url}{started.headers['Location']}")
        signed_in = await login_post(victim, page, EMAIL, TEST_PASSWORD)
    assert (started.status, signed_in.status) == (303, 303)
    value, session_cookie = set_cookie(signed_in, "__Host-gw_session")
    _, browser_cookie = set_cookie(started, "__Host-gw_browser")
    assert value != planted
    for attributes in (browser_cookie, session_cookie):
        assert {"httponly", "secure", "path=/", "samesite=lax"} <= attributes
        assert not any(a.startswith("domain") for a in attributes)
    async with Browser(gateway.url) as replay:
        replay.session.cookie_jar.update_cookies({"__Host-gw_session": planted}, URL(gateway.url))
        assert is_login(await replay.open(app.authorization_url(new_pkce())))


async def test_over_long_passwords_fail_generically_without_being_hashed(
    gateway: GatewayHandle, app: OAuthApp, monkeypatch: pytest.MonkeyPatch
):
    """Case 40: nothing over the 1 024-character cap reaches Argon2 (which runs in a bounded thread pool)."""
    passwords = gateway.app[AUTHORIZATION_FLOW].passwords
    seen: list[int] = []

    hasher = passwords._hasher

    class Recording:
        def hash(self, password: str) -> str:
            seen.append(len(password))
            return str(hasher.hash(password))

        def verify(self, stored: str, password: str) -> bool:
            seen.append(len(password))
            return bool(hasher.verify(stored, password))

        def check_needs_rehash(self, stored: str) -> bool:
            return bool(hasher.check_needs_rehash(stored))

    monkeypatch.setattr(passwords, "_hasher", Recording())
    async with Browser(gateway.url) as browser:
        page = await sign_in_page(browser, app.authorization_url(new_pkce()))
        assert (await login_post(browser, page, EMAIL, TEST_PASSWORD + "x" * 10_000)).status == 401
        replies = await asyncio.gather(*(login_post(browser, page, f"b{i}@example.com", "p" * 4096) for i in range(10)))
        assert [reply.status for reply in replies] == [401] * 10
        assert (await login_post(browser, page, EMAIL, TEST_PASSWORD)).status == 303
    assert seen
    assert max(seen) <= 1024


async def test_a_fullwidth_lookalike_email_is_the_same_account_not_another_one(gateway: GatewayHandle, app: OAuthApp):
    """Case 40: emails are NFKC-normalised and compared case-insensitively, so a fullwidth ``A`` (U+FF21) names
    the same account (it cannot be registered as a second one) and letter case does not matter."""
    with pytest.raises(AccountError, match="already exists"):
        await gateway.accounts.create_user("\uff21da@example.com", TEST_PASSWORD)
    async with Browser(gateway.url) as browser:
        page = await sign_in_page(browser, app.authorization_url(new_pkce()))
        assert (await login_post(browser, page, "\uff21da@example.com", "wrong password")).status == 401
        assert (await login_post(browser, page, "ADA@Example.com", TEST_PASSWORD)).status == 303
