"""The storage's revocation watermark as this replica last read it: the validation cache's freshness source.

``Storage.revocation_epoch`` is a counter the database raises with every revocation, in the same transaction.
``Watermark`` reads it every ``interval`` (≤ 0.5 s) on its own timer, remembers the reading and when the read
started, and tells its listeners (the open-stream checker) after each read — ``None`` when storage could not
answer. A validation read under a reading that was seen unchanged less than a cache lifetime ago is still good:
nothing was revoked in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from gateway.background import background
from gateway.clock import Clock
from gateway.storage.base import RevocationWatermark, StorageError

log = logging.getLogger("gateway.credentials.watermark")

WatermarkListener = Callable[[int | None], Awaitable[None]]
"""Called after each read with the epoch read, or ``None`` when storage could not say."""


class Watermark:
    def __init__(self, source: RevocationWatermark, clock: Clock, *, interval: float) -> None:
        self._source = source
        self._clock = clock
        self.interval = interval
        self.epoch: int | None = None
        """The last epoch read (None: never read yet)."""
        self.read_at = float("-inf")
        """When (monotonic) the read of ``epoch`` started."""
        self._listeners: list[WatermarkListener] = []

    def listen(self, listener: WatermarkListener) -> None:
        self._listeners.append(listener)

    def observe(self, epoch: int, read_started_at: float) -> None:
        """Record a reading of ``epoch`` by a query that started at ``read_started_at`` (monotonic)."""
        self.epoch, self.read_at = epoch, read_started_at

    def seen_unchanged(self, epoch: int | None, within: float) -> bool:
        """``epoch`` is the last reading and that reading started less than ``within`` seconds ago."""
        return epoch is not None and epoch == self.epoch and self._clock.monotonic() - self.read_at < within

    async def read(self) -> int | None:
        """Read the watermark now, then tell every listener (one that fails is logged, the others still run)."""
        started = self._clock.monotonic()
        epoch: int | None
        try:
            epoch = await self._source.revocation_epoch()
        except StorageError:
            epoch = None
        else:
            self.observe(epoch, started)
        for listener in self._listeners:
            try:
                await listener(epoch)
            except Exception:
                log.exception("revocation watermark listener failed")
        return epoch

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Read the watermark every ``interval`` seconds for the duration of the block."""

        async def loop() -> None:
            while True:
                await asyncio.sleep(self.interval)
                try:
                    await self.read()
                except Exception:
                    log.exception("revocation watermark read failed")

        async with background(loop(), name="revocation-watermark"):
            yield
