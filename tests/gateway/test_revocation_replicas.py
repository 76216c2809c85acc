"""Revocation across replicas (separate processes sharing PostgreSQL and Redis): refused everywhere within a second.

Times are measured from the moment the revoking call returned (its commit happened before) to the first refusal
(a bounded loop of requests) or the end of the stream; the issue's bound is one second.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest

from tests.support.dashboard import apps, csrf, keys, sign_in
from tests.support.dashboard import post as dashboard_post
from tests.support.oauth_browser import Browser
from tests.support.oauth_flows import EMAIL, INIT, MCP_HEADERS, OAuthApp, bearer, obtain_tokens, post_mcp, register
from tests.support.pgbouncer import Bouncer
from tests.support.replicas import REDIS_URL, Fleet, replica_fleet
from tests.support.scripted_upstream import jsonrpc
from tests.support.tcp_proxy import tcp_proxy
from tests.support.upstream import UpstreamProcess

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

BOUND = 1.0
"""The promise: a revoked credential is refused on every replica within one second."""
GIVE_UP = 5.0
"""How long a measuring loop runs before declaring failure (well past the bound, so failures say by how much)."""


def report(what: str, refused_after: float, closed_after: float) -> None:
    """Shown with ``pytest -s``; a negative time means it happened before the revoking call returned."""
    print(f"{what}: refused after {refused_after * 1000:.0f} ms; stream closed after {closed_after * 1000:.0f} ms")


@dataclass
class Credential:
    headers: dict[str, str]
    revoke: Callable[[], Awaitable[None]]
    """Revoke it through replica A (or the CLI), returning once the revocation is committed."""


async def refusal_delay(replica_url: str, headers: dict[str, str], since: float) -> float:
    """Seconds from ``since`` until ``replica_url`` answers 401 (requests in a bounded loop)."""
    while True:
        reply = await post_mcp(replica_url, headers)
        elapsed = time.monotonic() - since
        if reply.status == 401:
            return elapsed
        assert reply.status == 200, reply.text
        assert elapsed < GIVE_UP, f"still accepted {elapsed:.2f} s after the revocation"
        await asyncio.sleep(0.01)  # pace the loop; the deadline above bounds it


class OpenStream:
    """A legacy SSE stream held open on one replica; records when and how it ended."""

    def __init__(self, http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> None:
        self._http, self._url, self._headers = http, url, headers
        self.received = b""
        self.ended_at: float | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> OpenStream:
        response = await self._http.get(self._url, headers=self._headers)
        assert response.status == 200, await response.text()
        async with asyncio.timeout(10):
            while b"event: endpoint" not in self.received:
                self.received += await response.content.readany()
        self._task = asyncio.create_task(self._read(response))
        return self

    async def _read(self, response: aiohttp.ClientResponse) -> None:
        try:
            while chunk := await response.content.readany():
                self.received += chunk
        except aiohttp.ClientError:
            pass
        finally:
            self.ended_at = time.monotonic()
            response.close()

    async def ended_within(self, since: float) -> float:
        assert self._task is not None
        async with asyncio.timeout(GIVE_UP):
            await asyncio.shield(self._task)
        assert self.ended_at is not None
        return self.ended_at - since

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


@pytest.fixture(scope="module")
async def fleet(tmp_path_factory: pytest.TempPathFactory, upstream: UpstreamProcess) -> AsyncIterator[Fleet]:
    async with replica_fleet(
        tmp_path_factory.mktemp("fleet"),
        upstream_url=upstream.mcp_url,
        upstream_sse_url=upstream.sse_url,
        # Any replay of a retired refresh token is reuse (no grace window), so the test can trigger it at once.
        overrides={"oauth": {"refresh_grace_seconds": 0}},
    ) as running:
        await running.new_user(EMAIL)
        yield running


async def oauth_tokens(fleet: Fleet) -> tuple[OAuthApp, dict[str, str]]:
    app = await register(fleet[0].url)
    async with Browser(fleet[0].url) as browser:
        return app, await obtain_tokens(app, browser, EMAIL)


async def rfc7009_access_token(fleet: Fleet) -> Credential:
    app, tokens = await oauth_tokens(fleet)

    async def revoke() -> None:
        assert (await app.revoke(tokens["access_token"])).status == 200

    return Credential(bearer(tokens["access_token"]), revoke)


async def rfc7009_refresh_token(fleet: Fleet) -> Credential:
    app, tokens = await oauth_tokens(fleet)

    async def revoke() -> None:
        assert (await app.revoke(tokens["refresh_token"])).status == 200

    return Credential(bearer(tokens["access_token"]), revoke)


async def refresh_token_reuse(fleet: Fleet) -> Credential:
    app, first = await oauth_tokens(fleet)
    rotated = await app.refresh(first["refresh_token"])
    assert rotated.status == 200, rotated.text

    async def revoke() -> None:
        replay = await app.refresh(first["refresh_token"])
        assert replay.status == 400
        assert replay.json()["error"] == "invalid_grant"

    return Credential(bearer(rotated.json()["access_token"]), revoke)


async def api_key_revoked_by_the_cli(fleet: Fleet) -> Credential:
    key_id, key = await fleet.new_key(await fleet.new_user())

    async def revoke() -> None:
        status, stderr = await fleet.cli("keys", "revoke", key_id)
        assert status == 0, stderr

    return Credential({"X-API-Key": key}, revoke)


async def dashboard_app_revoke(fleet: Fleet) -> Credential:
    name = f"App {secrets.token_hex(4)}"
    app = await register(fleet[0].url, client_name=name)
    async with Browser(fleet[0].url) as browser:
        tokens = await obtain_tokens(app, browser, EMAIL)

    async def revoke() -> None:
        async with Browser(fleet[0].url) as browser:
            page = await sign_in(browser, EMAIL)
            reply = await dashboard_post(browser, f"/account/apps/{apps(page)[name]}/revoke", {"csrf": csrf(page)})
            assert reply.status == 303, reply.text

    return Credential(bearer(tokens["access_token"]), revoke)


async def dashboard_key_revoke(fleet: Fleet) -> Credential:
    user = await fleet.storage.get_user_by_email(EMAIL)
    assert user is not None
    name = f"key-{secrets.token_hex(4)}"
    key_id, key = await fleet.new_key(user, name)

    async def revoke() -> None:
        async with Browser(fleet[0].url) as browser:
            page = await sign_in(browser, EMAIL)
            assert keys(page)[name] == key_id
            reply = await dashboard_post(browser, f"/account/keys/{key_id}/revoke", {"csrf": csrf(page)})
            assert reply.status == 303, reply.text

    return Credential({"X-API-Key": key}, revoke)


REVOCATION_PATHS: dict[str, Callable[[Fleet], Awaitable[Credential]]] = {
    "rfc7009_access_token": rfc7009_access_token,
    "rfc7009_refresh_token": rfc7009_refresh_token,
    "refresh_token_reuse": refresh_token_reuse,
    "api_key_revoke_cli": api_key_revoked_by_the_cli,
    "dashboard_app_revoke": dashboard_app_revoke,
    "dashboard_key_revoke": dashboard_key_revoke,
}


@pytest.mark.parametrize("path", sorted(REVOCATION_PATHS))
async def test_a_credential_revoked_through_one_replica_is_refused_by_the_others_within_a_second(
    fleet: Fleet, path: str
):
    credential = await REVOCATION_PATHS[path](fleet)
    b, c = fleet[1], fleet[2]
    assert (await post_mcp(b.url, credential.headers)).status == 200  # validated and cached on B
    async with aiohttp.ClientSession() as http, OpenStream(http, c.sse_url, credential.headers) as stream:
        await credential.revoke()
        revoked_at = time.monotonic()
        refused_after = await refusal_delay(b.url, credential.headers, revoked_at)
        closed_after = await stream.ended_within(revoked_at)
    report(path, refused_after, closed_after)
    assert refused_after <= BOUND
    assert closed_after <= BOUND
    assert b"event: error" in stream.received.rsplit(b"event: endpoint", 1)[-1]


async def test_a_replica_whose_revocation_broadcast_is_cut_still_refuses_within_a_second(
    tmp_path: Path, upstream: UpstreamProcess
):
    redis = urlsplit(REDIS_URL)
    async with tcp_proxy(redis.hostname or "127.0.0.1", redis.port or 6379) as cut_off:
        proxied = REDIS_URL.replace(redis.netloc, f"127.0.0.1:{cut_off.port}")
        async with replica_fleet(
            tmp_path,
            upstream_url=upstream.mcp_url,
            upstream_sse_url=upstream.sse_url,
            count=2,
            redis_urls=[REDIS_URL, proxied],
        ) as fleet:
            await fleet.new_user(EMAIL)
            # Two credentials, so the request path (cache lifetime) and the stream path (re-checks) are each
            # measured on their own.
            requests, streamed = await rfc7009_access_token(fleet), await rfc7009_access_token(fleet)
            b = fleet[1]
            async with aiohttp.ClientSession() as http, OpenStream(http, b.sse_url, streamed.headers) as stream:
                cut_off.cut()  # B hears no announcement from now on
                async with http.get(f"{b.url}/readyz") as ready:
                    body = await ready.json()
                assert ready.status == 200
                assert body["status"] == "degraded"
                assert body["checks"]["redis"] == "degraded"
                assert (await post_mcp(b.url, requests.headers)).status == 200  # freshly cached on B
                await asyncio.gather(requests.revoke(), streamed.revoke())
                revoked_at = time.monotonic()
                refused_after = await refusal_delay(b.url, requests.headers, revoked_at)
                closed_after = await stream.ended_within(revoked_at)
            report("lost broadcast", refused_after, closed_after)
            assert refused_after <= BOUND
            assert closed_after <= BOUND
            cut_off.restore()
            async with aiohttp.ClientSession() as http, asyncio.timeout(10):  # re-subscribes with backoff (≤ 2 s)
                while True:
                    async with http.get(f"{b.url}/readyz") as ready:
                        if (await ready.json())["status"] == "ready":
                            break
                    await asyncio.sleep(0.05)
            assert (await post_mcp(b.url, (await rfc7009_access_token(fleet)).headers)).status == 200


async def test_a_client_whose_replica_is_killed_mid_stream_carries_on_through_another_replica(
    tmp_path: Path, upstream: UpstreamProcess
):
    async with replica_fleet(tmp_path, upstream_url=upstream.mcp_url, count=2) as fleet:
        _, key = await fleet.new_key(await fleet.new_user())
        headers = {**MCP_HEADERS, "X-API-Key": key}
        a, b = fleet[0], fleet[1]
        async with aiohttp.ClientSession() as http:
            async with http.post(a.mcp_url, data=INIT, headers=headers) as opened:
                assert opened.status == 200
                session = {"Mcp-Session-Id": opened.headers["Mcp-Session-Id"], "MCP-Protocol-Version": "2025-06-18"}
                await opened.read()
            done = jsonrpc("notifications/initialized")
            async with http.post(a.mcp_url, data=done, headers={**headers, **session}) as acknowledged:
                assert acknowledged.status in (200, 202)
            stream_headers = {"X-API-Key": key, **session, "Accept": "text/event-stream"}
            async with http.get(a.mcp_url, headers=stream_headers) as stream:
                assert stream.status == 200
                a.process.kill()
                with contextlib.suppress(aiohttp.ClientError):
                    async with asyncio.timeout(GIVE_UP):
                        await stream.read()
            async with http.post(b.mcp_url, data=jsonrpc("tools/list", id_=2), headers={**headers, **session}) as call:
                assert call.status == 200, await call.text()
                assert b'"tools"' in await call.read()
            async with http.get(b.mcp_url, headers=stream_headers) as resumed:
                assert resumed.status == 200
                assert resumed.content_type == "text/event-stream"


@pytest.fixture(scope="module")
async def fleet_through_pgbouncer(
    tmp_path_factory: pytest.TempPathFactory, upstream: UpstreamProcess, pgbouncer: Bouncer
) -> AsyncIterator[Fleet]:
    """Three replicas (and the CLI) reaching PostgreSQL only through PgBouncer in transaction pooling mode."""
    async with replica_fleet(
        tmp_path_factory.mktemp("bounced"),
        upstream_url=upstream.mcp_url,
        upstream_sse_url=upstream.sse_url,
        overrides={"storage": {"url": pgbouncer.url, "pgbouncer": True}, "oauth": {"refresh_grace_seconds": 0}},
    ) as running:
        await running.new_user(EMAIL)
        yield running


@pytest.mark.parametrize("path", ["api_key_revoke_cli", "rfc7009_refresh_token", "refresh_token_reuse"])
async def test_behind_pgbouncer_a_revocation_on_one_replica_is_refused_by_the_others_within_a_second(
    fleet_through_pgbouncer: Fleet, path: str
):
    fleet = fleet_through_pgbouncer
    credential = await REVOCATION_PATHS[path](fleet)
    b, c = fleet[1], fleet[2]
    assert (await post_mcp(b.url, credential.headers)).status == 200
    async with aiohttp.ClientSession() as http, OpenStream(http, c.sse_url, credential.headers) as stream:
        await credential.revoke()
        revoked_at = time.monotonic()
        refused_after = await refusal_delay(b.url, credential.headers, revoked_at)
        closed_after = await stream.ended_within(revoked_at)
    report(f"{path} through PgBouncer", refused_after, closed_after)
    assert refused_after <= BOUND
    assert closed_after <= BOUND
