"""Liveness and readiness, as a load balancer sees them."""

from __future__ import annotations

import socket

import aiohttp

from gateway.storage import Storage
from tests.support.gateway import GatewayHandle, running_gateway


async def get(url: str) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status, await response.json()


async def test_healthz_answers_without_credentials(gateway: GatewayHandle):
    assert await get(f"{gateway.url}/healthz") == (200, {"status": "ok"})


async def test_readyz_is_ready_when_storage_and_upstream_are_reachable(gateway: GatewayHandle):
    status, body = await get(f"{gateway.url}/readyz")
    assert status == 200
    assert body == {"status": "ready", "checks": {"storage": "ok", "upstream": "ok"}}


async def test_readyz_reports_an_unreachable_upstream_with_503(sqlite_storage: Storage):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with running_gateway(storage=sqlite_storage, upstream_url=f"http://127.0.0.1:{port}/mcp") as gw:
        status, body = await get(f"{gw.url}/readyz")
    assert status == 503
    assert body["checks"] == {"storage": "ok", "upstream": "unavailable"}
