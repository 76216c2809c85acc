"""The gateway as a careful OAuth 2 / OpenID Connect client of a third-party provider (``identity_providers.NAME``).

One sign-in is two calls::

    url, pending = await client.begin(redirect_uri)      # keep ``pending`` server-side, keyed by pending.state
    ...the browser goes to url, signs in, comes back to redirect_uri with ?code&state&iss...
    identity = await client.complete(pending, request.query)

``begin`` sends ``state``, a PKCE S256 challenge (unless the provider is configured with ``pkce: false``) and, for
OpenID Connect, a ``nonce``. ``complete`` checks the ``state`` (and that the sign-in started less than
``PENDING_TTL`` ago), the RFC 9207 ``iss`` (required when the provider advertises it, compared whenever present),
trades the code (``client_secret_basic``), verifies the ID token (signature against the provider's JWKS, ``iss``,
``aud``, ``exp``, ``nonce``) and reads the user's e-mail, trusted only when the provider says it is verified.
Built on authlib's OAuth 2 helpers (authorization URL, PKCE) and joserfc, authlib's JOSE library.
"""

from __future__ import annotations

import base64
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from gateway.clock import Clock
from gateway.identity.provider_config import ProviderConfig
from gateway.identity.provider_http import JwksCache, ProviderError, ProviderMetadata, fetch_json, verify_id_token

PENDING_TTL = 600.0
"""Seconds a user has to sign in at the provider."""
METADATA_TTL = 3600.0


@dataclass(frozen=True)
class PendingAuthorization:
    """What ``begin`` hands out and ``complete`` needs back: store it server-side, never in the browser's hands."""

    provider: str
    state: str
    code_verifier: str | None
    nonce: str | None
    redirect_uri: str
    created_at: float


@dataclass(frozen=True)
class ProviderIdentity:
    """Who signed in: (``issuer``, ``subject``) names the account at the provider; ``email`` only when verified."""

    provider: str
    issuer: str
    subject: str
    email: str | None
    name: str | None
    tokens: Mapping[str, Any] = field(repr=False)
    """The token response (``access_token``, ``refresh_token``, ``expires_in``, ``scope``…): secrets, never log."""


class ProviderClient:
    def __init__(
        self, config: ProviderConfig, session: aiohttp.ClientSession, clock: Clock, jwks: JwksCache | None = None
    ) -> None:
        self.config = config
        self._session = session
        self._clock = clock
        self._jwks = jwks or JwksCache(session, clock)
        self._metadata: tuple[float, ProviderMetadata] | None = None

    async def metadata(self) -> ProviderMetadata:
        """The provider's endpoints: discovered (and cached) for OpenID Connect, configured for plain OAuth 2."""
        c = self.config
        if c.issuer is None or not c.oidc:
            if c.authorization_endpoint is None or c.token_endpoint is None:
                raise ProviderError("misconfigured", "no issuer and no endpoints")
            parts = urlsplit(c.authorization_endpoint)
            return ProviderMetadata(
                issuer=c.issuer or f"{parts.scheme}://{parts.netloc}",
                authorization_endpoint=c.authorization_endpoint,
                token_endpoint=c.token_endpoint,
                userinfo_endpoint=c.userinfo_endpoint,
                jwks_uri=c.jwks_uri,
                iss_parameter_supported=False,
                id_token_algorithms=frozenset(),
            )
        cached = self._metadata
        if cached is not None and 0 <= self._clock.monotonic() - cached[0] < METADATA_TTL:
            return cached[1]
        url = c.issuer.rstrip("/") + "/.well-known/openid-configuration"
        document = await fetch_json(self._session, "GET", url, what="the provider's discovery document")
        metadata = ProviderMetadata.from_discovery(document, c.issuer)
        self._metadata = (self._clock.monotonic(), metadata)
        return metadata

    async def begin(self, redirect_uri: str) -> tuple[str, PendingAuthorization]:
        """The URL to send the browser to, and what ``complete`` will need."""
        metadata = await self.metadata()
        pending = PendingAuthorization(
            provider=self.config.name,
            state=secrets.token_urlsafe(32),
            code_verifier=secrets.token_urlsafe(48) if self.config.pkce else None,
            nonce=secrets.token_urlsafe(32) if self.config.oidc else None,
            redirect_uri=redirect_uri,
            created_at=self._clock.now(),
        )
        extra: dict[str, str] = dict(self.config.authorization_params)
        if pending.nonce is not None:
            extra["nonce"] = pending.nonce
        if pending.code_verifier is not None:
            extra["code_challenge"] = create_s256_code_challenge(pending.code_verifier)
            extra["code_challenge_method"] = "S256"
        url = prepare_grant_uri(
            metadata.authorization_endpoint,
            client_id=self.config.client_id,
            response_type="code",
            redirect_uri=redirect_uri,
            scope=" ".join(self.config.scopes),
            state=pending.state,
            **extra,
        )
        return str(url), pending

    async def complete(self, pending: PendingAuthorization, params: Mapping[str, str]) -> ProviderIdentity:
        """Check the callback's parameters against ``pending``, trade the code, and say who signed in."""
        metadata = await self.metadata()
        self._check_callback(pending, params, metadata)
        tokens = await self._exchange(pending, params["code"], metadata)
        claims: dict[str, Any] = {}
        if self.config.oidc:
            id_token = tokens.get("id_token")
            if not isinstance(id_token, str) or pending.nonce is None:
                raise ProviderError("invalid_id_token", "the provider returned no ID token")
            claims = await verify_id_token(
                id_token,
                metadata=metadata,
                jwks=self._jwks,
                client_id=self.config.client_id,
                nonce=pending.nonce,
                now=self._clock.now(),
            )
        access_token = tokens.get("access_token")
        if not isinstance(access_token, str):
            raise ProviderError("token_error", "the provider returned no access token")
        if "email" not in claims or not self.config.oidc:
            claims = await self._userinfo(metadata, access_token, claims)
        subject = claims.get("sub", claims.get("id"))
        if subject is None or isinstance(subject, bool) or not str(subject):
            raise ProviderError("userinfo_error", "the provider did not say who signed in")
        email = await self._verified_email(claims, access_token)
        name = claims.get("name") if isinstance(claims.get("name"), str) else None
        return ProviderIdentity(self.config.name, metadata.issuer, str(subject), email, name, dict(tokens))

    def _check_callback(
        self, pending: PendingAuthorization, params: Mapping[str, str], metadata: ProviderMetadata
    ) -> None:
        state = params.get("state", "")
        if pending.provider != self.config.name or not hmac.compare_digest(state.encode(), pending.state.encode()):
            raise ProviderError("invalid_state", "the sign-in does not match the one this browser started")
        if not 0 <= self._clock.now() - pending.created_at < PENDING_TTL:
            raise ProviderError("invalid_state", "the sign-in took too long; start again")
        # RFC 9207 before anything else in the response is believed (mix-up defence).
        iss = params.get("iss")
        if (iss is not None or metadata.iss_parameter_supported) and iss != metadata.issuer:
            raise ProviderError("issuer_mismatch", "the response does not come from the expected provider")
        if "error" in params:
            code = params["error"] if params["error"] in ("access_denied", "login_required") else "provider_error"
            raise ProviderError(code, "the provider did not sign the user in")
        if not params.get("code"):
            raise ProviderError("invalid_callback", "the response carries no authorization code")

    async def _exchange(self, pending: PendingAuthorization, code: str, metadata: ProviderMetadata) -> dict[str, Any]:
        """One attempt only: a replayed code makes the provider revoke what it issued for it."""
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": pending.redirect_uri}
        if pending.code_verifier is not None:
            form["code_verifier"] = pending.code_verifier
        tokens = await fetch_json(
            self._session,
            "POST",
            metadata.token_endpoint,
            what="the code exchange",
            headers={"Authorization": self._basic_auth()},
            data=form,
            error_code="token_error",
        )
        if not isinstance(tokens, dict) or "error" in tokens:  # GitHub answers errors with 200
            raise ProviderError("token_error", "the provider refused the authorization code")
        return tokens

    def _basic_auth(self) -> str:
        """RFC 6749 §2.3.1: the client id and secret form-urlencoded, then base64."""
        pair = f"{quote(self.config.client_id, safe='')}:{quote(self.config.client_secret, safe='')}"
        return "Basic " + base64.b64encode(pair.encode()).decode("ascii")

    async def _userinfo(
        self, metadata: ProviderMetadata, access_token: str, id_claims: dict[str, Any]
    ) -> dict[str, Any]:
        if metadata.userinfo_endpoint is None:
            return id_claims
        info = await fetch_json(
            self._session,
            "GET",
            metadata.userinfo_endpoint,
            what="the user info",
            headers={"Authorization": f"Bearer {access_token}"},
            error_code="userinfo_error",
        )
        if not isinstance(info, dict):
            raise ProviderError("userinfo_error", "the user info is not an object")
        if id_claims and info.get("sub") != id_claims.get("sub"):
            # OIDC Core §5.3.4: a user info response for another subject must not be used.
            raise ProviderError("userinfo_error", "the user info names another user")
        return {**info, **id_claims, **{k: info[k] for k in ("email", "email_verified") if k in info}}

    async def _verified_email(self, claims: Mapping[str, Any], access_token: str) -> str | None:
        if self.config.emails_endpoint is not None:  # GitHub: /user's e-mail is not said to be verified
            emails = await fetch_json(
                self._session,
                "GET",
                self.config.emails_endpoint,
                what="the user's e-mail addresses",
                headers={"Authorization": f"Bearer {access_token}"},
                error_code="userinfo_error",
            )
            for entry in emails if isinstance(emails, list) else []:
                if isinstance(entry, dict) and entry.get("primary") is True and entry.get("verified") is True:
                    email = entry.get("email")
                    return email if isinstance(email, str) and "@" in email else None
            return None
        email, verified = claims.get("email"), claims.get("email_verified")
        if isinstance(email, str) and "@" in email and (verified is True or verified == "true"):
            return email
        return None
