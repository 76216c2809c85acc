"""Counting budgets for the protective limits: fixed windows keyed by hashes, in Redis or in this process.

A budget is ``limit`` units per ``window`` seconds under one key. The window starts at the key's first
charge and ends ``window`` seconds later (the key's TTL), so every key expires by itself. Several keys are
checked and charged together, all or none: a request refused by its per-address budget does not spend its
per-client one.

``RedisBudgets`` runs one Lua script (Redis time: ``PEXPIRE`` counts on the server's clock), shared by every
replica. ``MemoryBudgets`` is the same on the process's monotonic clock. ``FallbackBudgets`` uses Redis and,
while it is unreachable, a strict local copy (each budget scaled to ``share``, never unlimited).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import OrderedDict
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from gateway.clock import Clock
from gateway.quota.degrading import PRIMARY_ERRORS
from gateway.redis_clients import LuaScript, RedisClient

log = logging.getLogger("gateway.throttle")

MAX_TRACKED: Final = 100_000
"""Local keys kept at most (the least recently charged go first)."""


@dataclass(frozen=True, slots=True)
class Budget:
    key: str
    """Built by ``budget_key`` (a prefix and a hash): bounded, never request input."""
    limit: int
    window: float
    """Seconds."""


class Budgets(Protocol):
    async def charge(self, budgets: Sequence[Budget], cost: int = 1) -> float:
        """Charge ``cost`` to every budget when each has room, else nothing; returns 0 when charged, else
        the seconds until the fullest refusing budget's window ends. ``cost`` 0 only checks that one more
        unit would fit."""
        ...

    async def clear(self, key: str) -> None:
        """Forget the key's count (a successful sign-in clears its account's failures)."""
        ...

    async def refund(self, key: str, cost: int = 1) -> None:
        """Give back up to ``cost`` units charged to ``key`` (never below zero; its window is unchanged)."""
        ...


CHARGE_LUA: Final = """
-- Protective budgets, all or none, on Redis time.
-- KEYS[i]      counter i (a string holding an integer; its TTL is the rest of its window)
-- ARGV[1]      cost (0: check that one more unit fits, charge nothing)
-- ARGV[2i]     limit of counter i
-- ARGV[2i+1]   window of counter i, in milliseconds
-- Returns 0 when charged (or when it fits, for cost 0), else the milliseconds until the longest-waiting
-- refusing counter expires.
local cost = tonumber(ARGV[1])
local need = math.max(cost, 1)
local wait = 0
for i = 1, #KEYS do
  local n = tonumber(redis.call('GET', KEYS[i]) or '0')
  if n + need > tonumber(ARGV[2 * i]) then
    local ttl = redis.call('PTTL', KEYS[i])
    if ttl < 0 then
      ttl = tonumber(ARGV[2 * i + 1])
      redis.call('PEXPIRE', KEYS[i], ttl)
    end
    if ttl > wait then wait = ttl end
  end
end
if wait > 0 or cost == 0 then return wait end
for i = 1, #KEYS do
  redis.call('INCRBY', KEYS[i], cost)
  if redis.call('PTTL', KEYS[i]) < 0 then redis.call('PEXPIRE', KEYS[i], tonumber(ARGV[2 * i + 1])) end
end
return 0
"""


REFUND_LUA: Final = """
-- Give back units of one protective counter, never below zero; the TTL (its window) is kept.
-- KEYS[1] counter; ARGV[1] units
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n > 0 then redis.call('DECRBY', KEYS[1], math.min(n, tonumber(ARGV[1]))) end
return 0
"""


class RedisBudgets:
    """Budgets every replica shares. Redis errors propagate (``FallbackBudgets`` handles them)."""

    def __init__(self, redis: RedisClient) -> None:
        self._redis = redis
        self._script = LuaScript(redis, CHARGE_LUA)
        self._refund = LuaScript(redis, REFUND_LUA)

    async def charge(self, budgets: Sequence[Budget], cost: int = 1) -> float:
        if not budgets:
            return 0.0
        args: list[int] = [cost]
        for budget in budgets:
            args += [budget.limit, max(1, math.ceil(budget.window * 1000))]
        wait: Any = await self._script(keys=[b.key for b in budgets], args=args)
        return int(wait) / 1000

    async def clear(self, key: str) -> None:
        await self._redis.delete(key)

    async def refund(self, key: str, cost: int = 1) -> None:
        await self._refund(keys=[key], args=[cost])


@dataclass(slots=True)
class _Count:
    used: int
    ends: float


class MemoryBudgets:
    """Budgets of this process only. Exact under asyncio: a check and its charge have no ``await`` between."""

    def __init__(self, clock: Clock, *, share: float = 1.0, max_tracked: int = MAX_TRACKED) -> None:
        self._clock = clock
        self._share = share
        self._max = max_tracked
        self._counts: OrderedDict[str, _Count] = OrderedDict()

    def limit_of(self, budget: Budget) -> int:
        """The limit this process enforces: the budget's, scaled to ``share`` (at least 1)."""
        return max(1, math.floor(budget.limit * self._share))

    async def charge(self, budgets: Sequence[Budget], cost: int = 1) -> float:
        return self.charge_now(budgets, cost)

    def charge_now(self, budgets: Sequence[Budget], cost: int = 1) -> float:
        now = self._clock.monotonic()
        wait = 0.0
        for budget in budgets:
            count = self._live(budget.key, now)
            if count is not None and count.used + max(cost, 1) > self.limit_of(budget):
                wait = max(wait, count.ends - now)
        if wait > 0 or cost == 0:
            return wait
        self.record(budgets, cost)
        return 0.0

    def record(self, budgets: Sequence[Budget], cost: int = 1) -> None:
        """Charge without checking (what the shared counter admitted, to keep this copy warm)."""
        now = self._clock.monotonic()
        for budget in budgets:
            count = self._live(budget.key, now)
            if count is None:
                count = self._counts[budget.key] = _Count(0, now + budget.window)
            count.used += cost
            self._counts.move_to_end(budget.key)
        while len(self._counts) > self._max:
            self._counts.popitem(last=False)

    async def clear(self, key: str) -> None:
        self._counts.pop(key, None)

    async def refund(self, key: str, cost: int = 1) -> None:
        count = self._live(key, self._clock.monotonic())
        if count is not None:
            count.used = max(0, count.used - cost)

    def _live(self, key: str, now: float) -> _Count | None:
        count = self._counts.get(key)
        if count is not None and count.ends <= now:
            del self._counts[key]
            return None
        return count


class FallbackBudgets:
    """Redis budgets; a strict per-replica copy while Redis is unreachable (one warning, then one info line
    when it answers again). While degraded, one call per ``retry_interval`` probes Redis."""

    def __init__(
        self, primary: RedisBudgets, local: MemoryBudgets, *, clock: Clock, timeout: float, retry_interval: float
    ) -> None:
        self._primary = primary
        self._local = local
        self._clock = clock
        self._timeout = timeout
        self._retry_interval = retry_interval
        self._degraded = False
        self._retry_at = 0.0

    @property
    def degraded(self) -> bool:
        return self._degraded

    async def charge(self, budgets: Sequence[Budget], cost: int = 1) -> float:
        if self._degraded and self._clock.monotonic() < self._retry_at:
            return self._local.charge_now(budgets, cost)
        try:
            async with asyncio.timeout(self._timeout):
                wait = await self._primary.charge(budgets, cost)
        except PRIMARY_ERRORS as exc:
            self._failed(exc)
            return self._local.charge_now(budgets, cost)
        self._recovered()
        if wait == 0 and cost > 0:
            self._local.record(budgets, cost)
        return wait

    async def clear(self, key: str) -> None:
        await self._local.clear(key)
        await self._on_primary(self._primary.clear(key))

    async def refund(self, key: str, cost: int = 1) -> None:
        await self._local.refund(key, cost)
        await self._on_primary(self._primary.refund(key, cost))

    async def _on_primary(self, call: Coroutine[Any, Any, None]) -> None:
        """Best effort on the shared counter (skipped while degraded: the local copy already has it)."""
        if self._degraded:
            call.close()
            return
        try:
            async with asyncio.timeout(self._timeout):
                await call
        except PRIMARY_ERRORS as exc:
            self._failed(exc)

    def _failed(self, exc: BaseException) -> None:
        self._retry_at = self._clock.monotonic() + self._retry_interval
        if not self._degraded:
            self._degraded = True
            log.warning(
                "protective limits: Redis unreachable (%s); strict per-replica budgets apply", type(exc).__name__
            )

    def _recovered(self) -> None:
        if self._degraded:
            self._degraded = False
            log.info("protective limits: Redis reachable again; shared budgets apply")
