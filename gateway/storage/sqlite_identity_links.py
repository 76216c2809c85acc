"""Identity links (accounts at third-party providers) on SQLite, mixed into ``SqliteStorage``."""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import astuple, fields
from typing import TYPE_CHECKING, Any, TypeVar

import aiosqlite

from gateway.storage.identity_links import IdentityLink, PendingSignIn

T = TypeVar("T")

_COLUMNS = ", ".join(f.name for f in fields(IdentityLink))
_SELECT = f"SELECT {_COLUMNS} FROM identity_links"  # noqa: S608
_PENDING_COLUMNS = ", ".join(f.name for f in fields(PendingSignIn))


class SqliteIdentityLinkStore:
    """``IdentityLinkStore`` and ``PendingSignInStore``."""

    if TYPE_CHECKING:
        # Provided by SqliteStorage.
        async def _fetch(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]: ...
        async def _execute(self, sql: str, params: Iterable[Any] = ()) -> int: ...
        async def _write(self, work: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T: ...

    async def add_identity_link(self, link: IdentityLink) -> None:
        await self._execute(f"INSERT INTO identity_links ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)", astuple(link))  # noqa: S608

    async def get_identity_link(self, provider: str, subject: str) -> IdentityLink | None:
        rows = await self._fetch(_SELECT + " WHERE provider = ? AND subject = ?", (provider, subject))
        return IdentityLink(*rows[0]) if rows else None

    async def touch_identity_link(self, provider: str, subject: str, *, email: str | None, now: float) -> bool:
        changed = await self._execute(
            "UPDATE identity_links SET last_used_at = max(last_used_at, ?), email = coalesce(?, email) "
            "WHERE provider = ? AND subject = ?",
            (now, email, provider, subject),
        )
        return changed == 1

    async def list_identity_links(self, user_id: str) -> list[IdentityLink]:
        rows = await self._fetch(_SELECT + " WHERE user_id = ? ORDER BY linked_at, provider, subject", (user_id,))
        return [IdentityLink(*row) for row in rows]

    async def add_pending_sign_in(self, pending: PendingSignIn, *, purge_before: float) -> None:
        async def add(conn: aiosqlite.Connection) -> None:
            await conn.execute("DELETE FROM identity_sign_ins WHERE created_at < ?", (purge_before,))
            await conn.execute(
                f"INSERT INTO identity_sign_ins ({_PENDING_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
                astuple(pending),
            )

        await self._write(add)

    async def take_pending_sign_in(self, state_hash: str) -> PendingSignIn | None:
        async def take(conn: aiosqlite.Connection) -> PendingSignIn | None:
            async with conn.execute(
                f"DELETE FROM identity_sign_ins WHERE state_hash = ? RETURNING {_PENDING_COLUMNS}",  # noqa: S608
                (state_hash,),
            ) as cursor:
                row = await cursor.fetchone()
            return PendingSignIn(*row) if row is not None else None

        return await self._write(take)
