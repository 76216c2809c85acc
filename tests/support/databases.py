"""Databases for tests: a SQLite file or a throwaway PostgreSQL schema, opened through the real backends.

PostgreSQL tests use ``GATEWAY_TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``)
with a throwaway schema per test; they fail, never skip, when the server is unreachable.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import asyncpg
import pytest

from gateway.storage import Storage
from gateway.storage.postgres import PostgresStorage
from gateway.storage.sqlite import SqliteStorage
from tests.support.tcp_proxy import TcpProxy, tcp_proxy

POSTGRES_URL = os.environ.get("GATEWAY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


async def connect_postgres() -> asyncpg.Connection:
    """An admin connection to the test server, or a test failure explaining how to provide one."""
    try:
        return await asyncpg.connect(POSTGRES_URL, timeout=5)
    except Exception as exc:
        pytest.fail(
            f"PostgreSQL is unreachable at {POSTGRES_URL} ({type(exc).__name__}: {exc}). Start it "
            "(pg_ctlcluster --skip-systemctl-redirect <version> main start) or point GATEWAY_TEST_POSTGRES_URL "
            "at a server; postgres tests fail rather than skip.",
            pytrace=False,
        )


class Backend:
    """One database (a SQLite file or a PostgreSQL schema) that several storage instances can share."""

    def __init__(self, kind: str, tmp_path: Path, *, url: str = POSTGRES_URL) -> None:
        """``kind``: ``sqlite``, ``postgres``, or ``pgbouncer`` (PostgreSQL reached through PgBouncer at ``url``)."""
        self.kind = kind
        self.url = url
        self.db_path = tmp_path / "gateway.db"
        self.schema = f"gw_test_{secrets.token_hex(6)}"
        self._schema_created = False
        self._opened: list[Storage] = []

    @property
    def dialect(self) -> Literal["sqlite", "postgres"]:
        """The SQL dialect (and migration set) of this backend."""
        return "sqlite" if self.kind == "sqlite" else "postgres"

    async def storage(self, *, migrate: bool = True) -> Storage:
        """A new opened instance on this database (migrated unless asked otherwise)."""
        instance: Storage
        if self.kind == "sqlite":
            instance = SqliteStorage(self.db_path)
        else:
            instance = PostgresStorage(
                self.url, pool_min=1, pool_max=10, search_path=self.schema, pgbouncer=self.kind == "pgbouncer"
            )
        await instance.open()
        self._opened.append(instance)
        if migrate:
            await instance.migrate()
        return instance

    async def execute(self, sql: str) -> None:
        """Run raw SQL behind the storage's back (valid on both backends, no parameters)."""
        if self.kind == "sqlite":
            with closing(sqlite3.connect(self.db_path)) as conn, conn:
                conn.execute(sql)
            return
        conn = await connect_postgres()
        try:
            await conn.execute(f'SET search_path TO "{self.schema}"')
            await conn.execute(sql)
        finally:
            await conn.close()

    async def close(self) -> None:
        for instance in self._opened:
            await instance.close()
        if self._schema_created:
            conn = await connect_postgres()
            try:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
            finally:
                await conn.close()

    async def start(self) -> None:
        if self.kind == "sqlite":
            return
        conn = await connect_postgres()
        try:
            await conn.execute(f'CREATE SCHEMA "{self.schema}"')
        finally:
            await conn.close()
        self._schema_created = True


@asynccontextmanager
async def postgres_behind_proxy(*, connect_timeout: float) -> AsyncIterator[tuple[PostgresStorage, TcpProxy]]:
    """A migrated PostgreSQL storage in a throwaway schema, reached through a TCP proxy the test can cut."""
    schema = f"gw_test_{secrets.token_hex(6)}"
    admin = await connect_postgres()
    await admin.execute(f'CREATE SCHEMA "{schema}"')
    target = urlsplit(POSTGRES_URL)
    try:
        async with tcp_proxy(target.hostname or "127.0.0.1", target.port or 5432) as proxy:
            url = POSTGRES_URL.replace(target.netloc, f"{target.username}@127.0.0.1:{proxy.port}")
            storage = PostgresStorage(url, pool_min=1, pool_max=2, search_path=schema, connect_timeout=connect_timeout)
            await storage.open()
            try:
                await storage.migrate()
                yield storage, proxy
            finally:
                await storage.close()
    finally:
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()
