"""Secrets at rest, in logs and in error bodies (security-cases 102-105).

One full run over real HTTP (register, sign in, consent, code exchange with failed attempts first, refresh x3,
refresh-token reuse, code replay, MCP calls with a token and an API key, revocation, a second sign-in) records
every secret the gateway mints or is given: codes, access and refresh tokens, the API key, the password, the
PKCE verifier, the browser cookies, the CSRF token and pending-request id, the MCP session id. None of them, in
raw, URL-encoded, base64 or hex form, may appear in a log record (DEBUG, access log on), in any column of any
table or anywhere in the SQLite files, in the upstream's output, or in an error body. Only SQLite runs here;
the sweep has no PostgreSQL or Redis counterpart in this suite.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest

from gateway.apikeys import ApiKeyFormat
from gateway.clock import ManualClock
from gateway.oauth.token_formats import TokenType, mint
from gateway.passwords import Passwords
from gateway.secrets_hashing import secret_hash
from gateway.storage import Storage
from tests.support.gateway import TEST_PASSWORD, running_gateway
from tests.support.oauth_browser import Browser, Page
from tests.support.oauth_flows import (
    INIT,
    OAuthApp,
    Pkce,
    Reply,
    approve,
    bearer,
    dump_database,
    new_pkce,
    post_form,
    post_mcp,
    register,
    sign_in_page,
)
from tests.support.upstream import UpstreamProcess

EMAIL = "ada@example.com"
# RFC 6749 §5.2: error_description is %x20-21 / %x23-5B / %x5D-7E.
_DESCRIPTION = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]*")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass
class Sweep:
    secrets: dict[str, str] = field(default_factory=dict)
    errors: list[tuple[str, Reply]] = field(default_factory=list)

    def keep(self, name: str, value: str) -> str:
        self.secrets[name] = value
        return value

    def seen(self, endpoint: str, reply: Reply) -> Reply:
        if reply.status >= 400:
            self.errors.append((endpoint, reply))
        return reply

    async def flow(self, app: OAuthApp, browser: Browser, name: str) -> tuple[str, Pkce]:
        pkce = new_pkce()
        self.keep(f"{name} verifier", pkce.verifier)
        redirect = await approve(browser, app.authorization_url(pkce), EMAIL)
        for i, page in enumerate(browser.pages):
            for field_name, value in page.hidden().items():
                self.keep(f"{name} page {i} {field_name}", value)
        for cookie in browser.session.cookie_jar:
            self.keep(f"{name} cookie {cookie.key}", cookie.value)
        return self.keep(f"{name} code", redirect.params["code"]), pkce

    async def exchange(self, app: OAuthApp, code: str, pkce: Pkce, name: str) -> tuple[str, str]:
        reply = await app.exchange(code, pkce)
        assert reply.status == 200, reply.text
        return self.pair(reply, name)

    def pair(self, reply: Reply, name: str) -> tuple[str, str]:
        body = reply.json()
        return self.keep(f"{name} access", body["access_token"]), self.keep(f"{name} refresh", body["refresh_token"])


def forms(secret: str) -> set[bytes]:
    raw = secret.encode()
    return {
        raw,
        quote(secret, safe="").encode(),
        quote_plus(secret).encode(),
        base64.b64encode(raw).rstrip(b"="),
        base64.urlsafe_b64encode(raw).rstrip(b"="),
        raw.hex().encode(),
    }


def leaks(sweep: Sweep, haystack: bytes) -> list[str]:
    return [name for name, secret in sweep.secrets.items() if any(form in haystack for form in forms(secret))]


async def run_everything(sweep: Sweep, gw_url: str, new_key: object, clock: ManualClock) -> None:
    token_url = gw_url + "/token"
    app = await register(gw_url, client_name="Sweep client")
    async with Browser(gw_url) as browser:
        code, pkce = await sweep.flow(app, browser, "first")
        # Failed attempts first: none of their error bodies may echo the code.
        for overrides in (
            {"code_verifier": new_pkce().verifier},
            {"code_verifier": None},
            {"client_id": "someone-else"},
            {"redirect_uri": "http://127.0.0.1:1/other"},
            {"resource": "https://other.example/mcp"},
            {"grant_type": "refresh_token", "refresh_token": code},
        ):
            assert sweep.seen("/token", await app.exchange(code, pkce, **overrides)).status in (400, 401)
        twice = [("grant_type", "authorization_code"), ("code", code), ("code", code), ("client_id", app.client_id)]
        assert sweep.seen("/token", await post_form(token_url, twice)).status == 400
        access, refresh = await sweep.exchange(app, code, pkce, "first")
        first_refresh = refresh
        for generation in range(3):
            reply = await app.refresh(refresh)
            assert reply.status == 200, reply.text
            access, refresh = sweep.pair(reply, f"refresh {generation}")
        assert (await post_mcp(gw_url, bearer(access))).status == 200
        clock.advance(61)  # past the refresh grace window: reuse now revokes the family
        assert sweep.seen("/token", await app.refresh(first_refresh)).status == 400
        assert sweep.seen("/mcp", await post_mcp(gw_url, bearer(access))).status in (200, 401)

        code, pkce = await sweep.flow(app, browser, "second")
        await sweep.exchange(app, code, pkce, "second")
        assert sweep.seen("/token", await app.exchange(code, pkce)).status == 400  # valid replay

        code, pkce = await sweep.flow(app, browser, "third")
        access, refresh = await sweep.exchange(app, code, pkce, "third")
        opened = await post_mcp(gw_url, bearer(access))
        assert opened.status == 200
        sweep.keep("mcp session", opened.headers["Mcp-Session-Id"])
        sweep.seen("/mcp", await post_mcp(gw_url, {}, path=f"/mcp?access_token={access}"))
        assert (await app.revoke(refresh)).status == 200
        sweep.seen("/revoke", await post_form(gw_url + "/revoke", {"token": access}))
        clock.advance(1.0)
        assert sweep.seen("/mcp", await post_mcp(gw_url, bearer(access))).status == 401

    key = sweep.keep("api key", await new_key())  # type: ignore[operator]
    assert (await post_mcp(gw_url, {"X-API-Key": key})).status == 200
    assert sweep.seen("/mcp", await post_mcp(gw_url, {}, path=f"/mcp?api_key={key}")).status == 401
    mistyped = key[:-1] + ("x" if key[-1] != "x" else "y")
    assert sweep.seen("/mcp", await post_mcp(gw_url, {"X-API-Key": mistyped})).status == 401
    sweep.seen("/mcp", await post_mcp(gw_url, {"X-API-Key": key, **bearer(key)}, INIT))
    async with Browser(gw_url) as second_browser:  # a typo, then sign in again: a new session and CSRF token
        login = await sign_in_page(second_browser, app.authorization_url(new_pkce()))
        sweep.keep("typo page tx", login.hidden()["tx"])
        sweep.keep("typo page csrf", login.hidden()["csrf"])
        typo = await second_browser.submit(login, "/login", email=EMAIL, password=sweep.keep("typo", "Correct horse!"))
        assert isinstance(typo, Page)
        assert sweep.seen("/login", Reply(typo.status, typo.headers, typo.text.encode())).status == 401
        code, pkce = await sweep.flow(app, second_browser, "again")
        await sweep.exchange(app, code, pkce, "again")


async def test_no_secret_minted_in_a_full_run_appears_in_logs_the_database_the_upstream_or_error_bodies(
    sqlite_storage: Storage, upstream: UpstreamProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    """Cases 102 (hash-only storage), 103 (logs, access log included) and 104 (error bodies)."""
    caplog.set_level(logging.DEBUG)
    clock = ManualClock(start=1_900_000_000.0)
    sweep = Sweep()
    sweep.keep("password", TEST_PASSWORD)
    overrides = {"logging": {"access_log": True, "level": "DEBUG"}}
    async with running_gateway(
        storage=sqlite_storage, upstream_url=upstream.mcp_url, overrides=overrides, clock=clock
    ) as gw:
        user = await gw.new_user(EMAIL)
        await run_everything(sweep, gw.url, lambda: gw.new_key(user), clock)
    assert len(sweep.secrets) > 30
    assert len(sweep.errors) >= 12

    logged = b"\n".join(
        (record.getMessage() + json.dumps(record.__dict__, default=str)).encode() for record in caplog.records
    )
    assert b"/token" in logged, "the access log was expected to be captured"
    assert leaks(sweep, logged) == [], "in the logs"

    tables = dump_database(tmp_path / "gateway.db")
    dumped = json.dumps(tables, default=lambda v: v.hex() if isinstance(v, bytes) else str(v)).encode()
    assert leaks(sweep, dumped) == [], "in a table"
    files = b"".join(path.read_bytes() for path in tmp_path.glob("gateway.db*"))
    assert leaks(sweep, files) == [], "in the SQLite files"
    # The MCP session id is the upstream's own (it minted it), so only the gateway's secrets count there.
    assert set(leaks(sweep, upstream.output_tail().encode())) <= {"mcp session"}, "in the upstream's output"
    for endpoint, reply in sweep.errors:
        found = leaks(sweep, reply.body + repr(dict(reply.headers)).encode())
        if endpoint == "/login":  # the sign-in form shown again carries its own pending-request id and CSRF token
            found = [name for name in found if not name.endswith((" tx", " csrf"))]
        assert found == [], f"in an error from {endpoint}"

    # Rows are keyed by SHA-256 of the secret, never the secret.
    hashes = {secret_hash(secret) for secret in sweep.secrets.values()}
    for table, column in (
        ("authorization_codes", "code_hash"),
        ("access_tokens", "token_hash"),
        ("refresh_tokens", "token_hash"),
        ("api_keys", "key_hash"),
        ("browser_sessions", "session_hash"),
        ("authorization_requests", "request_hash"),
        ("authorization_requests", "browser_hash"),
        ("mcp_sessions", "session_hash"),
    ):
        values = [row[column] for row in tables[table]]
        assert values, table
        assert all(_SHA256_HEX.fullmatch(value) for value in values), (table, column)
        assert set(values) & hashes, (table, column)
    assert all(row["password_hash"].startswith("$argon2id$v=19$") for row in tables["users"])


async def test_token_endpoint_errors_never_echo_the_submitted_code_and_use_only_allowed_characters(
    sqlite_storage: Storage, upstream: UpstreamProcess
):
    """Case 104 (OAuth 2.1 §4.1.2.1 / RFC 6749 §5.2), over hostile inputs carrying a real code."""
    clock = ManualClock()
    async with running_gateway(storage=sqlite_storage, upstream_url=upstream.mcp_url, clock=clock) as gw:
        await gw.new_user(EMAIL)
        app = await register(gw.url)
        sweep = Sweep()
        async with Browser(gw.url) as browser:
            code, pkce = await sweep.flow(app, browser, "flow")
        token_url = gw.url + "/token"
        hostile = [
            {"grant_type": "authorization_code", "code": code + "'; DROP TABLE x;--", "client_id": app.client_id},
            {"grant_type": "authorization_code", "code": code, "client_id": app.client_id},
            {"grant_type": "authorization_code", "code": code, "client_id": app.client_id, "code_verifier": "short"},
            {"grant_type": "password", "code": code, "username": EMAIL, "password": TEST_PASSWORD},
            {"grant_type": "authorization_code", "code": "é" + code, "client_id": app.client_id},
            {"grant_type": code, "client_id": app.client_id},
            {"grant_type": "refresh_token", "refresh_token": code, "client_id": app.client_id},
        ]
        replies = [await post_form(token_url, fields) for fields in hostile]
        replies.append(await app.exchange(code, pkce, client_id=code))
        replies.append(await app.exchange(code, pkce, redirect_uri=f"http://127.0.0.1:1/{code}"))
        assert (await app.exchange(code, pkce)).status == 200, "failed attempts must not have consumed the code"
        replies.append(await app.exchange(code, pkce))
    for reply in replies:
        assert reply.status in (400, 401), reply.text
        assert reply.headers["Cache-Control"] == "no-store"
        body = reply.json()
        assert set(body) <= {"error", "error_description"}
        assert _DESCRIPTION.fullmatch(body.get("error_description", "")), body
        assert leaks(sweep, reply.body) == [], body
        assert TEST_PASSWORD not in reply.text
        assert "Traceback" not in reply.text
        assert "SELECT" not in reply.text.upper().replace("SELECTED", "")


def test_the_default_password_hasher_is_argon2id_with_at_least_owasp_parameters():
    """Case 105. (Tests create users with cheap parameters; the gateway's own default is checked here.)"""
    header = Passwords().hash_sync("a password of some length")
    match = re.match(r"\$argon2id\$v=19\$m=(\d+),t=(\d+),p=(\d+)\$", header)
    assert match is not None, header
    memory, time_cost, parallelism = map(int, match.groups())
    assert (memory >= 19456, time_cost >= 2, parallelism >= 1) == (True, True, True)


def test_ten_thousand_minted_tokens_codes_and_keys_are_distinct_typed_and_carry_256_random_bits():
    """Case 105 (OAuth 2.1 §7.7: guessing probability ≤ 2^-128)."""
    for kind in TokenType:
        minted = {mint(kind)[0] for _ in range(10_000)}
        assert len(minted) == 10_000
        assert all(re.fullmatch(re.escape(kind.value) + r"[A-Za-z0-9_-]{43}", token) for token in minted)
    keys = ApiKeyFormat("mgw")
    minted_keys = {keys.mint().key for _ in range(10_000)}
    assert len(minted_keys) == 10_000
    assert all(keys.is_well_formed(key) for key in minted_keys)


async def test_signing_in_rehashes_a_password_stored_with_weaker_argon2_parameters(
    sqlite_storage: Storage, upstream: UpstreamProcess
):
    """Case 105: test users are stored with cheap parameters; the gateway's hasher uses stronger defaults, so a
    successful sign-in should store a new hash under them."""
    async with running_gateway(storage=sqlite_storage, upstream_url=upstream.mcp_url) as gw:
        user = await gw.new_user(EMAIL)
        app = await register(gw.url)
        async with Browser(gw.url) as browser:
            await approve(browser, app.authorization_url(new_pkce()), EMAIL)
        stored = await gw.storage.get_user(user.id)
    assert stored is not None
    assert stored.password_hash != user.password_hash
    assert "m=65536" in stored.password_hash
