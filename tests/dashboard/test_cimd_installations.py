"""Authorized Apps for a Client ID Metadata Document client: one row per installation (redirect URI), revoked
one at a time (case 99; cloudflare/workers-oauth-provider#299)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.clock import ManualClock
from gateway.storage import Storage
from tests.support.dashboard import account, apps, csrf, post, sign_in
from tests.support.gateway import GatewayHandle, running_gateway
from tests.support.https_server import serve_metadata_document
from tests.support.oauth_browser import Browser
from tests.support.oauth_flows import OAuthApp, bearer, obtain_tokens, post_mcp
from tests.support.upstream import UpstreamProcess

LIN = "lin@example.com"
LAPTOP = "http://127.0.0.1:43210/laptop"
SERVER = "http://127.0.0.1:43210/server"
NAME = "Metadata Document App"


@pytest.fixture
async def cimd_gateway(
    sqlite_storage: Storage, upstream: UpstreamProcess, tmp_path: Path, clock: ManualClock
) -> AsyncIterator[tuple[GatewayHandle, str]]:
    async with serve_metadata_document(
        tmp_path,
        client_name=NAME,
        redirect_uris=[LAPTOP, SERVER],
        grant_types=["authorization_code", "refresh_token"],
        response_types=["code"],
        token_endpoint_auth_method="none",
    ) as served:
        async with running_gateway(
            storage=sqlite_storage, upstream_url=upstream.mcp_url, overrides=served.gateway_overrides, clock=clock
        ) as gw:
            yield gw, served.client_id


async def test_each_installation_of_a_metadata_document_client_is_its_own_app_and_revoked_alone(
    cimd_gateway: tuple[GatewayHandle, str],
) -> None:
    gateway, client_id = cimd_gateway
    await gateway.new_user(LIN)
    async with Browser(gateway.url) as browser:
        laptop = (await obtain_tokens(OAuthApp(gateway.url, client_id, LAPTOP), browser, LIN))["access_token"]
        server = (await obtain_tokens(OAuthApp(gateway.url, client_id, SERVER), browser, LIN))["access_token"]
        page = await sign_in(browser, LIN)
        listed = apps(page)
        assert set(listed) == {f"{NAME} at {LAPTOP}", f"{NAME} at {SERVER}"}
        assert "localhost" in page.text  # the metadata document's host

        reply = await post(browser, f"/account/apps/{listed[f'{NAME} at {LAPTOP}']}/revoke", {"csrf": csrf(page)})
        assert reply.status == 303
        assert (await post_mcp(gateway.url, bearer(laptop))).status == 401
        assert (await post_mcp(gateway.url, bearer(server))).status == 200
        assert set(apps(await account(browser))) == {f"{NAME} at {SERVER}"}
        user = await gateway.storage.get_user_by_email(LIN)
        assert user is not None
        assert [c.redirect_uri for c in await gateway.storage.list_consents(user.id)] == [SERVER]
