"""The quota refusal, rendered by ``gateway.errors.error_middleware`` like every other error."""

from __future__ import annotations

from gateway.errors import JSONRPC_SERVER_ERROR, GatewayError
from gateway.quota.headers import RETRY_AFTER, quota_headers
from gateway.quota.limiter import Decision

_PER = {"minute": "per minute", "day": "per day", "month": "per month"}


class QuotaExceeded(GatewayError):
    """The account's plan has no room for this request (429; RFC 6585 §4).

    A JSON-RPC error body an MCP client can show, ``Retry-After``, and the ``RateLimit-Policy`` /
    ``RateLimit`` fields. Nothing was charged for it.
    """

    status = 429
    error = "rate_limited"
    jsonrpc_code = JSONRPC_SERVER_ERROR

    def __init__(self, decision: Decision, cost: int = 1) -> None:
        refused = [s for s in decision.limits if s.used + cost > s.limit] or decision.limits
        caps = ", ".join(f"{s.limit} {_PER[s.window]}" for s in refused)
        retry = max(1, decision.retry_after)
        super().__init__(
            f"Quota exceeded for this account ({caps}); retry in {retry} s", headers=quota_headers(decision)
        )
        self.decision = decision


class TooManyStreams(GatewayError):
    """The account already has ``quota.max_concurrent_streams`` open event streams (429, JSON-RPC body).

    Nothing was charged; a stream closing makes room, so the client is told to retry shortly.
    """

    status = 429
    error = "rate_limited"
    jsonrpc_code = JSONRPC_SERVER_ERROR

    def __init__(self, cap: int, retry_after: int) -> None:
        super().__init__(
            f"Too many open streams for this account (at most {cap}); retry in {retry_after} s",
            headers={RETRY_AFTER: str(retry_after)},
        )
