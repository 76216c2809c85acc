"""Background tasks tied to a block: started on entry, cancelled and awaited on exit; and the one loop every
periodic job runs in (``repeat``), which outlives any failure of its step."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Final, NoReturn

Wait = Callable[[float], Awaitable[None]]
"""Waits the given number of seconds (``asyncio.sleep``); tests pass one they release themselves."""

log = logging.getLogger("gateway.background")

RECANCEL_INTERVAL: Final = 0.1
"""Seconds between cancellations of a task that has not stopped yet."""
STOP_DEADLINE: Final = 5.0
"""Seconds after which a task that refuses to stop is abandoned (and logged) so shutdown never hangs."""


@contextlib.asynccontextmanager
async def background(work: Coroutine[Any, Any, None], *, name: str) -> AsyncIterator[asyncio.Task[None]]:
    """Run ``work`` as a task for the duration of the block; on exit cancel it and wait until it has stopped."""
    task = asyncio.create_task(work, name=name)
    try:
        yield task
    finally:
        await stop(task)


async def stop(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait for it. A cancellation can be swallowed inside a library (redis-py's read with a
    timeout can lose one on Python 3.11), so it is repeated until the task ends, within ``STOP_DEADLINE``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STOP_DEADLINE
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=RECANCEL_INTERVAL)
        if loop.time() >= deadline and not task.done():
            log.error("background task %s did not stop; abandoning it", task.get_name())
            return
    if not task.cancelled() and task.exception() is not None:
        log.error("background task %s failed", task.get_name(), exc_info=task.exception())


@dataclass(frozen=True)
class Backoff:
    """How long to wait after consecutive failures: ``first``, doubled each time, at most ``ceiling``."""

    first: float
    ceiling: float

    def delay(self, failures: int) -> float:
        return min(self.first * 2.0 ** min(failures - 1, 32), max(self.first, self.ceiling))


async def repeat(
    step: Callable[[], Awaitable[bool]],
    *,
    name: str,
    interval: float,
    backoff: Backoff,
    wait: Wait = asyncio.sleep,
    wait_first: bool = True,
) -> NoReturn:
    """Run ``step`` every ``interval`` seconds until cancelled. A step that reports failure (returns False) or
    raises anything is logged and tried again after ``backoff``: no error ends the loop."""
    failures = 0
    if wait_first:
        await wait(interval)
    while True:
        try:
            succeeded = await step()
        except Exception:
            log.exception("background step %s failed", name)
            succeeded = False
        failures = 0 if succeeded else failures + 1
        await wait(interval if succeeded else backoff.delay(failures))
