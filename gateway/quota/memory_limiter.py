"""In-process quota limiter: the embedded default (one replica, no Redis) and the degraded fallback.

Exact under asyncio concurrency because a check and its charge run without an ``await`` between them.
Counters of windows that have ended are dropped by a sweep, at most once per ``sweep_interval``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gateway.clock import Clock
from gateway.quota.limiter import Decision, Usage, WindowState, check_cost, retry_after
from gateway.quota.plans import Plan
from gateway.quota.windows import WindowKind, seconds_until_end, window_bounds

DEFAULT_SWEEP_INTERVAL = 60.0


@dataclass(slots=True)
class _Counter:
    start: int
    end: int
    used: int = 0


@dataclass(slots=True)
class _Window:
    kind: WindowKind
    limit: int
    counter: _Counter

    def state(self, now: float) -> WindowState:
        used = self.counter.used
        return WindowState(
            window=self.kind,
            limit=self.limit,
            remaining=max(0, self.limit - used),
            reset_seconds=seconds_until_end(self.counter.end, now),
            used=used,
        )


class MemoryLimiter:
    def __init__(self, clock: Clock, *, sweep_interval: float = DEFAULT_SWEEP_INTERVAL) -> None:
        self._clock = clock
        self._sweep_interval = sweep_interval
        self._next_sweep = clock.now() + sweep_interval
        self._counters: dict[tuple[str, WindowKind], _Counter] = {}
        self._bounds_cache: dict[WindowKind, tuple[int, int]] = {}

    async def admit(self, account_id: str, plan: Plan, cost: int) -> Decision:
        return self.admit_now(account_id, plan, cost)

    async def usage(self, account_id: str, plan: Plan) -> Usage:
        now = self._clock.now()
        windows = self._windows(account_id, plan, now)
        return Usage(account_id=account_id, plan=plan.name, windows=[w.state(now) for w in windows])

    def admit_now(self, account_id: str, plan: Plan, cost: int) -> Decision:
        """``admit`` without the coroutine: check and charge in one synchronous step."""
        check_cost(cost)
        now = self._clock.now()
        self._sweep(now)
        windows = self._windows(account_id, plan, now)
        if any(w.counter.used + cost > w.limit for w in windows):
            states = [w.state(now) for w in windows]
            return Decision(
                allowed=False, retry_after=retry_after(states, cost), limits=states, charged_at=math.floor(now)
            )
        if cost:
            self._charge(account_id, windows, cost)
        return Decision(allowed=True, retry_after=0, limits=[w.state(now) for w in windows], charged_at=math.floor(now))

    async def refund(self, account_id: str, plan: Plan, cost: int, admitted: Decision) -> None:
        self.refund_now(account_id, plan, cost, admitted.charged_at)

    def refund_now(self, account_id: str, plan: Plan, cost: int, charged_at: int) -> None:
        check_cost(cost)
        for kind, _ in plan.limits():
            counter = self._counters.get((account_id, kind))
            if counter is not None and counter.start == window_bounds(kind, charged_at)[0]:
                counter.used = max(0, counter.used - cost)

    def record(self, account_id: str, plan: Plan, cost: int) -> None:
        """Charge ``cost`` to every capped window of ``plan`` without checking (usage admitted elsewhere)."""
        check_cost(cost)
        if not cost:
            return
        now = self._clock.now()
        for kind, _ in plan.limits():
            start, end = self._bounds(kind, now)
            counter = self._counters.get((account_id, kind))
            if counter is None or counter.start != start:
                counter = self._counters[(account_id, kind)] = _Counter(start, end)
            counter.used += cost

    def __len__(self) -> int:
        """Live counters (for tests and metrics)."""
        return len(self._counters)

    def _windows(self, account_id: str, plan: Plan, now: float) -> list[_Window]:
        """The plan's current windows with their counters (fresh, unstored ones where nothing was charged)."""
        windows: list[_Window] = []
        for kind, limit in plan.limits():
            start, end = self._bounds(kind, now)
            counter = self._counters.get((account_id, kind))
            if counter is None or counter.start != start:
                counter = _Counter(start, end)
            windows.append(_Window(kind, limit, counter))
        return windows

    def _charge(self, account_id: str, windows: list[_Window], cost: int) -> None:
        for window in windows:
            window.counter.used += cost
            self._counters[(account_id, window.kind)] = window.counter

    def _bounds(self, kind: WindowKind, now: float) -> tuple[int, int]:
        cached = self._bounds_cache.get(kind)
        if cached is None or not cached[0] <= now < cached[1]:
            cached = self._bounds_cache[kind] = window_bounds(kind, now)
        return cached

    def _sweep(self, now: float) -> None:
        if now < self._next_sweep:
            return
        self._next_sweep = now + self._sweep_interval
        for key in [key for key, counter in self._counters.items() if counter.end <= now]:
            del self._counters[key]
