"""Liveness and readiness, as a load balancer sees them."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import aiohttp
import pytest

from gateway.clock import ManualClock
from gateway.storage import Storage
from tests.support.databases import Backend
from tests.support.gateway import GatewayHandle, running_gateway
from tests.support.upstream import UpstreamProcess


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


@pytest.mark.postgres
async def test_a_replica_whose_clock_is_far_from_postgresql_is_not_ready_and_one_in_step_is(
    tmp_path: Path, upstream: UpstreamProcess
):
    backend = Backend("postgres", tmp_path)
    await backend.start()
    try:
        storage = await backend.storage()
        skewed = ManualClock(time.time() + 90)  # security-cases 115: one replica 90 s ahead
        async with running_gateway(storage=storage, upstream_url=upstream.mcp_url, clock=skewed) as gw:
            status, body = await get(f"{gw.url}/readyz")
        assert status == 503
        assert body == {"status": "not_ready", "checks": {"storage": "ok", "upstream": "ok", "clock": "skewed"}}
        in_step = ManualClock(time.time() + 5)  # within security.max_clock_skew
        async with running_gateway(storage=storage, upstream_url=upstream.mcp_url, clock=in_step) as gw:
            status, body = await get(f"{gw.url}/readyz")
        assert status == 200
        assert body == {"status": "ready", "checks": {"storage": "ok", "upstream": "ok"}}
    finally:
        await backend.close()
