"""The last-used recorder: batches survive any failed write, and its loop survives any error."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from gateway.last_used import LastUsedRecorder
from gateway.storage import StorageUnavailable
from tests.support.timers import ManualTimer

INTERVAL = 10.0
BOUND = 5.0
"""A safety net so a broken loop fails the test instead of hanging it; nothing waits on real time."""


class FlakyWriter:
    """Raises the given errors on its first writes, then remembers what it is given."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.attempts = 0
        self.written: dict[str, float] = {}

    async def __call__(self, batch: Mapping[str, float]) -> None:
        self.attempts += 1
        if self.errors:
            raise self.errors.pop(0)
        self.written.update(batch)


async def test_a_write_that_raises_any_error_keeps_the_batch_and_the_loop_retries_with_backoff() -> None:
    writer, timer = FlakyWriter(RuntimeError("bug"), StorageUnavailable("down")), ManualTimer()
    recorder = LastUsedRecorder(writer, interval=INTERVAL, name="api key", wait=timer)
    async with asyncio.timeout(BOUND), recorder.running():
        assert await timer.next_wait() == INTERVAL
        recorder.record("key_a", 100.0)
        timer.release()
        assert await timer.next_wait() == INTERVAL  # RuntimeError: logged, kept, retried
        recorder.record("key_b", 101.0)
        timer.release()
        assert await timer.next_wait() == 2 * INTERVAL  # failed again: the delay grows
        timer.release()
        assert await timer.next_wait() == INTERVAL  # written: back to the usual pace
        assert writer.written == {"key_a": 100.0, "key_b": 101.0}
        assert writer.attempts == 3


async def test_a_write_cancelled_at_shutdown_keeps_its_batch_for_the_final_flush() -> None:
    started, timer = asyncio.Event(), ManualTimer()
    written: dict[str, float] = {}

    async def write(batch: Mapping[str, float]) -> None:
        if not started.is_set():
            started.set()
            await asyncio.Event().wait()  # hangs until the recorder stops
        written.update(batch)

    recorder = LastUsedRecorder(write, interval=INTERVAL, name="grant", wait=timer)
    async with asyncio.timeout(BOUND):
        async with recorder.running():
            await timer.next_wait()
            recorder.record("fam_a", 5.0)
            timer.release()
            await started.wait()
        assert written == {"fam_a": 5.0}
