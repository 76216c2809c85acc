"""The operator's account commands against the database a running gateway uses."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.clock import ManualClock
from tests.support.gateway import GatewayHandle
from tests.support.oauth_browser import Browser
from tests.support.oauth_flows import bearer, obtain_tokens, post_mcp, register
from tests.test_cli import gw

ADA = "ada@example.com"
CACHE_BOUND = 1.0


async def test_apps_list_and_revoke_by_user_and_client_cut_off_only_that_client(
    gateway: GatewayHandle, clock: ManualClock, tmp_path: Path
) -> None:
    config = tmp_path / "cli.yaml"
    config.write_text(f"storage:\n  url: sqlite:///{tmp_path / 'gateway.db'}\n")
    await gateway.new_user(ADA)
    first, second = await register(gateway.url, client_name="First"), await register(gateway.url, client_name="Second")
    async with Browser(gateway.url) as browser:
        kept = (await obtain_tokens(first, browser, ADA))["access_token"]
        cut = (await obtain_tokens(second, browser, ADA))["access_token"]
    assert (await post_mcp(gateway.url, bearer(cut))).status == 200

    listed = await asyncio.to_thread(gw, config, "apps", "list", "--user", ADA)
    assert listed.returncode == 0, listed.stderr
    assert first.client_id in listed.stdout
    assert second.client_id in listed.stdout
    revoked = await asyncio.to_thread(gw, config, "apps", "revoke", "--user", ADA, "--client", second.client_id)
    assert revoked.returncode == 0, revoked.stderr
    assert "revoked 1 app(s)" in revoked.stdout

    clock.advance(CACHE_BOUND)
    assert (await post_mcp(gateway.url, bearer(cut))).status == 401
    assert (await post_mcp(gateway.url, bearer(kept))).status == 200
    assert second.client_id not in (await asyncio.to_thread(gw, config, "apps", "list", "--user", ADA)).stdout
