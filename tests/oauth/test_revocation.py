"""Token revocation (RFC 7009) over real HTTP: ownership, cascades, silence about unknown tokens, and faults
(security-cases 63-68)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import pytest

from gateway.clock import ManualClock
from gateway.secrets_hashing import secret_hash
from gateway.storage import Storage
from tests.oauth.token_support import (
    CLIENT_A,
    CLIENT_B,
    OAuthGateway,
    Reply,
    UnavailableOnWrite,
    oauth_gateway,
)


@pytest.fixture
async def gw(sqlite_storage: Storage, clock: ManualClock) -> AsyncIterator[OAuthGateway]:
    async with oauth_gateway(sqlite_storage, clock) as gateway:
        yield gateway


async def _access_revoked(gw: OAuthGateway, access_token: str) -> bool:
    row = await gw.storage.get_access_token(secret_hash(access_token))
    assert row is not None
    return row.revoked_at is not None


def _assert_empty_ok(reply: Reply) -> None:
    assert reply.status == 200
    assert reply.body == b""
    assert reply.headers["Cache-Control"] == "no-store"
    assert reply.headers["Access-Control-Allow-Origin"] == "*"


async def test_revoking_a_refresh_token_revokes_its_family_and_every_access_token_of_it(gw: OAuthGateway):
    first = await gw.tokens()
    second = (await gw.refresh(first["refresh_token"])).json()
    _assert_empty_ok(await gw.revoke(second["refresh_token"]))
    row = await gw.storage.get_refresh_token(secret_hash(second["refresh_token"]))
    assert row is not None
    family = await gw.storage.get_family(row.family_id)
    assert family is not None
    assert family.revoked_reason == "revoked_by_client"
    assert await _access_revoked(gw, first["access_token"])
    assert await _access_revoked(gw, second["access_token"])
    assert (await gw.refresh(second["refresh_token"])).error == "invalid_grant"


@pytest.mark.parametrize("hint", [None, "access_token", "refresh_token", "foo"])
async def test_revoking_an_access_token_kills_it_whatever_the_hint_and_the_refresh_token_survives(
    gw: OAuthGateway, hint: str | None
):
    tokens = await gw.tokens()
    _assert_empty_ok(await gw.revoke(tokens["access_token"], token_type_hint=hint))
    assert await _access_revoked(gw, tokens["access_token"])
    assert (await gw.refresh(tokens["refresh_token"])).status == 200


async def test_unknown_tokens_get_an_empty_200_and_empty_or_missing_tokens_are_invalid_request(gw: OAuthGateway):
    for unknown in (secrets.token_urlsafe(32), "gwat_" + "A" * 43, "gwrt_" + "A" * 43, "gwac_" + "A" * 43, "é"):
        _assert_empty_ok(await gw.revoke(unknown))
    empty = await gw.post(gw.revoke_url, {"token": "", "client_id": CLIENT_A})
    assert (empty.status, empty.error) == (400, "invalid_request")
    missing = await gw.post(gw.revoke_url, {"client_id": CLIENT_A})
    assert (missing.status, missing.error) == (400, "invalid_request")
    huge = await gw.revoke("x" * 100_000)
    assert huge.status == 413
    assert huge.headers["Cache-Control"] == "no-store"


async def test_another_clients_tokens_and_api_keys_get_a_silent_200_and_stay_valid(gw: OAuthGateway):
    user = await gw.new_user()
    tokens = await gw.tokens(user)
    api_key = (await gw.accounts().create_key(user, name="k"))[1]
    _assert_empty_ok(await gw.revoke(tokens["access_token"], client_id=CLIENT_B))
    _assert_empty_ok(await gw.revoke(tokens["refresh_token"], client_id=CLIENT_B))
    _assert_empty_ok(await gw.revoke(api_key.key))
    assert not await _access_revoked(gw, tokens["access_token"])
    key = await gw.storage.get_api_key_by_hash(secret_hash(api_key.key))
    assert key is not None
    assert key.revoked_at is None
    assert (await gw.refresh(tokens["refresh_token"])).status == 200


async def test_revoking_twice_is_still_200(gw: OAuthGateway):
    tokens = await gw.tokens()
    _assert_empty_ok(await gw.revoke(tokens["refresh_token"]))
    _assert_empty_ok(await gw.revoke(tokens["refresh_token"]))


async def test_get_on_the_revocation_endpoint_is_405(gw: OAuthGateway):
    async with gw.http.get(gw.revoke_url) as response:
        assert response.status == 405
        assert response.headers["Cache-Control"] == "no-store"


async def test_a_json_body_or_a_missing_client_id_is_invalid_request_with_no_store(gw: OAuthGateway):
    tokens = await gw.tokens()
    json_body = await gw.post(
        gw.revoke_url,
        f'{{"token": "{tokens["access_token"]}", "client_id": "{CLIENT_A}"}}',
        headers={"Content-Type": "application/json"},
    )
    assert (json_body.status, json_body.error) == (400, "invalid_request")
    assert json_body.headers["Cache-Control"] == "no-store"
    no_client = await gw.revoke(tokens["access_token"], client_id=None)
    assert (no_client.status, no_client.error) == (400, "invalid_request")
    assert not await _access_revoked(gw, tokens["access_token"])


async def test_basic_authentication_from_a_public_client_is_401_invalid_client_with_a_challenge(gw: OAuthGateway):
    tokens = await gw.tokens()
    reply = await gw.post(
        gw.revoke_url,
        {"token": tokens["access_token"], "client_id": CLIENT_A},
        headers={"Authorization": "Basic Y2xpZW50LWE6c2VjcmV0"},
    )
    assert (reply.status, reply.error) == (401, "invalid_client")
    assert reply.headers["WWW-Authenticate"].startswith("Basic ")
    assert reply.headers["Cache-Control"] == "no-store"
    assert not await _access_revoked(gw, tokens["access_token"])


async def test_the_revocation_endpoint_answers_a_cors_preflight(gw: OAuthGateway):
    headers = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    async with gw.http.options(gw.revoke_url, headers=headers) as response:
        assert response.status == 204
        assert response.headers["Access-Control-Allow-Origin"] == "*"


async def test_a_store_that_cannot_revoke_gets_503_with_retry_after_never_200(
    sqlite_storage: Storage, clock: ManualClock
):
    async with oauth_gateway(sqlite_storage, clock) as healthy:
        tokens = await healthy.tokens()
    async with oauth_gateway(sqlite_storage, clock, grants=UnavailableOnWrite(sqlite_storage)) as failing:
        for token in (tokens["access_token"], tokens["refresh_token"]):
            reply = await failing.revoke(token)
            assert (reply.status, reply.error) == (503, "temporarily_unavailable")
            assert reply.headers["Retry-After"].isdigit()
            assert reply.headers["Access-Control-Allow-Origin"] == "*"
    access = await sqlite_storage.get_access_token(secret_hash(tokens["access_token"]))
    assert access is not None
    assert access.revoked_at is None
