"""Where the MCP endpoints meet the quota: one charge per admitted message, on the account's one counter.

API keys and OAuth tokens of the same account charge the same counter (the account id is the key),
whatever client or replica they come through. Nothing is charged for unauthenticated or refused requests
(the gate runs after authentication and every other check), nor for a request the quota itself refuses.

What is refunded: only a request that provably never reached the upstream (no connection: refused or
timed out, or no request headers written; ``NEVER_REACHED``) gets its units back. A request the upstream
received stays charged whatever followed (an answer, an error, a 504 for a late answer, a broken
connection): the tool may have run. A standalone stream (``stream=True``) also holds a lease
(``streams.py``) from admission until it ends; it is charged once, at open, and never cut by the quota afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Final, TypeVar

from gateway.background import background
from gateway.credentials import Principal
from gateway.metrics import Metrics
from gateway.proxy.upstream import NEVER_REACHED
from gateway.quota.config import QuotaConfig
from gateway.quota.errors import QuotaExceeded, TooManyStreams
from gateway.quota.headers import quota_headers
from gateway.quota.limiter import Decision, QuotaLimiter
from gateway.quota.plans import Plan, message_cost
from gateway.quota.streams import Lease, StreamSlots

STREAM_RETRY_AFTER: Final = 10
"""Seconds a client refused by the stream cap is told to wait (a stream ending frees a slot at once)."""

_T = TypeVar("_T")


@dataclass
class Admission:
    """What one admitted request holds: its RateLimit fields, its charge (refundable), its stream lease."""

    headers: dict[str, str]
    gate: QuotaGate
    principal: Principal
    cost: int = 0
    decision: Decision | None = None
    lease: Lease | None = None

    def around(self, opening: contextlib.AbstractAsyncContextManager[_T]) -> contextlib.AbstractAsyncContextManager[_T]:
        """Enter ``opening`` (the upstream request): refund the charge when the request never reached it;
        hold (and refresh) the stream lease until the block ends."""
        if self.lease is None:
            return _Refunding(self, opening)
        return self._holding_lease(opening)

    @contextlib.asynccontextmanager
    async def _holding_lease(self, opening: contextlib.AbstractAsyncContextManager[_T]) -> AsyncIterator[_T]:
        async with contextlib.AsyncExitStack() as stack:
            if self.lease is not None:
                stack.push_async_callback(self.gate.slots.release, self.lease)
                await stack.enter_async_context(background(self._keep_alive(self.lease), name="stream-lease"))
            try:
                value = await stack.enter_async_context(opening)
            except NEVER_REACHED:
                await self.gate.refund(self)
                raise
            yield value

    async def _keep_alive(self, lease: Lease) -> None:
        interval = self.gate.slots.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            await self.gate.slots.refresh(lease)


class _Refunding(contextlib.AbstractAsyncContextManager[_T]):
    """``Admission.around`` without a stream lease (every request but a standalone stream): a plain context
    manager, not an async generator, since every proxied request enters one."""

    __slots__ = ("_admission", "_opening")

    def __init__(self, admission: Admission, opening: contextlib.AbstractAsyncContextManager[_T]) -> None:
        self._admission = admission
        self._opening = opening

    async def __aenter__(self) -> _T:
        try:
            return await self._opening.__aenter__()
        except NEVER_REACHED:
            await self._admission.gate.refund(self._admission)
            raise

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        return await self._opening.__aexit__(kind, exc, tb)


@dataclass(frozen=True)
class QuotaGate:
    limiter: QuotaLimiter
    config: QuotaConfig
    slots: StreamSlots
    metrics: Metrics
    on_admit: Callable[[str], None] | None = None
    """Told the account id of every admitted request (the dashboard's daily usage history)."""

    def plan(self, principal: Principal) -> Plan:
        return self.config.plan_for(principal.plan)

    def cost_of(self, principal: Principal, message: object) -> int:
        return message_cost(message, self.plan(principal))

    async def admit(self, principal: Principal, cost: int, *, stream: bool = False) -> Admission:
        """Admit ``cost`` units (and, for a standalone stream, a stream lease) or raise ``QuotaExceeded`` /
        ``TooManyStreams`` (429) having charged nothing."""
        lease: Lease | None = None
        cap = self.config.max_concurrent_streams
        if stream and cap is not None:
            lease = await self.slots.acquire(principal.user_id, cap)
            if lease is None:
                self.metrics.quota_rejected.inc()
                raise TooManyStreams(cap, STREAM_RETRY_AFTER)
        admission = Admission(headers={}, gate=self, principal=principal, cost=cost, lease=lease)
        if cost <= 0:
            return admission
        try:
            decision = await self.limiter.admit(principal.user_id, self.plan(principal), cost)
        except BaseException:
            if lease is not None:
                await self.slots.release(lease)
            raise
        if not decision.allowed:
            if lease is not None:
                await self.slots.release(lease)
            self.metrics.quota_rejected.inc()
            raise QuotaExceeded(decision, cost)
        self.metrics.quota_admitted.inc()
        if decision.degraded:
            self.metrics.quota_degraded_admissions.inc()
        admission.decision = decision
        admission.headers = quota_headers(decision)
        if self.on_admit is not None:
            self.on_admit(principal.user_id)
        return admission

    async def refund(self, admission: Admission) -> None:
        if admission.decision is None or admission.cost <= 0:
            return
        decision, admission.decision = admission.decision, None  # once
        await self.limiter.refund(admission.principal.user_id, self.plan(admission.principal), admission.cost, decision)
