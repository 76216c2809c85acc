"""Backend-specific behaviour: URL dispatch, failure translation, SQLite locking, migration files."""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import pytest

from gateway.storage import StorageUnavailable, open_storage
from gateway.storage.migrator import known_versions, load_migrations
from gateway.storage.postgres import PostgresStorage
from gateway.storage.sqlite import SqliteStorage, split_statements
from tests.support.databases import POSTGRES_URL, Backend, connect_postgres


def test_open_storage_picks_sqlite_for_a_relative_path() -> None:
    storage = open_storage("sqlite:///data/gateway.db")
    assert isinstance(storage, SqliteStorage)
    assert storage.path == "data/gateway.db"


def test_open_storage_picks_sqlite_for_an_absolute_path() -> None:
    storage = open_storage("sqlite:////var/lib/gateway/gateway.db")
    assert isinstance(storage, SqliteStorage)
    assert storage.path == "/var/lib/gateway/gateway.db"


@pytest.mark.parametrize("url", ["postgresql://gw@db:5432/gateway", "postgres://gw@db/gateway"])
def test_open_storage_picks_postgres_with_the_pool_settings(url: str) -> None:
    storage = open_storage(url, pool_min=2, pool_max=7, search_path="gateway")
    assert isinstance(storage, PostgresStorage)
    assert (storage.dsn, storage.pool_min, storage.pool_max, storage.search_path) == (url, 2, 7, "gateway")


@pytest.mark.parametrize("url", ["mysql://db/gateway", "gateway.db", "sqlite://", "sqlite:///", "sqlite:///:memory:"])
def test_open_storage_rejects_urls_it_cannot_serve(url: str) -> None:
    with pytest.raises(ValueError, match="sqlite:///"):
        open_storage(url)


def test_both_backends_ship_the_same_migration_versions() -> None:
    assert known_versions("sqlite") == known_versions("postgres")
    assert known_versions("sqlite")[0] == 1
    assert all(migration.sql.strip() for migration in load_migrations("postgres"))


def test_sql_scripts_split_into_whole_statements() -> None:
    script = """
        -- a comment; with a semicolon
        CREATE TABLE t (v TEXT DEFAULT 'a;b');
        CREATE TRIGGER tr AFTER INSERT ON t BEGIN UPDATE t SET v = 'x;y'; END;
        -- trailing comment
    """
    statements = split_statements(script)
    assert len(statements) == 3
    assert statements[0].endswith("DEFAULT 'a;b');")
    assert statements[1].startswith("CREATE TRIGGER")
    assert statements[1].endswith("END;")


async def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path: Path) -> None:
    storage = SqliteStorage(tmp_path / "gateway.db")
    await storage.open()
    try:
        await storage.migrate()
    finally:
        await storage.close()
    with closing(sqlite3.connect(tmp_path / "gateway.db")) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_sqlite_in_a_missing_directory_is_unavailable(tmp_path: Path) -> None:
    storage = SqliteStorage(tmp_path / "missing" / "gateway.db")
    with pytest.raises(StorageUnavailable):
        await storage.open()


async def test_sqlite_locked_by_another_process_is_unavailable_after_the_busy_timeout(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    storage = SqliteStorage(path, busy_timeout_ms=100)
    await storage.open()
    try:
        await storage.migrate()
        with closing(sqlite3.connect(path, isolation_level=None)) as blocker:
            blocker.execute("BEGIN IMMEDIATE")
            started = time.monotonic()
            with pytest.raises(StorageUnavailable, match="locked"):
                await storage.create_user(user_id="usr_1", email="a@example.com", password_hash="h", now=0.0)
            assert time.monotonic() - started < 2
            assert await storage.get_user("usr_1") is None
            blocker.execute("ROLLBACK")
        await storage.create_user(user_id="usr_1", email="a@example.com", password_hash="h", now=0.0)
    finally:
        await storage.close()


async def test_sqlite_writer_recovers_after_a_cancelled_write(tmp_path: Path) -> None:
    storage = SqliteStorage(tmp_path / "gateway.db")
    await storage.open()
    try:
        await storage.migrate()
        task = asyncio.ensure_future(
            storage.create_user(user_id="usr_1", email="a@example.com", password_hash="h", now=0.0)
        )
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await storage.create_user(user_id="usr_2", email="b@example.com", password_hash="h", now=0.0)
        assert await storage.get_user("usr_2") is not None
    finally:
        await storage.close()


async def test_an_unreachable_postgres_is_unavailable_quickly() -> None:
    storage = PostgresStorage("postgresql://postgres@127.0.0.1:1/test", connect_timeout=2)
    started = time.monotonic()
    with pytest.raises(StorageUnavailable):
        await storage.open()
    assert time.monotonic() - started < 5


@pytest.mark.postgres
async def test_a_postgres_connection_killed_mid_query_is_unavailable_and_the_pool_recovers() -> None:
    storage = PostgresStorage(POSTGRES_URL, pool_min=1, pool_max=2)
    name = f"gw_doomed_{secrets.token_hex(4)}"

    async def long_query() -> None:
        async with storage._connection() as conn:
            await conn.execute(f"SET application_name = '{name}'")
            await conn.execute("SELECT pg_sleep(10)")

    await storage.open()
    admin = await connect_postgres()
    try:
        task = asyncio.ensure_future(long_query())
        for _ in range(100):
            pid = await admin.fetchval(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND state = 'active'", name
            )
            if pid is not None:
                break
            await asyncio.sleep(0.05)
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid) is True
        with pytest.raises(StorageUnavailable):
            await task
        await storage.ping()
    finally:
        await admin.close()
        await storage.close()


@pytest.mark.postgres
async def test_postgres_search_path_keeps_each_schema_separate(tmp_path: Path) -> None:
    first, second = Backend("postgres", tmp_path), Backend("postgres", tmp_path)
    await first.start()
    await second.start()
    try:
        a, b = await first.storage(), await second.storage()
        await a.create_user(user_id="usr_1", email="a@example.com", password_hash="h", now=0.0)
        assert await b.get_user("usr_1") is None
        assert [user.id for user in await a.list_users()] == ["usr_1"]
    finally:
        await first.close()
        await second.close()
