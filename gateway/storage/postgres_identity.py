"""The identity side's stores on PostgreSQL (signing keys), mixed into ``PostgresStorage``."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from gateway.storage.identity import StoredSigningKey

_SELECT_KEY = (
    "SELECT kid, algorithm, public_jwk, encrypted_private_key, encryption_key_id, created_at, retired_at "
    "FROM signing_keys"
)


class PostgresIdentityStores:
    """``SigningKeyStore``."""

    if TYPE_CHECKING:
        # Provided by PostgresStorage.
        def _connection(self) -> AbstractAsyncContextManager[Any]: ...
        async def _execute(self, sql: str, *args: Any) -> str: ...
        async def _fetch(self, sql: str, *args: Any) -> list[Any]: ...

    async def add_signing_key(self, key: StoredSigningKey, *, now: float, retire_current: bool) -> bool:
        params = (key.kid, key.algorithm, key.public_jwk, key.encrypted_private_key, key.encryption_key_id)
        async with self._connection() as conn, conn.transaction():
            if retire_current:
                await conn.execute(
                    "UPDATE signing_keys SET is_current = NULL, retired_at = $1 WHERE is_current = 1", now
                )
            # A concurrent first key (or rotation) holds is_current = 1: this insert then stores nothing.
            status: str = await conn.execute(
                "INSERT INTO signing_keys (kid, algorithm, public_jwk, encrypted_private_key, encryption_key_id, "
                "created_at, retired_at, is_current) VALUES ($1, $2, $3, $4, $5, $6, NULL, 1) "
                "ON CONFLICT (is_current) DO NOTHING",
                *params,
                key.created_at,
            )
            return status.endswith(" 1")

    async def list_signing_keys(self) -> list[StoredSigningKey]:
        rows = await self._fetch(_SELECT_KEY + " ORDER BY created_at, kid")
        return [StoredSigningKey(*row) for row in rows]

    async def delete_signing_keys(self, *, retired_before: float) -> int:
        status = await self._execute("DELETE FROM signing_keys WHERE retired_at < $1", retired_before)
        return int(status.rsplit(" ", 1)[-1])
