"""Quota answer fields: ``RateLimit-Policy`` and ``RateLimit`` (draft-ietf-httpapi-ratelimit-headers-11;
the List-of-Items syntax is unchanged since -08), and ``Retry-After`` (RFC 9110 §10.2.3) on a 429.

Both fields are Structured Field Lists (RFC 9651) of Items named by window (``"minute"``, ``"day"``,
``"month"``), one Item per capped window of the plan, shortest first::

    RateLimit-Policy: "minute";q=60;w=60, "day";q=1000;w=86400
    RateLimit: "minute";r=12;t=30, "day";r=940;t=41233

``q`` is the quota and ``w`` the window in seconds (§3.1; a calendar month is advertised as 30 days);
``r`` is the available quota and ``t`` the seconds until this window resets (§4.1), so ``t`` is exact even
for a month. The quota unit is the default, ``requests`` (§3.1.2), so ``qu`` is omitted; no partition key
(``pk``) is sent, the partition being the caller's own account. An unlimited plan gets neither field.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from gateway.quota.limiter import Decision, WindowState
from gateway.quota.windows import NOMINAL_SECONDS

RATELIMIT_POLICY: Final = "RateLimit-Policy"
RATELIMIT: Final = "RateLimit"
RETRY_AFTER: Final = "Retry-After"


_POLICIES: dict[tuple[tuple[str, int], ...], str] = {}
"""``policy_field`` by windows and limits: a handful of plans, each written once."""


def policy_field(states: Sequence[WindowState]) -> str:
    """The ``RateLimit-Policy`` value (§3): ``"minute";q=60;w=60, "day";q=1000;w=86400``."""
    key = tuple((s.window, s.limit) for s in states)
    value = _POLICIES.get(key)
    if value is None:
        value = ", ".join(f'"{window}";q={limit};w={NOMINAL_SECONDS[window]}' for window, limit in key)
        if len(_POLICIES) < 256:
            _POLICIES[key] = value
    return value


def ratelimit_field(states: Sequence[WindowState]) -> str:
    """The ``RateLimit`` value (§4): ``"minute";r=12;t=30, "day";r=940;t=41233``."""
    return ", ".join(f'"{s.window}";r={max(0, s.remaining)};t={max(1, s.reset_seconds)}' for s in states)


def quota_headers(decision: Decision) -> dict[str, str]:
    """The fields for a response to an admitted (any status) or refused (429) request."""
    headers: dict[str, str] = {}
    if decision.limits:
        headers[RATELIMIT_POLICY] = policy_field(decision.limits)
        headers[RATELIMIT] = ratelimit_field(decision.limits)
    if not decision.allowed:
        # Draft §6: Retry-After not earlier than the end of the windows that refused the request.
        headers[RETRY_AFTER] = str(max(1, decision.retry_after))
    return headers
