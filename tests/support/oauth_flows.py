"""OAuth flows over real HTTP, for gateway security tests.

Register a client (RFC 7591), build an authorization URL with a fresh PKCE pair, sign in and approve through
the test ``Browser``, exchange the code, refresh, revoke, call ``/mcp``, and read the SQLite file the gateway
writes (every table, every column) to check what it stored.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp

from tests.support.gateway import TEST_PASSWORD
from tests.support.oauth_browser import Browser, Page, Redirect
from tests.support.scripted_upstream import jsonrpc

REDIRECT_URI = "http://127.0.0.1:43210/callback"
EMAIL = "ada@example.com"
"""The account the OAuth security tests sign in as."""
STATE = "state-4f2a"
FORM = "application/x-www-form-urlencoded"
MCP_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
INIT = jsonrpc(
    "initialize", {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
)
TWO_SCOPES = {"oauth": {"scopes_supported": ["mcp:tools", "mcp:read"], "default_scopes": ["mcp:tools"]}}
"""``running_gateway`` overrides: a second, narrower scope next to the default one."""

Params = Mapping[str, str | None] | Sequence[tuple[str, str]]


@dataclass(frozen=True)
class Pkce:
    verifier: str
    challenge: str


def s256(verifier: str) -> str:
    """RFC 7636 §4.2, written out here so the tests do not trust the gateway's own implementation."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()


def new_pkce() -> Pkce:
    verifier = secrets.token_urlsafe(48)
    return Pkce(verifier, s256(verifier))


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> dict[str, Any]:
        value = json.loads(self.body)
        assert isinstance(value, dict)
        return value


async def request(
    method: str,
    url: str,
    *,
    data: Any = None,
    headers: Mapping[str, str] | None = None,
    cookies: Mapping[str, str] | None = None,
) -> Reply:
    """One request, redirects not followed."""
    async with (
        aiohttp.ClientSession(cookies=cookies) as http,
        http.request(method, url, data=data, headers=headers, allow_redirects=False) as response,
    ):
        return Reply(response.status, response.headers.copy(), await response.read())


async def post_form(url: str, fields: Params) -> Reply:
    items = [(k, v) for k, v in (fields.items() if isinstance(fields, Mapping) else fields) if v is not None]
    return await request("POST", url, data=urlencode(items), headers={"Content-Type": FORM})


async def post_mcp(gateway_url: str, headers: Mapping[str, str], body: bytes = INIT, *, path: str = "/mcp") -> Reply:
    return await request("POST", gateway_url + path, data=body, headers={**MCP_HEADERS, **headers})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def query_url(base: str, params: Params) -> str:
    items = [(k, v) for k, v in (params.items() if isinstance(params, Mapping) else params) if v is not None]
    return f"{base}?{urlencode(items)}"


@dataclass(frozen=True)
class OAuthApp:
    """A client registered with the gateway, and the requests it makes."""

    gateway_url: str
    client_id: str
    redirect_uri: str

    def params(self, pkce: Pkce, **overrides: str | None) -> dict[str, str | None]:
        """A valid authorization request; an override of ``None`` leaves that parameter out."""
        base: dict[str, str | None] = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "code_challenge": pkce.challenge,
            "code_challenge_method": "S256",
            "state": STATE,
        }
        return {**base, **overrides}

    def authorization_url(self, pkce: Pkce, **overrides: str | None) -> str:
        return query_url(self.gateway_url + "/authorize", self.params(pkce, **overrides))

    async def exchange(self, code: str, pkce: Pkce, **overrides: str | None) -> Reply:
        fields = {
            "grant_type": "authorization_code",
            "code": code,
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "code_verifier": pkce.verifier,
            **overrides,
        }
        return await post_form(self.gateway_url + "/token", fields)

    async def refresh(self, refresh_token: str, **overrides: str | None) -> Reply:
        fields = {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": self.client_id}
        return await post_form(self.gateway_url + "/token", {**fields, **overrides})

    async def revoke(self, token: str) -> Reply:
        return await post_form(self.gateway_url + "/revoke", {"token": token, "client_id": self.client_id})


async def register(
    gateway_url: str,
    *,
    redirect_uris: Sequence[str] = (REDIRECT_URI,),
    client_name: str = "Test client",
    **metadata: Any,
) -> OAuthApp:
    body = {
        "redirect_uris": list(redirect_uris),
        "client_name": client_name,
        "token_endpoint_auth_method": "none",
        **metadata,
    }
    reply = await request(
        "POST", gateway_url + "/register", data=json.dumps(body), headers={"Content-Type": "application/json"}
    )
    assert reply.status == 201, reply.text
    return OAuthApp(gateway_url, reply.json()["client_id"], redirect_uris[0])


def is_login(result: Page | Redirect) -> bool:
    return isinstance(result, Page) and 'action="/login"' in result.text


def is_consent(result: Page | Redirect) -> bool:
    return isinstance(result, Page) and 'action="/consent"' in result.text


def is_error_page(result: Page | Redirect) -> bool:
    return isinstance(result, Page) and result.status >= 400 and "<form" not in result.text


async def approve(browser: Browser, url: str, email: str, **authorize_args: Any) -> Redirect:
    """Follow ``url`` through sign-in and consent; the redirect back must carry a code."""
    redirect = await browser.authorize(url, email, **authorize_args)
    assert "code" in redirect.params, redirect.location
    return redirect


async def obtain_tokens(app: OAuthApp, browser: Browser, email: str, **params: str | None) -> dict[str, Any]:
    """A whole code flow (sign-in and consent as needed) and the token response."""
    pkce = new_pkce()
    redirect = await approve(browser, app.authorization_url(pkce, **params), email)
    reply = await app.exchange(redirect.params["code"], pkce)
    assert reply.status == 200, reply.text
    return reply.json()


def dump_database(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table of the SQLite file, column by column (read-only)."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        db.row_factory = sqlite3.Row
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {table: [dict(row) for row in db.execute(f'SELECT * FROM "{table}"')] for table in tables}


def row_count(path: Path, table: str) -> int:
    return len(dump_database(path)[table])


async def until_consent(browser: Browser, url: str, email: str, password: str = TEST_PASSWORD) -> Page:
    """Open ``url``, signing in if asked, and stop at the consent page."""
    result = await browser.open(url)
    if is_login(result):
        assert isinstance(result, Page)
        result = await browser.submit(result, "/login", email=email, password=password)
    assert is_consent(result), result
    assert isinstance(result, Page)
    return result


async def sign_in_page(browser: Browser, url: str) -> Page:
    result = await browser.open(url)
    assert is_login(result), result
    assert isinstance(result, Page)
    return result


async def browser_post(browser: Browser, path: str, fields: Mapping[str, str], **headers: str) -> Reply:
    """A form post with ``browser``'s cookies and exactly these headers; redirects are not followed."""
    async with browser.session.post(
        browser.origin + path, data=dict(fields), headers=headers, allow_redirects=False
    ) as response:
        return Reply(response.status, response.headers.copy(), await response.read())


async def login_post(browser: Browser, page: Page, email: str, password: str, **headers: str) -> Reply:
    """Submit the sign-in form of ``page`` (same-origin, unless ``headers`` say otherwise)."""
    fields = {**page.hidden(), "email": email, "password": password}
    return await browser_post(browser, "/login", fields, **{"Origin": browser.origin, **headers})


def set_cookie(reply: Reply, name: str) -> tuple[str, set[str]]:
    """The value of the one ``Set-Cookie`` for ``name`` and its attributes, lowercased."""
    (header,) = [h for h in reply.headers.getall("Set-Cookie", []) if h.startswith(name + "=")]
    first, *attributes = (part.strip() for part in header.split(";"))
    return first.split("=", 1)[1], {a.lower() for a in attributes}
