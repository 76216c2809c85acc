"""The flight recorder's storage contract (``gateway.flight``): steps filed by subject, read newest first."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from gateway.flight.steps import Record

TRAIL_COLUMNS = ("subject", "at", "step", "outcome", "reason", "detail", "client_id", "account_id", "count")


class TrailStore(Protocol):
    async def append_trail(self, entries: Sequence[tuple[str, Record]]) -> None:
        """Insert every (subject, record) pair in one transaction."""
        ...

    async def read_trail(self, subject: str, *, limit: int) -> list[Record]:
        """The subject's newest ``limit`` records, newest first."""
        ...

    async def purge_trail(self, *, before: float, keep_per_subject: int) -> int:
        """Delete records older than ``before``, and all but the newest ``keep_per_subject`` of each subject;
        returns how many went."""
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
