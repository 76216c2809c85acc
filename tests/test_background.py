"""Background loops stop when their block ends, even when a library swallows a cancellation."""

from __future__ import annotations

import asyncio

import pytest

from gateway import background as background_module
from gateway.background import background

BOUND = 3.0


async def test_a_task_that_swallows_one_cancellation_is_cancelled_again_until_it_stops() -> None:
    cancellations = 0

    async def stubborn() -> None:
        nonlocal cancellations
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancellations += 1
                if cancellations >= 2:
                    raise
                # swallowed, as a library's read-with-timeout may do

    async with asyncio.timeout(BOUND):
        async with background(stubborn(), name="stubborn") as task:
            await asyncio.sleep(0)
    assert task.cancelled()
    assert cancellations == 2


async def test_a_task_that_never_stops_is_abandoned_and_logged_so_shutdown_does_not_hang(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(background_module, "STOP_DEADLINE", 0.3)
    release = asyncio.Event()

    async def immortal() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                continue

    async with asyncio.timeout(BOUND):
        async with background(immortal(), name="immortal") as task:
            await asyncio.sleep(0)
    assert not task.done()
    assert "immortal did not stop" in caplog.text
    release.set()
    task.cancel()
    await asyncio.wait({task}, timeout=BOUND)
    assert task.done()
