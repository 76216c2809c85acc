"""Protective limits on the authorization server's open endpoints (security-cases 94).

Each endpoint has a budget per client address (behind trusted proxies: ``gateway.net.client_address``) and,
where the request names one, per client or per account; either refusing is a 429 with ``Retry-After``.
Budgets are counted in Redis when ``redis.url`` is set (every replica shares them) and strictly per replica
while it is unreachable (``FallbackBudgets``); never unlimited.

=============  ==========================================  ===========================================
endpoint       counted                                     budgets (``limits.protective``)
=============  ==========================================  ===========================================
authorize      every ``GET /authorize``                    ``authorize_per_address``
token          every ``POST /token``                       ``token_per_address``, ``token_per_client``
revoke         every ``POST /revoke``                      ``revoke_per_address``, ``revoke_per_client``
register       every ``POST /register``                    ``oauth.registration.max_per_address_per_hour``,
                                                           ``max_per_hour`` (all addresses)
cimd           each metadata document actually fetched     ``cimd_fetches_per_address``,
                                                           ``cimd_fetches_per_document``
login          failed sign-ins (a success clears its       ``login_failures_per_account``,
               account's count)                            ``login_failures_per_address``
signup         every dashboard sign-up attempt             ``signups_per_address`` (per hour)
mcp            refused credentials (401) on the MCP        ``mcp_auth_failures_per_address``
               endpoints: never an account's quota
=============  ==========================================  ===========================================

Keys are ``<prefix>:t:<endpoint>:<a|c|u|all>:<32 hex of SHA-256>``: bounded, and no request input in them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from hashlib import sha256
from typing import Final

from aiohttp import web

from gateway.config import GatewayConfig
from gateway.metrics import Metrics
from gateway.net import address_bucket, client_address
from gateway.oauth.errors import TooManyRequests
from gateway.throttle.budgets import Budget, Budgets

REGISTRATION_WINDOW: Final = 3600.0
ENDPOINTS: Final = frozenset({"authorize", "token", "revoke", "register", "cimd", "login", "signup", "mcp"})
"""The ``endpoint`` label values of ``gateway_throttled``."""


class Throttled(TooManyRequests):
    """A protective budget is spent: 429 with ``Retry-After``. Rendered by the one error middleware: OAuth
    JSON on ``/token``, ``/revoke`` and ``/register``, an HTML page on ``/authorize`` (``page_errors``)."""


def budget_key(prefix: str, endpoint: str, dimension: str, value: str) -> str:
    """``<prefix>:t:<endpoint>:<dimension>:<digest>{<endpoint>}``: the ``{endpoint}`` hash tag puts every
    budget one request charges together (e.g. per address and per client) in one Redis Cluster slot."""
    digest = sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"{prefix}:t:{endpoint}:{dimension}:{digest}{{{endpoint}}}"


@dataclass(frozen=True)
class ProtectiveLimits:
    budgets: Budgets
    config: GatewayConfig
    metrics: Metrics
    prefix: str

    def address(self, request: web.Request) -> str:
        return client_address(request, self.config.security.trusted_proxies)

    async def authorize(self, request: web.Request) -> None:
        p = self.config.limits.protective
        budget = self._budget("authorize", "a", self.address(request), p.authorize_per_address)
        await self._charge("authorize", [budget])

    async def token(self, request: web.Request, client_id: str) -> None:
        """Every request counts per address. Per client only failures count (``token_failed``): a metadata-
        document client id is shared by every user of that app, so its successful refreshes must not spend a
        budget that strangers could exhaust with bogus requests, and its legitimate traffic can't lock it out."""
        p = self.config.limits.protective
        client = self._budget("token", "c", client_id, p.token_per_client)
        wait = await self.budgets.charge([client], cost=0)
        if wait > 0:
            self.metrics.throttled.labels(endpoint="token").inc()
            raise Throttled("Too many requests; try again later", retry_after=math.ceil(wait))
        await self._charge("token", [self._budget("token", "a", self.address(request), p.token_per_address)])

    async def token_failed(self, client_id: str) -> None:
        p = self.config.limits.protective
        await self.budgets.charge([self._budget("token", "c", client_id, p.token_per_client)])

    async def revoke(self, request: web.Request, client_id: str) -> None:
        p = self.config.limits.protective
        await self._charge(
            "revoke",
            [
                self._budget("revoke", "a", self.address(request), p.revoke_per_address),
                self._budget("revoke", "c", client_id, p.revoke_per_client),
            ],
        )

    async def check(self, address: str) -> None:
        """``registration.RegistrationThrottle``: one registration from ``address``."""
        await self.register(address)

    async def register(self, address: str) -> None:
        r = self.config.oauth.registration
        await self._charge(
            "register",
            [
                self._budget("register", "a", address, r.max_per_address_per_hour, REGISTRATION_WINDOW),
                self._budget("register", "all", "", r.max_per_hour, REGISTRATION_WINDOW),
            ],
        )

    async def cimd_fetch(self, request: web.Request, client_id: str) -> None:
        """Before a metadata document is fetched (not for cached ones): the gateway's one outbound request
        that strangers choose."""
        p = self.config.limits.protective
        await self._charge(
            "cimd",
            [
                self._budget("cimd", "a", self.address(request), p.cimd_fetches_per_address),
                self._budget("cimd", "c", client_id, p.cimd_fetches_per_document),
            ],
        )

    async def login_attempt(self, account: str, address: str) -> float:
        """Charge one sign-in attempt, before the password is checked (so parallel guesses cannot all pass
        one check): 0 when allowed, else the seconds to wait (nothing charged, counted as throttled)."""
        wait = await self.budgets.charge(self._login_budgets(account, address))
        if wait > 0:
            self.metrics.throttled.labels(endpoint="login").inc()
        return wait

    async def login_succeeded(self, account: str, address: str) -> None:
        """Only failures count: clear the account's, give the address its unit back."""
        account_budget, address_budget = self._login_budgets(account, address)
        await self.budgets.clear(account_budget.key)
        await self.budgets.refund(address_budget.key)

    async def signup(self, address: str) -> float:
        """Count a sign-up attempt from ``address``: 0 when allowed, else the seconds to wait (nothing counted)."""
        budget = self._budget(
            "signup", "a", address, self.config.limits.protective.signups_per_address, REGISTRATION_WINDOW
        )
        wait = await self.budgets.charge([budget])
        if wait > 0:
            self.metrics.throttled.labels(endpoint="signup").inc()
        return wait

    async def mcp_auth_failed(self, address: str) -> float:
        """Count a refused MCP credential from ``address``: 0 while within budget, else the seconds until the
        budget's window ends (the caller then refuses the address outright)."""
        wait = await self.budgets.charge([self._mcp_auth_budget(address)])
        if wait > 0:
            self.metrics.throttled.labels(endpoint="mcp").inc()
        return wait

    def _mcp_auth_budget(self, address: str) -> Budget:
        return self._budget("mcp", "a", address, self.config.limits.protective.mcp_auth_failures_per_address)

    def _login_budgets(self, account: str, address: str) -> list[Budget]:
        p = self.config.limits.protective
        return [
            self._budget("login", "u", account, p.login_failures_per_account),
            self._budget("login", "a", address, p.login_failures_per_address),
        ]

    def _budget(self, endpoint: str, dimension: str, value: str, limit: int, window: float | None = None) -> Budget:
        if dimension == "a":
            value = address_bucket(value)
        return Budget(
            budget_key(self.prefix, endpoint, dimension, value),
            limit,
            self.config.limits.protective.window if window is None else window,
        )

    async def _charge(self, endpoint: str, budgets: Sequence[Budget]) -> None:
        wait = await self.budgets.charge(budgets)
        if wait > 0:
            self.metrics.throttled.labels(endpoint=endpoint).inc()
            raise Throttled("Too many requests; try again later", retry_after=math.ceil(wait))


PROTECTIVE_LIMITS = web.AppKey("protective_limits", ProtectiveLimits)
