"""Account roles, remembered consents listed per user, and daily usage totals on SQLite, mixed into
``SqliteStorage``."""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import fields
from typing import TYPE_CHECKING, Any, TypeVar

import aiosqlite

from gateway.storage.oauth import Consent

T = TypeVar("T")

_SELECT_CONSENT = f"SELECT {', '.join(f.name for f in fields(Consent))} FROM consents"  # noqa: S608


class SqliteAccountStores:
    """``UserStore.set_role``, ``ConsentStore.list_consents`` and ``UsageStore``."""

    if TYPE_CHECKING:
        # Provided by SqliteStorage.
        async def _fetch(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]: ...
        async def _execute(self, sql: str, params: Iterable[Any] = ()) -> int: ...
        async def _write(self, work: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T: ...

    async def set_role(self, user_id: str, role: str) -> bool:
        return await self._execute("UPDATE users SET role = ? WHERE id = ?", (role, user_id)) == 1

    async def list_consents(self, user_id: str) -> list[Consent]:
        rows = await self._fetch(
            _SELECT_CONSENT + " WHERE user_id = ? ORDER BY created_at, client_id, redirect_uri", (user_id,)
        )
        return [Consent(*row) for row in rows]

    async def purge_browser_sessions(self, *, ended_before: float, idle_since: float) -> int:
        return await self._execute(
            "DELETE FROM browser_sessions WHERE expires_at < ? OR revoked_at < ? OR last_seen_at < ?",
            (ended_before, ended_before, idle_since),
        )

    async def users_of_client(self, client_id: str) -> list[str]:
        rows = await self._fetch(
            "SELECT user_id FROM token_families WHERE client_id = ? "
            "UNION SELECT user_id FROM consents WHERE client_id = ? ORDER BY 1",
            (client_id, client_id),
        )
        return [str(row[0]) for row in rows]

    async def add_usage(self, counts: Mapping[tuple[str, str], int]) -> None:
        if not counts:
            return
        rows = [(user_id, day, n, user_id) for (user_id, day), n in sorted(counts.items())]

        async def add(conn: aiosqlite.Connection) -> None:
            await conn.executemany(
                "INSERT INTO usage_daily (user_id, day, requests) SELECT ?, ?, ? "
                "WHERE EXISTS (SELECT 1 FROM users WHERE id = ?) "
                "ON CONFLICT (user_id, day) DO UPDATE SET requests = requests + excluded.requests",
                rows,
            )

        await self._write(add)

    async def usage_history(self, user_id: str, *, since_day: str) -> list[tuple[str, int]]:
        rows = await self._fetch(
            "SELECT day, requests FROM usage_daily WHERE user_id = ? AND day >= ? ORDER BY day", (user_id, since_day)
        )
        return [(str(day), int(n)) for day, n in rows]
