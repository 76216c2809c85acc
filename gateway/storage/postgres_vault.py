"""The vault's store on PostgreSQL, mixed into ``PostgresStorage``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.storage.vault import StoredConnection

_COLUMNS = (
    "user_id, service, sealed_tokens, encryption_key_id, expires_at, scopes, provider_account_id, provider_email, "
    "status, version, created_at, updated_at, last_used_at"
)
_SELECT = f"SELECT {_COLUMNS} FROM vault_connections"  # noqa: S608
_UPSERT = (
    f"INSERT INTO vault_connections ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) "  # noqa: S608
    "ON CONFLICT (user_id, service) DO UPDATE SET sealed_tokens = EXCLUDED.sealed_tokens, "
    "encryption_key_id = EXCLUDED.encryption_key_id, expires_at = EXCLUDED.expires_at, scopes = EXCLUDED.scopes, "
    "provider_account_id = EXCLUDED.provider_account_id, provider_email = EXCLUDED.provider_email, "
    "status = EXCLUDED.status, version = EXCLUDED.version, created_at = EXCLUDED.created_at, "
    "updated_at = EXCLUDED.updated_at, last_used_at = EXCLUDED.last_used_at"
)


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


class PostgresVaultStore:
    """``VaultStore``."""

    if TYPE_CHECKING:
        # Provided by PostgresStorage.
        async def _execute(self, sql: str, *args: Any) -> str: ...
        async def _fetch(self, sql: str, *args: Any) -> list[Any]: ...
        async def _fetchrow(self, sql: str, *args: Any) -> Any: ...

    async def put_connection(self, connection: StoredConnection) -> None:
        c = connection
        await self._execute(
            _UPSERT,
            c.user_id, c.service, c.sealed_tokens, c.encryption_key_id, c.expires_at, c.scopes,
            c.provider_account_id, c.provider_email, c.status, c.version, c.created_at, c.updated_at, c.last_used_at,
        )  # fmt: skip

    async def get_connection(self, user_id: str, service: str) -> StoredConnection | None:
        row = await self._fetchrow(_SELECT + " WHERE user_id = $1 AND service = $2", user_id, service)
        return StoredConnection(*row) if row is not None else None

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
        status_line = await self._execute(
            "UPDATE vault_connections SET sealed_tokens = $1, encryption_key_id = $2, expires_at = $3, scopes = $4, "
            "status = $5, updated_at = $6, version = version + 1 WHERE user_id = $7 AND service = $8 "
            "AND version = $9",
            sealed_tokens, encryption_key_id, expires_at, scopes, status, now, user_id, service, expected_version,
        )  # fmt: skip
        return _count(status_line) == 1

    async def list_connections(self, user_id: str | None = None) -> list[StoredConnection]:
        if user_id is None:
            rows = await self._fetch(_SELECT + " ORDER BY user_id, service")
        else:
            rows = await self._fetch(_SELECT + " WHERE user_id = $1 ORDER BY service", user_id)
        return [StoredConnection(*row) for row in rows]

    async def delete_connection(self, user_id: str, service: str) -> bool:
        sql = "DELETE FROM vault_connections WHERE user_id = $1 AND service = $2"
        return _count(await self._execute(sql, user_id, service)) == 1

    async def touch_connection(self, user_id: str, service: str, now: float) -> None:
        sql = "UPDATE vault_connections SET last_used_at = $1 WHERE user_id = $2 AND service = $3"
        await self._execute(sql, now, user_id, service)
