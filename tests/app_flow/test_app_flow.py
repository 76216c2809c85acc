"""The app flow against the real OpenID provider: initiate → the provider's sign-in → the gateway's callback → a
one-time code → identity token (verified by PyJWT against the JWKS) and refresh token → rotation → reuse revokes
the family → another key refused; and every way it must fail without handing out a code or a redirect."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from gateway.clock import ManualClock
from gateway.credentials.watermark import Watermark
from gateway.housekeeping import sweep
from gateway.identity.app_verify import IdentityTokenVerifier, verify_identity_token
from gateway.identity.providers import PENDING_TTL
from gateway.identity.sealing import generate_secret
from gateway.identity.tokens import InvalidIdentityToken
from gateway.identity.web import IDENTITY
from gateway.storage import Storage
from tests.app_flow.support import APP_CALLBACK, CLAIMS, PUBLIC_URL, App, new_app, query, verify_with_pyjwt
from tests.support.gateway import UNUSED_UPSTREAM, GatewayHandle, running_gateway
from tests.support.oidc import OidcProvider

SETTLE = 1.0
"""The promise: a revocation is refused everywhere within a second."""


@pytest.fixture
async def gateway(
    any_storage: Storage, clock: ManualClock, oidc_provider: OidcProvider
) -> AsyncIterator[GatewayHandle]:
    idp = oidc_provider
    overrides = {
        "public_url": PUBLIC_URL,
        "identity": {"encryption_keys": generate_secret("k1")},
        "identity_providers": {
            "test": {
                "issuer": idp.issuer,
                "client_id": idp.client.client_id,
                "client_secret": idp.client.client_secret,
                "scopes": ["openid", "email", "profile"],
            }
        },
    }
    async with running_gateway(
        storage=any_storage, upstream_url=UNUSED_UPSTREAM, clock=clock, overrides=overrides
    ) as handle:
        yield handle


@pytest.fixture
async def app(gateway: GatewayHandle, oidc_provider: OidcProvider) -> App:
    return await new_app(gateway, oidc_provider)


async def refused(gateway: GatewayHandle, token: str) -> bool:
    try:
        await verify_identity_token(gateway.app, token)
    except InvalidIdentityToken:
        return True
    return False


async def test_the_whole_app_flow_gives_a_verifiable_identity_token_that_refreshes_rotates_and_dies_on_reuse(
    gateway: GatewayHandle, app: App, clock: ManualClock, oidc_provider: OidcProvider
) -> None:
    started = await app.initiate(state="app-state-1")
    assert started.status == 302
    assert started.headers["Location"].startswith(oidc_provider.issuer + "/")
    response = await app.follow_callback(await app.provider_callback(state="app-state-1"))
    assert response.status == 302
    back = query(response.headers["Location"])
    assert response.headers["Location"].startswith(APP_CALLBACK + "?")
    assert back["state"] == "app-state-1"
    assert set(back) == {"code", "state"}

    status, body = await app.exchange(back["code"])
    assert status == 200, body
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert (body["token_type"], body["expires_in"]) == ("Bearer", 3600)
    claims = await verify_with_pyjwt(gateway, body["access_token"])
    user = await gateway.storage.get_user_by_email("alice@example.com")
    assert user is not None
    assert set(claims) == CLAIMS
    assert (claims["iss"], claims["aud"], claims["sub"]) == (PUBLIC_URL, "mcp-servers", user.id)
    assert (claims["api_key_id"], claims["connected_services"]) == (app.key_id, [])
    assert claims["exp"] - claims["iat"] == 3600
    assert (await verify_identity_token(gateway.app, body["access_token"]))["sub"] == user.id

    status, second = await app.refresh(body["refresh_token"])
    assert status == 200, second
    assert second["refresh_token"] != body["refresh_token"]
    assert set(await verify_with_pyjwt(gateway, second["access_token"])) == CLAIMS

    clock.advance(gateway.config.oauth.refresh_grace_seconds + 1)
    status, error = await app.refresh(body["refresh_token"])  # the retired token again: reuse
    assert (status, error["error"]) == (400, "invalid_grant")
    status, error = await app.refresh(second["refresh_token"])
    assert (status, error["error"]) == (400, "invalid_grant")
    clock.advance(SETTLE)
    assert await refused(gateway, second["access_token"])
    assert await refused(gateway, body["access_token"])

    # Another key presenting a live refresh token: refused, and the family is revoked for its own key too.
    fresh = await app.tokens()
    other = await new_app(gateway, oidc_provider)
    status, error = await other.refresh(fresh["refresh_token"])
    assert (status, error["error"]) == (400, "invalid_grant")
    status, error = await app.refresh(fresh["refresh_token"])
    assert (status, error["error"]) == (400, "invalid_grant")
    clock.advance(SETTLE)
    assert await refused(gateway, fresh["access_token"])


async def test_a_refresh_replayed_within_the_grace_window_gets_the_same_tokens_back(app: App) -> None:
    first = await app.tokens()
    status, second = await app.refresh(first["refresh_token"])
    assert status == 200
    status, again = await app.refresh(first["refresh_token"])
    assert status == 200
    assert again["refresh_token"] == second["refresh_token"]


async def test_initiate_with_an_unregistered_redirect_uri_is_a_400_and_never_a_redirect(app: App) -> None:
    for uri in (
        "https://evil.example/callback",
        APP_CALLBACK + "/x",
        APP_CALLBACK + "?a=1",
        "http://app.example/callback",
    ):
        response = await app.initiate(redirect_uri=uri)
        assert response.status == 400
        assert "Location" not in response.headers
        assert (await response.json())["error"] == "invalid_request"


async def test_a_loopback_callback_matches_on_any_port_and_json_clients_get_the_url(
    gateway: GatewayHandle, oidc_provider: OidcProvider
) -> None:
    app = await new_app(gateway, oidc_provider, redirect_uris=("http://127.0.0.1/cb",))
    response = await app.initiate(redirect_uri="http://127.0.0.1:53412/cb")
    assert response.status == 302
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{gateway.url}/v1/auth/test/initiate",
            params={"redirect_uri": "http://127.0.0.1/cb"},
            headers={**app.headers, "Accept": "application/json"},
            allow_redirects=False,
        ) as answer,
    ):
        assert answer.status == 200
        assert (await answer.json())["authorization_url"].startswith(oidc_provider.issuer + "/")
    assert (await app.initiate(redirect_uri="http://localhost/cb")).status == 400


async def test_initiate_and_the_token_endpoint_refuse_a_missing_or_wrong_key_as_invalid_client(app: App) -> None:
    for headers in ({}, {"X-API-Key": "mgw_nope"}):
        status, body = await app.post("/v1/auth/token", {"grant_type": "refresh_token", "refresh_token": "x"}, headers)
        assert (status, body["error"]) == (401, "invalid_client")
    app.key = app.key[:-1] + ("A" if app.key[-1] != "A" else "B")
    assert (await app.initiate()).status == 401


async def test_a_forged_state_at_the_callback_is_a_page_and_no_code(app: App, gateway: GatewayHandle) -> None:
    callback = await app.provider_callback()
    params = query(callback)
    forged = f"{gateway.url}/v1/auth/test/callback?code={params['code']}&state=forged&iss={params['iss']}"
    response = await app.follow_callback(forged)
    assert response.status == 400
    assert "Location" not in response.headers
    assert "text/html" in response.headers["Content-Type"]


async def test_a_replayed_state_reaches_the_app_as_an_error_without_a_code(app: App) -> None:
    callback = await app.provider_callback(state="s1")
    first = await app.follow_callback(callback)
    assert "code" in query(first.headers["Location"])
    again = await app.follow_callback(callback)
    assert again.status == 302
    back = query(again.headers["Location"])
    assert again.headers["Location"].startswith(APP_CALLBACK + "?")
    assert (back["error"], back["state"]) == ("invalid_request", "s1")
    assert "code" not in back


async def test_an_expired_sign_in_reaches_the_app_as_an_error_without_a_code(app: App, clock: ManualClock) -> None:
    callback = await app.provider_callback()
    clock.advance(PENDING_TTL + 1)
    back = query((await app.follow_callback(callback)).headers["Location"])
    assert back["error"] == "invalid_request"
    assert "code" not in back


async def test_a_user_who_denies_at_the_provider_comes_back_to_the_app_with_access_denied(app: App) -> None:
    callback = await app.provider_callback(approve=False, state="s2")
    back = query((await app.follow_callback(callback)).headers["Location"])
    assert (back["error"], back["state"]) == ("access_denied", "s2")
    assert "code" not in back


async def test_a_code_used_twice_fails_the_second_time_and_revokes_what_the_first_issued(
    app: App, gateway: GatewayHandle, clock: ManualClock
) -> None:
    code = await app.code()
    status, first = await app.exchange(code)
    assert status == 200
    status, error = await app.exchange(code)
    assert (status, error["error"]) == (400, "invalid_grant")
    status, error = await app.refresh(first["refresh_token"])
    assert (status, error["error"]) == (400, "invalid_grant")
    clock.advance(SETTLE)
    assert await refused(gateway, first["access_token"])


async def test_an_expired_code_a_code_of_another_key_or_callback_is_refused(
    app: App, gateway: GatewayHandle, oidc_provider: OidcProvider, clock: ManualClock
) -> None:
    code = await app.code()
    other = await new_app(gateway, oidc_provider)
    assert (await other.exchange(code))[1]["error"] == "invalid_grant"
    assert (await app.exchange(code, redirect_uri="https://app.example/other"))[1]["error"] == "invalid_grant"
    clock.advance(61)
    assert (await app.exchange(code))[1]["error"] == "invalid_grant"


async def test_revoking_a_refresh_token_kills_its_family_and_the_identity_tokens_it_covers(
    app: App, gateway: GatewayHandle, clock: ManualClock
) -> None:
    tokens = await app.tokens()
    status, _ = await app.post("/v1/auth/revoke", {"token": tokens["refresh_token"]})
    assert status == 200
    assert (await app.refresh(tokens["refresh_token"]))[1]["error"] == "invalid_grant"
    clock.advance(SETTLE)
    assert await refused(gateway, tokens["access_token"])
    clock.advance(1)
    assert not await refused(gateway, (await app.tokens())["access_token"])


async def test_a_revoked_key_makes_the_identity_tokens_it_obtained_refused(
    app: App, gateway: GatewayHandle, clock: ManualClock
) -> None:
    tokens = await app.tokens()
    assert not await refused(gateway, tokens["access_token"])
    await gateway.storage.revoke_api_key(app.key_id, now=clock.now())
    clock.advance(SETTLE)
    assert await refused(gateway, tokens["access_token"])


async def test_a_disabled_user_makes_their_identity_tokens_refused(
    app: App, gateway: GatewayHandle, clock: ManualClock
) -> None:
    tokens = await app.tokens()
    user = await gateway.storage.get_user_by_email("alice@example.com")
    assert user is not None
    await gateway.storage.set_disabled(user.id, clock.now())
    clock.advance(SETTLE)
    assert await refused(gateway, tokens["access_token"])


async def test_a_key_explicitly_set_to_receive_tokens_in_the_url_gets_them_there(
    gateway: GatewayHandle, oidc_provider: OidcProvider
) -> None:
    app = await new_app(gateway, oidc_provider, tokens_in_url=True)
    response = await app.follow_callback(await app.provider_callback(state="s3"))
    back = query(response.headers["Location"])
    assert set(back) == {"access_token", "token_type", "expires_in", "refresh_token", "state"}
    assert set(await verify_with_pyjwt(gateway, back["access_token"])) == CLAIMS


async def test_an_abandoned_sign_in_is_swept_once_it_has_expired(
    app: App, gateway: GatewayHandle, clock: ManualClock
) -> None:
    assert (await app.initiate()).status == 302
    assert (await sweep(gateway.app))["app_sign_ins"] == 0
    clock.advance(PENDING_TTL + 1)
    assert (await sweep(gateway.app))["app_sign_ins"] == 1


async def test_a_repeated_redirect_uri_is_refused(app: App, gateway: GatewayHandle) -> None:
    url = f"{gateway.url}/v1/auth/test/initiate?redirect_uri={APP_CALLBACK}&redirect_uri=https://evil.example/cb"
    async with aiohttp.ClientSession() as http, http.get(url, headers=app.headers, allow_redirects=False) as response:
        assert response.status == 400
        assert "Location" not in response.headers


async def test_the_oauth_token_endpoint_refuses_an_app_flow_refresh_token_and_leaves_its_family_alone(
    app: App, gateway: GatewayHandle
) -> None:
    tokens = await app.tokens()
    form = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": app.key_id}
    status, body = await app.post("/token", form, headers={})
    assert (status, body["error"]) == (400, "invalid_grant")
    assert (await app.refresh(tokens["refresh_token"]))[0] == 200


async def test_another_replica_that_missed_the_announcement_refuses_a_revoked_familys_token_within_a_second(
    app: App, gateway: GatewayHandle, clock: ManualClock
) -> None:
    # A replica sharing the storage, hearing no announcement: only its cache lifetime and the watermark bound it.
    watermark = Watermark(gateway.storage, clock, interval=0.5)
    replica = IdentityTokenVerifier(gateway.app[IDENTITY].tokens, gateway.storage, clock, watermark)
    await watermark.read()
    tokens = await app.tokens()
    assert (await replica.verify(tokens["access_token"]))["api_key_id"] == app.key_id
    clock.advance(0.5)
    await watermark.read()  # nothing revoked yet: the cached standing stays good past its lifetime
    clock.advance(0.5)
    assert await replica.verify(tokens["access_token"])
    assert (await app.post("/v1/auth/revoke", {"token": tokens["refresh_token"]}))[0] == 200
    await watermark.read()
    clock.advance(SETTLE)
    with pytest.raises(InvalidIdentityToken):
        await replica.verify(tokens["access_token"])


async def test_without_signing_keys_initiate_says_identity_tokens_are_not_configured(
    sqlite_storage: Storage, oidc_provider: OidcProvider
) -> None:
    idp = oidc_provider
    provider = {"issuer": idp.issuer, "client_id": idp.client.client_id, "client_secret": idp.client.client_secret}
    overrides = {"public_url": PUBLIC_URL, "identity_providers": {"test": provider}}
    async with running_gateway(storage=sqlite_storage, upstream_url=UNUSED_UPSTREAM, overrides=overrides) as handle:
        app = await new_app(handle, idp)
        response = await app.initiate()
        assert response.status == 503
        assert "Location" not in response.headers
