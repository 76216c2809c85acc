"""Plans and what a request costs.

A plan caps the units an account may spend per minute, per UTC day and per UTC calendar month (any of them
may be absent: no cap for that window; a plan with none is unlimited). Windows are fixed windows keyed by
their start (see ``windows.py``).

What counts (the default policy): every MCP JSON-RPC *request* that reaches the upstream costs one unit,
``tools/call`` costs the plan's ``tools_call_weight``; notifications (``notifications/*`` without an id) and
responses cost nothing, while any other method costs its price even without an id (a ``tools/call`` sent as a
notification still runs upstream); a JSON-RPC
batch costs the sum of its members. A standalone SSE stream (``GET``) costs ``STREAM_OPEN_COST`` once, when
it opens. Anything that is not recognisably a notification or a response is charged as a request, so a
malformed message never slips through for free.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Final

from gateway.quota.windows import WindowKind

STREAM_OPEN_COST: Final = 1
TOOLS_CALL: Final = "tools/call"
NOTIFICATIONS: Final = "notifications/"


@dataclass(frozen=True, slots=True)
class Plan:
    name: str
    per_minute: int | None = None
    per_day: int | None = None
    per_month: int | None = None
    tools_call_weight: int = 1

    def limits(self) -> Iterator[tuple[WindowKind, int]]:
        """The capped windows, shortest first."""
        windows: tuple[tuple[WindowKind, int | None], ...] = (
            ("minute", self.per_minute),
            ("day", self.per_day),
            ("month", self.per_month),
        )
        for kind, limit in windows:
            if limit is not None:
                yield kind, limit

    @property
    def unlimited(self) -> bool:
        return self.per_minute is None and self.per_day is None and self.per_month is None


FREE: Final = Plan("free", per_minute=60, per_day=1000)
UNLIMITED: Final = Plan("unlimited")


def message_cost(message: object, plan: Plan) -> int:
    """Units a parsed JSON-RPC message (or batch) costs under ``plan``."""
    if isinstance(message, list):
        return sum(_single_cost(item, plan) for item in message)
    return _single_cost(message, plan)


def _single_cost(message: object, plan: Plan) -> int:
    if isinstance(message, dict):
        if "method" not in message:
            # A response (result or error) the client sends back to the server.
            return 0 if "result" in message or "error" in message else 1
        method = message["method"]
        if "id" not in message and isinstance(method, str) and method.startswith(NOTIFICATIONS):
            return 0  # JSON-RPC 2.0 §4.1: without an id, a notification; only MCP's notification methods are free.
        if method == TOOLS_CALL:
            return plan.tools_call_weight
    return 1


def scale_plan(plan: Plan, share: float, *, min_limit: int = 1) -> Plan:
    """``plan`` with every cap scaled to ``share`` (rounded down, at least ``min_limit``, never above the cap).

    Used for the per-replica limiter while the shared counter is unreachable: never unlimited, never zero.
    """
    if not 0 < share <= 1:
        raise ValueError("share must be in (0, 1]")

    def scaled(limit: int | None) -> int | None:
        if limit is None:
            return None
        return min(limit, max(min_limit, math.floor(limit * share)))

    return replace(
        plan, per_minute=scaled(plan.per_minute), per_day=scaled(plan.per_day), per_month=scaled(plan.per_month)
    )
