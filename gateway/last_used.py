"""``last_used_at`` without a database write per request: remember in memory, flush in batches.

Used for API keys and for OAuth token families (the "last used" of an Authorized App).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Final

from gateway.background import Backoff, Wait, background, repeat
from gateway.storage.base import StorageError

Writer = Callable[[Mapping[str, float]], Awaitable[None]]

log = logging.getLogger("gateway.last_used")

MAX_RETRY_DELAY: Final = 300.0
"""Seconds between attempts, at most, while the writes keep failing."""


class LastUsedRecorder:
    """Collects the latest use of each credential and writes them all every ``interval`` seconds.

    At most ``interval`` seconds of ``last_used_at`` are lost if the process dies; a clean shutdown
    flushes what is pending. A failed write (of any kind) keeps its batch for the next attempt, which comes
    after a growing delay; the loop itself never stops on an error. ``wait`` is the loop's timer (tests pass one
    they release themselves).
    """

    def __init__(self, write: Writer, *, interval: float, name: str, wait: Wait = asyncio.sleep) -> None:
        self._write = write
        self._name = name
        self._interval = interval
        self._wait = wait
        self._pending: dict[str, float] = {}

    def record(self, key_id: str, when: float) -> None:
        if when > self._pending.get(key_id, 0.0):
            self._pending[key_id] = when

    async def flush(self) -> bool:
        """Write what is pending; False (logged, batch kept) when the write failed."""
        if not self._pending:
            return True
        batch, self._pending = self._pending, {}
        try:
            await self._write(batch)
        except BaseException as exc:
            for key_id, when in batch.items():
                self.record(key_id, when)
            if not isinstance(exc, Exception):
                raise  # cancelled mid-write: the batch stays for the shutdown flush
            if isinstance(exc, StorageError):
                log.warning("could not record %s use (%s); will retry", self._name, type(exc).__name__)
            else:
                log.exception("could not record %s use; will retry", self._name)
            return False
        return True

    async def _run(self) -> None:
        backoff = Backoff(first=self._interval, ceiling=MAX_RETRY_DELAY)
        await repeat(
            self.flush, name=f"last-used-{self._name}", interval=self._interval, backoff=backoff, wait=self._wait
        )

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[LastUsedRecorder]:
        try:
            async with background(self._run(), name=f"last-used-{self._name}"):
                yield self
        finally:
            await self.flush()
