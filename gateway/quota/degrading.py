"""Redis outage policy for the quota: degrade to a per-replica share of the plan, never unlimited, never down.

While the shared counter answers, every admission is decided by it and also recorded in the local
``MemoryLimiter`` (against the plan scaled to ``share``), so the local counters are warm when Redis goes
away and a failover does not hand out a fresh allowance (the idea of SweetSophia/noosphere PR #276).

When a call to Redis fails (connection refused or reset, timeout, any Redis error) the request is answered
from the local limiter with every cap scaled to ``share`` (e.g. 1/replicas, at least ``min_limit``). One
warning is logged when degraded mode starts and one info line when it ends; ``degraded`` and the optional
``on_change`` hook expose the state (for the ``quota_degraded`` metric and readiness). While degraded, one
request per ``retry_interval`` probes Redis (bounded by ``timeout``), the others go straight to the local
limiter, so a dead Redis never holds requests up; the first successful probe returns to the shared counter.
Units admitted locally during the outage are not replayed into Redis.

On a Redis Cluster all of this is per shard (``shard``: the primary that holds an account's keys, from
``RedisLimiter.shard``): a dead primary fails only the commands for its slots, so only the accounts whose keys
hash there degrade, and each dead shard is probed on its own; the accounts of the other shards keep exact
shared counting. ``degraded`` (and ``on_change``) say whether any shard is degraded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Final, TypeVar

from redis.exceptions import RedisClusterException, RedisError

from gateway.clock import Clock
from gateway.quota.limiter import Decision, QuotaLimiter, Usage
from gateway.quota.memory_limiter import MemoryLimiter
from gateway.quota.plans import Plan, scale_plan
from gateway.redis_clients import SINGLE_SHARD

log = logging.getLogger("gateway.quota")

DEFAULT_TIMEOUT: Final = 0.25
DEFAULT_RETRY_INTERVAL: Final = 1.0
PRIMARY_ERRORS: Final = (RedisError, RedisClusterException, OSError, TimeoutError)
"""What puts the limiter in degraded mode (``redis.exceptions.ConnectionError``/``TimeoutError`` are
``RedisError``s; ``RedisClusterException`` is what the cluster client raises for a slot no primary serves;
``OSError`` and ``TimeoutError`` cover the socket layer and our own deadline)."""

_T = TypeVar("_T")


def _single_shard(account_id: str) -> str:
    return SINGLE_SHARD


@dataclass(slots=True)
class _Outage:
    since: float
    retry_at: float
    probing: bool = False


class DegradingLimiter:
    def __init__(
        self,
        primary: QuotaLimiter,
        fallback: MemoryLimiter,
        *,
        share: float,
        clock: Clock,
        min_limit: int = 1,
        timeout: float = DEFAULT_TIMEOUT,
        retry_interval: float = DEFAULT_RETRY_INTERVAL,
        on_change: Callable[[bool], None] | None = None,
        shard: Callable[[str], str] = _single_shard,
    ) -> None:
        if not 0 < share <= 1:
            raise ValueError("share must be in (0, 1]")
        if min_limit < 1 or timeout <= 0 or retry_interval <= 0:
            raise ValueError("min_limit must be at least 1; timeout and retry_interval greater than 0")
        self._primary = primary
        self._fallback = fallback
        self._share = share
        self._min_limit = min_limit
        self._clock = clock
        self._timeout = timeout
        self._retry_interval = retry_interval
        self._on_change = on_change
        self._shard = shard
        self._local_plans: dict[Plan, Plan] = {}
        self._outages: dict[str, _Outage] = {}
        self._admit_local: Callable[[str, Plan, int], Decision | None] | None = getattr(primary, "admit_local", None)
        """The primary's synchronous admission from what it holds locally (``LeasedLimiter``), if it has one."""

    @property
    def degraded(self) -> bool:
        """True while the answers for some accounts (on a cluster: one shard's) come from the fallback."""
        return bool(self._outages)

    async def admit(self, account_id: str, plan: Plan, cost: int) -> Decision:
        local = self.local_plan(plan)
        if self._admit_local is not None and not self._outages:
            # Spent from a slice already leased from the shared counter: no Redis call, nothing to time out.
            decision = self._admit_local(account_id, plan, cost)
            if decision is not None:
                self._fallback.record(account_id, local, cost)
                return decision
        decision = await self._try_primary(account_id, lambda: self._primary.admit(account_id, plan, cost))
        if decision is None:
            return replace(self._fallback.admit_now(account_id, local, cost), degraded=True)
        if decision.allowed:
            self._fallback.record(account_id, local, cost)
        return decision

    async def usage(self, account_id: str, plan: Plan) -> Usage:
        usage = await self._try_primary(account_id, lambda: self._primary.usage(account_id, plan))
        if usage is None:
            return replace(await self._fallback.usage(account_id, self.local_plan(plan)), degraded=True)
        return usage

    async def refund(self, account_id: str, plan: Plan, cost: int, admitted: Decision) -> None:
        # The warm local copy recorded the charge too (at Redis time ± clock skew: the same windows but for a
        # charge in a window's last instant, where the local copy merely stays a little conservative).
        self._fallback.refund_now(account_id, self.local_plan(plan), cost, admitted.charged_at)
        if not admitted.degraded:
            await self._try_primary(account_id, lambda: self._primary.refund(account_id, plan, cost, admitted))

    def local_plan(self, plan: Plan) -> Plan:
        """``plan`` as the per-replica fallback enforces it."""
        local = self._local_plans.get(plan)
        if local is None:
            local = self._local_plans[plan] = scale_plan(plan, self._share, min_limit=self._min_limit)
        return local

    async def _try_primary(self, account_id: str, call: Callable[[], Awaitable[_T]]) -> _T | None:
        """The primary's answer, or None when it failed or is not being tried right now (the account's shard
        is degraded and this call is not its probe)."""
        shard = self._shard(account_id) if self._outages else SINGLE_SHARD  # sharded lazily: rarely needed
        outage = self._outages.get(shard)
        if outage is not None:
            if outage.probing or self._clock.monotonic() < outage.retry_at:
                return None
            outage.probing = True
        try:
            async with asyncio.timeout(self._timeout):  # no extra task per call, unlike wait_for
                result = await call()
        except PRIMARY_ERRORS as exc:
            self._failed(self._shard(account_id), exc)
            return None
        finally:
            if outage is not None:
                outage.probing = False
        if self._outages:
            self._succeeded(self._shard(account_id))
        return result

    def _failed(self, shard: str, exc: BaseException) -> None:
        now = self._clock.monotonic()
        outage = self._outages.get(shard)
        if outage is not None:
            outage.retry_at = now + self._retry_interval
            return
        self._outages[shard] = _Outage(since=now, retry_at=now + self._retry_interval)
        log.warning(
            "quota: shared counter unreachable%s (%s: %s); degraded to the per-replica limiter at %.0f%% of each plan",
            f" on shard {shard}" if shard else "",
            type(exc).__name__,
            exc,
            self._share * 100,
        )
        if len(self._outages) == 1 and self._on_change is not None:
            self._on_change(True)

    def _succeeded(self, shard: str) -> None:
        outage = self._outages.pop(shard, None)
        if outage is None:
            return
        log.info(
            "quota: shared counter reachable again%s after %.1f s; degraded mode over",
            f" on shard {shard}" if shard else "",
            self._clock.monotonic() - outage.since,
        )
        if not self._outages and self._on_change is not None:
            self._on_change(False)
