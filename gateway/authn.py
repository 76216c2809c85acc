"""Who is calling: credential extraction and validation for the MCP endpoints (the resource server).

One credential per request (RFC 6750 §2): an API key in ``X-API-Key`` or ``Authorization: Bearer``, or a
gateway access token in ``Authorization: Bearer`` — never in the query string or a cookie. Malformed
credentials are refused before any storage lookup; valid ones are cached for at most ``cache_ttl`` (≤ 1 s)
so a revocation made anywhere takes effect within a second. A 401 carries the RFC 9728 challenge that
sends MCP clients to discovery.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Literal

from aiohttp import web

from gateway.apikeys import ApiKeyFormat
from gateway.clock import Clock
from gateway.errors import InsufficientScope, InvalidToken, ServiceUnavailable, TwoCredentials, Unauthorized
from gateway.last_used import LastUsedRecorder
from gateway.metrics import AUTH_FAILURE_REASONS, Metrics, bounded
from gateway.oauth.token_formats import TokenType, classify
from gateway.revocation import Revocation
from gateway.secrets_hashing import secret_hash
from gateway.storage.base import ApiKeyStore, StorageUnavailable, User, UserStore
from gateway.storage.oauth import AccessToken, GrantStore

MAX_CACHE_TTL = 1.0
DEFAULT_CACHE_TTL = 0.8
"""Below the one-second promise, leaving room for the reload query and the request in flight."""
MAX_ENTRY_AGE = 60.0
"""How long a validation is reused while the revocation watermark stays put (a plan change shows within this)."""
_Judge = Callable[[str, float], Awaitable["_Cached | str"]]
_BEARER = re.compile(r"^Bearer +([A-Za-z0-9\-._~+/]+=*) *$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: str
    email: str
    method: Literal["api_key", "oauth"]
    credential_id: str
    """The API key id, or the OAuth token family id."""
    client_id: str | None = None
    scope: str | None = None
    plan: str | None = None
    """The account's quota plan (None: the default plan)."""

    def revoked_by(self, revocation: Revocation) -> bool:
        """Whether ``revocation`` names this principal's credential (or all of its account's)."""
        if revocation.all_credentials and revocation.account_id == self.user_id:
            return True
        if self.method == "oauth":
            return self.credential_id in revocation.family_ids
        return self.credential_id in revocation.api_key_ids


@dataclass(frozen=True, slots=True)
class Challenge:
    """Builds ``WWW-Authenticate`` for 401 and 403 answers (RFC 6750 §3, RFC 9728 §5.1)."""

    resource_metadata: str | None = None
    scope: str | None = None

    def headers(self, error: str | None = None, description: str | None = None) -> dict[str, str]:
        params = ['realm="mcp-gateway"']
        if self.resource_metadata:
            params.append(f'resource_metadata="{self.resource_metadata}"')
        if self.scope:
            params.append(f'scope="{self.scope}"')
        if error:
            params.append(f'error="{error}"')
        if description:
            params.append(f'error_description="{description}"')
        return {"WWW-Authenticate": "Bearer " + ", ".join(params)}


@dataclass(frozen=True, slots=True)
class _Cached:
    principal: Principal
    expires_at: float | None
    fetched_at: float
    epoch: int | None = None
    """The revocation watermark observed before this validation was read from storage."""


def extract_credential(request: web.Request, challenge: Challenge) -> str:
    """The one credential the request carries; raises when there is none, two, or a wrong scheme."""
    authorizations = request.headers.getall("Authorization", [])
    api_keys = request.headers.getall("X-API-Key", [])
    if len(authorizations) + len(api_keys) > 1:
        raise TwoCredentials(
            "Send exactly one credential per request: an X-API-Key header or an Authorization header, not both",
            headers=challenge.headers("invalid_request"),
        )
    if api_keys:
        value = api_keys[0].strip()
        if not value:
            raise Unauthorized("An API key or access token is required", headers=challenge.headers())
        return value
    if not authorizations:
        raise Unauthorized("An API key or access token is required", headers=challenge.headers())
    match = _BEARER.match(authorizations[0])
    if match is None:
        raise Unauthorized("Use the Bearer authentication scheme", headers=challenge.headers())
    return match.group(1)


class Authenticator:
    def __init__(
        self,
        *,
        key_format: ApiKeyFormat,
        users: UserStore,
        api_keys: ApiKeyStore,
        grants: GrantStore,
        clock: Clock,
        key_use: LastUsedRecorder,
        grant_use: LastUsedRecorder,
        challenge: Challenge,
        resource: str,
        required_scopes: tuple[str, ...],
        cache_ttl: float = DEFAULT_CACHE_TTL,
        cache_size: int = 10_000,
        metrics: Metrics | None = None,
    ) -> None:
        self._format = key_format
        self._users = users
        self._keys = api_keys
        self._grants = grants
        self._clock = clock
        self._key_use = key_use
        self._grant_use = grant_use
        self.challenge = challenge
        self._resource = resource
        self._required = required_scopes
        self._epoch: int | None = None
        self._epoch_read_at = float("-inf")
        self._ttl = min(cache_ttl, MAX_CACHE_TTL)
        self._size = cache_size
        self._cache: OrderedDict[str, _Cached] = OrderedDict()
        self._by_owner: dict[str, set[str]] = {}
        """Cached digests by credential id and by account id, so a revocation finds its entries directly."""
        self._metrics = metrics

    async def authenticate(self, request: web.Request) -> Principal:
        try:
            return await self._authenticate(request)
        except InvalidToken as exc:
            if "X-API-Key" not in request.headers:
                raise
            # A stale key pasted in a client's configuration: say so, rather than only "invalid_token".
            raise InvalidToken(
                "The API key in X-API-Key is not valid (unknown, expired, revoked or mistyped): "
                "replace it in your client's configuration",
                headers=exc.headers,
            ) from None

    async def _authenticate(self, request: web.Request) -> Principal:
        try:
            credential = extract_credential(request, self.challenge)
        except Unauthorized:
            self._refused("malformed" if {"Authorization", "X-API-Key"} & request.headers.keys() else "missing")
            raise
        except TwoCredentials:
            self._refused("malformed")
            raise
        kind = classify(credential)
        if kind is TokenType.ACCESS:
            if "X-API-Key" in request.headers:
                # RFC 6750 §2 / MCP authorization: access tokens travel only as ``Authorization: Bearer``.
                raise self._invalid("Send access tokens in the Authorization header", "malformed")
            principal = await self._cached(secret_hash(credential), self._judge_access_token)
        elif kind is None and self._format.looks_like_key(credential):
            if not self._format.is_well_formed(credential):
                raise self._invalid("The API key is malformed", "malformed")
            principal = await self._cached(secret_hash(credential), self._judge_api_key)
        else:
            raise self._invalid("The access token is invalid", "malformed")
        self._check_scope(principal)
        return principal

    def _refused(self, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.auth_failures.labels(reason=bounded(reason, AUTH_FAILURE_REASONS)).inc()

    def _invalid(self, description: str, reason: str) -> InvalidToken:
        self._refused(reason)
        return InvalidToken(description, headers=self.challenge.headers("invalid_token"))

    def _check_scope(self, principal: Principal) -> None:
        if principal.scope is None:
            return
        granted = set(principal.scope.split())
        if not set(self._required) <= granted:
            needed = " ".join(self._required)
            self._refused("insufficient_scope")
            raise InsufficientScope(
                "The access token does not carry the scope this resource needs",
                headers=Challenge(self.challenge.resource_metadata, needed).headers("insufficient_scope"),
            )

    async def _cached(self, digest: str, judge: _Judge) -> Principal:
        now, mono = self._clock.now(), self._clock.monotonic()
        cached = self._cache.get(digest)
        if cached is None or not self._fresh(cached, mono):
            epoch = self._epoch  # before reading: a revocation committed meanwhile moves the watermark past it
            try:
                judged = await judge(digest, mono)
            except StorageUnavailable as exc:
                raise ServiceUnavailable("Credential store unavailable, retry shortly") from exc
            if isinstance(judged, str):
                self._drop(digest)
                raise self._invalid("The credential is unknown, expired or revoked", judged)
            cached = replace(judged, epoch=epoch)
            self._remember(digest, cached)
        if cached.expires_at is not None and now >= cached.expires_at:
            raise self._invalid("The credential has expired", "expired")
        principal = cached.principal
        recorder = self._grant_use if principal.method == "oauth" else self._key_use
        recorder.record(principal.credential_id, now)
        return principal

    async def _active_user(self, user_id: str) -> User | None:
        user = await self._users.get_user(user_id)
        return user if user is not None and user.active else None

    async def _load_api_key(self, digest: str, mono: float) -> _Cached | None:
        judged = await self._judge_api_key(digest, mono)
        return None if isinstance(judged, str) else judged

    async def _load_access_token(self, digest: str, mono: float) -> _Cached | None:
        judged = await self._judge_access_token(digest, mono)
        return None if isinstance(judged, str) else judged

    async def _judge_api_key(self, digest: str, mono: float) -> _Cached | str:
        """The key's validation, or why it is refused (one of ``AUTH_FAILURE_REASONS``)."""
        key = await self._keys.get_api_key_by_hash(digest)
        if key is None:
            return "unknown"
        if key.revoked_at is not None:
            return "revoked"
        user = await self._active_user(key.user_id)
        if user is None:
            return "disabled"
        principal = Principal(user_id=user.id, email=user.email, method="api_key", credential_id=key.id, plan=user.plan)
        return _Cached(principal, key.expires_at, mono)

    async def _judge_access_token(self, digest: str, mono: float) -> _Cached | str:
        """The token's validation, or why it is refused (one of ``AUTH_FAILURE_REASONS``)."""
        token: AccessToken | None = await self._grants.get_access_token(digest)
        if token is None:
            return "unknown"
        if token.revoked_at is not None:
            return "revoked"
        # RFC 8707: a token bound to another resource is not valid here.
        if token.resource != self._resource:
            return "wrong_audience"
        user = await self._active_user(token.user_id)
        if user is None:
            return "disabled"
        principal = Principal(
            user_id=user.id,
            email=user.email,
            method="oauth",
            credential_id=token.family_id,
            client_id=token.client_id,
            scope=token.scope,
            plan=user.plan,
        )
        return _Cached(principal, token.expires_at, mono)

    def observe_epoch(self, epoch: int, read_started_at: float) -> None:
        """The storage's revocation watermark (``Storage.revocation_epoch``) as read by a query that started at
        ``read_started_at`` (monotonic). While it stays put, validations are reused past the cache lifetime:
        nothing was revoked. Called every half second at most by the open-stream checker."""
        self._epoch, self._epoch_read_at = epoch, read_started_at

    def _fresh(self, cached: _Cached, mono: float) -> bool:
        """Reusable: read less than the cache lifetime ago, or read under the current watermark, which was seen
        unchanged less than the cache lifetime ago (so a revocation is still refused within a second)."""
        age = mono - cached.fetched_at
        if age < self._ttl:
            return True
        return (
            cached.epoch is not None
            and cached.epoch == self._epoch
            and mono - self._epoch_read_at < self._ttl
            and age < MAX_ENTRY_AGE
        )

    def _remember(self, digest: str, cached: _Cached) -> None:
        self._drop(digest)
        self._cache[digest] = cached
        for owner in (cached.principal.credential_id, cached.principal.user_id):
            self._by_owner.setdefault(owner, set()).add(digest)
        while len(self._cache) > self._size:
            self._drop(next(iter(self._cache)))

    def _drop(self, digest: str) -> None:
        cached = self._cache.pop(digest, None)
        if cached is None:
            return
        for owner in (cached.principal.credential_id, cached.principal.user_id):
            digests = self._by_owner.get(owner)
            if digests is not None:
                digests.discard(digest)
                if not digests:
                    del self._by_owner[owner]

    def on_revocation(self, revocation: Revocation) -> None:
        """A ``RevocationBus`` listener: drop every cached validation the revocation names."""
        owners = [*revocation.family_ids, *revocation.api_key_ids]
        if revocation.all_credentials:
            owners.append(revocation.account_id)
        for owner in owners:
            for digest in list(self._by_owner.get(owner, ())):
                if self._cache[digest].principal.revoked_by(revocation):
                    self._drop(digest)
        if self._metrics is not None and revocation.committed_at > 0:
            self._metrics.revocation_propagation.observe(max(0.0, self._clock.now() - revocation.committed_at))

    def flush(self) -> None:
        """Drop every cached validation (announcements may have been lost)."""
        self._cache.clear()
        self._by_owner.clear()

    def digest_of(self, request: web.Request) -> str:
        """The SHA-256 digest of the credential an authenticated ``request`` carried."""
        return secret_hash(extract_credential(request, self.challenge))

    def under_current_watermark(self, digest: str) -> bool:
        """The cached validation of ``digest`` was read under the revocation watermark last observed: a
        revocation since then would move the watermark, so nothing needs re-reading until it does."""
        cached = self._cache.get(digest)
        return cached is not None and cached.epoch is not None and cached.epoch == self._epoch

    def expiry_of(self, digest: str) -> float | None:
        """When the cached credential ``digest`` expires (wall clock; None: never, or not cached)."""
        cached = self._cache.get(digest)
        return cached.expires_at if cached is not None else None

    async def revalidate(self, digest: str, principal: Principal) -> bool:
        """Check the credential in storage now (bypassing and refreshing the cache): still valid and unexpired?

        Raises ``ServiceUnavailable`` when storage cannot say."""
        load = self._load_access_token if principal.method == "oauth" else self._load_api_key
        epoch = self._epoch
        try:
            cached = await load(digest, self._clock.monotonic())
        except StorageUnavailable as exc:
            raise ServiceUnavailable("Credential store unavailable, retry shortly") from exc
        if cached is None:
            self._drop(digest)
            return False
        self._remember(digest, replace(cached, epoch=epoch))
        return cached.expires_at is None or self._clock.now() < cached.expires_at
