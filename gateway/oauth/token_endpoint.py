"""The OAuth 2.1 token endpoint (RFC 6749 §3.2, §4.1.3, §6; OAuth 2.1 §4.1.3, §4.3): ``POST /token``.

Public clients only: the authorization_code grant (PKCE S256, RFC 7636) and the refresh_token grant with
rotation on every use, family revocation on reuse, and a short grace window for the immediate
predecessor (security-cases §3). Also the request edge shared with revocation (RFC 7009):
form parsing, public-client identification and CORS.

State it expects in the app: ``GRANTS`` (a ``GrantStore``) and ``USERS`` (a ``UserStore``); when not set
by startup, ``setup_token_endpoint`` fills both from ``gateway.appkeys.STORAGE``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl

from aiohttp import web

from gateway.appkeys import STORAGE
from gateway.errors import GatewayError
from gateway.flight.setup import note
from gateway.oauth import grace
from gateway.oauth.context import OAUTH_SETTINGS, OAuthSettings
from gateway.oauth.errors import (
    InvalidClient,
    InvalidGrant,
    InvalidRequest,
    InvalidScope,
    InvalidTarget,
    OAuthError,
    ServiceUnavailable,
    UnsupportedGrantType,
)
from gateway.oauth.issuance import TokenPair, issue, new_family, token_response
from gateway.oauth.limits import ENDPOINT_LIMITS
from gateway.oauth.pkce import verify
from gateway.oauth.resource_uri import matches_resource
from gateway.oauth.scopes import OFFLINE_ACCESS
from gateway.oauth.token_formats import TokenType, classify
from gateway.revocation import REVOCATIONS, Revocation
from gateway.secrets_hashing import secret_hash
from gateway.security_events import reuse_detected, revoked, token_issued
from gateway.storage.base import StorageUnavailable, UserStore
from gateway.storage.oauth import AuthorizationCode, GrantStore, RotateOutcome, TokenFamily

log = logging.getLogger("gateway.oauth.token")

GRANTS = web.AppKey("oauth_grants", GrantStore)
"""Codes, token families and tokens (defaults to the app's storage)."""
USERS = web.AppKey("oauth_users", UserStore)
"""Users, to refuse grants of deleted or disabled accounts (defaults to the app's storage)."""

MAX_FORM_BYTES = 16 * 1024
MAX_FORM_FIELDS = 32
MAX_VERIFIER_FAILURES = 5
FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"
CORS = {"Access-Control-Allow-Origin": "*"}
_PREFLIGHT = {
    **CORS,
    "Access-Control-Allow-Methods": "POST, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type",
    "Access-Control-Max-Age": "86400",
}
_AUTH_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]{0,31}")
_UNAVAILABLE = "Authorization service unavailable, retry shortly"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_REPLAY_LOG = {
    "code_reuse": "authorization code reuse detected",
    "refresh_reuse": "refresh token reuse detected",
    "client_mismatch": "refresh token presented by another client",
}


class RequestTooLarge(OAuthError):
    """The form body exceeds the endpoint's bound (OAuth-shaped 413, not the JSON-RPC one of ``/mcp``)."""

    status = 413
    error = "invalid_request"


class VerifierMismatch(InvalidGrant):
    """RFC 7636 §4.6: the verifier does not match (or is malformed); counted against the code."""


class ClientSecretRefused(InvalidClient):
    """A secret in the body of a public client's request (RFC 6749 §5.2: 400 unless the header was used)."""

    status = 400


# --- the request edge (shared with revocation) ---


async def read_form(request: web.Request, *, max_bytes: int = MAX_FORM_BYTES) -> dict[str, str]:
    """The body as single-valued parameters, empty values dropped (RFC 6749 §3.1), or an ``OAuthError``."""
    # RFC 6749 §3.2: "application/x-www-form-urlencoded"; the media type is compared exactly, not searched for.
    if request.content_type != FORM_MEDIA_TYPE or (request.charset or "utf-8").lower() not in ("utf-8", "utf8"):
        raise InvalidRequest(f"The request body must be {FORM_MEDIA_TYPE}")
    if request.content_length is not None and request.content_length > max_bytes:
        raise RequestTooLarge("Request body too large")
    body = bytearray()
    while chunk := await request.content.read(max_bytes + 1 - len(body)):
        body += chunk
        if len(body) > max_bytes:
            raise RequestTooLarge("Request body too large")
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, errors="strict", max_num_fields=MAX_FORM_FIELDS)
    except ValueError as exc:  # UnicodeDecodeError included
        raise InvalidRequest("The request body is not valid form data") from exc
    form: dict[str, str] = {}
    seen: set[str] = set()
    for name, value in pairs:
        if name in seen:
            # RFC 6749 §3.2: parameters MUST NOT be included more than once.
            raise InvalidRequest("A parameter is repeated")
        seen.add(name)
        if value:
            form[name] = value
    return form


def public_client_id(request: web.Request, form: dict[str, str]) -> str:
    """The ``client_id`` of a public client (``token_endpoint_auth_method: none``), or an error."""
    authorization = request.headers.get("Authorization")
    if authorization is not None:
        scheme = authorization.split(" ", 1)[0]
        scheme = scheme if _AUTH_SCHEME.fullmatch(scheme) else "Basic"
        # RFC 6749 §5.2: 401 with a challenge matching the scheme the client tried.
        raise InvalidClient(
            "Clients of this server are public and do not authenticate",
            headers={"WWW-Authenticate": f'{scheme} realm="oauth"'},
        )
    if "client_secret" in form or "client_assertion" in form:
        raise ClientSecretRefused("Clients of this server are public and do not authenticate")
    client_id = form.get("client_id")
    if client_id is None:
        raise InvalidRequest("client_id is required")
    return client_id


def with_cors(handler: Handler) -> Handler:
    """Any origin may call, without credentials; error responses carry the header too."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            response = await handler(request)
        except GatewayError as exc:
            exc.headers.update(CORS)
            raise
        response.headers.update(CORS)
        return response

    return wrapped


async def preflight(request: web.Request) -> web.Response:
    return web.Response(status=204, headers=_PREFLIGHT)


# --- the endpoint ---


class _Exchange:
    """One token request: the settings, stores and the clock reading it is judged at."""

    def __init__(self, request: web.Request, form: dict[str, str], client_id: str) -> None:
        self.settings: OAuthSettings = request.app[OAUTH_SETTINGS]
        self.config = self.settings.config.oauth
        self.grants = request.app[GRANTS]
        self.users = request.app[USERS]
        self.app = request.app
        self.form = form
        self.client_id = client_id
        self.now = self.settings.clock.now()
        self.revocations = request.app[REVOCATIONS]
        self.request = request

    async def revoke_replayed_family(self, user_id: str, client_id: str, family_id: str, reason: str) -> None:
        """Revoke a family whose code or refresh token was replayed (``code_reuse``, ``refresh_reuse``) or
        presented by another client (``client_mismatch``). Only the request whose revocation commits announces
        it to every replica, logs it and records it."""
        if not await self.grants.revoke_family(family_id, now=self.now, reason=reason):
            return
        committed_at = self.settings.clock.now()
        await self.revocations.announce(Revocation(user_id, committed_at, family_ids=(family_id,), source="reuse"))
        log.warning(_REPLAY_LOG[reason], extra={"event": f"{reason}_detected", "family_id": family_id})
        if reason == "code_reuse":
            revoked(
                self.app,
                source="reuse",
                actor="system",
                user_id=user_id,
                client_id=client_id,
                family_id=family_id,
                reason=reason,
            )
        else:
            reuse_detected(self.app, user_id=user_id, client_id=client_id, family_id=family_id, reason=reason)

    async def require_active_user(self, user_id: str) -> None:
        user = await self.users.get_user(user_id)
        if user is None or not user.active:
            raise InvalidGrant("The grant is no longer valid")

    # authorization_code (RFC 6749 §4.1.3, OAuth 2.1 §4.1.3)

    async def authorization_code(self) -> web.Response:
        code = self.form.get("code")
        if code is None:
            raise InvalidRequest("code is required")
        if classify(code) is not TokenType.CODE:
            # Type confusion (a token or API key as a code): refused without a lookup.
            raise InvalidGrant("The authorization code is invalid")
        code_hash = secret_hash(code)
        row = await self.grants.get_code(code_hash)
        # OAuth 2.1 §4.1.3: the code was issued to this client_id (public clients).
        if row is None or row.client_id != self.client_id:
            raise InvalidGrant("The authorization code is invalid")
        note(self.request, client_id=row.client_id, account_id=row.user_id)
        if self.now >= row.expires_at:
            raise InvalidGrant("The authorization code has expired")
        problem = self._binding_problem(row)
        if row.used_at is not None:
            if problem is None:
                # OAuth 2.1 §4.1.3 / §7.5.2: a valid replay revokes what the first redemption issued;
                # invalid duplicates (anyone could send those) revoke nothing.
                await self._revoke_after_replay(row)
            raise InvalidGrant("The authorization code is invalid")
        if problem is not None:
            if isinstance(problem, VerifierMismatch):
                # RFC 7636 §4.6 failures are counted: the code dies after MAX_VERIFIER_FAILURES.
                await self.grants.record_code_failure(code_hash, max_failures=MAX_VERIFIER_FAILURES, now=self.now)
            raise problem
        await self.require_active_user(row.user_id)
        family = new_family(row, config=self.config, now=self.now)
        issued = issue(family, config=self.config, now=self.now, generation=1)
        won = await self.grants.redeem_code(
            code_hash, now=self.now, family=family, access=issued.access, refresh=issued.refresh
        )
        if not won:
            # A concurrent redemption claimed it first: this request is a valid duplicate.
            claimed = await self.grants.get_code(code_hash)
            if claimed is not None:
                await self._revoke_after_replay(claimed)
            raise InvalidGrant("The authorization code is invalid")
        token_issued(
            self.app,
            grant_type="authorization_code",
            user_id=family.user_id,
            client_id=family.client_id,
            family_id=family.family_id,
            generation=1,
        )
        return token_response(issued.pair, now=self.now)

    def _binding_problem(self, row: AuthorizationCode) -> GatewayError | None:
        """The first way this request disagrees with what the code is bound to, without consuming it."""
        redirect_uri = self.form.get("redirect_uri")
        # RFC 6749 §4.1.3: present (and identical) if it was in the authorization request; compared as strings.
        if (row.redirect_uri_given or redirect_uri is not None) and redirect_uri != row.redirect_uri:
            return InvalidGrant("redirect_uri does not match the authorization request")
        resource = self.form.get("resource")
        # RFC 8707 §2.2: the resource must be the one the code was issued for (trailing slash forgiven).
        if resource is not None and not matches_resource(resource, row.resource):
            return InvalidTarget("The resource does not match the authorization")
        verifier = self.form.get("code_verifier")
        if verifier is None:
            return InvalidRequest("code_verifier is required")
        # RFC 7636 §4.6; a code stored without an S256 challenge never verifies (RFC 9700 §4.8).
        if not verify(verifier, row.code_challenge):
            return VerifierMismatch("The code_verifier does not match the code_challenge")
        return None

    async def _revoke_after_replay(self, row: AuthorizationCode) -> None:
        if row.family_id is not None:
            await self.revoke_replayed_family(row.user_id, row.client_id, row.family_id, "code_reuse")

    # refresh_token (RFC 6749 §6, OAuth 2.1 §4.3)

    async def refresh_token(self) -> web.Response:
        token = self.form.get("refresh_token")
        if token is None:
            raise InvalidRequest("refresh_token is required")
        if classify(token) is not TokenType.REFRESH:
            raise InvalidGrant("The refresh token is invalid")
        token_hash = secret_hash(token)
        row = await self.grants.get_refresh_token(token_hash)
        family = await self.grants.get_family(row.family_id) if row is not None else None
        if row is None or family is None:
            raise InvalidGrant("The refresh token is invalid")
        live = family.revoked_at is None and self.now < family.expires_at
        if family.client_id == self.client_id:
            note(self.request, client_id=family.client_id, account_id=family.user_id)
        # OAuth 2.1 §4.3.1: the token is bound to the client it was issued to.
        if family.client_id != self.client_id:
            # Policy (security-cases 58): a live refresh token in another client's hands has leaked.
            if live:
                await self.revoke_replayed_family(family.user_id, family.client_id, family.family_id, "client_mismatch")
            raise InvalidGrant("The refresh token is invalid")
        if not live:
            raise InvalidGrant("The refresh token is invalid")
        scope = self._narrowed_scope(family)
        resource = self.form.get("resource")
        if resource is not None and not matches_resource(resource, family.resource):
            raise InvalidTarget("The resource does not match the grant")
        await self.require_active_user(family.user_id)
        issued = issue(family, config=self.config, now=self.now, generation=row.generation + 1, scope=scope)
        outcome = await self.grants.rotate_refresh_token(
            token_hash,
            now=self.now,
            access=issued.access,
            refresh=issued.refresh,
            grace_until=self.now + self.config.refresh_grace_seconds,
            grace_blob=grace.seal(token, issued.pair),
        )
        if outcome is RotateOutcome.ROTATED:
            token_issued(
                self.app,
                grant_type="refresh_token",
                user_id=family.user_id,
                client_id=family.client_id,
                family_id=family.family_id,
                generation=row.generation + 1,
            )
            return token_response(issued.pair, now=self.now)
        if outcome is RotateOutcome.RETIRED:
            return token_response(await self._replay_or_reuse(token, token_hash, family), now=self.now)
        raise InvalidGrant("The refresh token is invalid")

    def _narrowed_scope(self, family: TokenFamily) -> str | None:
        """The access token's scope when the request narrows it; the refresh token keeps the family's."""
        requested = self.form.get("scope")
        if requested is None:
            return None
        words = set(requested.split()) - {OFFLINE_ACCESS}
        if not words:
            return None
        granted = family.scope.split()
        # OAuth 2.1 §4.3.1: the scope must not exceed the one originally granted.
        if not words <= set(granted):
            raise InvalidScope("The requested scope exceeds the grant")
        return " ".join(s for s in granted if s in words)

    async def _replay_or_reuse(self, token: str, token_hash: str, family: TokenFamily) -> TokenPair:
        """A retired token: the same successor pair within the grace window if it is the immediate
        predecessor of the current token, otherwise reuse, which revokes the family (OAuth 2.1 §4.3.1)."""
        max_replays = self.config.refresh_grace_max_replays
        judged = await grace.judge_retired(
            self.grants, token, token_hash, family.family_id, now=self.now, max_replays=max_replays
        )
        if isinstance(judged, TokenPair):
            return judged
        if judged is grace.Retired.BUSY:
            # Parallel refreshes: refuse this one without revoking, so the sibling that got the pair keeps working.
            raise InvalidGrant("The refresh token was already used")
        await self.revoke_replayed_family(family.user_id, family.client_id, family.family_id, "refresh_reuse")
        raise InvalidGrant("The refresh token is invalid")


async def token(request: web.Request) -> web.Response:
    form = await read_form(request)
    client_id = public_client_id(request, form)
    # The claimed client; its steps count as proven (and go to the client's own ring) only once a code or refresh
    # token shows whose they are (the account is noted then).
    note(request, client_id=client_id, grant_type=form.get("grant_type"))
    limits = request.app[ENDPOINT_LIMITS]
    await limits.token(request)
    try:
        return await _exchange(request, form, client_id)
    except GatewayError as exc:
        if 400 <= exc.status < 500 and exc.status != 429:
            # Counted per (client, address) and only after the exchange: a valid code or refresh token is
            # never refused by a budget that strangers naming this (public) client id could spend.
            await limits.token_failed(request, client_id)
        raise


async def _exchange(request: web.Request, form: dict[str, str], client_id: str) -> web.Response:
    grant_type = form.get("grant_type")
    if grant_type is None:
        raise InvalidRequest("grant_type is required")
    exchange = _Exchange(request, form, client_id)
    try:
        if grant_type == "authorization_code":
            return await exchange.authorization_code()
        if grant_type == "refresh_token":
            return await exchange.refresh_token()
    except StorageUnavailable as exc:
        # Security-cases §3: an infrastructure fault is 503 + Retry-After, never a 400/401 that ends the session.
        raise ServiceUnavailable(_UNAVAILABLE) from exc
    raise UnsupportedGrantType("Supported grant types: authorization_code, refresh_token")


async def _default_stores(app: web.Application) -> None:
    if GRANTS not in app:
        app[GRANTS] = app[STORAGE]
    if USERS not in app:
        app[USERS] = app[STORAGE]


def use_storage_by_default(app: web.Application) -> None:
    """At startup, fill ``GRANTS`` and ``USERS`` from ``STORAGE`` unless something set them (tests do)."""
    if _default_stores not in app.on_startup:
        app.on_startup.append(_default_stores)


def setup_token_endpoint(app: web.Application) -> None:
    """Prepare ``POST /token`` (its route and CORS preflight are in ``gateway.routes``)."""
    use_storage_by_default(app)
