"""The OAuth storage contract of ``gateway.storage.oauth``, run against every backend."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TypeVar

import pytest

from gateway.storage import (
    AccessToken,
    AuthorizationCode,
    AuthorizationRequest,
    BrowserSession,
    Conflict,
    Consent,
    OAuthClient,
    RefreshToken,
    RotateOutcome,
    Storage,
    StorageError,
    TokenFamily,
    User,
)
from tests.storage.test_conformance import make_key
from tests.support.databases import Backend

T = TypeVar("T")

T0 = 1_700_000_000.0
MINUTE = 60.0
HOUR = 3600.0
DAY = 86400.0
REDIRECT = "https://app.example/callback"
OTHER_REDIRECT = "http://127.0.0.1:8765/callback"
RESOURCE = "https://gateway.example/mcp"


def digest() -> str:
    return hashlib.sha256(secrets.token_bytes(16)).hexdigest()


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


async def add_user(storage: Storage) -> User:
    return await storage.create_user(
        user_id=new_id("usr"), email=f"{new_id('u')}@example.com", password_hash="argon2$hash", now=T0
    )


def make_client(*, created_at: float = T0, metadata_hash: str | None = None, name: str = "Claude") -> OAuthClient:
    return OAuthClient(
        client_id=new_id("cli"),
        client_name=name,
        redirect_uris=(REDIRECT, OTHER_REDIRECT),
        grant_types=("authorization_code", "refresh_token"),
        response_types=("code",),
        scope="mcp",
        application_type="native",
        client_uri="https://app.example",
        logo_uri=None,
        metadata_hash=metadata_hash or digest(),
        created_at=created_at,
    )


def make_request(*, expires_at: float = T0 + 10 * MINUTE, redirect_uri_given: bool = True) -> AuthorizationRequest:
    return AuthorizationRequest(
        request_hash=digest(),
        browser_hash=digest(),
        csrf_hash=digest(),
        client_id="cli_a",
        redirect_uri=REDIRECT,
        redirect_uri_given=redirect_uri_given,
        state="xyz",
        code_challenge="E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        scope="mcp",
        resource=RESOURCE,
        created_at=T0,
        expires_at=expires_at,
    )


def make_code(
    user: User, *, client_id: str = "cli_a", redirect_uri: str = REDIRECT, expires_at: float = T0 + MINUTE
) -> AuthorizationCode:
    return AuthorizationCode(
        code_hash=digest(),
        client_id=client_id,
        user_id=user.id,
        redirect_uri=redirect_uri,
        redirect_uri_given=False,
        code_challenge="E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        scope="mcp",
        resource=RESOURCE,
        created_at=T0,
        expires_at=expires_at,
    )


def make_family(code: AuthorizationCode, *, created_at: float = T0, expires_at: float = T0 + 30 * DAY) -> TokenFamily:
    return TokenFamily(
        family_id=new_id("fam"),
        user_id=code.user_id,
        client_id=code.client_id,
        redirect_uri=code.redirect_uri,
        scope=code.scope,
        resource=code.resource,
        created_at=created_at,
        expires_at=expires_at,
    )


def make_access(family: TokenFamily, *, created_at: float = T0, expires_at: float = T0 + HOUR) -> AccessToken:
    return AccessToken(
        token_hash=digest(),
        family_id=family.family_id,
        user_id=family.user_id,
        client_id=family.client_id,
        scope=family.scope,
        resource=family.resource,
        created_at=created_at,
        expires_at=expires_at,
    )


def make_refresh(
    family: TokenFamily, *, generation: int = 1, created_at: float = T0, expires_at: float = T0 + 7 * DAY
) -> RefreshToken:
    return RefreshToken(
        token_hash=digest(),
        family_id=family.family_id,
        generation=generation,
        created_at=created_at,
        expires_at=expires_at,
    )


async def add_grant(
    storage: Storage,
    user: User,
    *,
    client_id: str = "cli_a",
    redirect_uri: str = REDIRECT,
    created_at: float = T0,
    expires_at: float = T0 + 30 * DAY,
) -> tuple[TokenFamily, AccessToken, RefreshToken]:
    """A redeemed code: its family with a first access and refresh token."""
    code = make_code(user, client_id=client_id, redirect_uri=redirect_uri, expires_at=created_at + MINUTE)
    await storage.create_code(code)
    family = make_family(code, created_at=created_at, expires_at=expires_at)
    access, refresh = make_access(family, created_at=created_at), make_refresh(family, created_at=created_at)
    assert await storage.redeem_code(code.code_hash, now=created_at, family=family, access=access, refresh=refresh)
    return family, access, refresh


async def rotate(
    storage: Storage, refresh: RefreshToken, *, now: float = T0 + HOUR, blob: bytes = b"sealed pair"
) -> tuple[RotateOutcome, AccessToken, RefreshToken]:
    """Rotate ``refresh`` (whose family exists) to a fresh access and refresh token, with a one-minute grace."""
    family = await storage.get_family(refresh.family_id)
    assert family is not None
    access = make_access(family, created_at=now, expires_at=now + HOUR)
    successor = make_refresh(family, generation=refresh.generation + 1, created_at=now, expires_at=now + 7 * DAY)
    outcome = await storage.rotate_refresh_token(
        refresh.token_hash, now=now, access=access, refresh=successor, grace_until=now + MINUTE, grace_blob=blob
    )
    return outcome, access, successor


async def race(count: int, call: Callable[[int], Awaitable[T]]) -> list[T]:
    """Start ``count`` calls together (a barrier releases them at once) and gather their results."""
    barrier = asyncio.Barrier(count)

    async def one(index: int) -> T:
        await barrier.wait()
        return await call(index)

    return list(await asyncio.gather(*(one(index) for index in range(count))))


# Clients


async def test_a_created_client_reads_back_with_every_field(storage: Storage) -> None:
    client = make_client()
    assert await storage.create_client(client) == client
    assert await storage.get_client(client.client_id) == client
    assert await storage.count_clients() == 1


async def test_an_unknown_client_reads_as_none(storage: Storage) -> None:
    assert await storage.get_client("cli_missing") is None
    assert await storage.count_clients() == 0


async def test_registering_identical_metadata_again_returns_the_first_client_unchanged(storage: Storage) -> None:
    first = await storage.create_client(make_client())
    again = await storage.create_client(make_client(metadata_hash=first.metadata_hash, name="Other", created_at=T0 + 9))
    assert again == first
    assert await storage.count_clients() == 1


async def test_a_reused_client_id_with_other_metadata_is_a_conflict(storage: Storage) -> None:
    first = await storage.create_client(make_client())
    with pytest.raises(Conflict):
        await storage.create_client(replace(make_client(), client_id=first.client_id))


async def test_concurrent_identical_registrations_on_two_instances_share_one_client(backend: Backend) -> None:
    first, second = await backend.storage(), await backend.storage(migrate=False)
    metadata_hash = digest()
    clients = await race(20, lambda i: (first, second)[i % 2].create_client(make_client(metadata_hash=metadata_hash)))
    assert len({client.client_id for client in clients}) == 1
    assert await first.count_clients() == 1


async def test_marking_a_client_used_records_the_time_never_backwards_and_ignores_unknown_ones(
    storage: Storage,
) -> None:
    client = await storage.create_client(make_client())
    await storage.mark_client_used(client.client_id, T0 + 50)
    await storage.mark_client_used(client.client_id, T0 + 10)
    await storage.mark_client_used("cli_missing", T0 + 50)
    assert await storage.get_client(client.client_id) == replace(client, last_used_at=T0 + 50)


async def test_deleting_unused_clients_removes_only_never_used_ones_created_before_the_cutoff(
    storage: Storage,
) -> None:
    old_unused = await storage.create_client(make_client(created_at=T0))
    old_used = await storage.create_client(make_client(created_at=T0))
    young_unused = await storage.create_client(make_client(created_at=T0 + DAY))
    await storage.mark_client_used(old_used.client_id, T0 + 5)
    assert await storage.delete_unused_clients(created_before=T0 + HOUR) == 1
    assert await storage.get_client(old_unused.client_id) is None
    assert await storage.get_client(old_used.client_id) is not None
    assert await storage.get_client(young_unused.client_id) is not None
    assert await storage.delete_unused_clients(created_before=T0 + HOUR) == 0


# Authorization requests


@pytest.mark.parametrize("given", [True, False])
async def test_an_authorization_request_reads_back_with_every_field(storage: Storage, given: bool) -> None:
    request = make_request(redirect_uri_given=given)
    await storage.create_authorization_request(request)
    assert await storage.get_authorization_request(request.request_hash) == request
    assert await storage.get_authorization_request(digest()) is None


async def test_setting_the_user_works_until_the_request_is_completed(storage: Storage) -> None:
    user, other = await add_user(storage), await add_user(storage)
    request = make_request()
    await storage.create_authorization_request(request)
    assert await storage.set_authorization_user(request.request_hash, user.id)
    assert await storage.complete_authorization_request(request.request_hash, now=T0 + 5)
    assert not await storage.set_authorization_user(request.request_hash, other.id)
    assert await storage.get_authorization_request(request.request_hash) == replace(
        request, user_id=user.id, completed_at=T0 + 5
    )
    assert not await storage.set_authorization_user(digest(), user.id)


async def test_a_request_completes_once_and_keeps_the_first_time(storage: Storage) -> None:
    request = make_request()
    await storage.create_authorization_request(request)
    assert await storage.complete_authorization_request(request.request_hash, now=T0 + 1)
    assert not await storage.complete_authorization_request(request.request_hash, now=T0 + 2)
    stored = await storage.get_authorization_request(request.request_hash)
    assert stored is not None
    assert stored.completed_at == T0 + 1
    assert not await storage.complete_authorization_request(digest(), now=T0)


async def test_concurrent_completions_on_two_instances_succeed_exactly_once(backend: Backend) -> None:
    first, second = await backend.storage(), await backend.storage(migrate=False)
    request = make_request()
    await first.create_authorization_request(request)
    results = await race(
        20, lambda i: (first, second)[i % 2].complete_authorization_request(request.request_hash, now=T0 + i)
    )
    assert results.count(True) == 1


async def test_purging_requests_removes_only_expired_ones(storage: Storage) -> None:
    expired, live = make_request(expires_at=T0 + 10), make_request(expires_at=T0 + 100)
    for request in (expired, live):
        await storage.create_authorization_request(request)
    assert await storage.purge_authorization_requests(expired_before=T0 + 50) == 1
    assert await storage.get_authorization_request(expired.request_hash) is None
    assert await storage.get_authorization_request(live.request_hash) == live


# Codes


async def test_a_created_code_reads_back_unused(storage: Storage) -> None:
    code = make_code(await add_user(storage))
    await storage.create_code(code)
    assert await storage.get_code(code.code_hash) == code
    assert await storage.get_code(digest()) is None


async def test_code_failures_are_counted_and_the_code_is_spent_at_the_limit(storage: Storage) -> None:
    user = await add_user(storage)
    code = make_code(user)
    await storage.create_code(code)
    await storage.record_code_failure(code.code_hash, max_failures=3, now=T0 + 1)
    await storage.record_code_failure(code.code_hash, max_failures=3, now=T0 + 2)
    assert await storage.get_code(code.code_hash) == replace(code, failed_attempts=2)
    await storage.record_code_failure(code.code_hash, max_failures=3, now=T0 + 3)
    assert await storage.get_code(code.code_hash) == replace(code, failed_attempts=3, used_at=T0 + 3)
    family = make_family(code)
    assert not await storage.redeem_code(
        code.code_hash, now=T0 + 4, family=family, access=make_access(family), refresh=None
    )
    await storage.record_code_failure(digest(), max_failures=3, now=T0)  # unknown codes are ignored


async def test_redeeming_a_code_links_it_to_its_family_and_stores_the_tokens(storage: Storage) -> None:
    code = make_code(await add_user(storage))
    await storage.create_code(code)
    family = make_family(code)
    access, refresh = make_access(family), make_refresh(family)
    assert await storage.redeem_code(code.code_hash, now=T0 + 5, family=family, access=access, refresh=refresh)
    assert await storage.get_code(code.code_hash) == replace(code, used_at=T0 + 5, family_id=family.family_id)
    assert await storage.get_family(family.family_id) == family
    assert await storage.get_access_token(access.token_hash) == access
    assert await storage.get_refresh_token(refresh.token_hash) == refresh


async def test_redeeming_without_a_refresh_token_stores_only_the_access_token(storage: Storage) -> None:
    code = make_code(await add_user(storage))
    await storage.create_code(code)
    family = make_family(code)
    access = make_access(family)
    assert await storage.redeem_code(code.code_hash, now=T0, family=family, access=access, refresh=None)
    assert await storage.get_access_token(access.token_hash) == access
    assert await storage.get_family(family.family_id) == family


async def test_a_code_redeems_only_once_and_a_replay_writes_nothing(storage: Storage) -> None:
    code = make_code(await add_user(storage))
    await storage.create_code(code)
    first = make_family(code)
    assert await storage.redeem_code(code.code_hash, now=T0, family=first, access=make_access(first), refresh=None)
    second = make_family(code)
    access = make_access(second)
    assert not await storage.redeem_code(code.code_hash, now=T0 + 1, family=second, access=access, refresh=None)
    assert await storage.get_family(second.family_id) is None
    assert await storage.get_access_token(access.token_hash) is None
    stored = await storage.get_code(code.code_hash)
    assert stored is not None
    assert stored.family_id == first.family_id
    assert stored.used_at == T0


async def test_an_expired_or_unknown_code_does_not_redeem_and_nothing_is_written(storage: Storage) -> None:
    code = make_code(await add_user(storage), expires_at=T0 + MINUTE)
    await storage.create_code(code)
    family = make_family(code)
    access = make_access(family)
    assert not await storage.redeem_code(code.code_hash, now=T0 + MINUTE, family=family, access=access, refresh=None)
    assert not await storage.redeem_code(digest(), now=T0, family=family, access=access, refresh=None)
    assert await storage.get_code(code.code_hash) == code
    assert await storage.get_family(family.family_id) is None
    assert await storage.get_access_token(access.token_hash) is None


async def test_a_redemption_failing_midway_leaves_the_code_unused(storage: Storage) -> None:
    code = make_code(await add_user(storage))
    await storage.create_code(code)
    family = replace(make_family(code), user_id="usr_missing")
    with pytest.raises(StorageError):
        await storage.redeem_code(code.code_hash, now=T0, family=family, access=make_access(family), refresh=None)
    taken, _, _ = await add_grant(storage, await add_user(storage))
    clash = replace(make_family(code), family_id=taken.family_id)
    with pytest.raises(Conflict):
        await storage.redeem_code(code.code_hash, now=T0, family=clash, access=make_access(clash), refresh=None)
    assert await storage.get_code(code.code_hash) == code
    good = make_family(code)
    assert await storage.redeem_code(code.code_hash, now=T0, family=good, access=make_access(good), refresh=None)


async def test_twenty_concurrent_redemptions_of_one_code_on_two_instances_succeed_exactly_once(
    backend: Backend,
) -> None:
    first, second = await backend.storage(), await backend.storage(migrate=False)
    user = await add_user(first)
    code = make_code(user)
    await first.create_code(code)
    families = [make_family(code) for _ in range(20)]
    accesses = [make_access(family) for family in families]
    refreshes = [make_refresh(family) for family in families]
    results = await race(
        20,
        lambda i: (first, second)[i % 2].redeem_code(
            code.code_hash, now=T0 + 1, family=families[i], access=accesses[i], refresh=refreshes[i]
        ),
    )
    assert results.count(True) == 1
    winner = results.index(True)
    assert [family.family_id for family in await second.list_families(user.id)] == [families[winner].family_id]
    stored = await second.get_code(code.code_hash)
    assert stored is not None
    assert stored.family_id == families[winner].family_id
    assert [await first.get_access_token(access.token_hash) is not None for access in accesses].count(True) == 1
    assert [await first.get_refresh_token(refresh.token_hash) is not None for refresh in refreshes].count(True) == 1


# Refresh token rotation


async def test_rotating_the_current_token_retires_it_and_stores_the_successors(storage: Storage) -> None:
    family, _, refresh = await add_grant(storage, await add_user(storage))
    outcome, access, successor = await rotate(storage, refresh, now=T0 + HOUR, blob=b"\x00sealed\xff")
    assert outcome is RotateOutcome.ROTATED
    assert await storage.get_refresh_token(refresh.token_hash) == replace(
        refresh, used_at=T0 + HOUR, grace_until=T0 + HOUR + MINUTE, grace_blob=b"\x00sealed\xff"
    )
    assert await storage.get_refresh_token(successor.token_hash) == successor
    assert await storage.get_access_token(access.token_hash) == access
    assert await storage.get_family(family.family_id) == replace(family, last_used_at=T0 + HOUR)


async def test_rotating_a_retired_token_again_is_retired_and_writes_nothing(storage: Storage) -> None:
    _, _, refresh = await add_grant(storage, await add_user(storage))
    await rotate(storage, refresh, now=T0 + HOUR)
    retired = await storage.get_refresh_token(refresh.token_hash)
    outcome, access, successor = await rotate(storage, refresh, now=T0 + 2 * HOUR)
    assert outcome is RotateOutcome.RETIRED
    assert await storage.get_refresh_token(refresh.token_hash) == retired
    assert await storage.get_refresh_token(successor.token_hash) is None
    assert await storage.get_access_token(access.token_hash) is None


async def test_reusing_a_retired_token_after_its_idle_expiry_is_still_retired(storage: Storage) -> None:
    _, _, refresh = await add_grant(storage, await add_user(storage))
    await rotate(storage, refresh, now=T0 + HOUR)
    outcome, _, _ = await rotate(storage, refresh, now=refresh.expires_at + DAY)
    assert outcome is RotateOutcome.RETIRED


async def test_rotating_an_expired_token_is_dead_and_writes_nothing(storage: Storage) -> None:
    family, _, refresh = await add_grant(storage, await add_user(storage))
    outcome, access, successor = await rotate(storage, refresh, now=refresh.expires_at)
    assert outcome is RotateOutcome.DEAD
    assert await storage.get_refresh_token(refresh.token_hash) == refresh
    assert await storage.get_refresh_token(successor.token_hash) is None
    assert await storage.get_access_token(access.token_hash) is None
    assert await storage.get_family(family.family_id) == family


async def test_rotating_in_a_revoked_family_is_dead_and_writes_nothing(storage: Storage) -> None:
    family, _, refresh = await add_grant(storage, await add_user(storage))
    assert await storage.revoke_family(family.family_id, now=T0 + 1, reason="logout")
    outcome, access, successor = await rotate(storage, refresh, now=T0 + HOUR)
    assert outcome is RotateOutcome.DEAD
    assert await storage.get_refresh_token(successor.token_hash) is None
    assert await storage.get_access_token(access.token_hash) is None


async def test_an_unused_token_of_a_family_marked_revoked_is_dead(backend: Backend) -> None:
    storage = await backend.storage()
    family, _, refresh = await add_grant(storage, await add_user(storage))
    await backend.execute(f"UPDATE token_families SET revoked_at = 1 WHERE family_id = '{family.family_id}'")
    outcome, _, successor = await rotate(storage, refresh, now=T0 + HOUR)
    assert outcome is RotateOutcome.DEAD
    assert await storage.get_refresh_token(refresh.token_hash) == refresh
    assert await storage.get_refresh_token(successor.token_hash) is None


async def test_rotating_in_an_ended_family_is_dead_even_with_a_fresh_token(storage: Storage) -> None:
    family, _, refresh = await add_grant(storage, await add_user(storage), expires_at=T0 + HOUR)
    outcome, _, successor = await rotate(storage, refresh, now=T0 + HOUR)
    assert outcome is RotateOutcome.DEAD
    assert await storage.get_refresh_token(refresh.token_hash) == refresh
    assert await storage.get_refresh_token(successor.token_hash) is None
    assert await storage.get_family(family.family_id) == family


async def test_rotating_an_unknown_token_is_dead(storage: Storage) -> None:
    family, _, _ = await add_grant(storage, await add_user(storage))
    outcome, _, successor = await rotate(storage, make_refresh(family), now=T0 + HOUR)
    assert outcome is RotateOutcome.DEAD
    assert await storage.get_refresh_token(successor.token_hash) is None


async def test_twenty_concurrent_rotations_of_one_token_on_two_instances_rotate_exactly_once(
    backend: Backend,
) -> None:
    first, second = await backend.storage(), await backend.storage(migrate=False)
    _, _, refresh = await add_grant(first, await add_user(first))
    results = await race(20, lambda i: rotate((first, second)[i % 2], refresh, now=T0 + HOUR + i))
    outcomes = [outcome for outcome, _, _ in results]
    assert outcomes.count(RotateOutcome.ROTATED) == 1
    assert outcomes.count(RotateOutcome.RETIRED) == 19
    stored = [
        (await second.get_access_token(access.token_hash), await second.get_refresh_token(successor.token_hash))
        for _, access, successor in results
    ]
    assert [pair != (None, None) for pair in stored] == [outcome is RotateOutcome.ROTATED for outcome in outcomes]


# Grace replays


async def test_grace_replays_are_granted_up_to_the_limit(storage: Storage) -> None:
    _, _, refresh = await add_grant(storage, await add_user(storage))
    await rotate(storage, refresh, now=T0 + HOUR)
    granted = [await storage.count_grace_replay(refresh.token_hash, max_replays=2, now=T0 + HOUR + 1) for _ in "abc"]
    assert granted == [True, True, False]
    stored = await storage.get_refresh_token(refresh.token_hash)
    assert stored is not None
    assert stored.grace_replays == 2


async def test_grace_replays_end_with_the_window(storage: Storage) -> None:
    _, _, refresh = await add_grant(storage, await add_user(storage))
    await rotate(storage, refresh, now=T0 + HOUR)  # grace until T0 + HOUR + MINUTE
    assert not await storage.count_grace_replay(refresh.token_hash, max_replays=5, now=T0 + HOUR + MINUTE)
    assert await storage.count_grace_replay(refresh.token_hash, max_replays=5, now=T0 + HOUR + MINUTE - 1)


async def test_a_current_or_unknown_token_has_no_grace_replay(storage: Storage) -> None:
    _, _, refresh = await add_grant(storage, await add_user(storage))
    assert not await storage.count_grace_replay(refresh.token_hash, max_replays=5, now=T0)
    assert not await storage.count_grace_replay(digest(), max_replays=5, now=T0)


async def test_a_revoked_family_has_no_grace_replay(storage: Storage) -> None:
    family, _, refresh = await add_grant(storage, await add_user(storage))
    await rotate(storage, refresh, now=T0 + HOUR)
    await storage.revoke_family(family.family_id, now=T0 + HOUR + 1, reason="reuse")
    assert not await storage.count_grace_replay(refresh.token_hash, max_replays=5, now=T0 + HOUR + 2)


async def test_concurrent_grace_replays_on_two_instances_respect_the_limit(backend: Backend) -> None:
    first, second = await backend.storage(), await backend.storage(migrate=False)
    _, _, refresh = await add_grant(first, await add_user(first))
    await rotate(first, refresh, now=T0 + HOUR)
    results = await race(
        20, lambda i: (first, second)[i % 2].count_grace_replay(refresh.token_hash, max_replays=3, now=T0 + HOUR + 1)
    )
    assert results.count(True) == 3


# Revocation


async def test_revoking_a_family_revokes_its_tokens_and_erases_grace_blobs_once(storage: Storage) -> None:
    family, access, refresh = await add_grant(storage, await add_user(storage))
    _, access2, refresh2 = await rotate(storage, refresh, now=T0 + HOUR)
    bystander, bystander_access, bystander_refresh = await add_grant(storage, await add_user(storage))
    assert await storage.revoke_family(family.family_id, now=T0 + 2 * HOUR, reason="refresh token reuse")
    assert await storage.get_family(family.family_id) == replace(
        family, last_used_at=T0 + HOUR, revoked_at=T0 + 2 * HOUR, revoked_reason="refresh token reuse"
    )
    for token in (access, access2):
        assert await storage.get_access_token(token.token_hash) == replace(token, revoked_at=T0 + 2 * HOUR)
    retired = await storage.get_refresh_token(refresh.token_hash)
    assert retired is not None
    assert retired.used_at == T0 + HOUR
    assert retired.grace_blob is None
    assert await storage.get_refresh_token(refresh2.token_hash) == replace(refresh2, used_at=T0 + 2 * HOUR)
    assert not await storage.revoke_family(family.family_id, now=T0 + 3 * HOUR, reason="again")
    stored = await storage.get_family(family.family_id)
    assert stored is not None
    assert stored.revoked_reason == "refresh token reuse"
    assert not await storage.revoke_family("fam_missing", now=T0, reason="x")
    assert await storage.get_family(bystander.family_id) == bystander
    assert await storage.get_access_token(bystander_access.token_hash) == bystander_access
    assert await storage.get_refresh_token(bystander_refresh.token_hash) == bystander_refresh


async def test_concurrent_revocations_of_one_family_on_two_instances_succeed_exactly_once(backend: Backend) -> None:
    first, second = await backend.storage(), await backend.storage(migrate=False)
    family, _, _ = await add_grant(first, await add_user(first))
    results = await race(
        20, lambda i: (first, second)[i % 2].revoke_family(family.family_id, now=T0 + i, reason=f"r{i}")
    )
    assert results.count(True) == 1


async def test_rotation_racing_revocation_never_leaves_a_live_successor(backend: Backend) -> None:
    first, second = await backend.storage(), await backend.storage(migrate=False)
    user = await add_user(first)
    for _ in range(5):
        family, _, refresh = await add_grant(first, user)
        (outcome, access, successor), revoked = await asyncio.gather(
            rotate(first, refresh, now=T0 + HOUR), second.revoke_family(family.family_id, now=T0 + HOUR, reason="x")
        )
        assert revoked
        assert outcome in (RotateOutcome.ROTATED, RotateOutcome.DEAD)
        stored_access = await first.get_access_token(access.token_hash)
        stored_refresh = await first.get_refresh_token(successor.token_hash)
        if outcome is RotateOutcome.ROTATED:
            assert stored_access is not None
            assert stored_access.revoked_at is not None
            assert stored_refresh is not None
            assert stored_refresh.used_at is not None
        else:
            assert stored_access is None
            assert stored_refresh is None


async def test_an_access_token_is_revoked_once(storage: Storage) -> None:
    _, access, _ = await add_grant(storage, await add_user(storage))
    assert await storage.revoke_access_token(access.token_hash, now=T0 + 1)
    assert not await storage.revoke_access_token(access.token_hash, now=T0 + 2)
    assert await storage.get_access_token(access.token_hash) == replace(access, revoked_at=T0 + 1)
    assert not await storage.revoke_access_token(digest(), now=T0)


async def test_families_are_listed_newest_first_and_revoked_ones_only_when_asked(storage: Storage) -> None:
    user, other = await add_user(storage), await add_user(storage)
    old, _, _ = await add_grant(storage, user, created_at=T0)
    middle, _, _ = await add_grant(storage, user, created_at=T0 + 10)
    new, _, _ = await add_grant(storage, user, created_at=T0 + 20)
    await add_grant(storage, other)
    await storage.revoke_family(middle.family_id, now=T0 + 30, reason="user")
    assert [f.family_id for f in await storage.list_families(user.id)] == [new.family_id, old.family_id]
    listed = await storage.list_families(user.id, include_revoked=True)
    assert [f.family_id for f in listed] == [new.family_id, middle.family_id, old.family_id]
    assert await storage.list_families("usr_missing") == []


async def test_revoking_a_users_families_of_one_client_and_redirect_uri_leaves_the_others_alone(
    storage: Storage,
) -> None:
    user, other = await add_user(storage), await add_user(storage)
    target, target_access, target_refresh = await add_grant(storage, user, client_id="cli_a", redirect_uri=REDIRECT)
    same_client, _, _ = await add_grant(storage, user, client_id="cli_a", redirect_uri=OTHER_REDIRECT)
    other_client, _, _ = await add_grant(storage, user, client_id="cli_b", redirect_uri=REDIRECT)
    other_user, _, _ = await add_grant(storage, other, client_id="cli_a", redirect_uri=REDIRECT)
    pending = make_code(user, client_id="cli_a", redirect_uri=REDIRECT)
    pending_elsewhere = make_code(user, client_id="cli_a", redirect_uri=OTHER_REDIRECT)
    pending_other_client = make_code(user, client_id="cli_b", redirect_uri=REDIRECT)
    pending_other_user = make_code(other, client_id="cli_a", redirect_uri=REDIRECT)
    for code in (pending, pending_elsewhere, pending_other_client, pending_other_user):
        await storage.create_code(code)

    revoked = await storage.revoke_user_families(
        user.id, now=T0 + HOUR, reason="user revoked app", client_id="cli_a", redirect_uri=REDIRECT
    )

    assert revoked == [target.family_id]
    stored = await storage.get_family(target.family_id)
    assert stored is not None
    assert stored.revoked_at == T0 + HOUR
    assert stored.revoked_reason == "user revoked app"
    assert await storage.get_access_token(target_access.token_hash) == replace(target_access, revoked_at=T0 + HOUR)
    assert await storage.get_refresh_token(target_refresh.token_hash) == replace(target_refresh, used_at=T0 + HOUR)
    for untouched in (same_client, other_client, other_user):
        assert await storage.get_family(untouched.family_id) == untouched
    assert await storage.get_code(pending.code_hash) == replace(pending, used_at=T0 + HOUR)
    for code in (pending_elsewhere, pending_other_client, pending_other_user):
        assert await storage.get_code(code.code_hash) == code


async def test_revoking_a_users_families_of_one_client_covers_every_redirect_uri(storage: Storage) -> None:
    user = await add_user(storage)
    one, _, _ = await add_grant(storage, user, client_id="cli_a", redirect_uri=REDIRECT)
    two, _, _ = await add_grant(storage, user, client_id="cli_a", redirect_uri=OTHER_REDIRECT)
    other_client, _, _ = await add_grant(storage, user, client_id="cli_b")
    revoked = await storage.revoke_user_families(user.id, now=T0 + 1, reason="x", client_id="cli_a")
    assert sorted(revoked) == sorted([one.family_id, two.family_id])
    assert await storage.get_family(other_client.family_id) == other_client


async def test_revoking_all_of_a_users_families_skips_dead_ones_and_kills_every_unredeemed_code(
    storage: Storage,
) -> None:
    user = await add_user(storage)
    live_a, _, _ = await add_grant(storage, user, client_id="cli_a")
    live_b, _, _ = await add_grant(storage, user, client_id="cli_b")
    already, _, _ = await add_grant(storage, user, client_id="cli_c")
    ended, _, _ = await add_grant(storage, user, client_id="cli_d", expires_at=T0 + 10)
    await storage.revoke_family(already.family_id, now=T0 + 1, reason="earlier")
    pending = make_code(user, client_id="cli_z")
    redeemed = make_code(user, client_id="cli_z")
    for code in (pending, redeemed):
        await storage.create_code(code)
    late = make_family(redeemed, expires_at=T0)  # redeemed, but its family has already ended
    assert await storage.redeem_code(redeemed.code_hash, now=T0, family=late, access=make_access(late), refresh=None)

    revoked = await storage.revoke_user_families(user.id, now=T0 + HOUR, reason="password reset")

    assert sorted(revoked) == sorted([live_a.family_id, live_b.family_id])
    assert await storage.get_family(already.family_id) == replace(already, revoked_at=T0 + 1, revoked_reason="earlier")
    assert await storage.get_family(ended.family_id) == ended
    assert await storage.get_code(pending.code_hash) == replace(pending, used_at=T0 + HOUR)
    assert await storage.get_code(redeemed.code_hash) == replace(redeemed, used_at=T0, family_id=late.family_id)
    assert await storage.revoke_user_families(user.id, now=T0 + 2 * HOUR, reason="again") == []


async def test_touching_families_records_last_use_in_one_batch_and_never_moves_backwards(storage: Storage) -> None:
    user = await add_user(storage)
    one, _, _ = await add_grant(storage, user)
    two, _, _ = await add_grant(storage, user)
    await storage.touch_families({one.family_id: T0 + 50, two.family_id: T0 + 60, "fam_missing": T0})
    await storage.touch_families({one.family_id: T0 + 40, two.family_id: T0 + 70})
    await storage.touch_families({})
    assert await storage.get_family(one.family_id) == replace(one, last_used_at=T0 + 50)
    assert await storage.get_family(two.family_id) == replace(two, last_used_at=T0 + 70)


async def test_purging_deletes_expired_tokens_and_ended_families_with_all_their_rows(storage: Storage) -> None:
    user = await add_user(storage)
    ended, ended_access, ended_refresh = await add_grant(storage, user, expires_at=T0 + DAY)
    live, live_access, live_refresh = await add_grant(storage, user, expires_at=T0 + 30 * DAY)
    _, fresh_access, fresh_refresh = await rotate(storage, live_refresh, now=T0 + 2 * DAY)
    expired_code = make_code(user, expires_at=T0 + MINUTE)
    await storage.create_code(expired_code)
    # Gone by T0 + 3 days: the ended family with its code, access and refresh token (4 rows); the live family's
    # code and both of its one-hour access tokens (3 rows); the unredeemed code (1 row).
    assert await storage.purge_expired_tokens(before=T0 + 3 * DAY) == 8
    assert await storage.get_family(ended.family_id) is None
    assert await storage.get_access_token(ended_access.token_hash) is None
    assert await storage.get_refresh_token(ended_refresh.token_hash) is None
    assert await storage.get_code(expired_code.code_hash) is None
    assert await storage.get_access_token(live_access.token_hash) is None
    assert await storage.get_access_token(fresh_access.token_hash) is None
    assert await storage.get_family(live.family_id) is not None
    retired = await storage.get_refresh_token(live_refresh.token_hash)  # retired, but idle expiry not reached
    assert retired is not None
    assert await storage.get_refresh_token(fresh_refresh.token_hash) == fresh_refresh
    assert await storage.purge_expired_tokens(before=T0 + 3 * DAY) == 0


# Consents


def make_consent(user: User, *, redirect_uri: str = REDIRECT, scope: str = "mcp", at: float = T0) -> Consent:
    return Consent(user.id, "cli_a", redirect_uri, RESOURCE, scope, created_at=at, updated_at=at)


async def test_a_saved_consent_reads_back_and_others_are_none(storage: Storage) -> None:
    user = await add_user(storage)
    consent = make_consent(user)
    await storage.save_consent(consent)
    assert await storage.get_consent(user.id, "cli_a", REDIRECT, RESOURCE) == consent
    assert await storage.get_consent(user.id, "cli_a", OTHER_REDIRECT, RESOURCE) is None
    assert await storage.get_consent(user.id, "cli_a", REDIRECT, "https://other.example/mcp") is None


async def test_saving_a_consent_again_updates_scope_and_keeps_the_first_approval_time(storage: Storage) -> None:
    user = await add_user(storage)
    await storage.save_consent(make_consent(user, scope="mcp", at=T0))
    await storage.save_consent(make_consent(user, scope="mcp admin", at=T0 + DAY))
    assert await storage.get_consent(user.id, "cli_a", REDIRECT, RESOURCE) == Consent(
        user.id, "cli_a", REDIRECT, RESOURCE, "mcp admin", created_at=T0, updated_at=T0 + DAY
    )


async def test_consents_are_forgotten_per_redirect_uri_or_for_the_whole_client(storage: Storage) -> None:
    user, other = await add_user(storage), await add_user(storage)
    for consent in (make_consent(user), make_consent(user, redirect_uri=OTHER_REDIRECT), make_consent(other)):
        await storage.save_consent(consent)
    assert await storage.forget_consents(user.id, "cli_a", OTHER_REDIRECT) == 1
    assert await storage.get_consent(user.id, "cli_a", REDIRECT, RESOURCE) is not None
    await storage.save_consent(make_consent(user, redirect_uri=OTHER_REDIRECT))
    assert await storage.forget_consents(user.id, "cli_a") == 2
    assert await storage.get_consent(user.id, "cli_a", REDIRECT, RESOURCE) is None
    assert await storage.get_consent(other.id, "cli_a", REDIRECT, RESOURCE) is not None
    assert await storage.forget_consents(user.id, "cli_a") == 0


# Browser sessions


def make_browser_session(user: User, *, at: float = T0) -> BrowserSession:
    return BrowserSession(digest(), user.id, created_at=at, last_seen_at=at, expires_at=at + 30 * DAY)


async def test_a_browser_session_reads_back_and_an_unknown_one_is_none(storage: Storage) -> None:
    session = make_browser_session(await add_user(storage))
    await storage.create_browser_session(session)
    assert await storage.get_browser_session(session.session_hash) == session
    assert await storage.get_browser_session(digest()) is None


async def test_touching_a_browser_session_never_moves_last_seen_backwards(storage: Storage) -> None:
    session = make_browser_session(await add_user(storage))
    await storage.create_browser_session(session)
    await storage.touch_browser_session(session.session_hash, T0 + 50)
    await storage.touch_browser_session(session.session_hash, T0 + 20)
    await storage.touch_browser_session(digest(), T0 + 50)
    assert await storage.get_browser_session(session.session_hash) == replace(session, last_seen_at=T0 + 50)


async def test_revoking_a_browser_session_keeps_the_first_time(storage: Storage) -> None:
    session = make_browser_session(await add_user(storage))
    await storage.create_browser_session(session)
    await storage.revoke_browser_session(session.session_hash, now=T0 + 1)
    await storage.revoke_browser_session(session.session_hash, now=T0 + 2)
    await storage.revoke_browser_session(digest(), now=T0)
    assert await storage.get_browser_session(session.session_hash) == replace(session, revoked_at=T0 + 1)


async def test_revoking_a_users_browser_sessions_counts_only_their_live_ones(storage: Storage) -> None:
    user, other = await add_user(storage), await add_user(storage)
    mine = [make_browser_session(user) for _ in range(3)]
    theirs = make_browser_session(other)
    for session in (*mine, theirs):
        await storage.create_browser_session(session)
    await storage.revoke_browser_session(mine[0].session_hash, now=T0 + 1)
    assert await storage.revoke_user_browser_sessions(user.id, now=T0 + 5) == 2
    stored = [await storage.get_browser_session(session.session_hash) for session in mine]
    assert [session.revoked_at if session else None for session in stored] == [T0 + 1, T0 + 5, T0 + 5]
    assert await storage.get_browser_session(theirs.session_hash) == theirs
    assert await storage.revoke_user_browser_sessions(user.id, now=T0 + 6) == 0


async def test_the_revocation_epoch_rises_with_every_kind_of_revocation_and_with_nothing_else(storage: Storage) -> None:
    user = await add_user(storage)
    family, access, refresh = await add_grant(storage, user)
    other_family, other_access, _ = await add_grant(storage, user)
    key = make_key(user)
    await storage.create_api_key(key)
    epoch = await storage.revocation_epoch()

    async def rose() -> bool:
        nonlocal epoch
        now = await storage.revocation_epoch()
        risen, epoch = now > epoch, now
        return risen

    await rotate(storage, refresh, now=T0 + HOUR)  # issuing and rotating revoke nothing
    await storage.touch_api_keys({key.id: T0 + HOUR})
    assert not await rose()
    assert await storage.revoke_access_token(other_access.token_hash, now=T0 + HOUR)
    assert await rose()
    assert await storage.revoke_family(family.family_id, now=T0 + HOUR, reason="test")
    assert await rose()
    assert not await storage.revoke_family(family.family_id, now=T0 + HOUR, reason="again")
    assert not await rose()  # nothing newly revoked
    assert await storage.revoke_user_families(user.id, now=T0 + HOUR, reason="sign out everywhere") == [
        other_family.family_id
    ]
    assert await rose()
    assert await storage.revoke_api_key(key.id, now=T0 + HOUR)
    assert await rose()
    assert await storage.set_disabled(user.id, T0 + HOUR)
    assert await rose()
    assert access.family_id == family.family_id
