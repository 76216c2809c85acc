"""A per-process sliding-window counter (the dashboard's sign-up budget).

Sign-in failures are throttled by ``gateway.throttle`` (shared through Redis), behind the
``gateway.oauth.limits.EndpointLimits`` seam.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field

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
