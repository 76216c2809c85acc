"""One route table: every route is declared once, its errors take the declared shape, its body its declared cap
(issue 11, items 1, 8 and 18)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest

from gateway.oauth.browser_sessions import SESSION_COOKIE
from gateway.routing import ROUTE_INDEX
from gateway.storage import Storage
from tests.support.dashboard import sign_in
from tests.support.gateway import GatewayHandle, running_gateway
from tests.support.oauth_browser import Browser
from tests.support.scripted_upstream import json_ok, scripted_upstream

WAIT = 10.0
ADMIN = "root@example.com"
DEEP = "[" * 1000 + "]" * 1000
FORM_PATHS = ["/login", "/consent", "/account/login", "/signup", "/logout", "/account/keys", "/account/password"]


@dataclass
class Gw:
    handle: GatewayHandle
    key: str
    admin: Browser

    @property
    def url(self) -> str:
        return self.handle.url


@pytest.fixture
async def gw(sqlite_storage: Storage) -> AsyncIterator[Gw]:
    async with (
        scripted_upstream(json_ok) as upstream,
        running_gateway(storage=sqlite_storage, upstream_url=upstream.mcp_url) as handle,
    ):
        key = await handle.new_key(await handle.new_user())
        admin = await handle.new_user(ADMIN)
        await handle.storage.set_role(admin.id, "admin")
        async with Browser(handle.url) as browser:
            await sign_in(browser, ADMIN)
            yield Gw(handle, key, browser)


async def raw(url: str, request: bytes) -> tuple[int, bytes, bytes]:
    """(status, head, body) of the answer to raw ``request`` bytes; the connection stays open for the body the
    request announced but never sends, so an answer proves the server did not wait for it."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(request)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
        length = int(next(ln.split(b":")[1] for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length")))
        body = await asyncio.wait_for(reader.readexactly(length), WAIT)
        return int(head.split(b" ")[1]), head, body
    finally:
        writer.close()
        await writer.wait_closed()


async def test_every_route_the_app_answers_is_declared_in_the_route_table(gw: Gw) -> None:
    index = gw.handle.app[ROUTE_INDEX]
    for route in gw.handle.app.router.routes():
        declared = index.declaration(route)
        assert declared is not None, (route.method, route.resource and route.resource.canonical)
        assert ("GET" if route.method == "HEAD" else route.method) in declared.methods


@pytest.mark.parametrize("path", FORM_PATHS)
async def test_a_form_post_announcing_a_big_body_is_refused_with_a_413_page_before_the_body_is_sent(
    gw: Gw, path: str
) -> None:
    request = (
        f"POST {path} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {4 * 1024 * 1024 - 1}\r\n\r\nemail=a"
    ).encode()
    status, head, body = await raw(gw.url, request)
    assert status == 413
    assert b"text/html" in head
    assert b"<html" in body


async def test_a_chunked_form_post_over_max_form_bytes_is_refused_with_a_413_page(gw: Gw) -> None:
    chunk = b"a" * 8192
    request = (
        b"POST /signup HTTP/1.1\r\nHost: gw\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + (b"2000\r\n" + chunk + b"\r\n") * 3
    )
    status, head, _ = await raw(gw.url, request)
    assert status == 413
    assert b"text/html" in head


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data; boundary=xx", b'--xx\r\nContent-Disposition: form-data; name="email"\r\n\r\na'),
        ("application/x-www-form-urlencoded; charset=klingon", b"email=a"),
        ("application/x-www-form-urlencoded", b"email=%ff%fe&password=\xff"),
    ],
)
@pytest.mark.parametrize("path", ["/account/login", "/login"])
async def test_a_form_that_is_not_utf_8_url_encoded_is_a_400_page(
    gw: Gw, path: str, content_type: str, body: bytes
) -> None:
    headers = {"Content-Type": content_type, "Origin": gw.url}
    async with gw.admin.session.post(gw.url + path, data=body, headers=headers) as response:
        assert response.status == 400
        assert response.content_type == "text/html"
        assert "Request refused" in await response.text()


async def test_an_undecodable_session_cookie_counts_as_signed_out_and_never_as_a_500(gw: Gw) -> None:
    cookie = SESSION_COOKIE.encode() + b"=\xff\xfe\xc3\x28"
    status, head, _ = await raw(gw.url, b"GET /account HTTP/1.1\r\nHost: gw\r\nCookie: " + cookie + b"\r\n\r\n")
    assert status == 303
    assert b"Location: /account/login" in head
    request = (
        b"POST /logout HTTP/1.1\r\nHost: gw\r\nCookie: " + cookie + b"\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 6\r\n\r\ncsrf=x"
    )
    status, head, _ = await raw(gw.url, request)
    assert status == 401
    assert b"text/html" in head


async def test_json_nested_1000_deep_is_a_400_on_the_admin_api(gw: Gw) -> None:
    users = await gw.handle.storage.list_users()
    target = next(u for u in users if u.email != ADMIN)
    headers = {"Origin": gw.url, "Content-Type": "application/json"}
    path = f"{gw.url}/admin/api/users/{target.id}/disable"
    async with gw.admin.session.post(path, data=DEEP, headers=headers) as response:
        assert response.status == 400
        assert (await response.json())["error"] == "invalid_request"
    assert (await gw.handle.storage.get_user(target.id)).active  # type: ignore[union-attr]


async def test_json_nested_1000_deep_on_mcp_is_a_json_rpc_parse_error(gw: Gw) -> None:
    headers = {"X-API-Key": gw.key, "Content-Type": "application/json", "Accept": "application/json"}
    async with gw.admin.session.post(gw.url + "/mcp", data=DEEP, headers=headers) as response:
        assert response.status == 400
        body = json.loads(await response.read())
    assert body["error"]["code"] == -32700


async def test_a_wrong_method_is_an_html_405_on_a_page_and_json_on_an_api(gw: Gw) -> None:
    async with gw.admin.session.put(gw.url + "/login") as page:
        assert page.status == 405
        assert page.content_type == "text/html"
        assert "GET" in page.headers["Allow"]
    async with gw.admin.session.put(gw.url + "/token") as api:
        assert api.status == 405
        assert (await api.json())["error"] == "method_not_allowed"
