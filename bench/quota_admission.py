"""Quota admission cost: what ``admit`` adds to each request, in process and with a local Redis.

Run ``python bench/quota_admission.py [--count 20000] [--concurrency 1 64] [--json out.json]`` from the
repository root, with Redis at ``--redis-url`` (default ``redis://127.0.0.1:6379/0``).

Limiters measured, each closed loop at every concurrency (asyncio workers, one account per worker, a plan
with all three windows capped high enough that every call is admitted, so every call runs the full check
and charge):

* ``memory``: ``MemoryLimiter`` (the embedded default).
* ``redis``: ``RedisLimiter`` on a client built by ``quota_redis_client`` (the Lua script, one round trip).
* ``degrading``: ``DegradingLimiter(RedisLimiter, MemoryLimiter)``, what a replica with Redis runs (adds
  the deadline and the warm local charge).
* ``redis PING``: a bare round trip on the same client, for reference: the floor any Redis check pays.

It also prints the script's own cost inside Redis (``INFO commandstats``, EVALSHA µs per call, read before
and after, never reset; other EVALSHA traffic on the same server during the run would be counted too).

Latency is per call (``perf_counter_ns`` around ``await admit``), so at concurrency 64 it includes the
time waiting behind the other 63; ops/s is calls completed per wall second. The keys live under a prefix
of their own and are deleted at the end; nothing else in Redis is touched.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass

from redis.asyncio import Redis

from gateway.clock import SystemClock
from gateway.quota import DegradingLimiter, MemoryLimiter, Plan, QuotaLimiter, RedisLimiter
from gateway.quota.factory import quota_redis_client

PLAN = Plan("bench", per_minute=10**9, per_day=10**9, per_month=10**9)
Call = Callable[[int], Awaitable[object]]


@dataclass
class Result:
    limiter: str
    concurrency: int
    calls: int
    p50_us: float
    p99_us: float
    ops_per_s: float


def percentile(sorted_values: list[int], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index] / 1000


async def measure(name: str, call: Call, concurrency: int, count: int, warmup: int) -> Result:
    async def worker(worker_id: int, calls: int, latencies: list[int]) -> None:
        for _ in range(calls):
            started = time.perf_counter_ns()
            await call(worker_id)
            latencies.append(time.perf_counter_ns() - started)

    await asyncio.gather(*(worker(w, warmup // concurrency + 1, []) for w in range(concurrency)))
    per_worker = max(1, count // concurrency)
    buckets: list[list[int]] = [[] for _ in range(concurrency)]
    started = time.perf_counter()
    await asyncio.gather(*(worker(w, per_worker, buckets[w]) for w in range(concurrency)))
    wall = time.perf_counter() - started
    latencies = sorted(v for bucket in buckets for v in bucket)
    return Result(
        limiter=name,
        concurrency=concurrency,
        calls=len(latencies),
        p50_us=percentile(latencies, 0.50),
        p99_us=percentile(latencies, 0.99),
        ops_per_s=len(latencies) / wall,
    )


async def script_stats(admin: Redis) -> tuple[int, int]:
    """(calls, µs) of EVALSHA so far, server-wide (read, never reset)."""
    stats = (await admin.info("commandstats")).get("cmdstat_evalsha", {})
    return int(stats.get("calls", 0)), int(stats.get("usec", 0))


def admit_call(limiter: QuotaLimiter, accounts: list[str]) -> Call:
    async def call(worker_id: int) -> object:
        decision = await limiter.admit(accounts[worker_id], PLAN, 1)
        if not decision.allowed:
            raise RuntimeError("bench plan refused a call")
        return decision

    return call


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--redis-url", default=os.environ.get("GATEWAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--count", type=int, default=20_000, help="measured calls per limiter and concurrency")
    parser.add_argument("--warmup", type=int, default=2_000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()

    prefix = f"gwbench{secrets.token_hex(4)}:q"
    accounts = [f"usr_bench{i:03d}" for i in range(max(args.concurrency))]
    client = quota_redis_client(args.redis_url, timeout=1.0)
    admin = Redis.from_url(args.redis_url)
    clock = SystemClock()
    try:
        await client.ping()
        info = await client.info("server")
        scenarios: list[tuple[str, Call]] = [
            ("memory", admit_call(MemoryLimiter(clock), accounts)),
            ("redis", admit_call(RedisLimiter(client, prefix=prefix), accounts)),
            (
                "degrading",
                admit_call(
                    DegradingLimiter(
                        RedisLimiter(client, prefix=prefix), MemoryLimiter(clock), share=0.5, clock=clock, timeout=1.0
                    ),
                    accounts,
                ),
            ),
            ("redis PING", lambda _worker: client.ping()),
        ]
        before = await script_stats(admin)
        results = [
            await measure(name, call, concurrency, args.count, args.warmup)
            for concurrency in args.concurrency
            for name, call in scenarios
        ]
        after = await script_stats(admin)
    finally:
        keys = [key async for key in admin.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await admin.delete(*keys)
        await admin.aclose()
        await client.aclose()

    print(
        f"# quota admission: Python {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"Redis {info.get('redis_version')} at {args.redis_url}; plan with minute/day/month windows"
    )
    print(f"{'limiter':<12} {'conc':>4} {'calls':>7} {'p50 µs':>9} {'p99 µs':>9} {'ops/s':>10}")
    for r in results:
        print(f"{r.limiter:<12} {r.concurrency:>4} {r.calls:>7} {r.p50_us:>9.1f} {r.p99_us:>9.1f} {r.ops_per_s:>10.0f}")
    by_key = {(r.limiter, r.concurrency): r for r in results}
    for c in args.concurrency:
        script, ping = by_key[("redis", c)], by_key[("redis PING", c)]
        print(f"c={c}: the script costs {script.p50_us - ping.p50_us:+.1f} µs p50 over a bare Redis round trip")
    calls, usec = after[0] - before[0], after[1] - before[1]
    if calls:
        print(f"inside Redis: {usec / calls:.1f} µs per script call (INFO commandstats, evalsha, {calls} calls)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump([asdict(r) for r in results], out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
