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

    async def token(self, request: web.Request) -> None:
        """Count one token request from the request's client address."""
        ...

    async def token_failed(self, request: web.Request, client_id: str) -> None:
        """A token request of ``client_id`` was refused (an OAuth error): count it per (client, address);
        raises ``TooManyRequests`` instead once that budget is spent. Never called for a success."""
        ...

    async def revoke(self, request: web.Request) -> None:
        """Count one revocation request from the request's client address."""
        ...

    async def revoke_failed(self, request: web.Request, client_id: str) -> None:
        """A revocation revoked nothing: count it per (client, address); raises once that budget is spent."""
        ...

    async def cimd_fetch(self, request: web.Request, client_id: str, *, have_copy: bool = False) -> bool:
        """Count one metadata document fetch (a cache miss or refresh), per client address and per document.
        True: fetch. A spent budget answers False when ``have_copy`` (serve the cached copy), else raises."""
        ...

    async def login_attempt(self, account: str, address: str) -> float:
        """Charge one sign-in attempt for ``account`` from ``address`` before the password is checked:
        0 when allowed, else the seconds until the next attempt is (nothing charged)."""
        ...

    async def login_succeeded(self, account: str, address: str) -> None:
        """The attempt succeeded: forget the account's failures and give back the address's unit."""
        ...


ENDPOINT_LIMITS = web.AppKey("oauth_endpoint_limits", EndpointLimits)
