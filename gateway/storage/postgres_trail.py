"""The flight recorder's trail on PostgreSQL, mixed into ``PostgresStorage``."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from gateway.flight.steps import Record
from gateway.storage.trail import PURGE_BATCH, TRAIL_COLUMNS, record_of

_COLUMNS = ", ".join(TRAIL_COLUMNS)


class PostgresTrailStore:
    """``TrailStore``."""

    if TYPE_CHECKING:
        # Provided by PostgresStorage.
        def _connection(self) -> AbstractAsyncContextManager[Any]: ...
        async def _fetch(self, sql: str, *args: Any) -> list[Any]: ...

    async def append_trail(self, entries: Sequence[tuple[str, Record]], *, keep_per_subject: int) -> None:
        rows = [
            (subject, r.at, r.step, r.outcome, r.reason, r.detail, r.client_id, r.account_id, r.count)
            for subject, r in entries
        ]
        subjects = sorted({subject for subject, _ in entries})
        async with self._connection() as conn, conn.transaction():
            await conn.executemany(
                f"INSERT INTO flight_steps ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",  # noqa: S608
                rows,
            )
            await conn.execute(
                "DELETE FROM flight_steps f USING unnest($1::text[]) AS s(subject) WHERE f.subject = s.subject "
                "AND f.id NOT IN (SELECT id FROM flight_steps WHERE subject = s.subject "
                "ORDER BY at DESC, id DESC LIMIT $2)",
                subjects,
                keep_per_subject,
            )

    async def read_trail(self, subject: str, *, limit: int) -> list[Record]:
        rows = await self._fetch(
            f"SELECT {_COLUMNS} FROM flight_steps WHERE subject = $1 ORDER BY at DESC, id DESC LIMIT $2",  # noqa: S608
            subject,
            limit,
        )
        return [record_of(tuple(row)) for row in rows]

    async def purge_trail(self, *, before: float) -> int:
        removed = 0
        while True:
            async with self._connection() as conn:
                status = await conn.execute(
                    "DELETE FROM flight_steps WHERE id IN (SELECT id FROM flight_steps WHERE at < $1 LIMIT $2)",
                    before,
                    PURGE_BATCH,
                )
            deleted = int(status.rsplit(" ", 1)[-1])
            removed += deleted
            if deleted < PURGE_BATCH:
                return removed
