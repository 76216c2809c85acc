"""The seam between the OAuth endpoints and the protective limits (``gateway.throttle`` implements it).

Each check returns when the request may proceed and raises ``TooManyRequests`` (429, ``Retry-After``)
otherwise. Registration uses its own seam, ``registration.REGISTRATION_THROTTLE``.
"""

from __future__ import annotations

from typing import Protocol

from aiohttp import web


class EndpointLimits(Protocol):
    async def authorize(self, request: web.Request) -> None:
        """Count one authorization request from the request's client address."""
        ...

    async def token(self, request: web.Request, client_id: str) -> None:
        """Count one token request, per client address and per client."""
        ...

    async def revoke(self, request: web.Request, client_id: str) -> None:
        """Count one revocation request, per client address and per client."""
        ...

    async def cimd_fetch(self, request: web.Request, client_id: str) -> None:
        """Count one metadata document fetch (a cache miss), per client address and per document."""
        ...

    async def login_wait(self, account: str, address: str) -> float:
        """Seconds until the next sign-in attempt for ``account`` from ``address`` is allowed (0: now)."""
        ...

    async def login_failed(self, account: str, address: str) -> None: ...

    async def login_succeeded(self, account: str) -> None:
        """Forget the account's failures (its address's stay)."""
        ...


ENDPOINT_LIMITS = web.AppKey("oauth_endpoint_limits", EndpointLimits)
