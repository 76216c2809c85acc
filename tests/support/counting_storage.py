"""The real storage behind a counter of the calls the gateway's credential checks make."""

from __future__ import annotations

import asyncio

from gateway.storage import Storage

TICKS_WAIT = 10.0


class CountingStorage:
    """The real storage, counting the calls the stream checks make (credential lookups, watermark reads)."""

    def __init__(self, inner: Storage) -> None:
        self._inner = inner
        self.key_lookups = 0
        self.epoch_reads = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    async def get_api_key_by_hash(self, key_hash: str) -> object:
        self.key_lookups += 1
        return await self._inner.get_api_key_by_hash(key_hash)

    async def revocation_epoch(self) -> int:
        self.epoch_reads += 1
        return await self._inner.revocation_epoch()


async def ticks(storage: CountingStorage, count: int) -> None:
    """Wait (bounded) until the periodic check has read the watermark ``count`` more times."""
    target = storage.epoch_reads + count
    async with asyncio.timeout(TICKS_WAIT):
        while storage.epoch_reads < target:
            await asyncio.sleep(0.01)
