"""A ``Wait`` for background loops that the test releases itself: no sleeping, no real time."""

from __future__ import annotations

import asyncio


class ManualTimer:
    """Each call records its delay and blocks until the test calls ``release``."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self._waiting: asyncio.Queue[asyncio.Future[None]] = asyncio.Queue()
        self._current: asyncio.Future[None] | None = None

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.put_nowait(waiter)
        await waiter

    async def next_wait(self) -> float:
        """Wait until the loop is waiting; the delay it asked for."""
        self._current = await self._waiting.get()
        return self.delays[-1]

    def release(self) -> None:
        """End the wait ``next_wait`` saw: the loop runs its next step."""
        assert self._current is not None
        self._current.set_result(None)
        self._current = None
