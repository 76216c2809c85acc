"""Bad input on every route of the route table gets a clear 4xx, never a 500 or a traceback (issue 11, item 8).

The routes come from the app's own route table, so a new route is fuzzed as soon as it is declared. Each is
sent, over a raw socket (bytes no HTTP client would send), hostile bodies (bad media types and charsets,
truncated multipart, undecodable form data, JSON nested 1,000 deep, NUL bytes, lying lengths) and hostile
heads (wrong methods, undecodable bytes and percent-escapes in path, query, cookies and headers, huge
headers), with the credential its style of route reads: an API key on the MCP data plane, an administrator's
session on the dashboard and the admin API.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest

from gateway.errors import ErrorStyle
from gateway.logs import MalformedRequestFilter
from gateway.oauth.browser_sessions import BROWSER_COOKIE, SESSION_COOKIE
from gateway.routing import ROUTE_INDEX, Route
from gateway.storage import Storage
from tests.support.dashboard import sign_in
from tests.support.gateway import GatewayHandle, running_gateway
from tests.support.oauth_browser import Browser
from tests.support.scripted_upstream import json_ok, scripted_upstream

WAIT = 10.0
PARALLEL = 8
ADMIN = "root@example.com"
FORM = b"application/x-www-form-urlencoded"
DEEP_ARRAY = b"[" * 1000 + b"]" * 1000
DEEP_OBJECT = b'{"a":' * 1000 + b"1" + b"}" * 1000
TRUNCATED_MULTIPART = b'--xx\r\nContent-Disposition: form-data; name="email"\r\n\r\nada@example.com'

BODIES: list[tuple[bytes | None, bytes]] = [
    (FORM + b"; charset=klingon", b"email=a&password=b"),
    (FORM + b"; charset=utf-16", b"email=a&password=b"),
    (FORM + b"; charset=latin-1", b"email=\xe9"),
    (FORM, b"email=%ff%fe&csrf=\xff\xfe&tx=%c3%28"),
    (FORM, b"email=a\x00b&password=\x00"),
    (FORM, b"=&&=&%&%%&" + b"a=b&" * 2000),
    (b"multipart/form-data; boundary=xx", TRUNCATED_MULTIPART),
    (b"multipart/form-data", b"--\r\n\r\n"),
    (b"multipart/form-data; boundary=xx; charset=klingon", TRUNCATED_MULTIPART + b"\r\n--xx--\r\n"),
    (b"application/json", DEEP_ARRAY),
    (b"application/json", DEEP_OBJECT),
    (b"application/json", b'{"jsonrpc":"2.0","id":1,"method":"\xff\xfe"}'),
    (b"application/json; charset=klingon", b"{}"),
    (b"application/json", b'{"a":1,"a":2,"b":NaN}\x00'),
    (b"text/plain\x7f;;;===", b"\x00\x01\x02"),
    (None, b"\xff" * 64),
]
HEADS: list[bytes] = [
    b"Cookie: " + SESSION_COOKIE.encode() + b"=\xff\xfe\xfd; " + BROWSER_COOKIE.encode() + b"=\xc3\x28\r\n",
    b"Cookie: " + SESSION_COOKIE.encode() + b"=%ff%00; =; ;;" + b"a" * 4000 + b"\r\n",
    b"X-API-Key: \xff\xfe\r\n",
    b"Authorization: Bearer \xff\xfe\r\n",
    b"Authorization: \xc3\x28 \xff\r\n",
    b"Mcp-Session-Id: \xff\xfe\r\nMcp-Method: \xff\r\nMcp-Name: \xc3\x28\r\n",
    b"MCP-Protocol-Version: \xff\r\nLast-Event-ID: \xff\r\nAccept: \xff/\xfe\r\n",
    b"Origin: http://\xff\xfe\r\nSec-Fetch-Site: \xff\r\n",
    b"X-Forwarded-For: \xff, 999.1.1.1, ::zz\r\n",
    b"X-Huge: " + b"a" * 20000 + b"\r\n",
    b"X-Nul: a\x00b\r\n",
    b"Content-Length: abc\r\n",
    b"Content-Length: -1\r\n",
    b"Content-Encoding: gzip\r\nContent-Type: application/json\r\nContent-Length: 4\r\n\r\nnope",
]
QUERIES = [b"?a=%ff%fe&tx=%00&client_id=%c3%28&redirect_uri=\xff", b"?\xff\xfe=\xc3\x28&%%%=%", b"/%ff%2e%2e%00"]
WRONG_METHODS = ("PUT", "PATCH", "TRACE")
RANDOM_PER_ROUTE = 8
RANDOM_SLOTS = (b"query", b"Cookie", b"X-API-Key", b"Mcp-Session-Id", b"Content-Type", b"body")


@dataclass(frozen=True)
class Probe:
    route: Route
    method: str
    target: bytes
    head: bytes
    body: bytes | None = None
    declared_length: int | None = None

    def bytes(self, credentials: bytes) -> bytes:
        request = self.method.encode() + b" " + self.target + b" HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n"
        request += credentials + self.head
        if b"\r\n\r\n" in self.head:  # the head carries its own body
            return request
        if self.body is not None:
            length = self.declared_length if self.declared_length is not None else len(self.body)
            request += b"Content-Length: " + str(length).encode() + b"\r\n"
        return request + b"\r\n" + (self.body or b"")


def concrete(path: str) -> bytes:
    """A path template with its placeholders filled (``{tail:.+}`` with the MCP path)."""
    return re.sub(r"\{tail:[^}]+\}", "mcp", re.sub(r"\{\w+\}", "x1", path)).encode()


def probes(routes: tuple[Route, ...]) -> list[Probe]:
    found: list[Probe] = []
    for route in routes:
        target = concrete(route.path)
        for method in route.methods:
            for content_type, body in BODIES:
                head = b"Content-Type: " + content_type + b"\r\n" if content_type is not None else b""
                found.append(Probe(route, method, target, head, body))
            found.append(Probe(route, method, target, b"Content-Type: " + FORM + b"\r\n", b"a=b", 10))
            found.extend(Probe(route, method, target, head) for head in HEADS)
            found.extend(Probe(route, method, target + query, b"") for query in QUERIES)
        found.extend(Probe(route, method, target, b"", b"a=b") for method in WRONG_METHODS)
        found.extend(random_probes(route, target, random.Random(route.path + route.methods[0])))
    return found


def random_probes(route: Route, target: bytes, rng: random.Random) -> list[Probe]:
    """Random bytes (any of 256) in one place of the request: the same ones on every run (seeded by route)."""
    found = []
    for _ in range(RANDOM_PER_ROUTE):
        noise = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
        slot, method = rng.choice(RANDOM_SLOTS), route.methods[0]
        if slot == b"query":
            found.append(Probe(route, method, target + b"?" + noise.replace(b" ", b"%20"), b""))
        elif slot == b"body":
            found.append(Probe(route, method, target, b"Content-Type: " + FORM + b"\r\n", noise))
        else:
            found.append(Probe(route, method, target, slot + b": " + noise.replace(b"\r\n", b"") + b"\r\n", b"x=1"))
    return found


async def exchange(url: str, request: bytes, *, half_close: bool) -> bytes:
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(request)
        await writer.drain()
        if half_close:
            writer.write_eof()
        return await asyncio.wait_for(reader.read(), WAIT)
    finally:
        writer.close()
        await writer.wait_closed()


@dataclass
class Fuzzed:
    gateway: GatewayHandle
    api_key: bytes
    admin_session: bytes

    def credentials(self, route: Route) -> bytes:
        if route.errors is ErrorStyle.JSONRPC:
            return b"X-API-Key: " + self.api_key + b"\r\n"
        if route.errors is ErrorStyle.ACCOUNT_PAGE or route.label == "admin":
            origin = self.gateway.url.encode()
            return b"Cookie: " + self.admin_session + b"\r\nOrigin: " + origin + b"\r\nSec-Fetch-Site: same-origin\r\n"
        return b""


@pytest.fixture
async def fuzzed(sqlite_storage: Storage) -> AsyncIterator[Fuzzed]:
    async with (
        scripted_upstream(json_ok) as upstream,
        running_gateway(storage=sqlite_storage, upstream_url=upstream.mcp_url, upstream_sse_url=upstream.sse_url) as gw,
    ):
        key = await gw.new_key(await gw.new_user())
        admin = await gw.new_user(ADMIN)
        await gw.storage.set_role(admin.id, "admin")
        async with Browser(gw.url) as browser:
            await sign_in(browser, ADMIN)
            session = next(c for c in browser.session.cookie_jar if c.key == SESSION_COOKIE)
        yield Fuzzed(gw, key.encode(), f"{SESSION_COOKIE}={session.value}".encode())


# aiohttp's FileResponse leaves its file to the garbage collector when the client goes away mid-answer.
@pytest.mark.filterwarnings("ignore:Exception ignored in. <_io.FileIO:pytest.PytestUnraisableExceptionWarning")
async def test_no_bad_input_on_any_route_gets_a_500_or_a_traceback(
    fuzzed: Fuzzed, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    server_log = logging.getLogger("aiohttp.server")
    server_log.addFilter(malformed := MalformedRequestFilter())  # as configure_logging does in production
    try:
        await fuzz(fuzzed)
    finally:
        server_log.removeFilter(malformed)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors[:5]


async def fuzz(fuzzed: Fuzzed) -> None:
    routes = fuzzed.gateway.app[ROUTE_INDEX].routes
    assert len(routes) > 40
    limit = asyncio.Semaphore(PARALLEL)
    failures: list[str] = []

    async def send(probe: Probe) -> None:
        async with limit:
            request = probe.bytes(fuzzed.credentials(probe.route))
            answer = await exchange(fuzzed.gateway.url, request, half_close=probe.declared_length is not None)
        status = answer.split(b" ", 2)[1] if answer.count(b" ") >= 2 else b"none"
        silent = status == b"none" and probe.declared_length is None  # a lying length may end in silence
        if status == b"500" or silent or b"Traceback" in answer or b'File "' in answer:
            failures.append(f"{probe.method} {probe.target!r} {probe.head[:80]!r} {probe.body!r:.80}: {answer[:300]!r}")

    await asyncio.gather(*(send(probe) for probe in probes(routes)))
    assert not failures, "\n".join(failures[:20])
