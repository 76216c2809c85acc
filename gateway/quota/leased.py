"""Shared quota counters in Redis without a round trip per request: each replica leases a slice and spends it.

The counters are ``RedisLimiter``'s own hashes (same keys, same ``s``/``n`` fields, built by the one helper
``RedisLimiter.keys``), so leasing and per-request replicas can share a counter during a rolling change. One
Lua script (``LEASE_LUA``), atomic on Redis time, does everything that touches Redis: it gives back what a
replica returns, then reserves a slice of every capped window at once (all or nothing) and answers the
windows' counts.

How big a slice is: ``remaining // divisor`` where ``divisor`` is ``k * replicas`` (``replicas`` estimated as
``1 / quota.degraded_share``), but never less than what the requests waiting on this replica need, never more
than what is left, and none beyond that demand in the last ``tail_seconds`` of the shortest window. Near the
limit the slice shrinks to the demand: below ``divisor`` units left every request (or batch of requests
waiting together) is one script call, exactly the per-request limiter.

Guarantees:

* **Never over the limit.** A slice is charged to the counter when it is leased, so the units spent on all
  replicas never exceed the limit: the overshoot is 0. A lease is spent only while every window it was
  charged to is still the current one (a local deadline taken conservatively from Redis' reply), so a
  minute's lease is never spent in the next minute.
* **Bounded shortfall.** What a replica holds but has not spent counts as used for the others: at most
  ``replicas * slice`` units (and 0 at the exact tail, where the slice is the demand) may be refused
  elsewhere while held. Holdings go back on window end, after ``idle_seconds`` unused, and on shutdown
  (``aclose``); a replica that crashes strands its slice until the window ends (refusing, never admitting).
* **Never unlimited when Redis fails.** Redis errors propagate; ``DegradingLimiter`` answers from its
  per-replica share, as with ``RedisLimiter``.

A refund (the gateway's own 502/504) goes back into this replica's slice while the lease it came from is
current, else to the counter, in the windows it was charged to. ``usage`` reads the counter and counts this
replica's unspent units as unused (other replicas' as used).

One fetch per account and plan is in flight per replica; requests arriving meanwhile wait for it, add their
cost to its demand and are served from what it brings (or refused with it when it was refused for a cost
no larger than theirs). The fetch runs as its own task: a caller that gives up (``DegradingLimiter``'s
timeout) does not lose units Redis already charged.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from typing import Any, Final

from gateway.clock import Clock
from gateway.quota.limiter import Decision, Usage, WindowState, check_cost, retry_after
from gateway.quota.plans import Plan
from gateway.quota.redis_limiter import _KIND_CODE, DEFAULT_KEY_MARGIN, WINDOW_BOUNDS_LUA, RedisLimiter
from gateway.quota.windows import WindowKind
from gateway.redis_clients import LuaScript, RedisClient

DEFAULT_K: Final = 4
DEFAULT_TAIL_SECONDS: Final = 2
DEFAULT_IDLE_SECONDS: Final = 5.0
DEFAULT_SWEEP_INTERVAL: Final = 1.0

LEASE_LUA: Final = (
    """
-- Give back, then lease, on Redis time (the windows as in ADMIT_LUA).
--
-- KEYS[i]      counter of window i (a hash: s = window start, n = units charged or leased in that window)
-- ARGV[1]      cost: the least to lease (0: lease nothing, only give back and read)
-- ARGV[2]      demand: what the requests waiting for this lease need together (>= cost)
-- ARGV[3]      divisor: the slice is what is left // divisor
-- ARGV[4]      tail: no slice beyond the demand when the shortest window ends within this many seconds
-- ARGV[5]      key margin: seconds a key outlives the end of its window
-- ARGV[6]      units to give back (to the windows of ARGV[7] still current; never below 0)
-- ARGV[7]      the second those units were leased at
-- ARGV[6+2i]   kind of window i; ARGV[7+2i] its limit
--
-- Returns {granted, now, used_1, reset_1, ..., used_n, reset_n}: granted 0 means refused (or cost 0).
"""
    + WINDOW_BOUNDS_LUA
    + """
local time = redis.call('TIME')
local now = tonumber(time[1])
local fraction = tonumber(time[2]) / 1000000
local cost, demand, divisor = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tail, margin = tonumber(ARGV[4]), tonumber(ARGV[5])
local back, back_at = tonumber(ARGV[6]), tonumber(ARGV[7])
local starts, ends, used = {}, {}, {}
local left, soonest = nil, nil
for i = 1, #KEYS do
  local kind, limit = ARGV[6 + 2 * i], tonumber(ARGV[7 + 2 * i])
  local s, e = window_bounds(kind, now)
  local stored = redis.call('HMGET', KEYS[i], 's', 'n')
  local held = tonumber(stored[1])
  local n = tonumber(stored[2]) or 0
  if back > 0 and held ~= nil and held == window_bounds(kind, back_at) then
    n = n - back
    if n < 0 then n = 0 end
    redis.call('HSET', KEYS[i], 'n', n)
  end
  if held ~= s then n = 0 end
  starts[i], ends[i], used[i] = s, e, n
  if left == nil or limit - n < left then left = limit - n end
  if soonest == nil or e < soonest then soonest = e end
end
local granted = 0
if cost > 0 and left >= cost then
  granted = demand
  if soonest - now > tail then granted = math.max(granted, math.floor(left / divisor)) end
  granted = math.max(cost, math.min(granted, left))
  for i = 1, #KEYS do
    used[i] = used[i] + granted
    redis.call('HSET', KEYS[i], 's', starts[i], 'n', used[i])
    redis.call('EXPIREAT', KEYS[i], ends[i] + margin)
  end
end
local out = {granted, now}
for i = 1, #KEYS do
  out[#out + 1] = used[i]
  out[#out + 1] = math.ceil(ends[i] - now - fraction)
end
return out
"""
)


@dataclass(slots=True)
class _Reply:
    granted: int
    at: int
    """Redis second of the call (what ``Decision.charged_at`` carries)."""
    used: list[int]
    ends: list[float]
    """Local monotonic estimates of each window's end."""
    expires: float
    """Local monotonic deadline before which every window is surely still the one charged."""
    cost: int


@dataclass(slots=True)
class _Pool:
    """What this replica holds of one account's windows under one plan."""

    left: int = 0
    lease: _Reply | None = None
    touched: float = 0.0
    fetch: asyncio.Task[_Reply] | None = None
    demand: int = 0
    limits: list[int] = field(default_factory=list)
    kinds: list[WindowKind] = field(default_factory=list)

    @classmethod
    def of(cls, plan: Plan) -> _Pool:
        windows = list(plan.limits())
        return cls(limits=[limit for _, limit in windows], kinds=[kind for kind, _ in windows])

    def fetched(self, task: asyncio.Task[_Reply]) -> None:
        if self.fetch is task:
            self.fetch = None
        if not task.cancelled():
            task.exception()  # retrieved here too: every waiter may have given up (timeout)


class LeasedLimiter:
    """``QuotaLimiter`` on Redis that leases slices of an account's windows and spends them locally."""

    def __init__(
        self,
        redis: RedisClient,
        *,
        clock: Clock,
        prefix: str,
        replicas: int = 2,
        k: int = DEFAULT_K,
        tail_seconds: int = DEFAULT_TAIL_SECONDS,
        idle_seconds: float = DEFAULT_IDLE_SECONDS,
        key_margin: int = DEFAULT_KEY_MARGIN,
    ) -> None:
        if replicas < 1 or k < 1 or tail_seconds < 1 or idle_seconds <= 0:
            raise ValueError("replicas, k and tail_seconds must be at least 1; idle_seconds greater than 0")
        self._shared = RedisLimiter(redis, prefix=prefix, key_margin=key_margin)
        self._script = LuaScript(redis, LEASE_LUA)
        self._clock = clock
        self._divisor = replicas * k
        self._tail = tail_seconds
        self._idle = idle_seconds
        self._margin = key_margin
        self._pools: dict[tuple[str, Plan], _Pool] = {}
        self._next_sweep = 0.0
        self._returns: set[asyncio.Task[None]] = set()

    def held(self, account_id: str, plan: Plan) -> int:
        """Units this replica has leased for the account and not spent yet."""
        pool = self._pools.get((account_id, plan))
        return pool.left if pool is not None else 0

    def admit_local(self, account_id: str, plan: Plan, cost: int) -> Decision | None:
        """The decision when this replica's current lease covers ``cost`` (spent at once, no await), else None
        (``admit`` must go to Redis). What a busy account's requests cost between two leases."""
        now = self._clock.monotonic()
        self._sweep(now)
        pool = self._pools.get((account_id, plan))
        if pool is None or pool.lease is None or not 0 < cost <= pool.left or now >= pool.lease.expires:
            return None
        pool.touched = now
        pool.left -= cost
        return self._decision(pool, pool.lease, cost)

    async def admit(self, account_id: str, plan: Plan, cost: int) -> Decision:
        check_cost(cost)
        if plan.unlimited:
            return Decision(allowed=True, retry_after=0)
        now = self._clock.monotonic()
        self._sweep(now)
        pool = self._pools.get((account_id, plan))
        if pool is None:
            pool = self._pools[(account_id, plan)] = _Pool.of(plan)
        pool.touched = now
        if not cost:
            return self._decision(pool, await self._call(account_id, plan, pool, 0, 0), 0)
        while True:
            if pool.lease is not None and pool.left >= cost and now < pool.lease.expires:
                pool.left -= cost
                return self._decision(pool, pool.lease, cost)
            if pool.fetch is not None and pool.fetch.done():
                # Its done-callback may not have run yet, and awaiting a finished task never yields: clear it
                # here, or a waiter it did not cover would spin on it forever.
                pool.fetched(pool.fetch)
            if pool.fetch is None:
                fetch = pool.fetch = asyncio.create_task(self._fetch(account_id, plan, pool, cost))
                fetch.add_done_callback(pool.fetched)
                reply = await asyncio.shield(fetch)
                if reply.granted:
                    return self._decision(pool, reply, cost)
                now = self._clock.monotonic()
                if pool.lease is not None and pool.left >= cost and now < pool.lease.expires:
                    continue  # refunded to this replica's lease while the call was out
                return self._refusal(pool, reply, cost)
            fetch = pool.fetch
            pool.demand += cost
            try:
                reply = await asyncio.shield(fetch)
            finally:
                pool.demand -= cost
            if not reply.granted and cost >= reply.cost:
                return self._refusal(pool, reply, cost)
            now = self._clock.monotonic()

    async def usage(self, account_id: str, plan: Plan) -> Usage:
        if plan.unlimited:
            return Usage(account_id=account_id, plan=plan.name)
        pool = self._pools.get((account_id, plan)) or _Pool.of(plan)
        reply = await self._call(account_id, plan, pool, 0, 0)
        held = pool.left if pool.lease is not None and self._clock.monotonic() < pool.lease.expires else 0
        states = self._states(pool, reply, held)
        return Usage(account_id=account_id, plan=plan.name, windows=states)

    async def refund(self, account_id: str, plan: Plan, cost: int, admitted: Decision) -> None:
        check_cost(cost)
        if plan.unlimited or not cost:
            return
        pool = self._pools.get((account_id, plan))
        lease = pool.lease if pool is not None else None
        fresh = lease is not None and lease.at == admitted.charged_at and self._clock.monotonic() < lease.expires
        if pool is not None and fresh:
            pool.left += cost  # still the windows it was charged to: spend it again here
            return
        await self._give_back(account_id, plan, cost, admitted.charged_at)

    async def aclose(self) -> None:
        """Give back every unspent unit (shutdown)."""
        for (account_id, plan), pool in list(self._pools.items()):
            if pool.fetch is not None:
                await asyncio.gather(pool.fetch, return_exceptions=True)
            self._return_later(account_id, plan, pool)
        if self._returns:
            await asyncio.gather(*self._returns, return_exceptions=True)

    async def _fetch(self, account_id: str, plan: Plan, pool: _Pool, cost: int) -> _Reply:
        reply = await self._call(account_id, plan, pool, cost, cost + pool.demand)
        if reply.granted:
            self._return_later(account_id, plan, pool)  # refunded to the previous lease meanwhile: its windows
            pool.lease = reply
            pool.left = reply.granted - cost
        return reply

    async def _call(self, account_id: str, plan: Plan, pool: _Pool, cost: int, demand: int) -> _Reply:
        """One script call; gives back (synchronously taken from ``pool``) what it holds first."""
        back, back_at = 0, 0
        if cost and pool.lease is not None and pool.left:
            back, back_at, pool.left = pool.left, pool.lease.at, 0
        sent = self._clock.monotonic()
        args: list[str | int] = [cost, demand, self._divisor, self._tail, self._margin, back, back_at]
        for kind, limit in plan.limits():
            args += [_KIND_CODE[kind], limit]
        # When the call fails, what it gave back is not taken again: the script may have run, and spending
        # units already returned could go over the limit (losing them only refuses, until the window ends).
        raw: Any = await self._script(keys=self._shared.keys(account_id, plan), args=args)
        resets = [max(1, int(raw[3 + 2 * i])) for i in range(len(pool.limits))]
        return _Reply(
            granted=int(raw[0]),
            at=int(raw[1]),
            used=[int(raw[2 + 2 * i]) for i in range(len(pool.limits))],
            ends=[sent + reset for reset in resets],
            expires=sent + min(resets) - 1,
            cost=cost,
        )

    def _decision(self, pool: _Pool, lease: _Reply, cost: int) -> Decision:
        # Only this lease's own unspent units are taken off "used": other replicas' holdings count as used.
        held = pool.left if lease is pool.lease else 0
        return Decision(allowed=True, retry_after=0, limits=self._states(pool, lease, held), charged_at=lease.at)

    def _refusal(self, pool: _Pool, reply: _Reply, cost: int) -> Decision:
        states = self._states(pool, reply, 0)
        return Decision(allowed=False, retry_after=retry_after(states, cost), limits=states, charged_at=reply.at)

    def _states(self, pool: _Pool, reply: _Reply, held: int) -> list[WindowState]:
        now = self._clock.monotonic()
        states = []
        for kind, limit, used, end in zip(pool.kinds, pool.limits, reply.used, reply.ends, strict=True):
            used = used - held if used > held else 0
            reset = math.ceil(end - now)
            remaining = limit - used if used < limit else 0
            states.append(WindowState(kind, limit, remaining, reset if reset > 1 else 1, used))
        return states

    async def _give_back(self, account_id: str, plan: Plan, units: int, at: int) -> None:
        args: list[str | int] = [0, 0, self._divisor, self._tail, self._margin, units, at]
        for kind, limit in plan.limits():
            args += [_KIND_CODE[kind], limit]
        await self._script(keys=self._shared.keys(account_id, plan), args=args)

    def _sweep(self, now: float) -> None:
        """At most once per second: give back the holdings of idle accounts and of ended windows."""
        if now < self._next_sweep:
            return
        self._next_sweep = now + DEFAULT_SWEEP_INTERVAL
        for key, pool in list(self._pools.items()):
            if pool.fetch is not None or pool.demand:
                continue
            expired = pool.lease is None or now >= pool.lease.expires
            if expired or now - pool.touched >= self._idle:
                self._return_later(*key, pool)
                del self._pools[key]

    def _return_later(self, account_id: str, plan: Plan, pool: _Pool) -> None:
        if pool.lease is None or not pool.left:
            return
        units, at, pool.left = pool.left, pool.lease.at, 0
        task = asyncio.create_task(self._give_back(account_id, plan, units, at))
        self._returns.add(task)
        task.add_done_callback(self._returned)

    def _returned(self, task: asyncio.Task[None]) -> None:
        self._returns.discard(task)
        if not task.cancelled():
            task.exception()  # a failed give-back only strands units until the window ends (never admits)
