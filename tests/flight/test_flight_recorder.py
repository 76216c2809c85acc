"""The flight recorder: real clients' failed attempts, recorded and explained where people look — the person's
``/account`` page, the admin API, and ``mcp-gateway clients trace``."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
import yaml
from playwright.async_api import expect

from gateway.clock import ManualClock
from gateway.flight.setup import FLIGHT
from tests.support.chromium import artifacts_dir, chromium_page
from tests.support.dashboard import account, sign_in
from tests.support.gateway import TEST_PASSWORD, GatewayHandle
from tests.support.mcp_clients import stateless_client
from tests.support.oauth_browser import Browser
from tests.support.oauth_flows import bearer, is_error_page, new_pkce, obtain_tokens, post_mcp, register
from tests.support.oidc import ensure_installed

EMAIL = "ada@example.com"


async def flushed(gateway: GatewayHandle) -> None:
    """Write what the recorder gathered (the background loop does it every half second)."""
    await gateway.app[FLIGHT].flush()


async def trace(gateway: GatewayHandle, client_id: str, *extra: str) -> str:
    """``mcp-gateway clients trace`` run as an operator would, on the gateway's database."""
    database = Path(gateway.storage.path)  # type: ignore[attr-defined]
    path = database.parent / "trace.yaml"
    path.write_text(yaml.safe_dump({"storage": {"url": f"sqlite:///{database}"}}))
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "gateway", "clients", "trace", client_id, *extra, "--config", str(path)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out.decode()


@pytest.fixture
async def person(gateway: GatewayHandle) -> str:
    await gateway.new_user(EMAIL)
    return EMAIL


async def test_a_client_given_a_wrong_url_path_is_explained_on_the_persons_account_page(
    gateway: GatewayHandle, person: str
):
    key = await gateway.new_key(await gateway.storage.get_user_by_email(person))  # type: ignore[arg-type]
    with pytest.raises(Exception):  # noqa: B017, PT011 (the SDK raises its own HTTP error for the 404)
        async with asyncio.timeout(30), stateless_client(f"{gateway.url}/v1/mcp", headers={"X-API-Key": key}) as client:
            await client.list_tools()
    async with Browser(gateway.url) as browser:
        await sign_in(browser, person)
        page = await account(browser)
    assert "Recent connection attempts" in page.text
    assert f"POST /v1/mcp answered 404 (this server&#39;s MCP URL is {gateway.url}/mcp)" in page.text
    assert "give the client the exact MCP URL (ending in /mcp)" in page.text


async def test_a_tampered_resource_is_recorded_with_the_sentence_that_explains_it(gateway: GatewayHandle, person: str):
    app = await register(gateway.url)
    async with Browser(gateway.url) as browser:
        await sign_in(browser, person)
        result = await browser.open(app.authorization_url(new_pkce(), resource="https://evil.example/mcp"))
    assert is_error_page(result)
    await flushed(gateway)
    out = await trace(gateway, app.client_id)
    assert "authorize    failed invalid_target" in out
    assert f"The client asked for resource 'https://evil.example/mcp' but this server is {gateway.url}/mcp" in out
    assert "configure the client with this server's MCP URL exactly" in out


async def test_a_client_that_registers_one_redirect_uri_and_uses_another_is_told_which(
    gateway: GatewayHandle, person: str
):
    app = await register(gateway.url, redirect_uris=["http://127.0.0.1:33418/callback"])
    async with Browser(gateway.url) as browser:
        await sign_in(browser, person)
        result = await browser.open(
            app.authorization_url(new_pkce(), redirect_uri="http://127.0.0.1:33418/oauth/callback")
        )
    assert is_error_page(result)
    await flushed(gateway)
    steps = json.loads(await trace(gateway, app.client_id, "--json"))
    refused = next(s for s in steps if s["step"] == "authorize")
    assert refused["reason"] == "invalid_redirect_uri"
    assert "'http://127.0.0.1:33418/oauth/callback' is not one of the registered" in refused["detail"]
    assert "http://127.0.0.1:33418/callback" in refused["detail"]
    assert "it must send exactly one of the URIs it registered" in refused["advice"]


async def test_a_refresh_after_revocation_is_recorded_and_explained(gateway: GatewayHandle, person: str):
    app = await register(gateway.url)
    async with Browser(gateway.url) as browser:
        tokens = await obtain_tokens(app, browser, person)
        assert (await app.revoke(tokens["refresh_token"])).status == 200
        refused = await app.refresh(tokens["refresh_token"])
        assert refused.status == 400
        page = await account(browser)
    await flushed(gateway)
    out = await trace(gateway, app.client_id)
    lines = out.splitlines()
    steps = [line.split()[2:4] for line in lines if line[:2] == "20"]
    assert steps == [
        ["registration", "ok"],
        ["authorize", "ok"],
        ["sign_in", "ok"],
        ["consent", "ok"],
        ["token", "ok"],
        ["revocation", "ok"],
        ["refresh", "failed"],
    ]
    assert "the person must sign in again (reconnect the client)" in out
    assert app.client_id in page.text  # the person sees their own client's steps on /account


async def test_the_recorder_keeps_no_secret_and_coalesces_a_client_retrying_in_a_loop(
    gateway: GatewayHandle, person: str
):
    app = await register(gateway.url)
    for _ in range(20):
        reply = await app.refresh("gwrt_" + "A" * 43)
        assert reply.status == 400
    await flushed(gateway)
    steps = json.loads(await trace(gateway, app.client_id, "--json"))
    failed = [s for s in steps if s["step"] == "refresh"]
    assert len(failed) == 1
    assert failed[0]["count"] == 20
    assert "gwrt_" not in json.dumps(steps)


async def test_an_expired_token_resent_to_mcp_is_recorded_for_its_client_and_person_after_the_first_call(
    gateway: GatewayHandle, person: str, clock: ManualClock
):
    app = await register(gateway.url)
    async with Browser(gateway.url) as browser:
        tokens = await obtain_tokens(app, browser, person)
        assert (await post_mcp(gateway.url, bearer(tokens["access_token"]))).status == 200
        assert (await post_mcp(gateway.url, bearer(tokens["access_token"]))).status == 200
        clock.advance(tokens["expires_in"] + 1)
        assert (await post_mcp(gateway.url, bearer(tokens["access_token"]))).status == 401
        page = await account(browser)
    await flushed(gateway)
    steps = json.loads(await trace(gateway, app.client_id, "--json"))
    mcp = [(s["outcome"], s["reason"]) for s in steps if s["step"] == "mcp"]
    assert mcp == [("failed", "expired"), ("ok", "first_call")]
    assert "The access token expired and the client did not refresh it" in page.text


async def test_in_chromium_a_person_sees_their_clients_failed_attempts_and_what_to_change(
    gateway: GatewayHandle, person: str
):
    app = await register(gateway.url, redirect_uris=["http://127.0.0.1:33418/callback"])
    async with chromium_page() as page:
        await page.goto(gateway.url + "/account/login")
        await page.get_by_label("Email").fill(person)
        await page.get_by_label("Password").fill(TEST_PASSWORD)
        await page.get_by_role("button", name="Sign in").click()
        await page.wait_for_url(gateway.url + "/account")
        wrong = app.authorization_url(new_pkce(), redirect_uri="http://127.0.0.1:33418/elsewhere")
        await page.goto(wrong)
        await expect(page.get_by_role("heading", name="Invalid redirect")).to_be_visible()
        await page.goto(gateway.url + "/account")
        panel = page.get_by_role("region", name="Recent connection attempts")
        await expect(panel).to_contain_text("invalid_redirect_uri")
        await expect(panel).to_contain_text("it must send exactly one of the URIs it registered")
        await expect(panel).to_contain_text(app.client_id)
        await page.screenshot(path=str(artifacts_dir() / "recent-connection-attempts.png"), full_page=True)


async def test_mcp_remote_given_a_wrong_url_path_is_explained_on_the_persons_account_page(
    gateway: GatewayHandle, person: str
):
    user = await gateway.storage.get_user_by_email(person)
    assert user is not None
    key = await gateway.new_key(user)
    node = ensure_installed()
    bridge = node.parent.parent.parent / "mcp-remote" / "dist" / "proxy.js"
    process = await asyncio.create_subprocess_exec(
        *(str(node), str(bridge), f"{gateway.url}/v1/mcp", "--header", f"X-API-Key:{key}"),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }
    assert process.stdin is not None
    process.stdin.write((json.dumps(initialize) + "\n").encode())
    await process.stdin.drain()
    try:
        async with asyncio.timeout(60):
            _, stderr = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert b"404" in stderr, stderr.decode(errors="replace")[-2000:]
    async with Browser(gateway.url) as browser:
        await sign_in(browser, person)
        page = await account(browser)
    assert "/v1/mcp answered 404" in page.text  # its POST and its GET (SSE fallback), one line with a count
    assert "give the client the exact MCP URL (ending in /mcp)" in page.text
