"""Where the MCP endpoints meet the quota: one charge per admitted message, on the account's one counter.

API keys and OAuth tokens of the same account charge the same counter (the account id is the key),
whatever client or replica they come through. Nothing is charged for unauthenticated or refused requests
(the gate runs after authentication and every other check), nor for a request the quota itself refuses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gateway.authn import Principal
from gateway.quota.config import QuotaConfig
from gateway.quota.errors import QuotaExceeded
from gateway.quota.headers import quota_headers
from gateway.quota.limiter import QuotaLimiter
from gateway.quota.plans import Plan, message_cost


@dataclass(frozen=True)
class QuotaGate:
    limiter: QuotaLimiter
    config: QuotaConfig
    on_admit: Callable[[str], None] | None = None
    """Told the account id of every admitted request (the dashboard's daily usage history)."""

    def plan(self, principal: Principal) -> Plan:
        return self.config.plan_for(principal.plan)

    def cost_of(self, principal: Principal, message: object) -> int:
        return message_cost(message, self.plan(principal))

    async def charge(self, principal: Principal, cost: int) -> dict[str, str]:
        """Admit ``cost`` units for the account or raise ``QuotaExceeded`` (429); returns the RateLimit fields."""
        if cost <= 0:
            return {}
        decision = await self.limiter.admit(principal.user_id, self.plan(principal), cost)
        if not decision.allowed:
            raise QuotaExceeded(decision, cost)
        if self.on_admit is not None:
            self.on_admit(principal.user_id)
        return quota_headers(decision)
