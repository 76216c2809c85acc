"""The flight recorder's trail in the gateway's database, for deployments without Redis."""

from __future__ import annotations

from collections.abc import Sequence

from gateway.flight.steps import Record
from gateway.storage.trail import TrailStore


class StoreTrail:
    def __init__(self, store: TrailStore) -> None:
        self.store = store

    async def append(self, entries: Sequence[tuple[str, Record]]) -> None:
        await self.store.append_trail(entries)

    async def read(self, subject: str, *, limit: int) -> list[Record]:
        return await self.store.read_trail(subject, limit=limit)
