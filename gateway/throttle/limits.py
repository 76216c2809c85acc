"""Protective limits on the authorization server's open endpoints (security-cases 94, issue 11 item 2).

The rule: a stranger's failures cost the stranger, never the victim. Every budget that refuses is keyed by
the client address (behind trusted proxies: ``gateway.net.client_address``; an IPv6 /64 counts as one), alone
or together with what the request names (client, account), and a valid credential is never refused by a
budget someone else can spend. Either refusing is a 429 with ``Retry-After``. Budgets are counted in Redis when
``redis.url`` is set (every replica shares them) and strictly per replica while it is unreachable
(``FallbackBudgets``); never unlimited.

=============  ==========================================  ===========================================
endpoint       counted                                     budgets (``limits.protective``)
=============  ==========================================  ===========================================
authorize      every ``GET /authorize``                    ``authorize_per_address``
token          every ``POST /token`` per address; refused  ``token_per_address``, ``token_per_client``
               ones per (client, address): past it, that   (per client *and* address)
               address's failures are 429, successes pass
revoke         every ``POST /revoke`` per address; those   ``revoke_per_address``, ``revoke_per_client``
               revoking nothing per (client, address)      (per client *and* address)
register       every ``POST /register``                    ``oauth.registration.max_per_address_per_hour``,
                                                           ``max_per_hour`` (all addresses; past it, each
                                                           address still gets ``..._when_busy``)
cimd           each metadata document actually fetched     ``cimd_fetches_per_address``,
               (spent: the cached copy serves, else 429)   ``cimd_fetches_per_document``
login          sign-in attempts (a success clears them)    ``login_failures_per_account`` (per account
                                                           *and* address), ``login_failures_per_address``;
                                                           ``login_failures_per_account_total`` only slows
signup         every dashboard sign-up attempt             ``signups_per_address`` (per hour)
mcp            refused credentials (401) on the MCP        ``mcp_auth_failures_per_address``
               endpoints: never an account's quota
=============  ==========================================  ===========================================

Failure budgets (token and revoke per client and address, sign-in per account and address and per address)
grow: ``limit`` per window, twice that per 4 windows, four times per 16 windows, so a guesser who waits out one
window meets a longer one (15 min, then up to 1 h, then up to 4 h by default); a success clears sign-in's.

Keys are ``<prefix>:t:<endpoint>:<dimension>[2|3]:<32 hex of SHA-256>`` (dimensions ``a`` address, ``c``
client, ``u`` account, ``ca``/``ua`` client/account and address, ``b`` when busy, ``all``): bounded, no request
input in them.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass
from hashlib import sha256
from typing import Final, NoReturn

from aiohttp import web

from gateway.config import GatewayConfig
from gateway.metrics import Metrics
from gateway.net import address_bucket, client_address
from gateway.oauth.errors import TooManyRequests
from gateway.throttle.budgets import Budget, Budgets

REGISTRATION_WINDOW: Final = 3600.0
GROWTH: Final = 4
"""Failure budgets have tiers of 1, ``GROWTH`` and ``GROWTH``² windows (15 min, 1 h, 4 h by default)."""
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

    async def token(self, request: web.Request) -> None:
        """Every token request counts against its client address (refused up front)."""
        p = self.config.limits.protective
        await self._charge("token", [self._budget("token", "a", self.address(request), p.token_per_address)])

    async def token_failed(self, request: web.Request, client_id: str) -> None:
        """A token request was refused: count it per (client, address). Once that budget is spent, this
        address's failures for this client answer 429 instead of their OAuth error; successes never do, and
        other addresses (the app's real users) are untouched."""
        p = self.config.limits.protective
        await self._charge("token", self._pair_budgets("token", client_id, request, p.token_per_client))

    async def revoke(self, request: web.Request) -> None:
        """Every revocation request counts against its client address (refused up front)."""
        p = self.config.limits.protective
        await self._charge("revoke", [self._budget("revoke", "a", self.address(request), p.revoke_per_address)])

    async def revoke_failed(self, request: web.Request, client_id: str) -> None:
        """A revocation revoked nothing: count it per (client, address); past that budget, 429."""
        p = self.config.limits.protective
        await self._charge("revoke", self._pair_budgets("revoke", client_id, request, p.revoke_per_client))

    async def check(self, address: str) -> None:
        """``registration.RegistrationThrottle``: one registration from ``address``."""
        await self.register(address)

    async def register(self, address: str) -> None:
        """Per address (an IPv6 /64) and, for all addresses together, ``max_per_hour``. While that overall
        budget is spent, registration does not close: each address may still make
        ``max_per_address_per_hour_when_busy`` (a legitimate client registers once), so a few busy addresses
        cannot shut everyone else out."""
        r = self.config.oauth.registration
        own = self._budget("register", "a", address, r.max_per_address_per_hour, REGISTRATION_WINDOW)
        if (wait := await self.budgets.charge([own], cost=0)) > 0:
            self._refuse("register", wait)
        everyone = self._budget("register", "all", "", r.max_per_hour, REGISTRATION_WINDOW)
        if await self.budgets.charge([own, everyone]) == 0:
            return
        busy = self._budget("register", "b", address, r.max_per_address_per_hour_when_busy, REGISTRATION_WINDOW)
        await self._charge("register", [own, busy])

    async def cimd_fetch(self, request: web.Request, client_id: str, *, have_copy: bool = False) -> bool:
        """Before a metadata document is fetched (not for fresh cached ones): the gateway's one outbound
        request that strangers choose. True: fetch. When a budget is spent, False if ``have_copy`` (the
        caller serves the cached copy, even stale: the app's sign-in keeps working), else 429."""
        p = self.config.limits.protective
        budgets = [
            self._budget("cimd", "a", self.address(request), p.cimd_fetches_per_address),
            self._budget("cimd", "c", client_id, p.cimd_fetches_per_document),
        ]
        wait = await self.budgets.charge(budgets)
        if wait == 0:
            return True
        if have_copy:
            self.metrics.throttled.labels(endpoint="cimd").inc()
            return False
        self._refuse("cimd", wait)

    async def login_attempt(self, account: str, address: str) -> float:
        """Charge one sign-in attempt, before the password is checked (so parallel guesses cannot all pass
        one check): 0 when allowed, else the seconds to wait (nothing charged, counted as throttled).

        Failures lock an account only for the address they come from (``login_failures_per_account`` per
        account and address, ``login_failures_per_address`` per address): a stranger's guesses never refuse
        the real user's right password from their own address. Past ``login_failures_per_account_total``
        failures from all addresses together, every address gets one attempt per window for that account:
        distributed guessing slows down, the account is never locked."""
        p = self.config.limits.protective
        total = self._budget("login", "u", account, p.login_failures_per_account_total)
        crowded = await self.budgets.charge([total], cost=0) > 0
        pair = self._login_pair(account, address, 1 if crowded else p.login_failures_per_account)
        wait = await self.budgets.charge([*pair, *self._login_address(address)])
        if wait > 0:
            self.metrics.throttled.labels(endpoint="login").inc()
            return wait
        if not crowded:
            await self.budgets.charge([total])
        return 0.0

    async def login_succeeded(self, account: str, address: str) -> None:
        """Only failures count: clear the account's failures from this address and give the units back, the
        account-wide one only when it was charged (``login_attempt`` charges none while the account is crowded, so
        a right password then must not hand the guessers a unit back). The calls go out together."""
        p = self.config.limits.protective
        total = self._budget("login", "u", account, p.login_failures_per_account_total)
        crowded = await self.budgets.charge([total], cost=0) > 0
        calls = [self.budgets.clear(b.key) for b in self._login_pair(account, address, p.login_failures_per_account)]
        calls += [self.budgets.refund(budget.key) for budget in self._login_address(address)]
        if not crowded:
            calls.append(self.budgets.refund(total.key))
        await asyncio.gather(*calls)

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

    def _login_pair(self, account: str, address: str, limit: int) -> list[Budget]:
        return self._growing("login", "ua", f"{account}\n{address_bucket(address)}", limit)

    def _login_address(self, address: str) -> list[Budget]:
        p = self.config.limits.protective
        return self._growing("login", "a", address_bucket(address), p.login_failures_per_address)

    def _pair_budgets(self, endpoint: str, client_id: str, request: web.Request, limit: int) -> list[Budget]:
        return self._growing(endpoint, "ca", f"{client_id}\n{address_bucket(self.address(request))}", limit)

    def _growing(self, endpoint: str, dimension: str, value: str, limit: int) -> list[Budget]:
        """A failure budget whose wait grows as failures go on: ``limit`` per window, twice that per
        ``GROWTH`` windows, four times per ``GROWTH``² windows (checked and charged together), so a guesser
        who waits out one window meets a longer one. Keys differ by tier (``a``, ``a2``, ``a3``)."""
        window = self.config.limits.protective.window
        return [
            Budget(budget_key(self.prefix, endpoint, dimension + suffix, value), limit * factor, window * span)
            for suffix, factor, span in (("", 1, 1), ("2", 2, GROWTH), ("3", 4, GROWTH * GROWTH))
        ]

    def _budget(self, endpoint: str, dimension: str, value: str, limit: int, window: float | None = None) -> Budget:
        if dimension in ("a", "b"):
            value = address_bucket(value)
        return Budget(
            budget_key(self.prefix, endpoint, dimension, value),
            limit,
            self.config.limits.protective.window if window is None else window,
        )

    async def _charge(self, endpoint: str, budgets: Sequence[Budget]) -> None:
        wait = await self.budgets.charge(budgets)
        if wait > 0:
            self._refuse(endpoint, wait)

    def _refuse(self, endpoint: str, wait: float) -> NoReturn:
        self.metrics.throttled.labels(endpoint=endpoint).inc()
        raise Throttled("Too many requests; try again later", retry_after=math.ceil(wait))


PROTECTIVE_LIMITS = web.AppKey("protective_limits", ProtectiveLimits)
