"""With the database unreachable, dashboard actions answer 503 (nothing done), never 401 or a false success."""

from __future__ import annotations

import pytest

from gateway.clock import ManualClock
from tests.support.dashboard import account, apps, csrf, post
from tests.support.databases import postgres_behind_proxy
from tests.support.gateway import running_gateway
from tests.support.oauth_browser import Browser
from tests.support.oauth_flows import bearer, obtain_tokens, post_mcp, register
from tests.support.upstream import UpstreamProcess

ADA = "ada@example.com"


@pytest.mark.postgres
async def test_revoking_while_postgresql_is_unreachable_is_503_and_nothing_is_revoked(
    upstream: UpstreamProcess, clock: ManualClock
) -> None:
    async with postgres_behind_proxy(connect_timeout=2) as (storage, proxy):
        async with (
            running_gateway(storage=storage, upstream_url=upstream.mcp_url, clock=clock) as gw,
            Browser(gw.url) as browser,
        ):
            await gw.new_user(ADA)
            token = (await obtain_tokens(await register(gw.url, client_name="Kept"), browser, ADA))["access_token"]
            page = await account(browser)
            path = f"/account/apps/{apps(page)['Kept']}/revoke"
            proxy.cut()
            reply = await post(browser, path, {"csrf": csrf(page)})
            assert reply.status == 503
            assert reply.headers["Retry-After"].isdigit()
            proxy.restore()
            clock.advance(1.0)
            assert (await post_mcp(gw.url, bearer(token))).status == 200
            assert list(apps(await account(browser))) == ["Kept"]
