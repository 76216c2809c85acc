"""The event loop a served gateway runs on: uvloop when it is installed and ``server.uvloop`` is true.

uvloop (libuv under asyncio's API) cuts the per-request cost of the loop itself; everything in the gateway is plain
asyncio, so the standard loop remains a drop-in fallback (``server.uvloop: false``, or uvloop not installed).
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def uvloop_available() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def loop_factory(use_uvloop: bool) -> LoopFactory | None:
    """``uvloop.new_event_loop`` when wanted and installed; None: asyncio's default loop."""
    if not use_uvloop or not uvloop_available():
        return None
    import uvloop

    return uvloop.new_event_loop


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """``uvloop`` or ``asyncio``: what the ready line and the logs say the gateway runs on."""
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


def run(main: Coroutine[Any, Any, T], *, use_uvloop: bool) -> T:
    """``asyncio.run(main)`` on the chosen loop."""
    with asyncio.Runner(loop_factory=loop_factory(use_uvloop)) as runner:
        return runner.run(main)
