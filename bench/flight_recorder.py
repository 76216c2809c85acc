"""What the flight recorder adds to a successful MCP request: the two things on its path, timed in process.

``python bench/flight_recorder.py [--n 200000]``

1. ``first_call`` for a credential this replica has seen before (one dict lookup);
2. its response hook for a 200 on ``/mcp`` (a prefix check and a status check).

Refusals reach it through the error middleware's refusal listeners (``gateway.hooks``), so a successful request
pays nothing for them.

Each is timed against the same work without it, on a mocked request, and reported in nanoseconds per request.
Compare with the gateway's CPU per proxied request (hundreds of microseconds; ``bench/ceiling.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import time

from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from gateway.clock import SystemClock
from gateway.config import GatewayConfig
from gateway.flight.recorder import FlightRecorder
from gateway.flight.setup import FLIGHT, _discovery_and_unserved_paths, first_call
from gateway.flight.steps import Record


class NullTrail:
    async def append(self, entries: object) -> None:
        return None

    async def read(self, subject: str, *, limit: int) -> list[Record]:
        return []


async def main(n: int) -> None:
    from gateway.appkeys import CONFIG

    app = web.Application()
    app[CONFIG] = GatewayConfig()
    recorder = app[FLIGHT] = FlightRecorder(NullTrail(), SystemClock())
    request = make_mocked_request("POST", "/mcp", app=app)
    response = web.Response(status=200)

    async def timed(work: object, label: str) -> float:
        start = time.perf_counter_ns()
        for _ in range(n):
            await work()  # type: ignore[operator]
        per = (time.perf_counter_ns() - start) / n
        print(f"{label:<55} {per:8.0f} ns")
        return per

    recorder.first_seen("key-1")

    async def seen() -> None:
        first_call(request, "key-1", client_id=None, account_id="user-1")

    async def nothing() -> None:
        return None

    empty = await timed(nothing, "an empty coroutine")
    lookup = await timed(seen, "first_call for a credential seen before")

    async def hook() -> None:
        _discovery_and_unserved_paths(request, response)

    prepared = await timed(hook, "response hook, 200 on /mcp")
    total = (lookup - empty) + (prepared - empty)
    print(f"{'added per successful MCP request':<55} {total:8.0f} ns ({total / 1000:.2f} µs)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000)
    asyncio.run(main(parser.parse_args().n))
