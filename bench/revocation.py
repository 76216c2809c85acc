"""Revocation propagation across replicas under load, and what validating a credential costs per request.

Run ``python bench/revocation.py [--revocations 200] [--load 16] [--json out.json]`` from the repository root,
with PostgreSQL and Redis where the tests expect them (``GATEWAY_TEST_POSTGRES_URL``, ``GATEWAY_TEST_REDIS_URL``).

1. **Propagation.** Three replicas (``python -m gateway serve``, separate processes) share a throwaway PostgreSQL
   schema and Redis, in front of the example upstream. ``--load`` closed-loop workers keep sending valid MCP
   requests with their own API keys, spread over all replicas, for the whole run. Then, one after another, each
   of ``--revocations`` keys is used on replicas B and C (so both cache it), revoked the way ``mcp-gateway keys
   revoke`` does (commit to PostgreSQL, then announce on the Redis channel), and B and C are each polled back to
   back until they answer 401. Reported: p50/p99/max from the commit to the first 401, per replica, and how many
   requests were accepted after one second (the target is zero). ``--lost`` more revocations are committed but
   never announced (a lost broadcast): the validation cache lifetime alone must still bound them.
2. **Validation cost.** In process, ``Authenticator.authenticate`` on one request carrying a valid API key:
   with a warm cache (a dict lookup and a digest) and with no cache (every call reads PostgreSQL).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.apikeys import ApiKeyFormat
from gateway.clock import SystemClock
from gateway.credentials import Authenticator, Challenge, ValidationCache, Watermark
from gateway.credentials.api_keys import ApiKeyVerifier
from gateway.last_used import LastUsedRecorder
from gateway.revocation import Revocation
from gateway.revocation_redis import RedisRevocationBus
from tests.support.replicas import REDIS_URL, Fleet, replica_fleet
from tests.support.upstream import run_upstream

LIST = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}).encode()
HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}

MANY_REFUSALS = {"limits": {"protective": {"mcp_auth_failures_per_address": 1_000_000}}}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def status(http: aiohttp.ClientSession, url: str, key: str) -> int:
    async with http.post(url, data=LIST, headers={**HEADERS, "X-API-Key": key}) as response:
        await response.read()
        return response.status


async def load(http: aiohttp.ClientSession, urls: list[str], key: str, stop: asyncio.Event, count: list[int]) -> None:
    for url in itertools.cycle(urls):
        if stop.is_set():
            return
        assert await status(http, url, key) != 401
        count[0] += 1


async def first_refusal(http: aiohttp.ClientSession, url: str, key: str, committed: float) -> tuple[float, int]:
    """Seconds from the commit to the first 401 at ``url``, and requests accepted more than 1 s after it."""
    late = 0
    while True:
        code = await status(http, url, key)
        elapsed = time.time() - committed
        if code == 401:
            return elapsed, late
        if elapsed > 1.0:
            late += 1
        if elapsed > 10:
            raise RuntimeError(f"{url} still accepts a key revoked {elapsed:.1f} s ago")


async def propagation(fleet: Fleet, revocations: int, workers: int, *, announce: bool) -> dict[str, Any]:
    user = await fleet.new_user()
    bus = RedisRevocationBus(REDIS_URL, fleet.config["redis"]["revocation_channel"])
    urls = [r.mcp_url for r in fleet.replicas]
    stop, served = asyncio.Event(), [0]
    delays: dict[str, list[float]] = {"B": [], "C": []}
    late = 0
    connector = aiohttp.TCPConnector(limit=workers + 8)
    async with aiohttp.ClientSession(connector=connector) as http:
        load_keys = [(await fleet.new_key(user))[1] for _ in range(workers)]
        tasks = [asyncio.create_task(load(http, urls, key, stop, served)) for key in load_keys]
        started = time.monotonic()
        try:
            for _ in range(revocations):
                key_id, key = await fleet.new_key(user)
                for replica in fleet.replicas[1:]:
                    assert await status(http, replica.mcp_url, key) != 401
                assert await fleet.storage.revoke_api_key(key_id, now=time.time())
                committed = time.time()
                if announce:  # without it: a lost broadcast, bounded by the validation cache lifetime
                    await bus.announce(Revocation(user.id, committed, api_key_ids=(key_id,), source="cli"))
                results = await asyncio.gather(
                    *(first_refusal(http, r.mcp_url, key, committed) for r in fleet.replicas[1:])
                )
                for name, (delay, accepted_late) in zip(("B", "C"), results, strict=True):
                    delays[name].append(delay)
                    late += accepted_late
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            await bus.close()
        seconds = time.monotonic() - started
    every = delays["B"] + delays["C"]
    return {
        "announced": announce,
        "revocations": revocations,
        "load_workers": workers,
        "background_requests_per_s": round(served[0] / seconds),
        "per_replica_ms": {
            name: {"p50": pct(v, 0.5) * 1000, "p99": pct(v, 0.99) * 1000, "max": max(v) * 1000}
            for name, v in delays.items()
        },
        "all_ms": {"p50": pct(every, 0.5) * 1000, "p99": pct(every, 0.99) * 1000, "max": max(every) * 1000},
        "accepted_after_1s": late,
    }


async def validation_cost(fleet: Fleet, calls: int) -> dict[str, float]:
    user = await fleet.new_user()
    _, key = await fleet.new_key(user)
    # A real (empty) app: a mocked one would make every lookup on it a Mock call (the flight recorder asks it).
    request = make_mocked_request("POST", "/mcp", headers={"X-API-Key": key}, app=web.Application())
    results: dict[str, float] = {}
    for label, ttl, n in (("warm_cache_us", 0.8, calls), ("no_cache_postgres_us", 0.0, max(200, calls // 100))):
        recorder = LastUsedRecorder(fleet.storage.touch_api_keys, interval=3600, name="bench")
        clock = SystemClock()
        authn = Authenticator(
            [ApiKeyVerifier(ApiKeyFormat("mgw"), keys=fleet.storage, users=fleet.storage, key_use=recorder)],
            cache=ValidationCache(clock, Watermark(fleet.storage, clock, interval=0.5), ttl=ttl),
            clock=clock,
            challenge=Challenge(),
            required_scopes=("mcp:tools",),
        )
        await authn.authenticate(request)
        timings = []
        for _ in range(n):
            t0 = time.perf_counter_ns()
            await authn.authenticate(request)
            timings.append((time.perf_counter_ns() - t0) / 1000)
        results[label] = statistics.median(timings)
        results[label.replace("_us", "_p99_us")] = pct(timings, 0.99)
    return results


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--revocations", type=int, default=200)
    parser.add_argument("--load", type=int, default=16, help="background closed-loop workers")
    parser.add_argument("--calls", type=int, default=50_000, help="validations timed with a warm cache")
    parser.add_argument("--lost", type=int, default=50, help="revocations never announced (the cache bound)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        async with (
            run_upstream() as upstream,
            # Thousands of deliberate 401s from one address: lift the per-address budget of refused credentials.
            replica_fleet(Path(tmp), upstream_url=upstream.mcp_url, overrides=MANY_REFUSALS) as fleet,
        ):
            report = {
                "propagation": await propagation(fleet, args.revocations, args.load, announce=True),
                "lost_broadcast": await propagation(fleet, args.lost, args.load, announce=False),
                "validation": await validation_cost(fleet, args.calls),
            }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
