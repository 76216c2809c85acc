"""SQLite backend on aiosqlite, for single-node deployments.

Two connections per instance: one writer, guarded by an ``asyncio.Lock`` so coroutines never interleave
statements inside a transaction, and one read-only reader (WAL lets it read while a write is under way).
Every write is a ``BEGIN IMMEDIATE`` transaction, so several processes sharing the file queue on
``busy_timeout`` instead of failing on lock upgrades.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import astuple
from typing import Any, TypeVar

import aiosqlite

from gateway.storage.base import (
    ApiKey,
    Conflict,
    McpSession,
    StorageError,
    StorageUnavailable,
    User,
)
from gateway.storage.migrator import Migration, pending_migrations, verify_schema
from gateway.storage.sqlite_accounts import SqliteAccountStores
from gateway.storage.sqlite_app_flow import SqliteAppFlowStores
from gateway.storage.sqlite_identity import SqliteIdentityStores
from gateway.storage.sqlite_identity_links import SqliteIdentityLinkStore
from gateway.storage.sqlite_oauth import SqliteOAuthStores
from gateway.storage.sqlite_trail import SqliteTrailStore
from gateway.storage.sqlite_vault import SqliteVaultStore

T = TypeVar("T")

_SELECT_USER = "SELECT id, email, password_hash, created_at, disabled_at, plan, role FROM users"
_SELECT_KEY = (
    "SELECT id, user_id, name, key_hash, display_prefix, last_four, created_at, expires_at, last_used_at, "
    "revoked_at, scope FROM api_keys"
)
_SELECT_SESSION = "SELECT session_hash, user_id, kind, upstream_path, created_at FROM mcp_sessions"
_INSERT_KEY = (
    "INSERT INTO api_keys (id, user_id, name, key_hash, display_prefix, last_four, created_at, expires_at, "
    "last_used_at, revoked_at, scope) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)

_TRANSLATED = (sqlite3.OperationalError, sqlite3.IntegrityError)
_UNAVAILABLE_MARKERS = ("locked", "busy", "unable to open", "disk i/o error", "readonly database")


class SqliteStorage(
    SqliteOAuthStores,
    SqliteAccountStores,
    SqliteTrailStore,
    SqliteIdentityStores,
    SqliteIdentityLinkStore,
    SqliteAppFlowStores,
    SqliteVaultStore,
):
    """``Storage`` on one SQLite file; ``path`` is created on first open (its directory must exist)."""

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout_ms: int = 5000) -> None:
        self.path = os.fspath(path)
        self.busy_timeout_ms = busy_timeout_ms
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()

    async def open(self) -> None:
        if self._writer is not None:
            return
        writer = await self._connect()
        try:
            await self._enable_wal(writer)
            await _run(writer, "PRAGMA synchronous = NORMAL")
            reader = await self._connect()
            try:
                await _run(reader, "PRAGMA query_only = ON")
            except BaseException:
                await reader.close()
                raise
        except BaseException:
            await writer.close()
            raise
        self._writer, self._reader = writer, reader

    async def close(self) -> None:
        writer, reader = self._writer, self._reader
        self._writer = self._reader = None
        async with self._write_lock:
            for connection in (reader, writer):
                if connection is not None:
                    await connection.close()

    async def ping(self) -> float | None:
        await self._fetch("SELECT 1")
        return None  # the file is on this host: same clock

    async def migrate(self) -> list[int]:
        await self._write(_create_migrations_table)
        applied: list[int] = []
        for migration in pending_migrations("sqlite", await self._applied_versions()):
            if await self._write(functools.partial(_apply, migration=migration)):
                applied.append(migration.version)
        return applied

    async def check_schema(self) -> None:
        verify_schema("sqlite", await self._applied_versions())

    async def create_user(self, *, user_id: str, email: str, password_hash: str, now: float) -> User:
        await self._execute(
            "INSERT INTO users (id, email, email_normalized, password_hash, created_at) VALUES (?, ?, ?, ?, ?)",
            (user_id, email, email.lower(), password_hash, now),
        )
        return User(id=user_id, email=email, password_hash=password_hash, created_at=now)

    async def get_user(self, user_id: str) -> User | None:
        rows = await self._fetch(_SELECT_USER + " WHERE id = ?", (user_id,))
        return User(*rows[0]) if rows else None

    async def revocation_epoch(self) -> int:
        rows = await self._fetch("SELECT epoch FROM revocation_epoch WHERE id = 1")
        return int(rows[0][0])

    async def get_user_by_email(self, email: str) -> User | None:
        rows = await self._fetch(_SELECT_USER + " WHERE email_normalized = ?", (email.lower(),))
        return User(*rows[0]) if rows else None

    async def list_users(self) -> list[User]:
        rows = await self._fetch(_SELECT_USER + " ORDER BY created_at, id")
        return [User(*row) for row in rows]

    async def set_password_hash(self, user_id: str, password_hash: str) -> bool:
        changed = await self._execute("UPDATE users SET password_hash = ? WHERE id = ?", (password_hash, user_id))
        return changed == 1

    async def set_disabled(self, user_id: str, disabled_at: float | None) -> bool:
        changed = await self._execute("UPDATE users SET disabled_at = ? WHERE id = ?", (disabled_at, user_id))
        return changed == 1

    async def set_plan(self, user_id: str, plan: str | None) -> bool:
        changed = await self._execute("UPDATE users SET plan = ? WHERE id = ?", (plan, user_id))
        return changed == 1

    async def create_api_key(self, key: ApiKey) -> None:
        await self._execute(_INSERT_KEY, astuple(key))

    async def get_api_key_by_hash(self, key_hash: str) -> ApiKey | None:
        rows = await self._fetch(_SELECT_KEY + " WHERE key_hash = ?", (key_hash,))
        return ApiKey(*rows[0]) if rows else None

    async def get_api_key(self, key_id: str) -> ApiKey | None:
        rows = await self._fetch(_SELECT_KEY + " WHERE id = ?", (key_id,))
        return ApiKey(*rows[0]) if rows else None

    async def list_api_keys(self, user_id: str | None = None) -> list[ApiKey]:
        if user_id is None:
            rows = await self._fetch(_SELECT_KEY + " ORDER BY created_at, id")
        else:
            rows = await self._fetch(_SELECT_KEY + " WHERE user_id = ? ORDER BY created_at, id", (user_id,))
        return [ApiKey(*row) for row in rows]

    async def revoke_api_key(self, key_id: str, *, now: float, user_id: str | None = None) -> bool:
        changed = await self._execute(
            "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL AND (? IS NULL OR user_id = ?)",
            (now, key_id, user_id, user_id),
        )
        return changed == 1

    async def touch_api_keys(self, last_used: Mapping[str, float]) -> None:
        if not last_used:
            return
        rows = [(used_at, key_id, used_at) for key_id, used_at in sorted(last_used.items())]

        async def touch(conn: aiosqlite.Connection) -> None:
            await conn.executemany(
                "UPDATE api_keys SET last_used_at = ? WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)",
                rows,
            )

        await self._write(touch)

    async def bind_session(self, session: McpSession) -> None:
        await self._execute(
            "INSERT INTO mcp_sessions (session_hash, user_id, kind, upstream_path, created_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (session_hash) DO NOTHING",
            astuple(session),
        )

    async def get_session(self, session_hash: str) -> McpSession | None:
        rows = await self._fetch(_SELECT_SESSION + " WHERE session_hash = ?", (session_hash,))
        return McpSession(*rows[0]) if rows else None

    async def forget_session(self, session_hash: str) -> None:
        await self._execute("DELETE FROM mcp_sessions WHERE session_hash = ?", (session_hash,))

    async def purge_sessions(self, *, created_before: float) -> int:
        return await self._execute("DELETE FROM mcp_sessions WHERE created_at < ?", (created_before,))

    async def _enable_wal(self, conn: aiosqlite.Connection) -> None:
        """Switch to WAL. SQLite does not call the busy handler for this switch, so when another process is
        switching the same new file at the same moment, wait for it here (bounded by ``busy_timeout``)."""
        deadline = time.monotonic() + self.busy_timeout_ms / 1000
        delay = 0.01
        while True:
            try:
                await _run(conn, "PRAGMA journal_mode = WAL")
                return
            except StorageUnavailable:
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.2)

    async def _connect(self) -> aiosqlite.Connection:
        try:
            conn = await aiosqlite.connect(self.path, isolation_level=None)
        except _TRANSLATED as exc:
            raise _translate(exc) from exc
        try:
            await _run(conn, f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            await _run(conn, "PRAGMA foreign_keys = ON")
        except BaseException:
            await conn.close()
            raise
        return conn

    async def _applied_versions(self) -> list[int]:
        exists = await self._fetch("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'")
        if not exists:
            return []
        return [int(row[0]) for row in await self._fetch("SELECT version FROM schema_migrations")]

    async def _fetch(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        reader = self._reader
        if reader is None:
            raise RuntimeError("SqliteStorage is not open; await open() first")
        try:
            return list(await reader.execute_fetchall(sql, tuple(params)))
        except _TRANSLATED as exc:
            raise _translate(exc) from exc

    async def _execute(self, sql: str, params: Iterable[Any] = ()) -> int:
        """Run one write statement in its own transaction; returns the number of rows it changed."""

        async def run(conn: aiosqlite.Connection) -> int:
            async with conn.execute(sql, tuple(params)) as cursor:
                return cursor.rowcount

        return await self._write(run)

    async def _write(self, work: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        """Run ``work`` inside ``BEGIN IMMEDIATE`` … ``COMMIT`` on the writer, rolling back on any error."""
        async with self._write_lock:
            writer = self._writer
            if writer is None:
                raise RuntimeError("SqliteStorage is not open; await open() first")
            try:
                await writer.execute("BEGIN IMMEDIATE")
                result = await work(writer)
                await writer.commit()
            except BaseException as exc:
                with contextlib.suppress(sqlite3.Error):
                    await asyncio.shield(writer.rollback())
                if isinstance(exc, _TRANSLATED):
                    raise _translate(exc) from exc
                raise
            return result


async def _run(conn: aiosqlite.Connection, sql: str) -> None:
    try:
        async with conn.execute(sql) as cursor:
            await cursor.fetchall()
    except _TRANSLATED as exc:
        raise _translate(exc) from exc


async def _create_migrations_table(conn: aiosqlite.Connection) -> None:
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
    )


async def _apply(conn: aiosqlite.Connection, migration: Migration) -> bool:
    """Apply one migration inside the caller's transaction; False when another process got there first."""
    async with conn.execute("SELECT 1 FROM schema_migrations WHERE version = ?", (migration.version,)) as cursor:
        if await cursor.fetchone() is not None:
            return False
    for statement in split_statements(migration.sql):
        await conn.execute(statement)
    await conn.execute(
        "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)", (migration.version, time.time())
    )
    return True


def split_statements(script: str) -> list[str]:
    """Split a SQL script into complete statements (trigger bodies and quoted ``;`` stay whole)."""
    statements: list[str] = []
    pending = ""
    for piece in re.split(r"(?<=;)", script):
        pending += piece
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    if pending.strip():
        statements.append(pending.strip())
    return statements


def _translate(exc: sqlite3.OperationalError | sqlite3.IntegrityError) -> StorageError:
    message = str(exc)
    if isinstance(exc, sqlite3.IntegrityError):
        if "UNIQUE constraint failed" in message:
            return Conflict(message)
        return StorageError(message)
    if any(marker in message.lower() for marker in _UNAVAILABLE_MARKERS):
        return StorageUnavailable(f"SQLite database unavailable: {message}")
    return StorageError(message)
