"""The storage contract of ``gateway.storage.base``, run against every backend."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from dataclasses import replace

import pytest

from gateway.storage import ApiKey, Conflict, McpSession, SchemaOutOfDate, Storage, StorageError, User
from gateway.storage.migrator import known_versions
from tests.support.databases import Backend

T0 = 1_700_000_000.0


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


async def add_user(storage: Storage, email: str | None = None, *, now: float = T0) -> User:
    return await storage.create_user(
        user_id=new_id("usr"), email=email or f"{new_id('u')}@example.com", password_hash="argon2$hash", now=now
    )


def make_key(user: User, *, created_at: float = T0, expires_at: float | None = None, name: str = "laptop") -> ApiKey:
    secret = secrets.token_urlsafe(24)
    return ApiKey(
        id=new_id("key"),
        user_id=user.id,
        name=name,
        key_hash=hashlib.sha256(secret.encode()).hexdigest(),
        display_prefix="mgw_" + secret[:4],
        last_four=secret[-4:],
        created_at=created_at,
        expires_at=expires_at,
    )


async def add_key(storage: Storage, user: User, *, created_at: float = T0) -> ApiKey:
    key = make_key(user, created_at=created_at)
    await storage.create_api_key(key)
    return key


def make_session(
    user: User, *, created_at: float = T0, kind: str = "streamable", upstream_path: str = ""
) -> McpSession:
    return McpSession(
        session_hash=hashlib.sha256(secrets.token_bytes(16)).hexdigest(),
        user_id=user.id,
        kind=kind,
        upstream_path=upstream_path,
        created_at=created_at,
    )


# Migrations and schema checks


async def test_migrate_applies_every_known_version_once_and_nothing_on_a_second_run(backend: Backend) -> None:
    storage = await backend.storage(migrate=False)
    assert await storage.migrate() == known_versions(backend.dialect)
    assert await storage.migrate() == []


async def test_check_schema_rejects_a_database_that_was_never_migrated(backend: Backend) -> None:
    storage = await backend.storage(migrate=False)
    with pytest.raises(SchemaOutOfDate, match="mcp-gateway migrate"):
        await storage.check_schema()


async def test_check_schema_passes_after_migrate(storage: Storage) -> None:
    await storage.check_schema()


async def test_check_schema_rejects_a_database_missing_a_known_version(backend: Backend) -> None:
    storage = await backend.storage()
    await backend.execute("DELETE FROM schema_migrations WHERE version = 1")
    with pytest.raises(SchemaOutOfDate, match="mcp-gateway migrate"):
        await storage.check_schema()


async def test_check_schema_rejects_a_database_with_a_version_this_release_does_not_know(backend: Backend) -> None:
    storage = await backend.storage()
    await backend.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (9999, 0)")
    with pytest.raises(SchemaOutOfDate, match="9999"):
        await storage.check_schema()


async def test_two_instances_migrating_at_once_apply_each_version_exactly_once(backend: Backend) -> None:
    first, second = backend.storage(migrate=False), backend.storage(migrate=False)
    a, b = await asyncio.gather(first, second)
    applied_a, applied_b = await asyncio.gather(a.migrate(), b.migrate())
    assert sorted(applied_a + applied_b) == known_versions(backend.dialect)
    await a.check_schema()
    await b.check_schema()


async def test_ping_answers_on_an_open_storage(storage: Storage) -> None:
    await storage.ping()


# Users


async def test_a_created_user_reads_back_by_id(storage: Storage) -> None:
    created = await storage.create_user(user_id="usr_1", email="Ada@Example.com", password_hash="h1", now=T0)
    assert created == User(id="usr_1", email="Ada@Example.com", password_hash="h1", created_at=T0)
    assert await storage.get_user("usr_1") == created
    assert created.active


async def test_an_unknown_user_reads_as_none(storage: Storage) -> None:
    assert await storage.get_user("usr_missing") is None
    assert await storage.get_user_by_email("nobody@example.com") is None


async def test_email_lookup_ignores_case_and_keeps_the_original_spelling(storage: Storage) -> None:
    created = await storage.create_user(user_id="usr_1", email="Ada.Lovelace@Example.COM", password_hash="h", now=T0)
    assert await storage.get_user_by_email("ada.lovelace@example.com") == created
    assert await storage.get_user_by_email("ADA.LOVELACE@EXAMPLE.COM") == created


async def test_an_email_taken_in_another_case_is_a_conflict(storage: Storage) -> None:
    await storage.create_user(user_id="usr_1", email="ada@example.com", password_hash="h", now=T0)
    with pytest.raises(Conflict):
        await storage.create_user(user_id="usr_2", email="ADA@example.com", password_hash="h", now=T0)
    assert await storage.get_user("usr_2") is None


async def test_a_reused_user_id_is_a_conflict(storage: Storage) -> None:
    await storage.create_user(user_id="usr_1", email="a@example.com", password_hash="h", now=T0)
    with pytest.raises(Conflict):
        await storage.create_user(user_id="usr_1", email="b@example.com", password_hash="h", now=T0)


async def test_users_are_listed_oldest_first(storage: Storage) -> None:
    newest = await add_user(storage, now=T0 + 20)
    oldest = await add_user(storage, now=T0)
    middle = await add_user(storage, now=T0 + 10)
    assert await storage.list_users() == [oldest, middle, newest]


async def test_an_empty_database_lists_no_users(storage: Storage) -> None:
    assert await storage.list_users() == []


async def test_set_password_hash_replaces_the_hash(storage: Storage) -> None:
    user = await add_user(storage)
    assert await storage.set_password_hash(user.id, "argon2$new") is True
    refreshed = await storage.get_user(user.id)
    assert refreshed is not None
    assert refreshed.password_hash == "argon2$new"


async def test_set_password_hash_is_false_for_an_unknown_user(storage: Storage) -> None:
    assert await storage.set_password_hash("usr_missing", "argon2$new") is False


async def test_a_user_can_be_disabled_and_re_enabled(storage: Storage) -> None:
    user = await add_user(storage)
    assert await storage.set_disabled(user.id, T0 + 5) is True
    disabled = await storage.get_user(user.id)
    assert disabled is not None
    assert disabled.disabled_at == T0 + 5
    assert not disabled.active
    assert await storage.set_disabled(user.id, None) is True
    enabled = await storage.get_user(user.id)
    assert enabled is not None
    assert enabled.active


async def test_set_disabled_is_false_for_an_unknown_user(storage: Storage) -> None:
    assert await storage.set_disabled("usr_missing", T0) is False


# API keys


async def test_a_created_key_reads_back_by_hash_and_by_id_with_every_field(storage: Storage) -> None:
    user = await add_user(storage)
    key = make_key(user, expires_at=T0 + 3600)
    await storage.create_api_key(key)
    assert await storage.get_api_key_by_hash(key.key_hash) == key
    assert await storage.get_api_key(key.id) == key


async def test_an_unknown_key_reads_as_none(storage: Storage) -> None:
    assert await storage.get_api_key_by_hash("0" * 64) is None
    assert await storage.get_api_key("key_missing") is None


async def test_a_duplicate_key_hash_is_a_conflict(storage: Storage) -> None:
    user = await add_user(storage)
    key = await add_key(storage, user)
    clone = make_key(user)
    with pytest.raises(Conflict):
        await storage.create_api_key(replace(clone, key_hash=key.key_hash))


async def test_a_duplicate_key_id_is_a_conflict(storage: Storage) -> None:
    user = await add_user(storage)
    key = await add_key(storage, user)
    with pytest.raises(Conflict):
        await storage.create_api_key(replace(make_key(user), id=key.id))


async def test_a_key_for_an_unknown_user_is_refused(storage: Storage) -> None:
    ghost = User(id="usr_ghost", email="ghost@example.com", password_hash="h", created_at=T0)
    with pytest.raises(StorageError):
        await storage.create_api_key(make_key(ghost))


async def test_keys_are_listed_per_user_or_for_everyone_oldest_first_revoked_included(storage: Storage) -> None:
    alice, bob = await add_user(storage), await add_user(storage)
    alice_new = await add_key(storage, alice, created_at=T0 + 30)
    bob_key = await add_key(storage, bob, created_at=T0 + 20)
    alice_old = await add_key(storage, alice, created_at=T0 + 10)
    assert await storage.revoke_api_key(alice_old.id, now=T0 + 40)
    alice_old_revoked = await storage.get_api_key(alice_old.id)
    assert await storage.list_api_keys(alice.id) == [alice_old_revoked, alice_new]
    assert await storage.list_api_keys(bob.id) == [bob_key]
    assert await storage.list_api_keys() == [alice_old_revoked, bob_key, alice_new]
    assert await storage.list_api_keys("usr_missing") == []


async def test_a_revoked_key_stays_readable_and_marked_revoked(storage: Storage) -> None:
    user = await add_user(storage)
    key = await add_key(storage, user)
    assert await storage.revoke_api_key(key.id, now=T0 + 60) is True
    revoked = await storage.get_api_key_by_hash(key.key_hash)
    assert revoked is not None
    assert revoked.revoked_at == T0 + 60
    assert not revoked.usable_at(T0 + 61)


async def test_revoking_twice_is_true_only_the_first_time_and_keeps_the_first_time(storage: Storage) -> None:
    user = await add_user(storage)
    key = await add_key(storage, user)
    assert await storage.revoke_api_key(key.id, now=T0 + 1) is True
    assert await storage.revoke_api_key(key.id, now=T0 + 2) is False
    stored = await storage.get_api_key(key.id)
    assert stored is not None
    assert stored.revoked_at == T0 + 1


async def test_revoking_another_users_key_is_false_and_leaves_it_usable(storage: Storage) -> None:
    owner, other = await add_user(storage), await add_user(storage)
    key = await add_key(storage, owner)
    assert await storage.revoke_api_key(key.id, now=T0, user_id=other.id) is False
    assert await storage.get_api_key(key.id) == key
    assert await storage.revoke_api_key(key.id, now=T0, user_id=owner.id) is True


async def test_revoking_an_unknown_key_is_false(storage: Storage) -> None:
    assert await storage.revoke_api_key("key_missing", now=T0) is False


async def test_touch_records_last_use_for_many_keys_at_once(storage: Storage) -> None:
    user = await add_user(storage)
    keys = [await add_key(storage, user) for _ in range(3)]
    await storage.touch_api_keys({keys[0].id: T0 + 10, keys[1].id: T0 + 20})
    stored = [await storage.get_api_key(key.id) for key in keys]
    assert [key.last_used_at if key else "missing" for key in stored] == [T0 + 10, T0 + 20, None]


async def test_touch_never_moves_last_use_backwards(storage: Storage) -> None:
    user = await add_user(storage)
    key = await add_key(storage, user)
    await storage.touch_api_keys({key.id: T0 + 100})
    await storage.touch_api_keys({key.id: T0 + 50})
    stored = await storage.get_api_key(key.id)
    assert stored is not None
    assert stored.last_used_at == T0 + 100
    await storage.touch_api_keys({key.id: T0 + 150})
    stored = await storage.get_api_key(key.id)
    assert stored is not None
    assert stored.last_used_at == T0 + 150


async def test_touch_ignores_unknown_keys_and_empty_batches(storage: Storage) -> None:
    user = await add_user(storage)
    key = await add_key(storage, user)
    await storage.touch_api_keys({})
    await storage.touch_api_keys({"key_missing": T0 + 5, key.id: T0 + 7})
    stored = await storage.get_api_key(key.id)
    assert stored is not None
    assert stored.last_used_at == T0 + 7
    assert await storage.get_api_key("key_missing") is None


# MCP sessions


async def test_a_bound_session_reads_back(storage: Storage) -> None:
    user = await add_user(storage)
    session = make_session(user, kind="legacy_sse", upstream_path="/messages/")
    await storage.bind_session(session)
    assert await storage.get_session(session.session_hash) == session


async def test_an_unknown_session_reads_as_none(storage: Storage) -> None:
    assert await storage.get_session("f" * 64) is None


async def test_binding_a_session_again_keeps_the_first_owner(storage: Storage) -> None:
    owner, intruder = await add_user(storage), await add_user(storage)
    session = make_session(owner)
    await storage.bind_session(session)
    await storage.bind_session(McpSession(session.session_hash, intruder.id, "streamable", "", T0 + 1))
    assert await storage.get_session(session.session_hash) == session


async def test_a_forgotten_session_is_gone_and_forgetting_again_is_fine(storage: Storage) -> None:
    user = await add_user(storage)
    session = make_session(user)
    await storage.bind_session(session)
    await storage.forget_session(session.session_hash)
    assert await storage.get_session(session.session_hash) is None
    await storage.forget_session(session.session_hash)


async def test_purge_removes_only_sessions_created_before_the_cutoff(storage: Storage) -> None:
    user = await add_user(storage)
    old = [make_session(user, created_at=T0 + offset) for offset in (0, 5)]
    at_cutoff, new = make_session(user, created_at=T0 + 10), make_session(user, created_at=T0 + 20)
    for session in [*old, at_cutoff, new]:
        await storage.bind_session(session)
    assert await storage.purge_sessions(created_before=T0 + 10) == 2
    assert [await storage.get_session(s.session_hash) for s in old] == [None, None]
    assert await storage.get_session(at_cutoff.session_hash) == at_cutoff
    assert await storage.get_session(new.session_hash) == new
    assert await storage.purge_sessions(created_before=T0 + 10) == 0


# Concurrency


async def test_fifty_concurrent_revocations_of_one_key_succeed_exactly_once(storage: Storage) -> None:
    user = await add_user(storage)
    key = await add_key(storage, user)
    results = await asyncio.gather(*(storage.revoke_api_key(key.id, now=T0 + i) for i in range(50)))
    assert results.count(True) == 1


async def test_fifty_concurrent_signups_with_distinct_emails_all_succeed(storage: Storage) -> None:
    users = await asyncio.gather(*(add_user(storage, f"user{i}@example.com", now=T0 + i) for i in range(50)))
    assert await storage.list_users() == list(users)


async def test_concurrent_signups_with_one_email_let_exactly_one_through(storage: Storage) -> None:
    spellings = ["same@example.com", "Same@Example.com", "SAME@EXAMPLE.COM"]
    results = await asyncio.gather(*(add_user(storage, spellings[i % 3]) for i in range(21)), return_exceptions=True)
    assert sum(isinstance(result, User) for result in results) == 1
    assert all(isinstance(result, User | Conflict) for result in results)


async def test_two_instances_sharing_a_database_write_concurrently(backend: Backend) -> None:
    first, second = await backend.storage(), await backend.storage(migrate=False)
    user = await add_user(first)
    keys = [make_key(user) for _ in range(40)]
    await asyncio.gather(*((first if i % 2 else second).create_api_key(key) for i, key in enumerate(keys)))
    assert len(await second.list_api_keys(user.id)) == 40
    revoked = await asyncio.gather(
        *(instance.revoke_api_key(keys[0].id, now=T0) for instance in (first, second) for _ in range(10))
    )
    assert revoked.count(True) == 1


async def test_an_account_starts_on_the_default_plan_and_its_plan_can_be_changed(storage: Storage) -> None:
    user = await add_user(storage)
    assert user.plan is None
    assert await storage.set_plan(user.id, "pro") is True
    changed = await storage.get_user(user.id)
    assert changed is not None
    assert changed.plan == "pro"
    assert await storage.set_plan(user.id, None) is True
    assert (await storage.get_user(user.id)).plan is None  # type: ignore[union-attr]
    assert await storage.set_plan("usr_missing", "pro") is False
