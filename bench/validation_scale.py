"""Validation cost against the number of stored credentials: p50 with 10^6 stored API keys vs 10^3.

Run ``python bench/validation_scale.py [--small 1000] [--large 1000000] [--calls 2000] [--backends sqlite postgres]``
from the repository root. PostgreSQL is the tests' (``GATEWAY_TEST_POSTGRES_URL``, a throwaway schema per
database, dropped at the end); SQLite files live in a temporary directory.

For each backend two databases are built: one holding ``--small`` API keys, one holding ``--large`` (bulk
inserted behind the storage's back: ``executemany`` on SQLite, ``COPY`` on PostgreSQL, random 64-hex hashes),
each plus one real key minted through ``Accounts``. ``Authenticator.authenticate`` then validates a request
carrying the real key with the validation cache off (every call reads the key and its user from storage), in
rounds alternating small and large (ABBA) so drift hits both; the report gives p50/p99 per database and the
ratio large/small of the p50s. Target: within 10 % (a lookup by a unique index must not grow with the table).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path

import asyncpg
from aiohttp.test_utils import make_mocked_request

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.accounts import Accounts
from gateway.apikeys import ApiKeyFormat
from gateway.clock import SystemClock
from gateway.credentials import Authenticator, Challenge, ValidationCache, Watermark
from gateway.credentials.api_keys import ApiKeyVerifier
from gateway.last_used import LastUsedRecorder
from gateway.passwords import Passwords
from gateway.storage import Storage
from tests.support.databases import POSTGRES_URL, Backend
from tests.support.gateway import FAST_ARGON2, TEST_PASSWORD

TARGET_RATIO = 1.10
BATCH = 50_000


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def filler_rows(user_id: str, count: int, now: float) -> list[tuple[object, ...]]:
    return [
        (
            f"key_{secrets.token_hex(8)}",
            user_id,
            "filler",
            secrets.token_hex(32),
            "mgw_xxxx",
            "xxxx",
            now,
            None,
            None,
            None,
        )
        for _ in range(count)
    ]


async def fill(backend: Backend, user_id: str, count: int) -> None:
    """Insert ``count`` API keys of ``user_id`` behind the storage's back (the columns named: later migrations'
    columns keep their defaults)."""
    now, done = time.time(), 0
    columns = ("id", "user_id", "name", "key_hash", "display_prefix", "last_four", "created_at")
    columns += ("expires_at", "last_used_at", "revoked_at")
    if backend.kind == "sqlite":
        with closing(sqlite3.connect(backend.db_path)) as conn:
            while done < count:
                rows = filler_rows(user_id, min(BATCH, count - done), now)
                with conn:
                    conn.executemany(
                        f"INSERT INTO api_keys ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})", rows
                    )
                done += len(rows)
            conn.execute("ANALYZE")
        return
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        while done < count:
            rows = filler_rows(user_id, min(BATCH, count - done), now)
            await conn.copy_records_to_table("api_keys", records=rows, columns=columns, schema_name=backend.schema)
            done += len(rows)
        await conn.execute(f'ANALYZE "{backend.schema}".api_keys')
    finally:
        await conn.close()


async def prepared(kind: str, tmp: Path, stored: int) -> tuple[Backend, Storage, str]:
    """A database holding ``stored`` filler keys and one real key (returned)."""
    directory = tmp / f"{kind}-{stored}"
    directory.mkdir()
    backend = Backend(kind, directory)
    await backend.start()
    storage = await backend.storage()
    clock = SystemClock()
    accounts = Accounts(
        users=storage,
        keys=storage,
        passwords=Passwords(hasher=FAST_ARGON2),
        key_format=ApiKeyFormat("mgw"),
        clock=clock,
    )
    filler = await accounts.create_user(f"filler-{stored}@example.com", TEST_PASSWORD)
    started = time.perf_counter()
    await fill(backend, filler.id, stored)
    user = await accounts.create_user(f"bench-{stored}@example.com", TEST_PASSWORD)
    _, minted = await accounts.create_key(user, name="bench", expires_in=None)
    print(f"  {kind}: {stored:,} keys stored in {time.perf_counter() - started:.1f} s", flush=True)
    return backend, storage, minted.key


def uncached(storage: Storage) -> Authenticator:
    clock = SystemClock()
    recorder = LastUsedRecorder(storage.touch_api_keys, interval=3600, name="bench")
    return Authenticator(
        [ApiKeyVerifier(ApiKeyFormat("mgw"), keys=storage, users=storage, key_use=recorder)],
        cache=ValidationCache(clock, Watermark(storage, clock, interval=0.5), ttl=0.0),
        clock=clock,
        challenge=Challenge(),
        required_scopes=("mcp:tools",),
    )


async def timed(authn: Authenticator, key: str, calls: int) -> list[float]:
    request = make_mocked_request("POST", "/mcp", headers={"X-API-Key": key})
    out = []
    for _ in range(calls):
        t0 = time.perf_counter_ns()
        await authn.authenticate(request)
        out.append((time.perf_counter_ns() - t0) / 1000)
    return out


async def measure(kind: str, tmp: Path, args: argparse.Namespace) -> bool:
    sizes = (args.small, args.large)
    dbs = {size: await prepared(kind, tmp, size) for size in sizes}
    try:
        samples: dict[int, list[float]] = {size: [] for size in sizes}
        for size in sizes:  # warm-up: the page cache and the pool's statements
            await timed(uncached(dbs[size][1]), dbs[size][2], 200)
        per_round = args.calls // args.rounds
        for rnd in range(args.rounds):
            for size in sizes if rnd % 2 == 0 else sizes[::-1]:
                samples[size] += await timed(uncached(dbs[size][1]), dbs[size][2], per_round)
        p50 = {size: statistics.median(v) for size, v in samples.items()}
        ratio = p50[args.large] / p50[args.small]
        for size in sizes:
            print(f"  {kind:<8} {size:>9,} stored: p50 {p50[size]:7.1f} µs, p99 {pct(samples[size], 0.99):7.1f} µs")
        ok = ratio <= TARGET_RATIO
        print(f"{'PASS' if ok else 'MISS'} {kind}: p50 with {args.large:,} / with {args.small:,} = {ratio:.3f}")
        return ok
    finally:
        for backend, _, _ in dbs.values():
            await backend.close()


async def bench(args: argparse.Namespace) -> int:
    results = []
    with tempfile.TemporaryDirectory(prefix="validation-scale-") as tmp:
        for kind in args.backends:
            results.append(await measure(kind, Path(tmp), args))
    return 0 if all(results) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--calls", type=int, default=2_000, help="validations timed per database")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--backends", nargs="+", choices=("sqlite", "postgres"), default=["sqlite", "postgres"])
    return asyncio.run(bench(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
