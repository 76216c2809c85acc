"""The flight recorder's storage contract (``gateway.flight``): steps filed by subject, read newest first."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from gateway.flight.steps import Record

PURGE_BATCH = 5000
TRAIL_COLUMNS = ("subject", "at", "step", "outcome", "reason", "detail", "client_id", "account_id", "count")


class TrailStore(Protocol):
    async def append_trail(self, entries: Sequence[tuple[str, Record]], *, keep_per_subject: int) -> None:
        """Insert every (subject, record) pair in one transaction, then keep only the newest ``keep_per_subject``
        records of each subject written (through the subject's index: the cost follows the batch, not the table)."""
        ...

    async def read_trail(self, subject: str, *, limit: int) -> list[Record]:
        """The subject's newest ``limit`` records, newest first."""
        ...

    async def purge_trail(self, *, before: float) -> int:
        """Delete records older than ``before``, in small batches each in its own transaction (never one long
        statement that a timeout would undo whole); returns how many went."""
        ...


def record_of(row: Sequence[object]) -> Record:
    """A ``Record`` from a row of ``TRAIL_COLUMNS`` (the subject first, dropped)."""
    _, at, step, outcome, reason, detail, client_id, account_id, count = row
    return Record(
        at=float(at),  # type: ignore[arg-type]
        step=str(step),
        outcome=str(outcome),
        reason=str(reason),
        detail=str(detail),
        client_id=None if client_id is None else str(client_id),
        account_id=None if account_id is None else str(account_id),
        count=int(count),  # type: ignore[call-overload]
    )
