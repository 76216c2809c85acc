"""The account contract (roles, consents listed per user, daily usage totals), run against every backend."""

from __future__ import annotations

import asyncio

from gateway.storage import BrowserSession, Consent, Storage, User
from tests.storage.test_oauth_conformance import (
    DAY,
    HOUR,
    OTHER_REDIRECT,
    REDIRECT,
    RESOURCE,
    T0,
    add_grant,
    add_user,
    digest,
)
from tests.support.databases import Backend


async def test_a_new_user_has_the_user_role_and_set_role_changes_it(storage: Storage) -> None:
    user = await add_user(storage)
    assert (await storage.get_user(user.id)) == User(user.id, user.email, user.password_hash, T0, role="user")
    assert await storage.set_role(user.id, "admin")
    reloaded = await storage.get_user(user.id)
    assert reloaded is not None
    assert reloaded.role == "admin"
    assert not await storage.set_role("usr_missing", "admin")


async def test_list_consents_returns_only_that_users_consents_oldest_first(storage: Storage) -> None:
    ada, bob = await add_user(storage), await add_user(storage)
    later = Consent(ada.id, "cli_b", OTHER_REDIRECT, RESOURCE, "mcp", T0 + 10, T0 + 10)
    first = Consent(ada.id, "cli_a", REDIRECT, RESOURCE, "mcp admin", T0, T0 + 5)
    await storage.save_consent(later)
    await storage.save_consent(first)
    await storage.save_consent(Consent(bob.id, "cli_a", REDIRECT, RESOURCE, "mcp", T0, T0))
    assert await storage.list_consents(ada.id) == [first, later]
    assert await storage.list_consents("usr_missing") == []


async def test_users_of_a_client_are_those_with_a_grant_or_a_consent_of_it_each_once(storage: Storage) -> None:
    granted, consented, both, other = [await add_user(storage) for _ in range(4)]
    await add_grant(storage, granted, client_id="cli_x")
    await storage.save_consent(Consent(consented.id, "cli_x", REDIRECT, RESOURCE, "mcp", T0, T0))
    await add_grant(storage, both, client_id="cli_x")
    await add_grant(storage, both, client_id="cli_x", redirect_uri=OTHER_REDIRECT)
    await storage.save_consent(Consent(both.id, "cli_x", REDIRECT, RESOURCE, "mcp", T0, T0))
    await add_grant(storage, other, client_id="cli_y")
    assert await storage.users_of_client("cli_x") == sorted([granted.id, consented.id, both.id])
    assert await storage.users_of_client("cli_missing") == []


async def test_usage_batches_add_up_per_user_and_day(storage: Storage) -> None:
    ada, bob = await add_user(storage), await add_user(storage)
    await storage.add_usage({(ada.id, "2026-11-20"): 3, (ada.id, "2026-11-21"): 1, (bob.id, "2026-11-21"): 7})
    await storage.add_usage({(ada.id, "2026-11-21"): 4})
    await storage.add_usage({})
    assert await storage.usage_history(ada.id, since_day="2026-11-01") == [("2026-11-20", 3), ("2026-11-21", 5)]
    assert await storage.usage_history(ada.id, since_day="2026-11-21") == [("2026-11-21", 5)]
    assert await storage.usage_history(bob.id, since_day="2026-11-01") == [("2026-11-21", 7)]


async def test_usage_for_an_unknown_user_is_skipped_and_the_rest_of_the_batch_kept(storage: Storage) -> None:
    ada = await add_user(storage)
    await storage.add_usage({("usr_gone", "2026-11-21"): 2, (ada.id, "2026-11-21"): 1})
    assert await storage.usage_history(ada.id, since_day="2026-01-01") == [("2026-11-21", 1)]
    assert await storage.usage_history("usr_gone", since_day="2026-01-01") == []


async def test_concurrent_usage_batches_from_two_instances_are_all_counted(backend: Backend) -> None:
    first, second = await backend.storage(), await backend.storage(migrate=False)
    ada = await add_user(first)
    await asyncio.gather(
        *[s.add_usage({(ada.id, "2026-11-21"): 1, (ada.id, "2026-11-22"): 2}) for s in [first, second] * 10]
    )
    assert await first.usage_history(ada.id, since_day="2026-11-01") == [("2026-11-21", 20), ("2026-11-22", 40)]


async def test_purging_browser_sessions_removes_expired_revoked_and_idle_ones_only(storage: Storage) -> None:
    user = await add_user(storage)
    now, idle = T0 + 40 * DAY, 12 * HOUR

    def session(*, last_seen: float, expires: float) -> BrowserSession:
        return BrowserSession(digest(), user.id, created_at=T0, last_seen_at=last_seen, expires_at=expires)

    live = session(last_seen=now - 60, expires=now + DAY)
    expired = session(last_seen=now - 60, expires=now - 1)
    idle_one = session(last_seen=now - idle - 1, expires=now + DAY)
    revoked = session(last_seen=now - 60, expires=now + DAY)
    for s in (live, expired, idle_one, revoked):
        await storage.create_browser_session(s)
    await storage.revoke_browser_session(revoked.session_hash, now=now - 5)
    assert await storage.purge_browser_sessions(ended_before=now, idle_since=now - idle) == 3
    assert await storage.get_browser_session(live.session_hash) == live
    for gone in (expired, idle_one, revoked):
        assert await storage.get_browser_session(gone.session_hash) is None
    assert await storage.purge_browser_sessions(ended_before=now, idle_since=now - idle) == 0
