"""Redis unreachable: credentials are validated from storage, revocations still apply, readiness says degraded."""

from __future__ import annotations

import socket

import aiohttp

from gateway.storage import Storage
from tests.support.gateway import running_gateway
from tests.support.oauth_browser import Browser
from tests.support.oauth_flows import EMAIL, bearer, obtain_tokens, post_mcp, register
from tests.support.upstream import UpstreamProcess


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_with_redis_unreachable_tokens_work_revocations_apply_at_once_and_readiness_reports_degraded(
    sqlite_storage: Storage, upstream: UpstreamProcess
):
    dead_redis = f"redis://127.0.0.1:{closed_port()}/0"
    async with running_gateway(
        storage=sqlite_storage, upstream_url=upstream.mcp_url, overrides={"redis": {"url": dead_redis}}
    ) as gw:
        await gw.new_user(EMAIL)
        app = await register(gw.url)
        async with Browser(gw.url) as browser:
            tokens = await obtain_tokens(app, browser, EMAIL)
        headers = bearer(tokens["access_token"])
        assert (await post_mcp(gw.url, headers)).status == 200
        assert (await post_mcp(gw.url, headers)).status == 200  # a cache hit
        assert (await app.revoke(tokens["access_token"])).status == 200
        refused = await post_mcp(gw.url, headers)
        assert refused.status == 401  # the announcement reached this process although Redis did not take it
        async with aiohttp.ClientSession() as http, http.get(f"{gw.url}/readyz") as ready:
            assert ready.status == 200
            assert await ready.json() == {
                "status": "degraded",
                "checks": {"storage": "ok", "upstream": "ok", "redis": "degraded"},
            }
