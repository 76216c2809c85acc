"""Concurrent-stream cap per account (security-cases 95): standalone event streams are leases.

A stream (``GET /mcp``, ``GET /mcp/sse``) takes a lease when it opens and gives it back when it ends; past
``quota.max_concurrent_streams`` live leases the account's next stream is refused (429). A lease expires
``lease_seconds`` after its last refresh, and the stream's own task refreshes it while the stream lives, so
the leases of a replica that crashed are forgotten within ``lease_seconds``. A stream is never cut by the
cap: the cap is checked at open only.

Redis (shared by every replica): one sorted set per account, ``<prefix>:{<account>}:s``, member = lease
id, score = expiry in milliseconds of Redis time; the key's TTL is the newest lease's expiry. It shares the
account's hash tag with its quota counters, so on a Redis Cluster both live on the same primary. While Redis (on a
cluster: the account's primary) is unreachable leases are taken locally against the cap scaled to ``share``
(never unlimited); other shards' accounts keep shared leases.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
from dataclasses import dataclass
from typing import Any, Final

from gateway.clock import Clock
from gateway.quota.degrading import PRIMARY_ERRORS
from gateway.quota.limiter import account_key_part
from gateway.redis_clients import LuaScript, RedisClient, shard_of

log = logging.getLogger("gateway.quota")

ACQUIRE_LUA: Final = """
-- Take a stream lease for one account if it has fewer than the cap, on Redis time.
-- KEYS[1]  the account's leases (sorted set: member = lease id, score = expiry in ms)
-- ARGV[1]  lease id; ARGV[2] cap; ARGV[3] lease lifetime in ms
-- Returns 1 when taken, 0 when the account already has the cap of live leases.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ttl)
return 1
"""

REFRESH_LUA: Final = """
-- Extend a live stream's lease (re-adding it if it had expired: the stream is alive, so it counts).
-- KEYS[1]  the account's leases; ARGV[1] lease id; ARGV[2] lease lifetime in ms
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
"""


@dataclass(frozen=True, slots=True)
class Lease:
    account_id: str
    lease_id: str
    shared: bool
    """Taken in Redis (False: in this process, while Redis was unreachable)."""


class StreamSlots:
    """Leases in Redis when given a client, else (and while it is unreachable) in this process."""

    def __init__(
        self,
        redis: RedisClient | None,
        *,
        clock: Clock,
        prefix: str,
        lease_seconds: float,
        share: float = 1.0,
        timeout: float = 0.25,
        retry_interval: float = 1.0,
    ) -> None:
        self._redis = redis
        self._clock = clock
        self._prefix = prefix
        self._lease_ms = max(1, math.ceil(lease_seconds * 1000))
        self.lease_seconds = lease_seconds
        self._share = share
        self._timeout = timeout
        self._retry_interval = retry_interval
        self._down: dict[str, float] = {}
        """Unreachable shards (one Redis: ``SINGLE_SHARD``) and when each may be probed again."""
        self._local: dict[str, dict[str, float]] = {}
        self._acquire = LuaScript(redis, ACQUIRE_LUA) if redis is not None else None
        self._refresh = LuaScript(redis, REFRESH_LUA) if redis is not None else None

    def key(self, account_id: str) -> str:
        return f"{self._prefix}:{{{account_key_part(account_id)}}}:s"

    async def acquire(self, account_id: str, cap: int) -> Lease | None:
        """A lease, or None when the account already has ``cap`` live streams."""
        lease_id = secrets.token_hex(8)
        if self._acquire is None:
            return self._acquire_locally(account_id, lease_id, cap)
        if self._clock.monotonic() >= self._down.get(self._shard(account_id), 0.0):
            reply = await self._shared(self._acquire, account_id, [lease_id, cap, self._lease_ms])
            if reply is not None:
                return Lease(account_id, lease_id, shared=True) if int(reply) else None
        # Redis unreachable: this replica's share of the cap, counting only the leases it took itself.
        return self._acquire_locally(account_id, lease_id, max(1, math.floor(cap * self._share)))

    async def refresh(self, lease: Lease) -> None:
        if not lease.shared:
            self._local.get(lease.account_id, {})[lease.lease_id] = self._clock.monotonic() + self.lease_seconds
        elif self._refresh is not None:
            await self._shared(self._refresh, lease.account_id, [lease.lease_id, self._lease_ms])

    async def release(self, lease: Lease) -> None:
        if not lease.shared:
            leases = self._local.get(lease.account_id, {})
            leases.pop(lease.lease_id, None)
            if not leases:
                self._local.pop(lease.account_id, None)
        elif self._redis is not None:
            # A lease that cannot be removed now expires by itself.
            with contextlib.suppress(*PRIMARY_ERRORS):
                async with asyncio.timeout(self._timeout):
                    await self._redis.zrem(self.key(lease.account_id), lease.lease_id)

    def local_count(self, account_id: str) -> int:
        return len(self._live(account_id))

    def _acquire_locally(self, account_id: str, lease_id: str, cap: int) -> Lease | None:
        leases = self._live(account_id)
        if len(leases) >= cap:
            return None
        leases[lease_id] = self._clock.monotonic() + self.lease_seconds
        self._local[account_id] = leases
        return Lease(account_id, lease_id, shared=False)

    def _shard(self, account_id: str) -> str:
        return shard_of(self._redis, self.key(account_id)) if self._redis is not None else ""

    def _live(self, account_id: str) -> dict[str, float]:
        now = self._clock.monotonic()
        return {lid: ends for lid, ends in self._local.get(account_id, {}).items() if ends > now}

    async def _shared(self, script: Any, account_id: str, args: list[Any]) -> Any:
        """The script's reply, or None when Redis failed (then the account's shard is degraded until a later
        call succeeds)."""
        shard = self._shard(account_id)
        try:
            async with asyncio.timeout(self._timeout):
                reply = await script(keys=[self.key(account_id)], args=args)
        except PRIMARY_ERRORS as exc:
            if shard not in self._down:
                log.warning(
                    "stream cap: Redis unreachable%s (%s); per-replica leases apply",
                    f" on shard {shard}" if shard else "",
                    type(exc).__name__,
                )
            self._down[shard] = self._clock.monotonic() + self._retry_interval
            return None
        if self._down.pop(shard, None) is not None:
            log.info("stream cap: Redis reachable again%s; shared leases apply", f" on shard {shard}" if shard else "")
        return reply
