"""Who may call the MCP endpoints: the credential check, behind a per-address budget of refused credentials.

An address whose credentials keep being refused (missing, malformed, unknown, revoked) is answered 429 once its
budget (``limits.protective.mcp_auth_failures_per_address``, shared through Redis) is spent, and from then on,
until the window ends, before any lookup on this replica, valid credential or not: guessing costs no account
anything and the database little. Only refusals (401) are counted, so an authenticated request costs nothing
here: no Redis round trip, one dictionary lookup.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Final

from aiohttp import web

from gateway.appkeys import CLOCK
from gateway.credentials import Principal
from gateway.errors import JSONRPC_SERVER_ERROR, GatewayError, Unauthorized
from gateway.net import address_bucket, client_address
from gateway.proxy.context import PROXY
from gateway.quota.headers import RETRY_AFTER
from gateway.throttle.limits import PROTECTIVE_LIMITS

MAX_BLOCKED: Final = 10_000
"""Addresses remembered as blocked on one replica (the oldest are forgotten first; the budget still holds)."""


class TooManyRefusals(GatewayError):
    """Too many refused credentials from this address (429, JSON-RPC body, ``Retry-After``)."""

    status = 429
    error = "rate_limited"
    jsonrpc_code = JSONRPC_SERVER_ERROR

    def __init__(self, retry_after: float) -> None:
        seconds = max(1, math.ceil(retry_after))
        super().__init__(
            f"Too many refused credentials from this address; retry in {seconds} s",
            headers={RETRY_AFTER: str(seconds)},
        )


@dataclass
class BlockedAddresses:
    """Addresses whose budget is spent, until when (monotonic seconds), on this replica."""

    _until: OrderedDict[str, float] = field(default_factory=OrderedDict)

    def __bool__(self) -> bool:
        return bool(self._until)

    def wait(self, address: str, now: float) -> float:
        until = self._until.get(address)
        if until is None:
            return 0.0
        if until <= now:
            del self._until[address]
            return 0.0
        return until - now

    def block(self, address: str, until: float) -> None:
        self._until[address] = until
        self._until.move_to_end(address)
        while len(self._until) > MAX_BLOCKED:
            self._until.popitem(last=False)


BLOCKED = web.AppKey("mcp_blocked_addresses", BlockedAddresses)


async def authenticate(request: web.Request) -> Principal:
    proxy = request.app[PROXY]
    limits = request.app.get(PROTECTIVE_LIMITS)
    if limits is None:
        return await proxy.authn.authenticate(request)
    blocked, now = request.app[BLOCKED], request.app[CLOCK].monotonic()
    if blocked:  # the address is derived only when some address is blocked, or on a refusal
        wait = blocked.wait(address_bucket(client_address(request, proxy.trusted_proxies)), now)
        if wait > 0:
            limits.metrics.throttled.labels(endpoint="mcp").inc()
            raise TooManyRefusals(wait)
    try:
        return await proxy.authn.authenticate(request)
    except Unauthorized:
        address = address_bucket(client_address(request, proxy.trusted_proxies))
        wait = await limits.mcp_auth_failed(address)
        if wait > 0:
            blocked.block(address, now + wait)
            raise TooManyRefusals(wait) from None
        raise
