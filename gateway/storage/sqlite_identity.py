"""The identity side's stores on SQLite (signing keys), mixed into ``SqliteStorage``."""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

import aiosqlite

from gateway.storage.identity import StoredSigningKey

T = TypeVar("T")

_SELECT_KEY = (
    "SELECT kid, algorithm, public_jwk, encrypted_private_key, encryption_key_id, created_at, retired_at "
    "FROM signing_keys"
)
_INSERT_KEY = (
    "INSERT INTO signing_keys (kid, algorithm, public_jwk, encrypted_private_key, encryption_key_id, created_at, "
    "retired_at, is_current) VALUES (?, ?, ?, ?, ?, ?, NULL, 1)"
)


class SqliteIdentityStores:
    """``SigningKeyStore``."""

    if TYPE_CHECKING:
        # Provided by SqliteStorage.
        async def _fetch(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]: ...
        async def _execute(self, sql: str, params: Iterable[Any] = ()) -> int: ...
        async def _write(self, work: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T: ...

    async def add_signing_key(self, key: StoredSigningKey, *, now: float, retire_current: bool) -> bool:
        params = (key.kid, key.algorithm, key.public_jwk, key.encrypted_private_key, key.encryption_key_id)

        async def add(conn: aiosqlite.Connection) -> bool:
            if retire_current:
                await conn.execute(
                    "UPDATE signing_keys SET is_current = NULL, retired_at = ? WHERE is_current = 1", (now,)
                )
            else:
                async with conn.execute("SELECT 1 FROM signing_keys WHERE is_current = 1") as cursor:
                    if await cursor.fetchone() is not None:
                        return False
            await conn.execute(_INSERT_KEY, (*params, key.created_at))
            return True

        return await self._write(add)

    async def list_signing_keys(self) -> list[StoredSigningKey]:
        rows = await self._fetch(_SELECT_KEY + " ORDER BY created_at, kid")
        return [StoredSigningKey(*row) for row in rows]

    async def delete_signing_keys(self, *, retired_before: float) -> int:
        return await self._execute("DELETE FROM signing_keys WHERE retired_at < ?", (retired_before,))
