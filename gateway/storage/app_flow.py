"""Storage contract of the app flow (``/v1/auth/...``): the callback URLs an API key allows, the provider sign-ins
in progress, and the per-(API key, user) watermark that revokes identity tokens.

The app flow's codes, refresh-token families and refresh tokens are the OAuth server's own rows (``GrantStore``):
a family whose ``resource`` is ``IDENTITY_RESOURCE`` and whose ``client_id`` is the API key's id. So rotation,
reuse detection, the replay window and family revocation are the same code, and every revocation of such a family
(reuse, the app's ``/v1/auth/revoke``, the user revoking the app, the user disabled) raises the watermark.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

IDENTITY_RESOURCE = "urn:mcp-gateway:identity-tokens"
"""The ``resource`` of the app flow's codes and families: what tells them from OAuth grants of ``/mcp``."""
IDENTITY_SCOPE = "identity"


@dataclass(frozen=True, slots=True)
class KeyApp:
    """What an API key may do in the app flow."""

    api_key_id: str
    redirect_uris: tuple[str, ...]
    """Allowed callback URLs: exact match, except a loopback URL matches on any port."""
    tokens_in_url: bool = False
    """Deliver the tokens themselves in the callback URL instead of a one-time code. RISKY: URLs leak through
    browser history, server logs and ``Referer``; only for apps that cannot do the code exchange."""


@dataclass(frozen=True, slots=True)
class AppSignIn:
    """A provider sign-in started by ``initiate``, waiting for the provider's callback."""

    state_hash: str
    """SHA-256 of the ``state`` sent to the provider (the state itself is only in the browser's URL)."""
    provider: str
    api_key_id: str
    redirect_uri: str
    """The app's callback URL (already checked against the key)."""
    app_state: str | None
    code_verifier: str | None
    nonce: str | None
    created_at: float
    expires_at: float
    used_at: float | None = None


class AppFlowStore(Protocol):
    async def set_key_app(self, app: KeyApp) -> None:
        """Insert or replace the key's app settings."""
        ...

    async def get_key_app(self, api_key_id: str) -> KeyApp | None: ...

    async def create_app_sign_in(self, sign_in: AppSignIn) -> None: ...

    async def get_app_sign_in(self, state_hash: str) -> AppSignIn | None:
        """The sign-in, used or not; None when absent."""
        ...

    async def claim_app_sign_in(self, state_hash: str, *, now: float) -> bool:
        """Mark the sign-in used: True exactly once (conditional update), then False."""
        ...

    async def purge_app_sign_ins(self, *, expired_before: float) -> int: ...

    async def identity_not_before(self, api_key_id: str, user_id: str) -> float | None:
        """When the latest app-flow family of (key, user) was revoked (None: never): identity tokens issued
        to that key for that user at or before it are refused."""
        ...
