"""PostgreSQL backend on an asyncpg pool, for deployments with several gateway replicas.

Connection failures and timeouts become ``StorageUnavailable`` (callers answer 503); a unique violation
becomes ``Conflict``. Migrations serialise on a transaction-scoped advisory lock, so replicas starting
together apply each version exactly once.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import astuple
from typing import Any

import asyncpg

from gateway.storage.base import (
    ApiKey,
    Conflict,
    Contention,
    McpSession,
    StorageError,
    StorageUnavailable,
    User,
)
from gateway.storage.migrator import pending_migrations, verify_schema
from gateway.storage.postgres_accounts import PostgresAccountStores
from gateway.storage.postgres_app_flow import PostgresAppFlowStores
from gateway.storage.postgres_identity import PostgresIdentityStores
from gateway.storage.postgres_identity_links import PostgresIdentityLinkStore
from gateway.storage.postgres_oauth import PostgresOAuthStores
from gateway.storage.postgres_trail import PostgresTrailStore
from gateway.storage.postgres_vault import PostgresVaultStore

_SELECT_USER = "SELECT id, email, password_hash, created_at, disabled_at, plan, role FROM users"
_SELECT_KEY = (
    "SELECT id, user_id, name, key_hash, display_prefix, last_four, created_at, expires_at, last_used_at, "
    "revoked_at, scope FROM api_keys"
)
_SELECT_SESSION = "SELECT session_hash, user_id, kind, upstream_path, created_at FROM mcp_sessions"
_INSERT_KEY = (
    "INSERT INTO api_keys (id, user_id, name, key_hash, display_prefix, last_four, created_at, expires_at, "
    "last_used_at, revoked_at, scope) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
)

MIGRATION_LOCK_KEY = 0x6D67775F6D696772
"""``pg_advisory_xact_lock`` key taken by every migration transaction (``b"mgw_migr"`` as an int)."""

_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.CannotConnectNowError,
)

# Raised when PostgreSQL rolls a statement back to break a deadlock or keep transactions serializable.
_CONTENTION: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.SerializationError,
)


CONTENTION_PAUSE = 0.05
"""Seconds (up to twice this, at random) before a statement that lost a deadlock runs again."""


class PostgresStorage(
    PostgresOAuthStores,
    PostgresAccountStores,
    PostgresTrailStore,
    PostgresIdentityStores,
    PostgresIdentityLinkStore,
    PostgresAppFlowStores,
    PostgresVaultStore,
):
    """``Storage`` on PostgreSQL.

    ``search_path`` (when set) is sent as a server setting on every pooled connection, so the gateway's
    tables can live in a dedicated schema.

    ``pgbouncer``: the server is reached through PgBouncer in transaction pooling mode, where consecutive
    statements of one client may run on different server connections. Then no statement is prepared by name
    (asyncpg's statement cache is off), and every operation runs inside one transaction, which pins one server
    connection for its whole length (asyncpg's unnamed statements are parsed and executed in separate round
    trips); ``search_path`` is set for that transaction only (``set_config(..., true)``), since a connection
    setting would stay on whichever server connection happened to receive it.

    ``connect_timeout`` bounds opening a connection and waiting for a free one in the pool; ``command_timeout``
    bounds each statement (migrations get ``migration_timeout``).
    """

    def __init__(
        self,
        dsn: str,
        *,
        pool_min: int = 1,
        pool_max: int = 10,
        search_path: str | None = None,
        connect_timeout: float = 5.0,
        command_timeout: float = 10.0,
        migration_timeout: float = 600.0,
        pgbouncer: bool = False,
    ) -> None:
        if not 0 <= pool_min <= pool_max or pool_max < 1:
            raise ValueError(f"need 0 <= pool_min <= pool_max and pool_max >= 1, got {pool_min}, {pool_max}")
        self.dsn = dsn
        self.pool_min = pool_min
        self.pool_max = pool_max
        self.search_path = search_path
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.migration_timeout = migration_timeout
        self.pgbouncer = pgbouncer
        self._pool: Any = None

    async def open(self) -> None:
        if self._pool is not None:
            return
        server_settings = {"search_path": self.search_path} if self.search_path is not None else None
        try:
            self._pool = await asyncpg.create_pool(
                self.dsn,
                min_size=self.pool_min,
                max_size=self.pool_max,
                timeout=self.connect_timeout,
                command_timeout=self.command_timeout,
                server_settings=None if self.pgbouncer else server_settings,
                statement_cache_size=0 if self.pgbouncer else 100,
            )
        except _UNAVAILABLE as exc:
            raise StorageUnavailable(f"PostgreSQL unreachable: {_describe(exc)}") from exc

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def ping(self) -> float | None:
        async with self._connection() as conn:
            return float(await conn.fetchval("SELECT extract(epoch FROM clock_timestamp())::float8"))

    async def migrate(self) -> list[int]:
        async with self._connection() as conn:
            async with conn.transaction():
                await conn.execute(
                    "SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY, timeout=self.migration_timeout
                )
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations "
                    "(version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)"
                )
                done = [row[0] for row in await conn.fetch("SELECT version FROM schema_migrations")]
            applied: list[int] = []
            for migration in pending_migrations("postgres", done):
                async with conn.transaction():
                    await conn.execute(
                        "SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY, timeout=self.migration_timeout
                    )
                    already = await conn.fetchval(
                        "SELECT 1 FROM schema_migrations WHERE version = $1", migration.version
                    )
                    if already is not None:
                        continue
                    await conn.execute(migration.sql, timeout=self.migration_timeout)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
                        migration.version,
                        time.time(),
                    )
                applied.append(migration.version)
            return applied

    async def check_schema(self) -> None:
        async with self._connection() as conn:
            if await conn.fetchval("SELECT to_regclass('schema_migrations')") is None:
                applied: list[int] = []
            else:
                applied = [row[0] for row in await conn.fetch("SELECT version FROM schema_migrations")]
        verify_schema("postgres", applied)

    async def create_user(self, *, user_id: str, email: str, password_hash: str, now: float) -> User:
        await self._execute(
            "INSERT INTO users (id, email, email_normalized, password_hash, created_at) VALUES ($1, $2, $3, $4, $5)",
            user_id,
            email,
            email.lower(),
            password_hash,
            now,
        )
        return User(id=user_id, email=email, password_hash=password_hash, created_at=now)

    async def get_user(self, user_id: str) -> User | None:
        row = await self._fetchrow(_SELECT_USER + " WHERE id = $1", user_id)
        return User(*row) if row is not None else None

    async def revocation_epoch(self) -> int:
        row = await self._fetchrow("SELECT epoch FROM revocation_epoch WHERE id = 1")
        if row is None:
            raise StorageError("revocation_epoch row missing")
        return int(row[0])

    async def get_user_by_email(self, email: str) -> User | None:
        row = await self._fetchrow(_SELECT_USER + " WHERE email_normalized = $1", email.lower())
        return User(*row) if row is not None else None

    async def list_users(self) -> list[User]:
        rows = await self._fetch(_SELECT_USER + " ORDER BY created_at, id")
        return [User(*row) for row in rows]

    async def set_password_hash(self, user_id: str, password_hash: str) -> bool:
        status = await self._execute("UPDATE users SET password_hash = $2 WHERE id = $1", user_id, password_hash)
        return _row_count(status) == 1

    async def set_disabled(self, user_id: str, disabled_at: float | None) -> bool:
        status = await self._execute("UPDATE users SET disabled_at = $2 WHERE id = $1", user_id, disabled_at)
        return _row_count(status) == 1

    async def set_plan(self, user_id: str, plan: str | None) -> bool:
        status = await self._execute("UPDATE users SET plan = $2 WHERE id = $1", user_id, plan)
        return _row_count(status) == 1

    async def create_api_key(self, key: ApiKey) -> None:
        await self._execute(_INSERT_KEY, *astuple(key))

    async def get_api_key_by_hash(self, key_hash: str) -> ApiKey | None:
        row = await self._fetchrow(_SELECT_KEY + " WHERE key_hash = $1", key_hash)
        return ApiKey(*row) if row is not None else None

    async def get_api_key(self, key_id: str) -> ApiKey | None:
        row = await self._fetchrow(_SELECT_KEY + " WHERE id = $1", key_id)
        return ApiKey(*row) if row is not None else None

    async def list_api_keys(self, user_id: str | None = None) -> list[ApiKey]:
        if user_id is None:
            rows = await self._fetch(_SELECT_KEY + " ORDER BY created_at, id")
        else:
            rows = await self._fetch(_SELECT_KEY + " WHERE user_id = $1 ORDER BY created_at, id", user_id)
        return [ApiKey(*row) for row in rows]

    async def revoke_api_key(self, key_id: str, *, now: float, user_id: str | None = None) -> bool:
        status = await self._execute(
            "UPDATE api_keys SET revoked_at = $2 "
            "WHERE id = $1 AND revoked_at IS NULL AND ($3::text IS NULL OR user_id = $3::text)",
            key_id,
            now,
            user_id,
        )
        return _row_count(status) == 1

    async def touch_api_keys(self, last_used: Mapping[str, float]) -> None:
        if not last_used:
            return
        # The locking sub-select takes the row locks in id order, so two replicas' batches cannot deadlock.
        ids = sorted(last_used)
        await self._execute_retrying(
            "UPDATE api_keys AS k SET last_used_at = s.used_at FROM ("
            "SELECT t.id, v.used_at FROM api_keys AS t "
            "JOIN unnest($1::text[], $2::double precision[]) AS v(id, used_at) ON t.id = v.id "
            "WHERE t.last_used_at IS NULL OR t.last_used_at < v.used_at "
            "ORDER BY t.id FOR NO KEY UPDATE OF t) AS s "
            "WHERE k.id = s.id AND (k.last_used_at IS NULL OR k.last_used_at < s.used_at)",
            ids,
            [last_used[key_id] for key_id in ids],
        )

    async def bind_session(self, session: McpSession) -> None:
        await self._execute(
            "INSERT INTO mcp_sessions (session_hash, user_id, kind, upstream_path, created_at) "
            "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (session_hash) DO NOTHING",
            *astuple(session),
        )

    async def get_session(self, session_hash: str) -> McpSession | None:
        row = await self._fetchrow(_SELECT_SESSION + " WHERE session_hash = $1", session_hash)
        return McpSession(*row) if row is not None else None

    async def forget_session(self, session_hash: str) -> None:
        await self._execute("DELETE FROM mcp_sessions WHERE session_hash = $1", session_hash)

    async def purge_sessions(self, *, created_before: float) -> int:
        status = await self._execute("DELETE FROM mcp_sessions WHERE created_at < $1", created_before)
        return _row_count(status)

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        """A pooled connection; backend errors raised inside the block are translated."""
        pool = self._pool
        if pool is None:
            raise RuntimeError("PostgresStorage is not open; await open() first")
        try:
            async with pool.acquire(timeout=self.connect_timeout) as conn:
                if not self.pgbouncer:
                    yield conn
                    return
                async with conn.transaction():
                    if self.search_path is not None:
                        await conn.execute("SELECT set_config('search_path', $1, true)", self.search_path)
                    yield conn
        except asyncpg.exceptions.UniqueViolationError as exc:
            raise Conflict(_describe(exc)) from exc
        except _CONTENTION as exc:
            raise Contention(_describe(exc)) from exc
        except _UNAVAILABLE as exc:
            raise StorageUnavailable(f"PostgreSQL unavailable: {_describe(exc)}") from exc
        except asyncpg.exceptions.IntegrityConstraintViolationError as exc:
            raise StorageError(_describe(exc)) from exc

    async def _execute(self, sql: str, *args: Any) -> str:
        async with self._connection() as conn:
            status: str = await conn.execute(sql, *args)
            return status

    async def _execute_retrying(self, sql: str, *args: Any) -> str:
        """``_execute`` for one self-contained statement that is safe to run twice: a deadlock or serialization
        failure rolled it back whole, so it is run once more before ``Contention`` reaches the caller: after a short
        random pause, so that the transaction that won gets its locks first instead of meeting the retry again."""
        try:
            return await self._execute(sql, *args)
        except Contention:
            await asyncio.sleep(CONTENTION_PAUSE * (1 + secrets.randbelow(1000) / 1000))
            return await self._execute(sql, *args)

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        async with self._connection() as conn:
            rows: list[Any] = await conn.fetch(sql, *args)
            return rows

    async def _fetchrow(self, sql: str, *args: Any) -> Any:
        async with self._connection() as conn:
            return await conn.fetchrow(sql, *args)


def _row_count(status: str) -> int:
    """The row count at the end of a command tag such as ``UPDATE 1`` or ``DELETE 3``."""
    return int(status.rsplit(" ", 1)[-1])


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
