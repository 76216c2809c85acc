"""``/v1/proxy/{service}/{path}`` against the real oidc-provider (rotating refresh tokens, 5-second access tokens)
and its stand-in API: the provider's answer comes back; an expired token is refreshed once; a revoked grant asks
for a reconnection; the app's credentials never reach the provider; no token is stored in clear."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp

from gateway.audit import AUDIT
from gateway.vault.refresh import RefreshUnavailable
from gateway.vault.setup import VAULT
from gateway.vault.singleflight import LocalLock, RefreshCoordinator
from tests.support.databases import Backend
from tests.support.oidc import OidcProvider
from tests.vault.conftest import SERVICE, MovableClock, Outbound, connect, gateways, new_caller, sample, tmp_files

REFRESHES = "gateway_vault_refreshes_total"


async def test_a_proxied_call_returns_the_providers_answer(
    db: Backend, oidc_provider: OidcProvider, clock: MovableClock, outbound: Outbound
) -> None:
    async with gateways(db, oidc_provider, clock, outbound) as [gw], aiohttp.ClientSession() as http:
        caller = await new_caller(gw)
        await connect(gw, oidc_provider, caller.user_id)
        async with http.get(f"{gw.url}/v1/proxy/{SERVICE}/profile", headers=caller.headers()) as response:
            assert response.status == 200
            assert response.content_type == "application/json"
            assert (await response.json())["email"] == "alice@example.com"
            assert "RateLimit" in response.headers  # the account's one quota counter was charged
        assert sample(gw.app, "gateway_quota_admitted_total") == 1
        assert sample(gw.app, "gateway_vault_proxied_requests_total", service=SERVICE, status_class="2xx") == 1
        assert sample(gw.app, REFRESHES, service=SERVICE) == 0


async def test_after_expiry_the_next_call_refreshes_once_and_succeeds(
    db: Backend, oidc_provider: OidcProvider, clock: MovableClock, outbound: Outbound
) -> None:
    async with gateways(db, oidc_provider, clock, outbound) as [gw], aiohttp.ClientSession() as http:
        caller = await new_caller(gw)
        await connect(gw, oidc_provider, caller.user_id)
        before = await gw.app[VAULT].vault.connection(caller.user_id, SERVICE)
        clock.advance(60)  # the gateway believes the stored access token expired
        for _ in range(2):
            async with http.get(f"{gw.url}/v1/proxy/{SERVICE}/profile", headers=caller.headers()) as response:
                assert response.status == 200
        after = await gw.app[VAULT].vault.connection(caller.user_id, SERVICE)
        assert sample(gw.app, REFRESHES, service=SERVICE) == 1
        assert before is not None
        assert after is not None
        assert after.tokens.access_token != before.tokens.access_token
        assert after.tokens.refresh_token != before.tokens.refresh_token  # rotated, and kept


async def test_revoking_the_grant_at_the_provider_makes_the_next_call_ask_for_a_reconnection(
    db: Backend, oidc_provider: OidcProvider, clock: MovableClock, outbound: Outbound
) -> None:
    async with gateways(db, oidc_provider, clock, outbound) as [gw], aiohttp.ClientSession() as http:
        caller = await new_caller(gw)
        await connect(gw, oidc_provider, caller.user_id)
        connection = await gw.app[VAULT].vault.connection(caller.user_id, SERVICE)
        assert connection is not None
        assert connection.tokens.refresh_token
        events: list[tuple[str, dict[str, object]]] = []
        gw.app[AUDIT].listen(lambda event, fields: events.append((event, fields)))
        client = oidc_provider.client
        basic = base64.b64encode(f"{client.client_id}:{client.client_secret}".encode()).decode()
        async with http.post(
            oidc_provider.issuer + "/token/revocation",
            data={"token": connection.tokens.refresh_token, "token_type_hint": "refresh_token"},
            headers={"Authorization": f"Basic {basic}"},
        ) as revoked:
            assert revoked.status == 200
        for _ in range(2):  # the provider's 401 → one refresh → invalid_grant → broken; then refused at once
            async with http.get(f"{gw.url}/v1/proxy/{SERVICE}/profile", headers=caller.headers()) as response:
                assert response.status == 401
                body = await response.json()
                assert body["error"] == "service_reconnect_required"
                assert connection.tokens.refresh_token not in await response.text()
        assert sample(gw.app, "gateway_vault_broken_connections_total", service=SERVICE) == 1
        assert sample(gw.app, "gateway_vault_refresh_failures_total", service=SERVICE, kind="refused") == 1
        [(event, fields)] = events
        assert event == "service.refresh_failed"
        assert (fields["reason"], fields["user_id"], fields["service"]) == ("refused", caller.user_id, SERVICE)
        assert connection.tokens.refresh_token not in str(fields)


async def test_the_provider_sees_only_the_vaulted_token_and_the_allowed_headers(
    db: Backend, oidc_provider: OidcProvider, clock: MovableClock, outbound: Outbound
) -> None:
    async with gateways(db, oidc_provider, clock, outbound) as [gw], aiohttp.ClientSession() as http:
        caller = await new_caller(gw)
        await connect(gw, oidc_provider, caller.user_id)
        connection = await gw.app[VAULT].vault.connection(caller.user_id, SERVICE)
        assert connection is not None
        headers = {
            **caller.headers(),
            "Cookie": "session=secret-cookie",
            "X-Request-Id": "r-1",
            "X-Internal": "no",
            "Content-Type": "application/json",
        }
        async with http.post(f"{gw.url}/v1/proxy/{SERVICE}/echo?q=1", headers=headers, data=b'{"a": 1}') as response:
            assert response.status == 200
            assert "Set-Cookie" not in response.headers
            echoed = await response.json()
        assert echoed["method"] == "POST"
        assert echoed["query"] == "q=1"
        seen = echoed["headers"]
        assert seen["authorization"] == f"Bearer {connection.tokens.access_token}"
        assert seen["x-request-id"] == "r-1"
        assert "x-api-key" not in seen
        assert "cookie" not in seen
        assert "x-internal" not in seen
        assert caller.api_key not in str(echoed)
        assert caller.identity_token not in str(echoed)


async def test_after_a_full_flow_no_provider_token_is_stored_in_clear(
    tmp_path: Path, oidc_provider: OidcProvider, clock: MovableClock, outbound: Outbound
) -> None:
    db = Backend("sqlite", tmp_path)
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(db.close)
        await _full_flow_stores_nothing_in_clear(tmp_path, db, oidc_provider, clock, outbound)


async def _full_flow_stores_nothing_in_clear(
    tmp_path: Path, db: Backend, oidc_provider: OidcProvider, clock: MovableClock, outbound: Outbound
) -> None:
    async with gateways(db, oidc_provider, clock, outbound) as [gw], aiohttp.ClientSession() as http:
        caller = await new_caller(gw)
        await connect(gw, oidc_provider, caller.user_id)
        clock.advance(60)
        async with http.get(f"{gw.url}/v1/proxy/{SERVICE}/profile", headers=caller.headers()) as response:
            assert response.status == 200
        connection = await gw.app[VAULT].vault.connection(caller.user_id, SERVICE)
        assert connection is not None
        assert connection.tokens.refresh_token
        stored = tmp_files(tmp_path)
        for secret in (connection.tokens.access_token, connection.tokens.refresh_token):
            assert secret.encode() not in stored
        rows = await gw.storage.list_connections(caller.user_id)
        assert [row.encryption_key_id for row in rows] == ["k1"]


class UnavailableTokenEndpoint:
    async def refresh(self, refresh_token: str) -> Mapping[str, Any]:
        raise RefreshUnavailable("token endpoint: HTTP 503")


async def test_a_transient_refresh_failure_is_a_502_and_the_connection_stays_usable(
    db: Backend, oidc_provider: OidcProvider, clock: MovableClock, outbound: Outbound
) -> None:
    async with gateways(db, oidc_provider, clock, outbound) as [gw], aiohttp.ClientSession() as http:
        caller = await new_caller(gw)
        await connect(gw, oidc_provider, caller.user_id)
        services = gw.app[VAULT]
        working = services.refresher
        services.refresher = RefreshCoordinator(
            services.vault, lambda _service: UnavailableTokenEndpoint(), LocalLock(), clock.now,
            on_refresh=working._on_refresh,
        )  # fmt: skip
        clock.advance(60)
        async with http.get(f"{gw.url}/v1/proxy/{SERVICE}/profile", headers=caller.headers()) as response:
            assert response.status == 502
            assert (await response.json())["error"] == "provider_unavailable"
        assert sample(gw.app, "gateway_vault_refresh_failures_total", service=SERVICE, kind="failed") == 1
        services.refresher = working  # the provider is back
        async with http.get(f"{gw.url}/v1/proxy/{SERVICE}/profile", headers=caller.headers()) as response:
            assert response.status == 200


async def test_an_identity_token_issued_to_another_key_or_a_missing_one_is_refused_and_nothing_is_sent(
    db: Backend, oidc_provider: OidcProvider, clock: MovableClock, outbound: Outbound
) -> None:
    async with gateways(db, oidc_provider, clock, outbound) as [gw], aiohttp.ClientSession() as http:
        alice, bob = await new_caller(gw), await new_caller(gw)
        await connect(gw, oidc_provider, alice.user_id)
        url = f"{gw.url}/v1/proxy/{SERVICE}/profile"
        for headers in (
            {"X-API-Key": bob.api_key, "Authorization": f"Bearer {alice.identity_token}"},
            {"X-API-Key": alice.api_key},
            {"X-API-Key": alice.api_key, "Authorization": "Bearer not-a-jwt"},
        ):
            async with http.get(url, headers=headers) as response:
                assert response.status == 401
                assert (await response.json())["error"] == "invalid_token"
        assert outbound.sent == []
