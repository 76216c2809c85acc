"""One full client life over real HTTP, for the observability tests, keeping every secret it sees.

register → sign in (one typo first) → consent → code exchange → MCP calls with the real ``mcp`` SDK client
(a session with its GET event stream) → refresh → reuse of the retired refresh token after the grace window
(the family is revoked) → a new grant revoked through RFC 7009 → calls with revoked, missing and mistyped
credentials → an API key call. ``scrape`` reads ``/metrics`` into ``{(name, labels): value}``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from gateway.clock import ManualClock
from tests.support.gateway import TEST_PASSWORD
from tests.support.mcp_clients import streamable_session_client
from tests.support.oauth_browser import Browser, Page
from tests.support.oauth_flows import OAuthApp, bearer, new_pkce, post_mcp, register, sign_in_page

EMAIL = "grace.hopper@example.com"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass
class ObservedFlow:
    secrets: dict[str, str] = field(default_factory=dict)
    client_id: str = ""
    open_streams_seen: float = 0.0

    def keep(self, name: str, value: str) -> str:
        self.secrets[name] = value
        return value


async def scrape(gateway_url: str, headers: Mapping[str, str] | None = None) -> str:
    async with aiohttp.ClientSession() as http, http.get(gateway_url + "/metrics", headers=headers) as response:
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        return await response.text()


def samples(exposition: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


async def _until_streams(gateway_url: str, at_least: float, at_most: float) -> float:
    """Scrape until ``gateway_open_streams{transport="streamable_http"}`` is within bounds (5 s at most)."""
    async with asyncio.timeout(5):
        while True:
            seen = value(samples(await scrape(gateway_url)), "gateway_open_streams", transport="streamable_http")
            if at_least <= seen <= at_most:
                return seen
            await asyncio.sleep(0.02)


async def run_observed_flow(
    gateway_url: str, clock: ManualClock, new_key: Callable[[], Awaitable[str]]
) -> ObservedFlow:
    flow = ObservedFlow()
    flow.keep("password", TEST_PASSWORD)
    app: OAuthApp = await register(gateway_url, client_name="Observed client")
    flow.client_id = app.client_id
    async with Browser(gateway_url) as browser:
        pkce = new_pkce()
        flow.keep("verifier", pkce.verifier)
        login = await sign_in_page(browser, app.authorization_url(pkce))
        typo = await browser.submit(login, "/login", email=EMAIL, password=flow.keep("typo", "Correct horse!"))
        assert isinstance(typo, Page)
        assert typo.status == 401
        redirect = await browser.authorize(app.authorization_url(pkce), EMAIL)
        for i, page in enumerate(browser.pages):
            for name, hidden in page.hidden().items():
                flow.keep(f"page {i} {name}", hidden)
        for cookie in browser.session.cookie_jar:
            flow.keep(f"cookie {cookie.key}", cookie.value)
        code = flow.keep("code", redirect.params["code"])
        reply = await app.exchange(code, pkce)
        assert reply.status == 200, reply.text
        access = flow.keep("access", reply.json()["access_token"])
        first_refresh = flow.keep("refresh", reply.json()["refresh_token"])

        async with streamable_session_client(gateway_url + "/mcp", bearer(access)) as client:
            assert (await client.call_tool("echo", {"text": "observed"})).content[0].text == "observed"  # type: ignore[union-attr]
            await client.list_tools()
            flow.open_streams_seen = await _until_streams(gateway_url, 1, 10)
        await _until_streams(gateway_url, 0, 0)

        reply = await app.refresh(first_refresh)
        assert reply.status == 200, reply.text
        refreshed = flow.keep("refreshed access", reply.json()["access_token"])
        flow.keep("refreshed refresh", reply.json()["refresh_token"])
        assert (await post_mcp(gateway_url, bearer(refreshed))).status == 200
        clock.advance(61)  # past the grace window: presenting the retired token again revokes the family
        assert (await app.refresh(first_refresh)).status == 400
        clock.advance(1.0)  # past the validation cache
        assert (await post_mcp(gateway_url, bearer(refreshed))).status == 401

        pkce = new_pkce()
        redirect = await browser.authorize(app.authorization_url(pkce), EMAIL)
        reply = await app.exchange(flow.keep("second code", redirect.params["code"]), pkce)
        assert reply.status == 200, reply.text
        second_access = flow.keep("second access", reply.json()["access_token"])
        assert (await app.revoke(flow.keep("second refresh", reply.json()["refresh_token"]))).status == 200
        clock.advance(1.0)
        assert (await post_mcp(gateway_url, bearer(second_access))).status == 401

    assert (await post_mcp(gateway_url, {})).status == 401
    key = flow.keep("api key", await new_key())
    assert (await post_mcp(gateway_url, {"X-API-Key": key})).status == 200
    mistyped = key[:-1] + ("x" if key[-1] != "x" else "y")
    assert (await post_mcp(gateway_url, {"X-API-Key": mistyped})).status == 401
    return flow
