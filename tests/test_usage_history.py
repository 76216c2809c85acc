"""The daily usage recorder: counts per account and UTC day, flushed in additive batches, kept on failure."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from gateway.clock import ManualClock
from gateway.storage import Storage, StorageUnavailable
from gateway.usage_history import UsageRecorder, last_days
from tests.support.timers import ManualTimer

MIDNIGHT = 1_794_960_000.0  # 2026-11-18 00:00:00 UTC
BOUND = 5.0
"""A safety net so a broken loop fails the test instead of hanging it; nothing waits on real time."""


class FlakyStore:
    """Fails the first ``failures`` writes, then passes them to the real storage."""

    def __init__(self, storage: Storage, failures: int) -> None:
        self.storage = storage
        self.failures = failures

    async def add_usage(self, counts: Mapping[tuple[str, str], int]) -> None:
        if self.failures:
            self.failures -= 1
            raise StorageUnavailable("down")
        await self.storage.add_usage(counts)

    async def usage_history(self, user_id: str, *, since_day: str) -> list[tuple[str, int]]:
        return await self.storage.usage_history(user_id, since_day=since_day)


async def test_requests_are_counted_per_utc_day_and_kept_across_a_failed_flush(any_storage: Storage) -> None:
    user = await any_storage.create_user(user_id="usr_u", email="u@example.com", password_hash="h", now=MIDNIGHT)
    clock = ManualClock(start=MIDNIGHT - 1)
    recorder = UsageRecorder(FlakyStore(any_storage, failures=1), clock, interval=30.0)
    recorder.record(user.id)
    clock.advance(2)  # past midnight UTC: a new day
    recorder.record(user.id)
    recorder.record(user.id)
    await recorder.flush()  # fails: nothing lost
    assert await any_storage.usage_history(user.id, since_day="2026-01-01") == []
    await recorder.flush()
    await recorder.flush()  # nothing pending: nothing written twice
    assert await any_storage.usage_history(user.id, since_day="2026-01-01") == [("2026-11-17", 1), ("2026-11-18", 2)]


def test_last_days_ends_today_and_runs_oldest_first() -> None:
    assert last_days(MIDNIGHT + 5, 3) == ["2026-11-16", "2026-11-17", "2026-11-18"]


class BrokenOnceStore(FlakyStore):
    async def add_usage(self, counts: Mapping[tuple[str, str], int]) -> None:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("not a storage error")
        await self.storage.add_usage(counts)


async def test_the_loop_keeps_the_counts_and_runs_on_after_an_error_that_is_not_a_storage_error(
    sqlite_storage: Storage,
) -> None:
    user = await sqlite_storage.create_user(user_id="usr_u", email="u@example.com", password_hash="h", now=MIDNIGHT)
    timer = ManualTimer()
    recorder = UsageRecorder(
        BrokenOnceStore(sqlite_storage, failures=1), ManualClock(start=MIDNIGHT), interval=30.0, wait=timer
    )
    async with asyncio.timeout(BOUND), recorder.running():
        assert await timer.next_wait() == 30.0
        recorder.record(user.id)
        timer.release()
        assert await timer.next_wait() == 30.0  # failed: counts kept, loop alive
        recorder.record(user.id)
        timer.release()
        assert await timer.next_wait() == 30.0
        assert await sqlite_storage.usage_history(user.id, since_day="2026-01-01") == [("2026-11-18", 2)]
