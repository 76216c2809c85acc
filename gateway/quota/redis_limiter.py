"""Shared quota counters in Redis: one atomic Lua script per admission, on Redis time.

Keys (one hash per account and window kind, all in one Redis Cluster slot thanks to the ``{…}`` hash tag,
which also holds the account's stream leases, ``gateway.quota.streams``)::

    <prefix>:{<account>}:m    minute     fields: s = window start (epoch s), n = units charged in it
    <prefix>:{<account>}:d    UTC day
    <prefix>:{<account>}:mo   UTC calendar month

``<account>`` is ``account_key_part(account_id)``: a generated id as is, anything else hashed, so no request
input ever reaches a key name. A hash whose ``s`` is not the current window start counts as empty; it is
overwritten on the next charge. Every charge sets ``EXPIREAT`` window end + ``key_margin``, so every key
carries a TTL and an idle account leaves nothing behind. All keys are passed in ``KEYS`` and share the
account's hash tag, so the script runs unchanged on one Redis and on a Redis Cluster (no ``CROSSSLOT``); on a
cluster an account's counters live on the primary that holds its tag's slot (``shard``).
"""

from __future__ import annotations

import re
from typing import Any, Final

from gateway.quota.limiter import Decision, Usage, WindowState, account_key_part, check_cost, retry_after
from gateway.quota.plans import Plan
from gateway.quota.windows import WindowKind
from gateway.redis_clients import LuaScript, RedisClient, shard_of

DEFAULT_PREFIX: Final = "gw:q"
DEFAULT_KEY_MARGIN: Final = 60
_PREFIX_RE: Final = re.compile(r"^[A-Za-z0-9_:-]{1,32}$")
_KIND_CODE: Final[dict[WindowKind, str]] = {"minute": "m", "day": "d", "month": "mo"}

WINDOW_BOUNDS_LUA: Final = """
-- Howard Hinnant's days_from_civil / civil_from_days, on Lua 5.1 numbers (exact below 2^53).
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

local function civil_from_days(z)
  z = z + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return y, m
end

-- (start, end) in epoch seconds of the window of kind ("m", "d", "mo") containing second t.
local function window_bounds(kind, t)
  if kind == 'm' then
    local s = t - t % 60
    return s, s + 60
  elseif kind == 'd' then
    local s = t - t % 86400
    return s, s + 86400
  elseif kind == 'mo' then
    local y, m = civil_from_days(math.floor(t / 86400))
    local ny, nm = y, m + 1
    if nm == 13 then ny, nm = y + 1, 1 end
    return days_from_civil(y, m, 1) * 86400, days_from_civil(ny, nm, 1) * 86400
  end
  error('unknown window kind: ' .. tostring(kind))
end
"""

ADMIT_LUA: Final = (
    """
-- Atomic fixed-window admission for one account, on Redis time.
--
-- KEYS[i]      counter of window i (a hash: s = window start, n = units charged in that window)
-- ARGV[1]      cost: units to charge to every window; 0 reads only and writes nothing
-- ARGV[2]      key margin: seconds a key outlives the end of its window
-- ARGV[1+2i]   kind of window i: "m" (minute), "d" (UTC day), "mo" (UTC calendar month)
-- ARGV[2+2i]   limit of window i (integer >= 1)
--
-- Charges every window, or none when the cost does not fit in one of them.
-- Returns {allowed (1|0), now (s), used_1, reset_1, ..., used_n, reset_n}: used_i counts units in window i
-- after the charge (before it when refused), reset_i the whole seconds until window i ends (rounded up).
"""
    + WINDOW_BOUNDS_LUA
    + """
local time = redis.call('TIME')
local now = tonumber(time[1])
local fraction = tonumber(time[2]) / 1000000
local cost = tonumber(ARGV[1])
local margin = tonumber(ARGV[2])
local starts, ends, used = {}, {}, {}
local allowed = 1
for i = 1, #KEYS do
  local s, e = window_bounds(ARGV[1 + 2 * i], now)
  local stored = redis.call('HMGET', KEYS[i], 's', 'n')
  local n = 0
  if tonumber(stored[1]) == s then n = tonumber(stored[2]) or 0 end
  starts[i], ends[i], used[i] = s, e, n
  if n + cost > tonumber(ARGV[2 + 2 * i]) then allowed = 0 end
end
if allowed == 1 and cost > 0 then
  for i = 1, #KEYS do
    used[i] = used[i] + cost
    redis.call('HSET', KEYS[i], 's', starts[i], 'n', used[i])
    redis.call('EXPIREAT', KEYS[i], ends[i] + margin)
  end
end
local out = {allowed, now}
for i = 1, #KEYS do
  out[#out + 1] = used[i]
  out[#out + 1] = math.ceil(ends[i] - now - fraction)
end
return out
"""
)


REFUND_LUA: Final = (
    """
-- Refund of an admission (a gateway-side 502/504), on the windows it charged.
--
-- KEYS[i]      counter of window i (as in ADMIT_LUA)
-- ARGV[1]      cost to give back
-- ARGV[2]      the second the admission was decided at (Redis time, from ADMIT_LUA's reply)
-- ARGV[2+i]    kind of window i
--
-- A counter whose window is no longer the admission's is left alone; none goes below zero; TTLs are kept.
"""
    + WINDOW_BOUNDS_LUA
    + """
local cost = tonumber(ARGV[1])
local at = tonumber(ARGV[2])
for i = 1, #KEYS do
  local s = window_bounds(ARGV[2 + i], at)
  local stored = redis.call('HMGET', KEYS[i], 's', 'n')
  if tonumber(stored[1]) == s then
    local n = (tonumber(stored[2]) or 0) - cost
    if n < 0 then n = 0 end
    redis.call('HSET', KEYS[i], 'n', n)
  end
end
return 1
"""
)


class RedisLimiter:
    """``QuotaLimiter`` on one Redis or a Redis Cluster: every replica sharing it shares one counter per account.

    Redis errors propagate (``redis.exceptions.ConnectionError`` / ``TimeoutError``…); wrap in
    ``DegradingLimiter`` to keep serving while Redis is unreachable.
    """

    def __init__(
        self, redis: RedisClient, *, prefix: str = DEFAULT_PREFIX, key_margin: int = DEFAULT_KEY_MARGIN
    ) -> None:
        if not _PREFIX_RE.match(prefix):
            raise ValueError("prefix: 1-32 characters among letters, digits, '_', ':' and '-'")
        if key_margin < 1:
            raise ValueError("key_margin must be at least 1 second")
        self._redis = redis
        self._prefix = prefix
        self._margin = key_margin
        self._script = LuaScript(redis, ADMIT_LUA)
        self._refund = LuaScript(redis, REFUND_LUA)

    def keys(self, account_id: str, plan: Plan) -> list[str]:
        """The Redis keys of the plan's capped windows for the account (in ``plan.limits()`` order)."""
        tag = account_key_part(account_id)
        return [f"{self._prefix}:{{{tag}}}:{_KIND_CODE[kind]}" for kind, _ in plan.limits()]

    def shard(self, account_id: str) -> str:
        """Where the account's keys live: its cluster primary (``SINGLE_SHARD`` on one Redis)."""
        return shard_of(self._redis, f"{self._prefix}:{{{account_key_part(account_id)}}}:m")

    async def admit(self, account_id: str, plan: Plan, cost: int) -> Decision:
        check_cost(cost)
        if plan.unlimited:
            return Decision(allowed=True, retry_after=0)
        allowed, states, now = await self._run(account_id, plan, cost)
        if not allowed:
            return Decision(allowed=False, retry_after=retry_after(states, cost), limits=states, charged_at=now)
        return Decision(allowed=True, retry_after=0, limits=states, charged_at=now)

    async def refund(self, account_id: str, plan: Plan, cost: int, admitted: Decision) -> None:
        check_cost(cost)
        if plan.unlimited or not cost:
            return
        args: list[str | int] = [cost, admitted.charged_at, *(_KIND_CODE[kind] for kind, _ in plan.limits())]
        await self._refund(keys=self.keys(account_id, plan), args=args)

    async def usage(self, account_id: str, plan: Plan) -> Usage:
        states = [] if plan.unlimited else (await self._run(account_id, plan, 0))[1]
        return Usage(account_id=account_id, plan=plan.name, windows=states)

    async def _run(self, account_id: str, plan: Plan, cost: int) -> tuple[bool, list[WindowState], int]:
        windows = list(plan.limits())
        args: list[str | int] = [cost, self._margin]
        for kind, limit in windows:
            args += [_KIND_CODE[kind], limit]
        reply: Any = await self._script(keys=self.keys(account_id, plan), args=args)
        states = [
            WindowState(
                window=kind,
                limit=limit,
                remaining=max(0, limit - int(reply[2 + 2 * i])),
                reset_seconds=max(1, int(reply[3 + 2 * i])),
                used=int(reply[2 + 2 * i]),
            )
            for i, (kind, limit) in enumerate(windows)
        ]
        return bool(int(reply[0])), states, int(reply[1])
