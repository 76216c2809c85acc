"""The flight recorder's trail in the gateway's database, for deployments without Redis.

Subjects are stored as their SHA-256 (a client id is a URL of the client's choosing, of any length; the index stays
small and exact), and each subject is trimmed to the ring size as it is written, so housekeeping only deletes rows
past the retention."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from gateway.flight.steps import Record
from gateway.storage.trail import TrailStore


def subject_key(subject: str) -> str:
    return hashlib.sha256(subject.encode()).hexdigest()


class StoreTrail:
    def __init__(self, store: TrailStore, *, ring_size: int) -> None:
        self.store = store
        self.ring_size = ring_size

    async def append(self, entries: Sequence[tuple[str, Record]]) -> None:
        keyed = [(subject_key(subject), record) for subject, record in entries]
        await self.store.append_trail(keyed, keep_per_subject=self.ring_size)

    async def read(self, subject: str, *, limit: int) -> list[Record]:
        return await self.store.read_trail(subject_key(subject), limit=limit)
