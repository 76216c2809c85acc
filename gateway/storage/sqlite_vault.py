"""The vault's store on SQLite, mixed into ``SqliteStorage``."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from gateway.storage.vault import StoredConnection

_COLUMNS = (
    "user_id, service, sealed_tokens, encryption_key_id, expires_at, scopes, provider_account_id, provider_email, "
    "status, version, created_at, updated_at, last_used_at"
)
_SELECT = f"SELECT {_COLUMNS} FROM vault_connections"  # noqa: S608


class SqliteVaultStore:
    """``VaultStore``."""

    if TYPE_CHECKING:
        # Provided by SqliteStorage.
        async def _fetch(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]: ...
        async def _execute(self, sql: str, params: Iterable[Any] = ()) -> int: ...

    async def put_connection(self, connection: StoredConnection) -> None:
        c = connection
        await self._execute(
            f"INSERT OR REPLACE INTO vault_connections ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
            (
                c.user_id, c.service, c.sealed_tokens, c.encryption_key_id, c.expires_at, c.scopes,
                c.provider_account_id, c.provider_email, c.status, c.version, c.created_at, c.updated_at,
                c.last_used_at,
            ),
        )  # fmt: skip

    async def get_connection(self, user_id: str, service: str) -> StoredConnection | None:
        rows = await self._fetch(_SELECT + " WHERE user_id = ? AND service = ?", (user_id, service))
        return StoredConnection(*rows[0]) if rows else None

    async def update_connection_tokens(
        self,
        user_id: str,
        service: str,
        *,
        expected_version: int,
        sealed_tokens: str,
        encryption_key_id: str,
        expires_at: float | None,
        scopes: str,
        status: str,
        now: float,
    ) -> bool:
        changed = await self._execute(
            "UPDATE vault_connections SET sealed_tokens = ?, encryption_key_id = ?, expires_at = ?, scopes = ?, "
            "status = ?, updated_at = ?, version = version + 1 WHERE user_id = ? AND service = ? AND version = ?",
            (sealed_tokens, encryption_key_id, expires_at, scopes, status, now, user_id, service, expected_version),
        )
        return changed == 1

    async def list_connections(self, user_id: str | None = None) -> list[StoredConnection]:
        if user_id is None:
            rows = await self._fetch(_SELECT + " ORDER BY user_id, service")
        else:
            rows = await self._fetch(_SELECT + " WHERE user_id = ? ORDER BY service", (user_id,))
        return [StoredConnection(*row) for row in rows]

    async def delete_connection(self, user_id: str, service: str) -> bool:
        sql = "DELETE FROM vault_connections WHERE user_id = ? AND service = ?"
        return await self._execute(sql, (user_id, service)) == 1

    async def touch_connection(self, user_id: str, service: str, now: float) -> None:
        sql = "UPDATE vault_connections SET last_used_at = ? WHERE user_id = ? AND service = ?"
        await self._execute(sql, (now, user_id, service))
