"""Who may call the MCP endpoints: the credential check, behind a per-address budget of refused credentials.

An address that keeps presenting missing, malformed, unknown or revoked credentials is refused with 429 before
any lookup (``limits.protective.mcp_auth_failures_per_address``), so guessing costs no account anything and the
database little. Only refusals (401) count: an authenticated request never touches this budget.
"""

from __future__ import annotations

from aiohttp import web

from gateway.authn import Principal
from gateway.errors import JSONRPC_SERVER_ERROR, GatewayError, Unauthorized
from gateway.net import client_address
from gateway.proxy.context import PROXY
from gateway.quota.headers import RETRY_AFTER
from gateway.throttle.limits import PROTECTIVE_LIMITS


class TooManyRefusals(GatewayError):
    """Too many refused credentials from this address (429, JSON-RPC body, ``Retry-After``)."""

    status = 429
    error = "rate_limited"
    jsonrpc_code = JSONRPC_SERVER_ERROR

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            f"Too many refused credentials from this address; retry in {retry_after} s",
            headers={RETRY_AFTER: str(retry_after)},
        )


async def authenticate(request: web.Request) -> Principal:
    proxy = request.app[PROXY]
    limits = request.app.get(PROTECTIVE_LIMITS)
    if limits is None:
        return await proxy.authn.authenticate(request)
    address = client_address(request, proxy.trusted_proxies)
    wait = await limits.mcp_auth_wait(address)
    if wait > 0:
        raise TooManyRefusals(max(1, int(wait + 0.999)))
    try:
        return await proxy.authn.authenticate(request)
    except Unauthorized:
        await limits.mcp_auth_failed(address)
        raise
