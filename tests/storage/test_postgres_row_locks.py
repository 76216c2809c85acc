"""Batched ``last_used_at`` and usage writes on PostgreSQL: replicas flushing at once cannot deadlock, and a
deadlock that does happen becomes the storage error type and is retried once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from gateway.storage.base import ApiKey
from gateway.storage.postgres import PostgresStorage
from tests.support.databases import Backend, connect_postgres

pytestmark = pytest.mark.postgres

BOUND = 30.0
"""A safety net so a lost wake-up fails the test instead of hanging it; nothing waits on real time."""
OTHER_KEYS = 1000
"""Enough rows that PostgreSQL looks keys up by index in the order the batch lists them (as in production)."""
WAITING_ON = """
WITH RECURSIVE blocked(pid) AS (
    SELECT pid FROM pg_stat_activity WHERE $1::int = ANY(pg_blocking_pids(pid))
    UNION
    SELECT a.pid FROM pg_stat_activity AS a JOIN blocked AS b ON b.pid = ANY(pg_blocking_pids(a.pid))
)
SELECT count(*) FROM blocked
"""


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[Backend]:
    db = Backend("postgres", tmp_path)
    await db.start()
    try:
        yield db
    finally:
        await db.close()


@pytest.fixture
async def storage(backend: Backend) -> PostgresStorage:
    """Two keys, ``key_a`` and ``key_b``, among many others, with fresh planner statistics."""
    storage = await backend.storage()
    assert isinstance(storage, PostgresStorage)
    user = await storage.create_user(user_id="usr_1", email="a@example.com", password_hash="x", now=0.0)
    for key_id in ("key_b", "key_a"):
        await storage.create_api_key(ApiKey(key_id, user.id, "n", f"hash_{key_id}", "mgw_x", "abcd", created_at=0.0))
    await backend.execute(
        "INSERT INTO api_keys (id, user_id, name, key_hash, display_prefix, last_four, created_at) "
        f"SELECT 'key_z' || n, 'usr_1', 'n', 'hash_z' || n, 'mgw_x', 'abcd', 0 FROM generate_series(1, {OTHER_KEYS}) n"
    )
    await backend.execute("ANALYZE api_keys")
    return storage


@pytest.fixture
async def holder(backend: Backend) -> AsyncIterator[asyncpg.Connection]:
    """Another client's connection, in a transaction the test commits; it never gives up on a deadlock first."""
    conn = await connect_postgres()
    await conn.execute(f'SET search_path TO "{backend.schema}"')
    await conn.execute("SET deadlock_timeout = '60s'")
    await conn.execute("BEGIN")
    try:
        yield conn
    finally:
        await conn.close()


async def waiting_until(holder: asyncpg.Connection, count: int) -> None:
    """Return once ``count`` sessions wait (directly or behind another waiter) on the holder's transaction."""
    watcher = await connect_postgres()
    try:
        pid = holder.get_server_pid()
        while await watcher.fetchval(WAITING_ON, pid) < count:
            pass
    finally:
        await watcher.close()


async def test_two_batches_listing_the_same_keys_in_opposite_orders_do_not_deadlock(
    storage: PostgresStorage, holder: asyncpg.Connection
) -> None:
    async with asyncio.timeout(BOUND):
        await holder.execute("SELECT 1 FROM api_keys WHERE id = 'key_a' FOR UPDATE")
        first = asyncio.create_task(storage.touch_api_keys({"key_a": 10.0, "key_b": 10.0}))
        await waiting_until(holder, 1)
        second = asyncio.create_task(storage.touch_api_keys({"key_b": 20.0, "key_a": 20.0}))
        await waiting_until(holder, 2)
        await holder.execute("COMMIT")
        await asyncio.gather(first, second)
    for key_id in ("key_a", "key_b"):
        key = await storage.get_api_key(key_id)
        assert key is not None
        assert key.last_used_at == 20.0


async def test_a_deadlock_is_a_storage_error_and_the_batch_is_retried_once(
    storage: PostgresStorage, holder: asyncpg.Connection
) -> None:
    """The gateway locks key_a then waits for key_b; the other client, holding key_b, then asks for key_a."""
    async with asyncio.timeout(BOUND):
        await holder.execute("SELECT 1 FROM api_keys WHERE id = 'key_b' FOR UPDATE")
        touch = asyncio.create_task(storage.touch_api_keys({"key_a": 30.0, "key_b": 30.0}))
        await waiting_until(holder, 1)
        # PostgreSQL breaks the cycle by rolling the gateway's statement back (its deadlock_timeout ends first).
        await holder.execute("SELECT 1 FROM api_keys WHERE id = 'key_a' FOR UPDATE")
        await holder.execute("COMMIT")
        await touch
    key = await storage.get_api_key("key_a")
    assert key is not None
    assert key.last_used_at == 30.0
