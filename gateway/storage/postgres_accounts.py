"""Account roles, remembered consents listed per user, and daily usage totals on PostgreSQL, mixed into
``PostgresStorage``."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import fields
from typing import TYPE_CHECKING, Any

from gateway.storage.oauth import Consent

_SELECT_CONSENT = f"SELECT {', '.join(f.name for f in fields(Consent))} FROM consents"  # noqa: S608


class PostgresAccountStores:
    """``UserStore.set_role``, ``ConsentStore.list_consents`` and ``UsageStore``."""

    if TYPE_CHECKING:
        # Provided by PostgresStorage.
        def _connection(self) -> AbstractAsyncContextManager[Any]: ...
        async def _execute(self, sql: str, *args: Any) -> str: ...
        async def _execute_retrying(self, sql: str, *args: Any) -> str: ...
        async def _fetch(self, sql: str, *args: Any) -> list[Any]: ...

    async def set_role(self, user_id: str, role: str) -> bool:
        status = await self._execute("UPDATE users SET role = $2 WHERE id = $1", user_id, role)
        return status.endswith(" 1")

    async def list_consents(self, user_id: str) -> list[Consent]:
        rows = await self._fetch(
            _SELECT_CONSENT + " WHERE user_id = $1 ORDER BY created_at, client_id, redirect_uri", user_id
        )
        return [Consent(*row) for row in rows]

    async def purge_browser_sessions(self, *, ended_before: float, idle_since: float) -> int:
        status = await self._execute(
            "DELETE FROM browser_sessions WHERE expires_at < $1 OR revoked_at < $1 OR last_seen_at < $2",
            ended_before,
            idle_since,
        )
        return int(status.rsplit(" ", 1)[-1])

    async def users_of_client(self, client_id: str) -> list[str]:
        rows = await self._fetch(
            "SELECT user_id FROM token_families WHERE client_id = $1 "
            "UNION SELECT user_id FROM consents WHERE client_id = $1 ORDER BY 1",
            client_id,
        )
        return [str(row[0]) for row in rows]

    async def add_usage(self, counts: Mapping[tuple[str, str], int]) -> None:
        if not counts:
            return
        # Sorted, so two replicas flushing at once take the row locks in the same order (no deadlock).
        items = sorted(counts.items())
        await self._execute_retrying(
            "INSERT INTO usage_daily (user_id, day, requests) "
            "SELECT v.user_id, v.day, v.requests FROM unnest($1::text[], $2::text[], $3::bigint[]) "
            "AS v(user_id, day, requests) JOIN users AS u ON u.id = v.user_id "
            "ORDER BY v.user_id, v.day "
            "ON CONFLICT (user_id, day) DO UPDATE SET requests = usage_daily.requests + excluded.requests",
            [user_id for (user_id, _), _ in items],
            [day for (_, day), _ in items],
            [n for _, n in items],
        )

    async def usage_history(self, user_id: str, *, since_day: str) -> list[tuple[str, int]]:
        rows = await self._fetch(
            "SELECT day, requests FROM usage_daily WHERE user_id = $1 AND day >= $2 ORDER BY day", user_id, since_day
        )
        return [(str(row[0]), int(row[1])) for row in rows]
