"""The quota limiter contract: admit a cost against every window of a plan, atomically, or charge nothing.

Implementations: ``RedisLimiter`` (one counter per account shared by every replica), ``MemoryLimiter``
(in process: the embedded default, and the degraded fallback), ``DegradingLimiter`` (Redis, falling back
to a per-replica share of the plan while Redis is unreachable).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from hashlib import sha256
from typing import Final, Protocol

from gateway.quota.plans import Plan
from gateway.quota.windows import WindowKind

_SAFE_ID: Final = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(slots=True)  # not frozen: built on every admitted request, and a frozen __init__ costs 5x; never mutated
class WindowState:
    """One window of a plan as seen by one request (after the charge, when it was admitted)."""

    window: WindowKind
    limit: int
    remaining: int
    reset_seconds: int
    """Seconds until this window ends and its counter starts again from zero (at least 1)."""
    used: int = 0


@dataclass(slots=True)  # not frozen, for the same reason as ``WindowState``; never mutated once made
class Decision:
    allowed: bool
    retry_after: int
    """Seconds until every window that refused the request has reset (0 when allowed)."""
    limits: list[WindowState] = field(default_factory=list)
    degraded: bool = False
    """Answered by the per-replica fallback because the shared counter was unreachable."""
    charged_at: int = 0
    """The second (epoch, on the deciding counter's clock) the windows were judged at: ``refund`` finds the
    windows that were charged from it."""


@dataclass(frozen=True, slots=True)
class Usage:
    account_id: str
    plan: str
    windows: list[WindowState] = field(default_factory=list)
    degraded: bool = False


class QuotaLimiter(Protocol):
    async def admit(self, account_id: str, plan: Plan, cost: int) -> Decision:
        """Charge ``cost`` units to every capped window of ``plan`` if all of them have room, else none.

        A rejected request is never charged. ``cost`` 0 charges nothing and is always allowed (it still
        reports the windows). An unlimited plan is always allowed and reports no windows.
        """
        ...

    async def usage(self, account_id: str, plan: Plan) -> Usage:
        """The current windows of ``plan`` for the account, charging nothing."""
        ...

    async def refund(self, account_id: str, plan: Plan, cost: int, admitted: Decision) -> None:
        """Give back ``cost`` units charged by the admission ``admitted`` (a gateway-side 502/504).

        Only windows still the ones that were charged are refunded (a window that has rolled over keeps its
        fresh count), never below zero. Refunding only lowers counters, so no window ever ends up above its
        limit and "every window or none" still holds for the next admission.
        """
        ...


def account_key_part(account_id: str) -> str:
    """A key-safe, bounded form of an account (or client) id.

    Generated ids (``usr_…``) pass through unchanged; anything else (spaces, ``*``, ``{}``, newlines, 2 KB
    URLs) becomes ``h_`` + 32 hex digits of its SHA-256. Ids that already start with ``h_`` are hashed too,
    so a pass-through id can never equal a hashed one.
    """
    if _SAFE_ID.match(account_id) and not account_id.startswith("h_"):
        return account_id
    return "h_" + sha256(account_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def check_cost(cost: int) -> None:
    if isinstance(cost, bool) or not isinstance(cost, int) or cost < 0:
        raise ValueError("cost must be a non-negative integer")


def retry_after(states: list[WindowState], cost: int) -> int:
    """Seconds until every window the cost does not fit in has reset."""
    return max((s.reset_seconds for s in states if s.used + cost > s.limit), default=0)
