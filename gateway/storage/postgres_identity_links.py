"""Identity links (accounts at third-party providers) on PostgreSQL, mixed into ``PostgresStorage``."""

from __future__ import annotations

from dataclasses import astuple, fields
from typing import TYPE_CHECKING, Any

from gateway.storage.identity_links import IdentityLink, PendingSignIn

_COLUMNS = ", ".join(f.name for f in fields(IdentityLink))
_SELECT = f"SELECT {_COLUMNS} FROM identity_links"  # noqa: S608
_PENDING_COLUMNS = ", ".join(f.name for f in fields(PendingSignIn))


class PostgresIdentityLinkStore:
    """``IdentityLinkStore`` and ``PendingSignInStore``."""

    if TYPE_CHECKING:
        # Provided by PostgresStorage.
        async def _execute(self, sql: str, *args: Any) -> str: ...
        async def _fetch(self, sql: str, *args: Any) -> list[Any]: ...

    async def add_identity_link(self, link: IdentityLink) -> None:
        await self._execute(f"INSERT INTO identity_links ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)", *astuple(link))  # noqa: S608

    async def get_identity_link(self, provider: str, subject: str) -> IdentityLink | None:
        rows = await self._fetch(_SELECT + " WHERE provider = $1 AND subject = $2", provider, subject)
        return IdentityLink(*rows[0]) if rows else None

    async def touch_identity_link(self, provider: str, subject: str, *, email: str | None, now: float) -> bool:
        status = await self._execute(
            "UPDATE identity_links SET last_used_at = greatest(last_used_at, $1), email = coalesce($2, email) "
            "WHERE provider = $3 AND subject = $4",
            now,
            email,
            provider,
            subject,
        )
        return status.endswith(" 1")

    async def list_identity_links(self, user_id: str) -> list[IdentityLink]:
        rows = await self._fetch(_SELECT + " WHERE user_id = $1 ORDER BY linked_at, provider, subject", user_id)
        return [IdentityLink(*row) for row in rows]

    async def add_pending_sign_in(self, pending: PendingSignIn, *, purge_before: float) -> None:
        await self._execute("DELETE FROM identity_sign_ins WHERE created_at < $1", purge_before)
        await self._execute(
            f"INSERT INTO identity_sign_ins ({_PENDING_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",  # noqa: S608
            *astuple(pending),
        )

    async def take_pending_sign_in(self, state_hash: str) -> PendingSignIn | None:
        rows = await self._fetch(
            f"DELETE FROM identity_sign_ins WHERE state_hash = $1 RETURNING {_PENDING_COLUMNS}",  # noqa: S608
            state_hash,
        )
        return PendingSignIn(*rows[0]) if rows else None
