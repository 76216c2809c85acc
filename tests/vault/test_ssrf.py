"""SSRF probes on ``/v1/proxy``: every path that could leave the service's ``api_base`` is refused with a 400 and
nothing is sent (the request target is sent byte for byte, as an attacker would, not normalised by a client)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.support.databases import Backend
from tests.support.oidc import OidcProvider
from tests.vault.conftest import SERVICE, Caller, MovableClock, Outbound, connect, gateways, new_caller

PROBES = [
    "../token",
    "a/../../token",
    "./profile",
    "%2e%2e/token",
    "%2E%2E/%2E%2E/admin",
    ".%2e/token",
    "a%2f..%2f..%2ftoken",
    "a%5c..%5ctoken",
    "//evil.example/profile",
    "/evil.example/profile",
    "@evil.example/profile",
    "user@evil.example/x",
    "http://evil.example/profile",
    "https:%2f%2fevil.example",
    "http:/evil.example",
    "profile%0d%0aX-Injected:%20yes",
    "profile?x=%0d%0aHost:%20evil",
    "profile%00",
    "%252e%252e/token",
    "profile\\..\\token",
]


async def raw_get(url: str, target: str, caller: Caller) -> int:
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    head = (
        f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nX-API-Key: {caller.api_key}\r\n"
        f"Authorization: Bearer {caller.identity_token}\r\nConnection: close\r\n\r\n"
    )
    writer.write(head.encode("latin-1"))
    await writer.drain()
    status_line = await reader.readline()
    writer.close()
    await writer.wait_closed()
    return int(status_line.split()[1])


@pytest.fixture
async def sqlite(tmp_path: Path) -> AsyncIterator[Backend]:
    backend = Backend("sqlite", tmp_path)
    yield backend
    await backend.close()


async def test_paths_that_could_leave_the_services_api_are_refused_and_nothing_is_sent(
    sqlite: Backend, oidc_provider: OidcProvider, clock: MovableClock, outbound: Outbound
) -> None:
    async with gateways(sqlite, oidc_provider, clock, outbound) as [gw]:
        caller = await new_caller(gw)
        await connect(gw, oidc_provider, caller.user_id)
        refused = {probe: await raw_get(gw.url, f"/v1/proxy/{SERVICE}/{probe}", caller) for probe in PROBES}
        assert refused == dict.fromkeys(PROBES, 400)
        assert outbound.sent == []
        assert await raw_get(gw.url, f"/v1/proxy/{SERVICE}/profile", caller) == 200
        assert outbound.sent == [f"GET {oidc_provider.issuer}/api/profile"]


async def test_a_crlf_in_the_request_line_is_refused(
    sqlite: Backend, oidc_provider: OidcProvider, clock: MovableClock, outbound: Outbound
) -> None:
    async with gateways(sqlite, oidc_provider, clock, outbound) as [gw]:
        caller = await new_caller(gw)
        assert await raw_get(gw.url, f"/v1/proxy/{SERVICE}/a\rb", caller) == 400
        assert outbound.sent == []
