"""A per-process budget for dynamic client registration (RFC 7591 §5: an open write endpoint).

Each client address may register ``per_address`` times an hour and the whole process ``total`` times an hour;
past either, ``429`` with ``Retry-After``. Budgets refill as their oldest registration leaves the window.
"""

from __future__ import annotations

import math

from gateway.clock import Clock
from gateway.oauth.errors import TooManyRequests
from gateway.oauth.login_throttle import SlidingLimit

WINDOW = 3600.0
EVERYONE = "*"


class LocalRegistrationThrottle:
    def __init__(self, clock: Clock, *, per_address: int, total: int) -> None:
        self._clock = clock
        self._per_address = SlidingLimit(limit=per_address, window=WINDOW)
        self._total = SlidingLimit(limit=total, window=WINDOW)

    async def check(self, ip: str) -> None:
        now = self._clock.monotonic()
        wait = max(self._per_address.retry_after(ip, now), self._total.retry_after(EVERYONE, now))
        if wait > 0:
            raise TooManyRequests("Too many registrations; try again later", retry_after=math.ceil(wait))
        self._per_address.add(ip, now)
        self._total.add(EVERYONE, now)
