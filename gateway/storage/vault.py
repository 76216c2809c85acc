"""Storage contract of the vault: one sealed row of provider tokens per (user, service)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class StoredConnection:
    """A connected service as stored. The tokens are only in ``sealed_tokens`` (AES-256-GCM under the operator key
    ``encryption_key_id``, the row's user and service as associated data); the rest is clear, for listing."""

    user_id: str
    service: str
    sealed_tokens: str
    encryption_key_id: str
    expires_at: float | None
    """When the access token expires (None: the provider did not say)."""
    scopes: str
    provider_account_id: str
    provider_email: str | None
    status: str
    """``connected`` or ``broken`` (the provider refused the refresh token: the user must reconnect)."""
    version: int
    """Bumped by every write of the tokens: the fencing token of refreshes (compare-and-set on it)."""
    created_at: float
    updated_at: float
    last_used_at: float | None = None


class VaultStore(Protocol):
    async def put_connection(self, connection: StoredConnection) -> None:
        """Insert or replace the (user, service) row (a new connection, or a reconnection): ``version`` is taken
        as given (the vault passes the old version + 1)."""
        ...

    async def get_connection(self, user_id: str, service: str) -> StoredConnection | None:
        """The row, or None when the service is not connected."""
        ...

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
        """Compare-and-set: write the tokens and status and bump ``version`` only while the row is still at
        ``expected_version``; returns whether it was written."""
        ...

    async def list_connections(self, user_id: str | None = None) -> list[StoredConnection]:
        """A user's rows (every row when None), by service."""
        ...

    async def delete_connection(self, user_id: str, service: str) -> bool: ...

    async def touch_connection(self, user_id: str, service: str, now: float) -> None:
        """Record a use (``last_used_at``)."""
        ...
