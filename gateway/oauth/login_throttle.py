"""Throttling password guesses, per account and per client address (OWASP Authentication CS).

Failures are remembered in a sliding window; past the limit the login answers 429 with ``Retry-After``
until the oldest failure leaves the window. Locks expire by themselves, so an attacker cannot lock an
account out for good. This limiter is per process; several replicas each apply it.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field

from gateway.clock import Clock

MAX_TRACKED = 100_000


@dataclass
class SlidingLimit:
    limit: int
    window: float
    _events: OrderedDict[str, deque[float]] = field(default_factory=OrderedDict)

    def retry_after(self, key: str, now: float) -> float:
        """Seconds until another attempt is allowed (0 when allowed now)."""
        events = self._events.get(key)
        if events is None:
            return 0.0
        while events and events[0] <= now - self.window:
            events.popleft()
        if len(events) < self.limit:
            return 0.0
        return events[0] + self.window - now

    def add(self, key: str, now: float) -> None:
        events = self._events.setdefault(key, deque())
        events.append(now)
        self._events.move_to_end(key)
        while len(self._events) > MAX_TRACKED:
            self._events.popitem(last=False)

    def clear(self, key: str) -> None:
        self._events.pop(key, None)


@dataclass
class LoginThrottle:
    clock: Clock
    per_account: SlidingLimit = field(default_factory=lambda: SlidingLimit(limit=5, window=900.0))
    per_address: SlidingLimit = field(default_factory=lambda: SlidingLimit(limit=30, window=900.0))

    def retry_after(self, account: str, address: str) -> float:
        now = self.clock.monotonic()
        return max(self.per_account.retry_after(account, now), self.per_address.retry_after(address, now))

    def failed(self, account: str, address: str) -> None:
        now = self.clock.monotonic()
        self.per_account.add(account, now)
        self.per_address.add(address, now)

    def succeeded(self, account: str) -> None:
        self.per_account.clear(account)
