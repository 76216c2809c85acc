"""The flight recorder's trail on SQLite, mixed into ``SqliteStorage``."""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import aiosqlite

from gateway.flight.steps import Record
from gateway.storage.trail import PURGE_BATCH, TRAIL_COLUMNS, record_of

T = TypeVar("T")
_COLUMNS = ", ".join(TRAIL_COLUMNS)


class SqliteTrailStore:
    """``TrailStore``."""

    if TYPE_CHECKING:
        # Provided by SqliteStorage.
        async def _fetch(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]: ...
        async def _write(self, work: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T: ...

    async def append_trail(self, entries: Sequence[tuple[str, Record]], *, keep_per_subject: int) -> None:
        rows = [
            (subject, r.at, r.step, r.outcome, r.reason, r.detail, r.client_id, r.account_id, r.count)
            for subject, r in entries
        ]
        subjects = sorted({subject for subject, _ in entries})

        async def run(conn: aiosqlite.Connection) -> None:
            await conn.executemany(f"INSERT INTO flight_steps ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)  # noqa: S608
            await conn.executemany(
                "DELETE FROM flight_steps WHERE subject = ? AND id NOT IN "
                "(SELECT id FROM flight_steps WHERE subject = ? ORDER BY at DESC, id DESC LIMIT ?)",
                [(subject, subject, keep_per_subject) for subject in subjects],
            )

        await self._write(run)

    async def read_trail(self, subject: str, *, limit: int) -> list[Record]:
        rows = await self._fetch(
            f"SELECT {_COLUMNS} FROM flight_steps WHERE subject = ? ORDER BY at DESC, id DESC LIMIT ?",  # noqa: S608
            (subject, limit),
        )
        return [record_of(tuple(row)) for row in rows]

    async def purge_trail(self, *, before: float) -> int:
        async def batch(conn: aiosqlite.Connection) -> int:
            async with conn.execute(
                "DELETE FROM flight_steps WHERE id IN (SELECT id FROM flight_steps WHERE at < ? LIMIT ?)",
                (before, PURGE_BATCH),
            ) as cursor:
                return cursor.rowcount

        removed = 0
        while (deleted := await self._write(batch)) > 0:
            removed += deleted
            if deleted < PURGE_BATCH:
                break
        return removed
