"""The pieces the authorize, login and consent steps share: pending requests, CSRF, codes, redirects.

A pending authorization is stored server-side (by the SHA-256 of its random id) with everything that was
validated at ``/authorize``; the login and consent forms carry only its id and a CSRF token, so nothing a
browser posts can change the client, redirect URI, scope, resource or PKCE challenge (tampering has no
effect). The CSRF token is derived from the request id and the browser-binding cookie: a page loaded
twice shows the same token, and another browser can never produce it.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

from aiohttp import web

from gateway.errors import ServiceUnavailable
from gateway.oauth.browser_sessions import LoginSessions
from gateway.oauth.clients import ClientResolver
from gateway.oauth.context import OAuthSettings
from gateway.oauth.limits import EndpointLimits
from gateway.oauth.token_formats import TokenType, mint
from gateway.passwords import Passwords
from gateway.secrets_hashing import secret_hash
from gateway.storage.base import StorageUnavailable, UserStore
from gateway.storage.oauth import (
    AuthorizationCode,
    AuthorizationRequest,
    AuthorizationRequestStore,
    ClientStore,
    ConsentStore,
    GrantStore,
)

UNAVAILABLE = "Authorization service unavailable, retry shortly"

log = logging.getLogger("gateway.oauth")


def csrf_token(request_id: str, browser: str) -> str:
    digest = hashlib.sha256(f"consent-csrf\x00{request_id}\x00{browser}".encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def with_params(uri: str, params: dict[str, str | None]) -> str:
    """``uri`` with the parameters added to its query (RFC 6749 §4.1.2: keep the existing query)."""
    query = urlencode({k: v for k, v in params.items() if v is not None})
    separator = "&" if urlsplit(uri).query else ("" if uri.endswith("?") else "?")
    return f"{uri}{separator}{query}"


@dataclass(frozen=True)
class AuthorizationFlow:
    settings: OAuthSettings
    clients: ClientResolver
    client_store: ClientStore
    requests: AuthorizationRequestStore
    grants: GrantStore
    consents: ConsentStore
    users: UserStore
    logins: LoginSessions
    passwords: Passwords
    throttle: EndpointLimits

    def respond(self, pending: AuthorizationRequest, **params: str | None) -> str:
        """The redirect back to the client: ``state`` verbatim and ``iss`` on every response (RFC 9207 §2)."""
        return with_params(pending.redirect_uri, {**params, "state": pending.state, "iss": self.settings.issuer})

    async def create_pending(self, pending: AuthorizationRequest) -> None:
        try:
            await self.requests.create_authorization_request(pending)
        except StorageUnavailable as exc:
            raise ServiceUnavailable(UNAVAILABLE) from exc

    async def load_pending(self, request_id: str, browser: str | None) -> AuthorizationRequest | None:
        """The pending request, if it exists, is unexpired and uncompleted, and belongs to this browser."""
        if not request_id or len(request_id) > 128 or browser is None:
            return None
        try:
            pending = await self.requests.get_authorization_request(secret_hash(request_id))
        except StorageUnavailable as exc:
            raise ServiceUnavailable(UNAVAILABLE) from exc
        if (
            pending is None
            or pending.completed_at is not None
            or self.settings.clock.now() >= pending.expires_at
            or not secrets.compare_digest(pending.browser_hash, secret_hash(browser))
        ):
            return None
        return pending

    async def approved(self, user_id: str, client_id: str, redirect_uri: str) -> bool:
        """This user once approved this client at this redirect URI (for this server): the only redirect URIs
        the gateway trusts enough to send a browser to without a click (RFC 9700 §4.11.2)."""
        consent = await self.consents.get_consent(user_id, client_id, redirect_uri, self.settings.resource)
        return consent is not None

    async def remembered(self, user_id: str, pending: AuthorizationRequest) -> bool:
        """A prior approval covers this request: same user, client, redirect URI and resource, scope ⊆ approved."""
        consent = await self.consents.get_consent(user_id, pending.client_id, pending.redirect_uri, pending.resource)
        return consent is not None and set(pending.scope.split()) <= set(consent.scope.split())

    async def issue_code(self, user_id: str, pending: AuthorizationRequest) -> str:
        now = self.settings.clock.now()
        code, code_hash = mint(TokenType.CODE)
        try:
            await self.grants.create_code(
                AuthorizationCode(
                    code_hash=code_hash,
                    client_id=pending.client_id,
                    user_id=user_id,
                    redirect_uri=pending.redirect_uri,
                    redirect_uri_given=pending.redirect_uri_given,
                    code_challenge=pending.code_challenge,
                    scope=pending.scope,
                    resource=pending.resource,
                    created_at=now,
                    expires_at=now + self.settings.config.oauth.code_ttl,
                )
            )
            await self.client_store.mark_client_used(pending.client_id, now)
        except StorageUnavailable as exc:
            raise ServiceUnavailable(UNAVAILABLE) from exc
        return code


AUTHORIZATION_FLOW = web.AppKey("authorization_flow", AuthorizationFlow)
