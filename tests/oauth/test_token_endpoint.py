"""The token endpoint over real HTTP: code exchange, refresh rotation, grace, reuse and wire-format hostility
(security-cases 41-62)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.clock import ManualClock
from gateway.secrets_hashing import secret_hash
from gateway.storage import Storage
from tests.oauth.token_support import (
    CHALLENGE,
    CLIENT_A,
    CLIENT_B,
    REDIRECT_URI,
    VERIFIER,
    OAuthGateway,
    UnavailableOnWrite,
    oauth_gateway,
)
from tests.support.databases import Backend

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture
async def gw(sqlite_storage: Storage, clock: ManualClock) -> AsyncIterator[OAuthGateway]:
    async with oauth_gateway(sqlite_storage, clock) as gateway:
        yield gateway


async def _family_of(gw: OAuthGateway, refresh_token: str) -> Any:
    row = await gw.storage.get_refresh_token(secret_hash(refresh_token))
    assert row is not None
    return await gw.storage.get_family(row.family_id)


async def _access_revoked(gw: OAuthGateway, access_token: str) -> bool:
    row = await gw.storage.get_access_token(secret_hash(access_token))
    assert row is not None
    return row.revoked_at is not None


# --- authorization_code (41-52) ---


async def test_a_valid_code_exchange_answers_a_typed_bearer_pair_that_no_cache_may_store(gw: OAuthGateway):
    user = await gw.new_user()
    code = await gw.seed_code(user)
    reply = await gw.exchange(code)
    assert reply.status == 200
    body = reply.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["scope"] == "mcp:tools"
    assert body["access_token"].startswith("gwat_")
    assert len(body["access_token"]) == 48
    assert body["refresh_token"].startswith("gwrt_")
    assert len(body["refresh_token"]) == 48
    assert reply.headers["Cache-Control"] == "no-store"
    assert reply.headers["Pragma"] == "no-cache"
    assert reply.headers["Access-Control-Allow-Origin"] == "*"
    access = await gw.storage.get_access_token(secret_hash(body["access_token"]))
    assert access is not None
    assert (access.user_id, access.client_id, access.resource) == (user.id, CLIENT_A, gw.resource)
    family = await _family_of(gw, body["refresh_token"])
    assert family.expires_at == pytest.approx(gw.clock.now() + gw.config.oauth.refresh_token_absolute_ttl)


@pytest.mark.parametrize(
    ("verifier", "error"),
    [
        ("w" * 43, "invalid_grant"),
        (VERIFIER[:42], "invalid_grant"),
        (VERIFIER + "x" * (129 - len(VERIFIER)), "invalid_grant"),
        (VERIFIER[:-1] + "+", "invalid_grant"),
        (CHALLENGE, "invalid_grant"),
        (None, "invalid_request"),
    ],
    ids=["wrong", "42-chars", "129-chars", "illegal-char", "the-challenge", "missing"],
)
async def test_a_bad_or_missing_verifier_is_refused_without_consuming_the_code(
    gw: OAuthGateway, verifier: str | None, error: str
):
    code = await gw.seed_code(await gw.new_user())
    reply = await gw.exchange(code, code_verifier=verifier)
    assert (reply.status, reply.error) == (400, error)
    assert "access_token" not in reply.json()
    assert code not in reply.body.decode()
    assert (await gw.exchange(code)).status == 200


async def test_a_code_dies_after_five_wrong_verifiers(gw: OAuthGateway):
    code = await gw.seed_code(await gw.new_user())
    for _ in range(5):
        assert (await gw.exchange(code, code_verifier="w" * 43)).error == "invalid_grant"
    reply = await gw.exchange(code)
    assert (reply.status, reply.error) == (400, "invalid_grant")


@pytest.mark.parametrize("verifier", [VERIFIER, None], ids=["with-verifier", "without-verifier"])
async def test_a_code_stored_without_a_challenge_is_refused_with_or_without_a_verifier(
    gw: OAuthGateway, verifier: str | None
):
    code = await gw.seed_code(await gw.new_user(), challenge="")
    reply = await gw.exchange(code, code_verifier=verifier)
    assert reply.status == 400
    assert reply.error in ("invalid_grant", "invalid_request")


@pytest.mark.parametrize("delay", [0.0, 30.0], ids=["immediately", "after-30s"])
async def test_a_valid_replay_of_a_used_code_is_refused_and_revokes_what_the_first_exchange_issued(
    gw: OAuthGateway, delay: float
):
    code = await gw.seed_code(await gw.new_user())
    first = (await gw.exchange(code)).json()
    gw.clock.advance(delay)
    replay = await gw.exchange(code)
    assert (replay.status, replay.error) == (400, "invalid_grant")
    family = await _family_of(gw, first["refresh_token"])
    assert family.revoked_at is not None
    assert family.revoked_reason == "code_reuse"
    assert await _access_revoked(gw, first["access_token"])
    assert (await gw.refresh(first["refresh_token"])).error == "invalid_grant"


async def test_an_invalid_replay_of_a_used_code_revokes_nothing(gw: OAuthGateway):
    code = await gw.seed_code(await gw.new_user())
    first = (await gw.exchange(code)).json()
    for bad in ({"code_verifier": "w" * 43}, {"client_id": CLIENT_B}, {"redirect_uri": REDIRECT_URI + "x"}):
        assert (await gw.exchange(code, **bad)).error == "invalid_grant"
    family = await _family_of(gw, first["refresh_token"])
    assert family.revoked_at is None
    assert not await _access_revoked(gw, first["access_token"])


@pytest.mark.parametrize("backend", BACKENDS)
async def test_twenty_simultaneous_exchanges_of_one_code_over_two_instances_yield_exactly_one_success(
    backend: str, tmp_path: Path, clock: ManualClock
):
    db = Backend(backend, tmp_path)
    await db.start()
    try:
        first, second = await db.storage(), await db.storage(migrate=False)
        async with oauth_gateway(first, clock) as gw1, oauth_gateway(second, clock) as gw2:
            user = await gw1.new_user()
            code = await gw1.seed_code(user)
            barrier = asyncio.Event()

            async def exchange(gw: OAuthGateway) -> tuple[int, str | None]:
                await barrier.wait()
                reply = await gw.exchange(code)
                return reply.status, reply.error

            tasks = [asyncio.ensure_future(exchange(gw1 if i % 2 else gw2)) for i in range(20)]
            barrier.set()
            results = await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)
            assert sorted(results, key=str).count((200, None)) == 1
            assert [r for r in results if r != (200, None)] == [(400, "invalid_grant")] * 19
            # Never two live token sets: at most the winner's family, and valid duplicates revoke it.
            assert len(await first.list_families(user.id)) <= 1
            assert len(await first.list_families(user.id, include_revoked=True)) == 1
    finally:
        await db.close()


async def test_a_code_is_bound_to_its_client_and_public_clients_never_authenticate(gw: OAuthGateway):
    code = await gw.seed_code(await gw.new_user())
    other = await gw.exchange(code, client_id=CLIENT_B)
    assert (other.status, other.error) == (400, "invalid_grant")
    missing = await gw.exchange(code, client_id=None)
    assert (missing.status, missing.error) == (400, "invalid_request")
    form = {"grant_type": "authorization_code", "code": code, "code_verifier": VERIFIER, "client_id": CLIENT_A}
    basic = await gw.post(gw.token_url, form, headers={"Authorization": "Basic Y2xpZW50LWE6c2VjcmV0"})
    assert (basic.status, basic.error) == (401, "invalid_client")
    assert basic.headers["WWW-Authenticate"].startswith("Basic ")
    secret = await gw.exchange(code, client_secret="s3cret")
    assert secret.error == "invalid_client"
    assert (await gw.exchange(code)).status == 200


@pytest.mark.parametrize(
    ("given_at_authorize", "sent", "ok"),
    [
        (False, None, True),
        (True, REDIRECT_URI, True),
        (True, None, False),
        (True, "http://127.0.0.1:43123/other", False),
        (True, "http://127.0.0.1:50000/callback", False),
        (True, REDIRECT_URI + "/", False),
    ],
    ids=["omitted-not-given", "identical", "omitted-but-given", "other-path", "other-loopback-port", "slash"],
)
async def test_redirect_uri_must_repeat_the_authorization_request_exactly_and_a_mismatch_keeps_the_code(
    gw: OAuthGateway, given_at_authorize: bool, sent: str | None, ok: bool
):
    code = await gw.seed_code(await gw.new_user(), redirect_uri_given=given_at_authorize)
    reply = await gw.exchange(code, redirect_uri=sent)
    if ok:
        assert reply.status == 200
        return
    assert (reply.status, reply.error) == (400, "invalid_grant")
    assert (await gw.exchange(code)).status == 200


async def test_an_expired_code_is_refused(gw: OAuthGateway):
    code = await gw.seed_code(await gw.new_user())
    gw.clock.advance(gw.config.oauth.code_ttl)
    assert (await gw.exchange(code)).error == "invalid_grant"


async def test_a_code_of_a_disabled_user_is_refused_and_revokes_nothing(gw: OAuthGateway):
    user = await gw.new_user()
    code = await gw.seed_code(user)
    await gw.storage.set_disabled(user.id, gw.clock.now())
    assert (await gw.exchange(code)).error == "invalid_grant"
    assert await gw.storage.list_families(user.id, include_revoked=True) == []


async def test_a_code_is_refused_after_the_user_revoked_the_app(gw: OAuthGateway):
    user = await gw.new_user()
    code = await gw.seed_code(user)
    await gw.storage.revoke_user_families(user.id, now=gw.clock.now(), reason="user", client_id=CLIENT_A)
    assert (await gw.exchange(code)).error == "invalid_grant"


async def test_a_resource_other_than_the_codes_is_invalid_target_and_keeps_the_code(gw: OAuthGateway):
    code = await gw.seed_code(await gw.new_user())
    reply = await gw.exchange(code, resource="https://other.example/mcp")
    assert (reply.status, reply.error) == (400, "invalid_target")
    assert (await gw.exchange(code)).status == 200


@pytest.mark.parametrize("resource", [None, "canonical", "trailing-slash"])
async def test_an_omitted_or_trailing_slash_resource_binds_the_token_to_the_canonical_resource(
    gw: OAuthGateway, resource: str | None
):
    sent = {None: None, "canonical": gw.resource, "trailing-slash": gw.resource + "/"}[resource]
    reply = await gw.exchange(await gw.seed_code(await gw.new_user()), resource=sent)
    assert reply.status == 200
    access = await gw.storage.get_access_token(secret_hash(reply.json()["access_token"]))
    assert access is not None
    assert access.resource == gw.resource


@pytest.mark.parametrize(
    ("content_type", "body", "status", "error"),
    [
        ("application/json", '{"grant_type": "authorization_code"}', 400, "invalid_request"),
        ("text/plain; x=application/x-www-form-urlencoded", "grant_type=authorization_code", 400, "invalid_request"),
        ("application/x-www-form-urlencoded; charset=iso-8859-1", "grant_type=refresh_token", 400, "invalid_request"),
        ("application/x-www-form-urlencoded", "client_id=client-a", 400, "invalid_request"),
        ("application/x-www-form-urlencoded", "client_id=client-a&grant_type=password", 400, "unsupported_grant_type"),
        (
            "application/x-www-form-urlencoded",
            "client_id=client-a&grant_type=client_credentials",
            400,
            "unsupported_grant_type",
        ),
        (
            "application/x-www-form-urlencoded",
            "client_id=client-a&grant_type=urn:ietf:params:oauth:grant-type:device_code",
            400,
            "unsupported_grant_type",
        ),
        ("application/x-www-form-urlencoded", b"client_id=client-a&grant_type=\xff\xfe", 400, "invalid_request"),
        ("application/x-www-form-urlencoded", "client_id=client-a&grant_type=%FF%FE", 400, "invalid_request"),
        ("application/x-www-form-urlencoded", "x=" + "a" * 2_000_000, 413, "invalid_request"),
    ],
    ids=[
        "json",
        "form-type-in-a-parameter",
        "latin1",
        "no-grant-type",
        "password",
        "client-credentials",
        "device-code",
        "invalid-utf8",
        "invalid-utf8-escaped",
        "2mb",
    ],
)
async def test_hostile_wire_formats_get_a_clean_oauth_error_with_no_store(
    gw: OAuthGateway, content_type: str, body: str | bytes, status: int, error: str
):
    reply = await gw.post(gw.token_url, body, headers={"Content-Type": content_type})
    assert (reply.status, reply.error) == (status, error)
    assert reply.headers["Cache-Control"] == "no-store"


async def test_a_repeated_parameter_is_invalid_request_and_the_code_is_not_echoed(gw: OAuthGateway):
    code = await gw.seed_code(await gw.new_user())
    form = [
        ("grant_type", "authorization_code"),
        ("client_id", CLIENT_A),
        ("code", code),
        ("code", code),
        ("code_verifier", VERIFIER),
        ("redirect_uri", REDIRECT_URI),
    ]
    reply = await gw.post(gw.token_url, form)
    assert (reply.status, reply.error) == (400, "invalid_request")
    assert code not in reply.body.decode()
    assert (await gw.exchange(code)).status == 200


async def test_get_on_the_token_endpoint_is_405(gw: OAuthGateway):
    async with gw.http.get(gw.token_url) as response:
        assert response.status == 405
        assert response.headers["Cache-Control"] == "no-store"


async def test_the_token_endpoint_answers_a_cors_preflight_from_any_origin_without_credentials(gw: OAuthGateway):
    headers = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    async with gw.http.options(gw.token_url, headers=headers) as response:
        assert response.status == 204
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        assert "POST" in response.headers["Access-Control-Allow-Methods"]
        assert "Access-Control-Allow-Credentials" not in response.headers
    error = await gw.exchange("nope")
    assert error.headers["Access-Control-Allow-Origin"] == "*"


async def test_an_access_token_refresh_token_or_api_key_presented_as_a_code_is_invalid_grant(gw: OAuthGateway):
    user = await gw.new_user()
    tokens = await gw.tokens(user)
    api_key = await gw.accounts().create_key(user, name="k")
    for wrong in (tokens["access_token"], tokens["refresh_token"], api_key[1].key, "gwac_short"):
        reply = await gw.exchange(wrong)
        assert (reply.status, reply.error) == (400, "invalid_grant")
    assert (await _family_of(gw, tokens["refresh_token"])).revoked_at is None


async def test_a_database_outage_during_an_exchange_or_a_refresh_is_503_with_retry_after_and_loses_nothing(
    sqlite_storage: Storage, clock: ManualClock
):
    async with oauth_gateway(sqlite_storage, clock) as healthy:
        user = await healthy.new_user()
        tokens = await healthy.tokens(user)
        code = await healthy.seed_code(user)
    async with oauth_gateway(sqlite_storage, clock, grants=UnavailableOnWrite(sqlite_storage)) as failing:
        for reply in (await failing.exchange(code), await failing.refresh(tokens["refresh_token"])):
            assert (reply.status, reply.error) == (503, "temporarily_unavailable")
            assert reply.headers["Retry-After"].isdigit()
    async with oauth_gateway(sqlite_storage, clock) as healthy:
        assert (await healthy.exchange(code)).status == 200
        assert (await healthy.refresh(tokens["refresh_token"])).status == 200


async def test_a_chunked_body_over_the_bound_is_413(gw: OAuthGateway):
    async def chunks() -> AsyncIterator[bytes]:
        yield b"grant_type=refresh_token&x="
        for _ in range(64):
            yield b"a" * 1024

    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    async with gw.http.post(gw.token_url, data=chunks(), headers=headers) as response:
        assert response.status == 413
        assert (await response.json())["error"] == "invalid_request"


# --- refresh_token: rotation and families (53-62) ---


@pytest.fixture
async def scoped_gw(sqlite_storage: Storage, clock: ManualClock) -> AsyncIterator[OAuthGateway]:
    overrides = {"oauth": {"scopes_supported": ["mcp:tools", "mcp:read"], "default_scopes": ["mcp:tools"]}}
    async with oauth_gateway(sqlite_storage, clock, overrides=overrides) as gateway:
        yield gateway


async def test_every_refresh_rotates_and_a_narrower_scope_applies_only_to_the_access_token(scoped_gw: OAuthGateway):
    gw = scoped_gw
    first = await gw.tokens(scope="mcp:tools mcp:read")
    second = await gw.refresh(first["refresh_token"], scope="mcp:read offline_access")
    assert second.status == 200
    body2 = second.json()
    assert body2["scope"] == "mcp:read"
    assert body2["refresh_token"] != first["refresh_token"]
    access2 = await gw.storage.get_access_token(secret_hash(body2["access_token"]))
    assert access2 is not None
    assert access2.scope == "mcp:read"
    old = await gw.storage.get_refresh_token(secret_hash(first["refresh_token"]))
    assert old is not None
    assert old.used_at is not None
    third = (await gw.refresh(body2["refresh_token"])).json()
    assert third["scope"] == "mcp:tools mcp:read"
    assert len({first["refresh_token"], body2["refresh_token"], third["refresh_token"]}) == 3
    family = await _family_of(gw, third["refresh_token"])
    assert family.scope == "mcp:tools mcp:read"


async def test_reuse_after_the_grace_window_revokes_that_family_only(
    gw: OAuthGateway, caplog: pytest.LogCaptureFixture
):
    user = await gw.new_user()
    first = await gw.tokens(user)
    other = await gw.tokens(user)
    second = (await gw.refresh(first["refresh_token"])).json()
    gw.clock.advance(gw.config.oauth.refresh_grace_seconds + 1)
    with caplog.at_level(logging.WARNING, logger="gateway.oauth.token"):
        reuse = await gw.refresh(first["refresh_token"])
    assert (reuse.status, reuse.error) == (400, "invalid_grant")
    family = await _family_of(gw, second["refresh_token"])
    assert (family.revoked_at is not None, family.revoked_reason) == (True, "refresh_reuse")
    assert await _access_revoked(gw, second["access_token"])
    assert (await gw.refresh(second["refresh_token"])).error == "invalid_grant"
    assert (await gw.refresh(other["refresh_token"])).status == 200
    records = [r for r in caplog.records if r.getMessage() == "refresh token reuse detected"]
    assert len(records) == 1
    assert records[0].__dict__["family_id"] == family.family_id
    secrets = (first["refresh_token"], second["refresh_token"], second["access_token"])
    assert not any(s in caplog.text or s in str(r.__dict__) for s in secrets for r in caplog.records)


async def test_a_lost_response_is_answered_again_with_the_same_pair_up_to_the_replay_limit_then_refused(
    gw: OAuthGateway,
):
    first = await gw.tokens()
    lost = (await gw.refresh(first["refresh_token"])).json()
    for _ in range(gw.config.oauth.refresh_grace_max_replays):
        gw.clock.advance(1)
        again = await gw.refresh(first["refresh_token"])
        assert again.status == 200
        body = again.json()
        assert (body["access_token"], body["refresh_token"]) == (lost["access_token"], lost["refresh_token"])
        assert body["expires_in"] <= lost["expires_in"]
    over = await gw.refresh(first["refresh_token"])
    assert over.error == "invalid_grant"
    # Past the budget but inside the window: parallel refreshes, so the family survives ...
    assert (await _family_of(gw, lost["refresh_token"])).revoked_at is None
    # ... while after the window the same replay is reuse, and revokes it.
    gw.clock.advance(gw.config.oauth.refresh_grace_seconds)
    assert (await gw.refresh(first["refresh_token"])).error == "invalid_grant"
    assert (await _family_of(gw, lost["refresh_token"])).revoked_reason == "refresh_reuse"


async def test_grace_never_covers_tokens_older_than_the_immediate_predecessor(gw: OAuthGateway):
    rt1 = (await gw.tokens())["refresh_token"]
    rt2 = (await gw.refresh(rt1)).json()["refresh_token"]
    rt3 = (await gw.refresh(rt2)).json()["refresh_token"]
    assert (await gw.refresh(rt1)).error == "invalid_grant"
    assert (await _family_of(gw, rt3)).revoked_reason == "refresh_reuse"
    assert (await gw.refresh(rt3)).error == "invalid_grant"


async def test_grace_never_resurrects_a_revoked_family(gw: OAuthGateway):
    rt1 = (await gw.tokens())["refresh_token"]
    rt2 = (await gw.refresh(rt1)).json()["refresh_token"]
    assert (await gw.revoke(rt2)).status == 200
    assert (await gw.refresh(rt1)).error == "invalid_grant"
    assert (await _family_of(gw, rt2)).revoked_reason == "revoked_by_client"


@pytest.mark.parametrize("backend", BACKENDS)
async def test_twenty_simultaneous_refreshes_of_one_token_over_two_instances_all_get_the_same_pair(
    backend: str, tmp_path: Path, clock: ManualClock
):
    db = Backend(backend, tmp_path)
    await db.start()
    overrides = {"oauth": {"refresh_grace_max_replays": 20}}
    try:
        first, second = await db.storage(), await db.storage(migrate=False)
        async with (
            oauth_gateway(first, clock, overrides=overrides) as gw1,
            oauth_gateway(second, clock, overrides=overrides) as gw2,
        ):
            rt1 = (await gw1.tokens())["refresh_token"]
            barrier = asyncio.Event()

            async def refresh(gw: OAuthGateway) -> tuple[int, tuple[str, str] | None]:
                await barrier.wait()
                reply = await gw.refresh(rt1)
                body = reply.json()
                return reply.status, (body["access_token"], body["refresh_token"]) if reply.status == 200 else None

            tasks = [asyncio.ensure_future(refresh(gw1 if i % 2 else gw2)) for i in range(20)]
            barrier.set()
            results = await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)
            assert {status for status, _ in results} == {200}
            pairs = {pair for _, pair in results}
            assert len(pairs) == 1
            ((_, rt2),) = pairs
            family = await _family_of(gw1, rt2)
            assert family.revoked_at is None
            current = await first.get_refresh_token(secret_hash(rt2))
            retired = await first.get_refresh_token(secret_hash(rt1))
            assert current is not None
            assert current.used_at is None
            assert current.generation == 2
            assert retired is not None
            assert retired.used_at is not None
            assert (await gw2.refresh(rt2)).status == 200
    finally:
        await db.close()


async def test_a_live_refresh_token_under_another_client_id_is_refused_and_its_family_revoked(gw: OAuthGateway):
    tokens = await gw.tokens()
    missing = await gw.refresh(tokens["refresh_token"], client_id=None)
    assert (missing.status, missing.error) == (400, "invalid_request")
    assert (await _family_of(gw, tokens["refresh_token"])).revoked_at is None
    other = await gw.refresh(tokens["refresh_token"], client_id=CLIENT_B)
    assert (other.status, other.error) == (400, "invalid_grant")
    assert (await _family_of(gw, tokens["refresh_token"])).revoked_reason == "client_mismatch"
    assert (await gw.refresh(tokens["refresh_token"])).error == "invalid_grant"


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"scope": "mcp:tools mcp:read"}, "invalid_scope"),
        ({"scope": "admin"}, "invalid_scope"),
        ({"resource": "https://other.example/mcp"}, "invalid_target"),
    ],
    ids=["wider-scope", "unknown-scope", "other-resource"],
)
async def test_escalation_on_refresh_is_refused_and_leaves_the_family_untouched(
    scoped_gw: OAuthGateway, params: dict[str, str], error: str
):
    gw = scoped_gw
    tokens = await gw.tokens(scope="mcp:tools")
    reply = await gw.refresh(tokens["refresh_token"], **params)
    assert (reply.status, reply.error) == (400, error)
    row = await gw.storage.get_refresh_token(secret_hash(tokens["refresh_token"]))
    assert row is not None
    assert row.used_at is None
    family = await _family_of(gw, tokens["refresh_token"])
    assert family.revoked_at is None
    assert family.last_used_at is None
    assert (await gw.refresh(tokens["refresh_token"], resource=gw.resource + "/")).status == 200


async def test_a_refresh_of_a_disabled_user_is_refused(gw: OAuthGateway):
    user = await gw.new_user()
    tokens = await gw.tokens(user)
    await gw.storage.set_disabled(user.id, gw.clock.now())
    assert (await gw.refresh(tokens["refresh_token"])).error == "invalid_grant"


@pytest.fixture
async def short_lived_gw(sqlite_storage: Storage, clock: ManualClock) -> AsyncIterator[OAuthGateway]:
    overrides = {
        "oauth": {"access_token_ttl": 3600, "refresh_token_idle_ttl": 4000, "refresh_token_absolute_ttl": 5000}
    }
    async with oauth_gateway(sqlite_storage, clock, overrides=overrides) as gateway:
        yield gateway


async def test_a_refresh_token_unused_for_the_idle_timeout_is_dead(short_lived_gw: OAuthGateway):
    gw = short_lived_gw
    tokens = await gw.tokens()
    gw.clock.advance(4000)
    assert (await gw.refresh(tokens["refresh_token"])).error == "invalid_grant"


async def test_rotation_never_extends_the_family_and_clamps_the_access_token_to_its_remaining_life(
    short_lived_gw: OAuthGateway,
):
    gw = short_lived_gw
    start = gw.clock.now()
    rt = (await gw.tokens())["refresh_token"]
    gw.clock.advance(3000)
    second = (await gw.refresh(rt)).json()
    assert second["expires_in"] == 2000
    row = await gw.storage.get_refresh_token(secret_hash(second["refresh_token"]))
    assert row is not None
    assert row.expires_at == pytest.approx(start + 5000)
    gw.clock.advance(1900)
    third = (await gw.refresh(second["refresh_token"])).json()
    assert third["expires_in"] == 100
    gw.clock.advance(100)
    assert (await gw.refresh(third["refresh_token"])).error == "invalid_grant"


async def test_garbage_and_other_secrets_as_a_refresh_token_are_refused_without_revoking_anything(gw: OAuthGateway):
    user = await gw.new_user()
    tokens = await gw.tokens(user)
    code = await gw.seed_code(user)
    api_key = (await gw.accounts().create_key(user, name="k"))[1].key
    for wrong in (tokens["access_token"], code, api_key, "x" * 10_000, "gwrt_" + "é" * 43, "gwrt_" + "A" * 43):
        reply = await gw.refresh(wrong)
        assert (reply.status, reply.error) == (400, "invalid_grant")
    empty = await gw.post(gw.token_url, {"grant_type": "refresh_token", "refresh_token": "", "client_id": CLIENT_A})
    assert (empty.status, empty.error) == (400, "invalid_request")
    assert (await _family_of(gw, tokens["refresh_token"])).revoked_at is None
    assert (await gw.refresh(tokens["refresh_token"])).status == 200
