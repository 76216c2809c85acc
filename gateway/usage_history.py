"""Daily request counts per account for the dashboard's chart, without a database write per request.

Admitted MCP requests are counted in memory per (account, UTC day) and added to storage in one batch every
``interval`` seconds and at shutdown. The batches are additive, so several replicas' counts sum up. At most
``interval`` seconds of counts are lost if the process dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Final

from aiohttp import web

from gateway.background import Backoff, Wait, background, repeat
from gateway.clock import Clock
from gateway.storage.base import StorageError, UsageStore

log = logging.getLogger("gateway.usage_history")
DAY_FORMAT = "%Y-%m-%d"
SECONDS_PER_DAY = 86400.0
MAX_RETRY_DELAY: Final = 300.0
"""Seconds between attempts, at most, while the writes keep failing."""


def utc_day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime(DAY_FORMAT)


def last_days(now: float, days: int) -> list[str]:
    """The ``days`` UTC days ending today, oldest first."""
    today = datetime.fromtimestamp(now, UTC).date()
    return [(today - timedelta(days=back)).strftime(DAY_FORMAT) for back in range(days - 1, -1, -1)]


class UsageRecorder:
    """Counts in memory, adds them to storage every ``interval`` seconds. A failed write (of any kind) keeps its
    counts for the next attempt, which comes after a growing delay; the loop never stops on an error. ``wait`` is
    the loop's timer (tests pass one they release themselves)."""

    def __init__(self, store: UsageStore, clock: Clock, *, interval: float, wait: Wait = asyncio.sleep) -> None:
        self._store = store
        self._clock = clock
        self._wait = wait
        self._day_start, self._day = float("-inf"), ""
        self._interval = interval
        self._pending: Counter[tuple[str, str]] = Counter()

    def record(self, account_id: str) -> None:
        """Count one admitted request for the account today (UTC)."""
        self._pending[(account_id, self._today())] += 1

    def _today(self) -> str:
        # Called for every admitted request: format the day once per day, not once per request.
        now = self._clock.now()
        if not self._day_start <= now < self._day_start + SECONDS_PER_DAY:
            self._day_start = now - now % SECONDS_PER_DAY
            self._day = utc_day(self._day_start)
        return self._day

    async def flush(self) -> bool:
        """Add what is pending; False (logged, counts kept) when the write failed."""
        if not self._pending:
            return True
        batch, self._pending = self._pending, Counter()
        try:
            await self._store.add_usage(dict(batch))
        except BaseException as exc:
            self._pending.update(batch)
            if not isinstance(exc, Exception):
                raise  # cancelled mid-write: the counts stay for the shutdown flush
            if isinstance(exc, StorageError):
                log.warning("could not record usage history (%s); will retry", type(exc).__name__)
            else:
                log.exception("could not record usage history; will retry")
            return False
        return True

    async def _run(self) -> None:
        backoff = Backoff(first=self._interval, ceiling=MAX_RETRY_DELAY)
        await repeat(self.flush, name="usage-history", interval=self._interval, backoff=backoff, wait=self._wait)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[UsageRecorder]:
        try:
            async with background(self._run(), name="usage-history"):
                yield self
        finally:
            await self.flush()


USAGE_HISTORY = web.AppKey("usage_history", UsageRecorder)
