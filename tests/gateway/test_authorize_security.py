"""The authorization endpoint under attack (security-cases 21-24, 26-30, 37, and 39's redirect codes): requests
that must stay on the gateway as an error page, errors that go back to the validated redirect URI with ``state``
and ``iss`` (by redirect only for a client the user approved, otherwise through a page's link), and what a
valid request binds (redirect URI, resource, scope)."""

from __future__ import annotations

import html
import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

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
    is_error_page,
    new_pkce,
    obtain_tokens,
    post_mcp,
    register,
    request,
    row_count,
    sign_in_page,
    until_consent,
)
from tests.support.redirect_corpora import NOT_EXACTLY_REGISTERED, REGISTERED


def assert_error_page(reply: Reply) -> None:
    """Shown in the browser: 400 HTML, nothing redirected anywhere."""
    assert reply.status == 400, (reply.status, reply.headers.get("Location"))
    assert "Location" not in reply.headers
    assert reply.headers["Content-Type"].startswith("text/html")
    assert reply.headers["X-Frame-Options"] == "DENY"


_RETURN_LINK = re.compile(r'<a href="([^"]*)" rel="noreferrer">')


def refusal_link(reply: Reply | Page) -> str:
    """A phase-two error for a client the person never approved (issue 11 item 11, RFC 9700 §4.11.2): a 400
    page, nothing redirected; its one link back to the client (followed only by a click) is returned."""
    if isinstance(reply, Page):
        assert reply.status == 400
        assert "Location" not in reply.headers
        text = reply.text
    else:
        assert_error_page(reply)
        text = reply.text
    links = _RETURN_LINK.findall(text)
    assert len(links) == 1, text
    return html.unescape(links[0])


def assert_refused_on_a_page(reply: Reply, gateway: GatewayHandle, redirect_uri: str, error: str) -> None:
    location = refusal_link(reply)
    assert location.split("?")[0] == redirect_uri.split("?")[0]
    params = parse_qs(urlsplit(location).query, keep_blank_values=True)
    assert params["error"] == [error]
    assert params["state"] == [STATE]
    assert params["iss"] == [gateway.url]
    assert "code" not in params


async def approved_browser(gateway: GatewayHandle, app: OAuthApp) -> Browser:
    """A browser whose user (``EMAIL``) approved ``app`` at its redirect URI; close it with ``__aexit__``."""
    browser = await Browser(gateway.url).__aenter__()
    await approve(browser, app.authorization_url(new_pkce()), EMAIL)
    return browser


# --- 21-24: client and redirect URI are settled before anything is redirected -----------------------


async def test_an_unknown_client_or_an_unregistered_redirect_uri_gets_an_error_page_and_no_redirect(
    gateway: GatewayHandle, app: OAuthApp
):
    """Case 21 (OAuth 2.1 §4.1.2.1, §2.3.5)."""
    pkce = new_pkce()
    evil = "https://evil.example/cb"
    for url in (
        app.authorization_url(pkce, client_id="nope", redirect_uri=evil),
        app.authorization_url(pkce, redirect_uri=evil),
        # Phase-two errors never reach an unverified redirect URI either.
        app.authorization_url(pkce, redirect_uri=evil, code_challenge=None, response_type="token"),
        app.authorization_url(pkce, client_id=None),
        app.authorization_url(pkce) + "&client_id=" + app.client_id,
        app.authorization_url(pkce) + "&redirect_uri=" + evil,
    ):
        assert_error_page(await request("GET", url))


@pytest.mark.parametrize("requested", NOT_EXACTLY_REGISTERED)
async def test_a_redirect_uri_that_is_not_exactly_the_registered_one_gets_an_error_page(
    gateway: GatewayHandle, requested: str
):
    """Case 22: simple string comparison; no prefix, subset-of-query, case or path normalisation."""
    app = await register(gateway.url, redirect_uris=[REGISTERED])
    assert_error_page(await request("GET", app.authorization_url(new_pkce(), redirect_uri=requested)))


async def test_the_exact_registered_redirect_uri_with_its_query_is_accepted(gateway: GatewayHandle):
    app = await register(gateway.url, redirect_uris=[REGISTERED])
    reply = await request("GET", app.authorization_url(new_pkce()))
    assert reply.status == 303
    assert reply.headers["Location"].startswith("/login?tx=")


@pytest.mark.parametrize(
    ("registered", "requested", "accepted"),
    [
        ("http://127.0.0.1/callback", "http://127.0.0.1:49152/callback", True),
        ("http://127.0.0.1/callback", "http://127.0.0.1/callback", True),
        ("http://127.0.0.1/callback", "http://127.0.0.1:49152/callback2", False),
        ("http://127.0.0.1/callback", "http://127.0.0.1:49152/callback/", False),
        ("http://127.0.0.1/callback", "https://127.0.0.1:49152/callback", False),
        ("http://127.0.0.1/callback", "http://127.0.0.2:49152/callback", False),
        ("http://127.0.0.1/callback", "http://[::1]:49152/callback", False),
        ("http://127.0.0.1/callback", "http://localhost:49152/callback", False),
        ("http://localhost/callback", "http://localhost:49152/callback", True),
        ("http://localhost/callback", "http://127.0.0.1:49152/callback", False),
        ("http://[::1]/callback", "http://[::1]:49152/callback", True),
    ],
)
async def test_a_loopback_redirect_uri_matches_on_any_port_and_nothing_else(
    gateway: GatewayHandle, registered: str, requested: str, accepted: bool
):
    """Case 23 (OAuth 2.1 §8.4.2, RFC 8252 §7.3): only the port may vary; hosts never stand in for each other."""
    app = await register(gateway.url, redirect_uris=[registered])
    reply = await request("GET", app.authorization_url(new_pkce(), redirect_uri=requested))
    if accepted:
        assert reply.status == 303
        assert reply.headers["Location"].startswith("/login?tx=")
    else:
        assert_error_page(reply)


async def test_an_omitted_redirect_uri_means_the_only_registered_one_and_the_exchange_needs_none(
    gateway: GatewayHandle, app: OAuthApp
):
    """Case 24, one registered URI: used as if sent (OAuth 2.1 §2.3.2)."""
    pkce = new_pkce()
    async with Browser(gateway.url) as browser:
        redirect = await approve(browser, app.authorization_url(pkce, redirect_uri=None), EMAIL)
    assert redirect.location.startswith(REDIRECT_URI + "?")
    reply = await app.exchange(redirect.params["code"], pkce, redirect_uri=None)
    assert reply.status == 200, reply.text


async def test_an_omitted_redirect_uri_is_an_error_page_when_several_are_registered(gateway: GatewayHandle):
    """Case 24, three registered URIs: the gateway cannot choose, and must not redirect."""
    uris = ["http://127.0.0.1/a", "https://c.example/cb", "com.example.app:/cb"]
    app = await register(gateway.url, redirect_uris=uris)
    reply = await request("GET", app.authorization_url(new_pkce(), redirect_uri=None))
    assert_error_page(reply)
    assert "redirect" in reply.text.lower()


# --- 26-28: phase-two errors go back to the client with state and iss (by redirect once it is approved) -----

BAD_PKCE = {
    "no challenge": {"code_challenge": None},
    "plain": {"code_challenge_method": "plain"},
    "no method": {"code_challenge_method": None},
    "lowercase s256": {"code_challenge_method": "s256"},
    "S512": {"code_challenge_method": "S512"},
    "42 chars": {"code_challenge": "a" * 42},
    "129 chars": {"code_challenge": "a" * 129},
    "padding": {"code_challenge": "a" * 42 + "="},
    "plus": {"code_challenge": "a" * 42 + "+"},
    "slash": {"code_challenge": "a" * 42 + "/"},
}


@pytest.mark.parametrize("change", BAD_PKCE.values(), ids=BAD_PKCE.keys())
async def test_a_request_without_a_proper_s256_challenge_is_refused_before_any_page_and_redirected_only_if_approved(
    gateway: GatewayHandle, app: OAuthApp, tmp_path: Path, change: dict[str, str | None]
):
    """Case 26 (OAuth 2.1 §4.1.1; RFC 7636 §4.3: a missing method would mean plain, so it is refused). A
    stranger gets a page whose link carries the error; the user who approved the app gets the redirect."""
    urls = [app.authorization_url(new_pkce(), **change)]
    if change == {"code_challenge": None}:
        urls.append(app.authorization_url(new_pkce()) + "&code_challenge=" + "b" * 43)  # repeated
    for url in urls:
        assert_refused_on_a_page(await request("GET", url), gateway, REDIRECT_URI, "invalid_request")
    assert row_count(tmp_path / "gateway.db", "authorization_requests") == 0
    browser = await approved_browser(gateway, app)
    try:
        for url in urls:
            result = await browser.open(url)
            assert isinstance(result, Redirect), "a page was shown instead of the error redirect"
            assert result.params["error"] == "invalid_request"
            assert result.params["state"] == STATE
            assert result.params["iss"] == gateway.url
            assert "code" not in result.params
    finally:
        await browser.__aexit__()
    assert row_count(tmp_path / "gateway.db", "authorization_requests") == 1  # the approval's own


@pytest.mark.parametrize(
    ("response_type", "error"),
    [
        (None, "invalid_request"),
        ("", "invalid_request"),
        ("token", "unsupported_response_type"),
        ("code id_token", "unsupported_response_type"),
        ("code token", "unsupported_response_type"),
        ("id_token", "unsupported_response_type"),
    ],
)
async def test_a_response_type_other_than_code_is_refused_on_a_page_and_never_as_a_fragment(
    gateway: GatewayHandle, app: OAuthApp, response_type: str | None, error: str
):
    """Case 27: a missing ``response_type`` wins over later problems (here PKCE is missing too)."""
    url = app.authorization_url(new_pkce(), response_type=response_type, code_challenge=None)
    assert_refused_on_a_page(await request("GET", url), gateway, REDIRECT_URI, error)


async def test_a_self_registered_clients_bad_request_is_a_page_not_a_redirect_to_its_site(gateway: GatewayHandle):
    """Issue 11 item 11 (RFC 9700 §4.11.2, OAuth 2.1 §7.13.2, case 37): anyone can register a client whose
    redirect URI is their own site and send people a broken ``/authorize`` link; the gateway's origin must not
    bounce them there, signed in or not, until they have approved that client."""
    await gateway.new_user(EMAIL)
    evil = await register(gateway.url, redirect_uris=["https://evil.example/cb"], client_name="Evil")
    for change in ({"response_type": "token"}, {"code_challenge": None}, {"resource": "https://x.example/"}):
        reply = await request("GET", evil.authorization_url(new_pkce(), **change))
        assert_error_page(reply)
        assert "evil.example" in reply.text  # where the link would take them, said before they click
    async with Browser(gateway.url) as browser:
        mine = await register(gateway.url, client_name="Mine")
        await approve(browser, mine.authorization_url(new_pkce()), EMAIL)
        signed_in = await browser.open(evil.authorization_url(new_pkce(), response_type="token"))
        assert isinstance(signed_in, Page)
        location = refusal_link(signed_in)
        assert location.startswith("https://evil.example/cb?error=unsupported_response_type&")
        # Approving the client (a click on its consent page) is what makes its redirect URI trusted.
        await approve(browser, evil.authorization_url(new_pkce()), EMAIL)
        trusted = await browser.open(evil.authorization_url(new_pkce(), response_type="token"))
    assert isinstance(trusted, Redirect)
    assert trusted.params["error"] == "unsupported_response_type"
    assert trusted.params["state"] == STATE
    assert trusted.params["iss"] == gateway.url


HOSTILE_STATES = ["a&code=evil", "\r\nSet-Cookie: x=1", "x" * 2048, "é ü/?#&=+%20"]


@pytest.mark.parametrize("state", HOSTILE_STATES, ids=["injection", "crlf", "2048", "odd"])
async def test_state_comes_back_verbatim_with_exactly_one_issuer_on_approve_deny_and_error(
    gateway: GatewayHandle, app: OAuthApp, state: str
):
    """Case 28 (RFC 9207 §2, OAuth 2.1 §7.12): no parameter or header injection through ``state``."""
    failing = app.authorization_url(new_pkce(), state=state, code_challenge_method="plain")
    async with Browser(gateway.url) as browser:
        approved = await approve(browser, app.authorization_url(new_pkce(), state=state), EMAIL)
        denied = await browser.authorize(
            app.authorization_url(new_pkce(), state=state, prompt="consent"), EMAIL, decision="deny"
        )
        failed = await browser.open(failing)
    assert isinstance(failed, Redirect)
    for location, outcome in (
        (approved.location, "code"),
        (denied.location, "error"),
        (failed.location, "error"),
        (refusal_link(await request("GET", failing)), "error"),
    ):
        assert "\r" not in location
        assert "\n" not in location
        params = parse_qs(urlsplit(location).query, keep_blank_values=True)
        assert params["state"] == [state]
        assert params["iss"] == [gateway.url]
        assert len(params[outcome]) == 1
        assert not ({"code", "error"} - {outcome}) & set(params)


async def test_a_missing_state_is_allowed_and_an_over_long_one_gets_an_error_page(
    gateway: GatewayHandle, app: OAuthApp
):
    """Case 28: PKCE covers CSRF, so no state is fine; past the 2048-character cap nothing is redirected."""
    async with Browser(gateway.url) as browser:
        redirect = await approve(browser, app.authorization_url(new_pkce(), state=None), EMAIL)
    assert "state" not in redirect.params
    assert redirect.params["iss"] == gateway.url
    assert_error_page(await request("GET", app.authorization_url(new_pkce(), state="x" * 2049)))


# --- 29-30: resource and scope ------------------------------------------------------------------------


async def test_accepted_resource_spellings_all_bind_the_token_to_the_canonical_resource(
    gateway: GatewayHandle, app: OAuthApp, tmp_path: Path
):
    """Case 29 (RFC 8707 §2): trailing slash and scheme/host case are forgiven; omitted means the default."""
    upper = gateway.mcp_url.replace("http://", "HTTP://")
    async with Browser(gateway.url) as browser:
        for resource in (gateway.mcp_url + "/", upper, None, gateway.mcp_url):
            tokens = await obtain_tokens(app, browser, EMAIL, resource=resource)
            assert (await post_mcp(gateway.url, bearer(tokens["access_token"]))).status == 200
    rows = dump_database(tmp_path / "gateway.db")
    assert {row["resource"] for row in rows["authorization_codes"]} == {gateway.mcp_url}
    assert {row["resource"] for row in rows["access_tokens"]} == {gateway.mcp_url}


@pytest.mark.parametrize(
    "resource",
    ["https://other.example/mcp", "{mcp}#x", "/mcp", "{mcp}/other", "{mcp}extra", "https://evil@{host}/mcp", ""],
)
async def test_a_resource_that_is_not_this_mcp_server_is_invalid_target(
    gateway: GatewayHandle, app: OAuthApp, resource: str
):
    """Case 29."""
    value = resource.format(mcp=gateway.mcp_url, host=urlsplit(gateway.url).netloc)
    reply = await request("GET", app.authorization_url(new_pkce(), resource=value))
    assert_refused_on_a_page(reply, gateway, REDIRECT_URI, "invalid_target")


async def test_two_resources_in_one_request_are_invalid_target(gateway: GatewayHandle, app: OAuthApp):
    url = app.authorization_url(new_pkce(), resource=gateway.mcp_url) + "&resource=https%3A%2F%2Fother.example%2Fmcp"
    assert_refused_on_a_page(await request("GET", url), gateway, REDIRECT_URI, "invalid_target")
    browser = await approved_browser(gateway, app)
    try:
        result = await browser.open(url)
    finally:
        await browser.__aexit__()
    assert isinstance(result, Redirect)
    assert (result.params["error"], result.params["state"], result.params["iss"]) == (
        "invalid_target",
        STATE,
        gateway.url,
    )


async def test_an_unknown_scope_is_invalid_scope(scoped_gateway: GatewayHandle):
    """Case 30: the documented policy refuses unknown scopes rather than filtering them."""
    app = await register(scoped_gateway.url)
    for scope in ("mcp:admin", "mcp:read mcp:admin", "openid"):
        reply = await request("GET", app.authorization_url(new_pkce(), scope=scope))
        assert_refused_on_a_page(reply, scoped_gateway, REDIRECT_URI, "invalid_scope")


async def test_scope_order_is_irrelevant_and_offline_access_is_accepted_and_dropped(scoped_gateway: GatewayHandle):
    """Case 30: a client registered without ``scope`` may ask for ``offline_access`` (Claude Code does); it
    still gets its refresh token, and ``offline_access`` is never granted as a scope of its own."""
    app = await register(scoped_gateway.url)
    async with Browser(scoped_gateway.url) as browser:
        one = await obtain_tokens(app, browser, EMAIL, scope="mcp:read mcp:tools")
        two = await obtain_tokens(app, browser, EMAIL, scope="mcp:tools mcp:read offline_access")
        alone = await obtain_tokens(app, browser, EMAIL, scope="offline_access")
    assert one["scope"] == two["scope"] == "mcp:tools mcp:read"
    assert alone["scope"] == "mcp:tools"
    assert all(tokens["refresh_token"].startswith("gwrt_") for tokens in (one, two, alone))


# --- 37: no automatic redirect for prompt=none unless the user already approved the client ---------------


async def test_prompt_none_for_a_client_nobody_approved_shows_an_error_page_instead_of_redirecting(
    gateway: GatewayHandle,
):
    """Case 37 (RFC 9700 §4.11.2; DOT 3.4.0's prompt=none open redirect): an attacker registers a client with
    its own redirect URI and sends people a ``prompt=none`` link; whether or not they are signed in, the
    gateway must not bounce them to the attacker's site (other phase-two errors: the test above)."""
    await gateway.new_user(EMAIL)
    evil = await register(gateway.url, redirect_uris=["https://evil.example/cb"], client_name="Evil")
    anonymous = await request("GET", evil.authorization_url(new_pkce(), prompt="none"))
    assert_error_page(anonymous)
    async with Browser(gateway.url) as browser:
        mine = await register(gateway.url, client_name="Mine")
        await approve(browser, mine.authorization_url(new_pkce()), EMAIL)
        signed_in = await browser.open(evil.authorization_url(new_pkce(), prompt="none"))
    assert is_error_page(signed_in)


async def test_prompt_none_answers_by_redirect_for_a_client_the_user_approved(scoped_gateway: GatewayHandle):
    """Case 37: a code when the approval covers the request, ``consent_required`` when it asks for more;
    never a sign-in or consent page. Another redirect URI of the same client was never approved."""
    app = await register(scoped_gateway.url)
    async with Browser(scoped_gateway.url) as browser:
        await approve(browser, app.authorization_url(new_pkce(), scope="mcp:read"), EMAIL)
        silent = await browser.open(app.authorization_url(new_pkce(), prompt="none", scope="mcp:read"))
        more = await browser.open(app.authorization_url(new_pkce(), prompt="none", scope="mcp:read mcp:tools"))
        other_uri = await browser.open(
            app.authorization_url(new_pkce(), prompt="none", redirect_uri="http://127.0.0.1:43211/callback")
        )
    assert isinstance(silent, Redirect)
    assert "code" in silent.params
    assert silent.params["iss"] == scoped_gateway.url
    assert isinstance(more, Redirect)
    assert more.params["error"] == "consent_required"
    assert more.params["state"] == STATE
    assert more.params["iss"] == scoped_gateway.url
    assert is_error_page(other_uri)


# --- 39: redirect status codes along the whole flow ---------------------------------------------------------


@pytest.mark.parametrize("next_", ["//evil.example", "https://evil.example", "/\\evil.example", "javascript:x"])
async def test_every_step_redirects_with_302_or_303_to_the_gateway_or_the_client_whatever_next_says(
    gateway: GatewayHandle, app: OAuthApp, next_: str
):
    """Case 39. The gateway has no ``next=`` parameter: sign-in always continues to its own consent page, so a
    hostile ``next`` has nothing to steer. Never 307/308 after a credential POST (OAuth 2.1 §7.5.3)."""
    url = app.authorization_url(new_pkce(), next=next_)
    async with Browser(gateway.url) as browser:
        async with browser.session.get(url, allow_redirects=False) as response:
            assert (response.status, response.headers["Location"][:10]) == (303, "/login?tx=")
        page = await sign_in_page(browser, url)
        credentials = {"email": EMAIL, "password": TEST_PASSWORD, "next": next_}
        signed_in = await browser_post(browser, "/login", {**page.hidden(), **credentials}, Origin=gateway.url)
        assert (signed_in.status, signed_in.headers["Location"][:12]) == (303, "/consent?tx=")
        consent = await until_consent(browser, url, EMAIL)
        fields = {**consent.hidden(), "decision": "approve", "next": next_}
        approved = await browser_post(browser, "/consent", fields, Origin=gateway.url)
        assert (approved.status, approved.headers["Location"].split("?")[0]) == (303, REDIRECT_URI)
        async with browser.session.get(url, allow_redirects=False) as response:
            assert (response.status, response.headers["Location"].split("?")[0]) == (302, REDIRECT_URI)
