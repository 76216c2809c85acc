"""``last_used_at`` without a database write per request: remember in memory, flush in batches.

Used for API keys and for OAuth token families (the "last used" of an Authorized App).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

from gateway.background import background
from gateway.storage.base import StorageError

Writer = Callable[[Mapping[str, float]], Awaitable[None]]

log = logging.getLogger("gateway.last_used")


class LastUsedRecorder:
    """Collects the latest use of each credential and writes them all every ``interval`` seconds.

    At most ``interval`` seconds of ``last_used_at`` are lost if the process dies; a clean shutdown
    flushes what is pending.
    """

    def __init__(self, write: Writer, *, interval: float, name: str) -> None:
        self._write = write
        self._name = name
        self._interval = interval
        self._pending: dict[str, float] = {}
        self._wake = asyncio.Event()

    def record(self, key_id: str, when: float) -> None:
        if when > self._pending.get(key_id, 0.0):
            self._pending[key_id] = when

    async def flush(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, {}
        try:
            await self._write(batch)
        except StorageError as exc:
            log.warning("could not record %s use (%s); will retry", self._name, type(exc).__name__)
            for key_id, when in batch.items():
                self.record(key_id, when)

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
            await self.flush()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[LastUsedRecorder]:
        try:
            async with background(self._run(), name=f"last-used-{self._name}"):
                yield self
        finally:
            await self.flush()
