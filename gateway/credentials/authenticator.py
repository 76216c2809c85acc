"""Who is calling: the resource server's credential check, composed of the extraction, the registered verifiers
(one per credential type, first match wins) and the validation cache.

Malformed credentials are refused before any storage lookup; valid ones are cached for at most a second (see
``cache.py``). A 401 carries the RFC 9728 challenge that sends MCP clients to discovery; a token without the
resource's scopes gets a 403 ``insufficient_scope`` naming them.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from gateway.clock import Clock
from gateway.credentials.cache import ValidationCache
from gateway.credentials.extract import API_KEY_HEADER, AUTHORIZATION, Challenge, Presented, extract_credential
from gateway.credentials.principal import Principal, Refusal, Verified
from gateway.credentials.verifier import CredentialVerifier
from gateway.errors import InsufficientScope, InvalidToken, ServiceUnavailable, TwoCredentials, Unauthorized
from gateway.flight.setup import first_call, note
from gateway.metrics import AUTH_FAILURE_REASONS, Metrics, bounded
from gateway.revocation import Revocation
from gateway.storage.base import StorageUnavailable

PRESENTED = web.RequestKey("presented_credential", Presented)
"""The credential a request was authenticated with (``credential_of``)."""


class Authenticator:
    def __init__(
        self,
        verifiers: Sequence[CredentialVerifier],
        *,
        cache: ValidationCache,
        clock: Clock,
        challenge: Challenge,
        required_scopes: tuple[str, ...],
        metrics: Metrics | None = None,
    ) -> None:
        self.verifiers = tuple(verifiers)
        self.cache = cache
        self._clock = clock
        self.challenge = challenge
        self._required = required_scopes
        self._metrics = metrics

    async def authenticate(self, request: web.Request) -> Principal:
        try:
            return await self._authenticate(request)
        except InvalidToken as exc:
            if API_KEY_HEADER not in request.headers:
                raise
            # A stale key pasted in a client's configuration: say so, rather than only "invalid_token".
            raise InvalidToken(
                "The API key in X-API-Key is not valid (unknown, expired, revoked or mistyped): "
                "replace it in your client's configuration",
                headers=exc.headers,
            ) from None

    def credential_of(self, request: web.Request) -> Presented:
        """The credential an authenticated ``request`` carried (read once, when it was authenticated)."""
        presented = request.get(PRESENTED)
        return presented if presented is not None else extract_credential(request, self.challenge)

    async def _authenticate(self, request: web.Request) -> Principal:
        try:
            presented = extract_credential(request, self.challenge)
        except Unauthorized:
            reason = "malformed" if {AUTHORIZATION, API_KEY_HEADER} & request.headers.keys() else "missing"
            self._refused(reason)
            note(request, reason="no_credential" if reason == "missing" else reason)
            raise
        except TwoCredentials:
            self._refused("malformed")
            raise
        request[PRESENTED] = presented
        now = self._clock.now()
        # A validation still cached was of a well-formed credential: only a miss runs the shape checks first.
        verified: Verified | Refusal | None = self.cache.fresh(presented.digest)
        if verified is None:
            verifier = self._verifier_for(request, presented)
            verified = await self._validation(verifier, presented, cached=True)
        else:
            verifier = self._matching(presented)
        if isinstance(verified, Refusal):
            raise self._invalid(verified, request)
        principal = verified.principal
        if verified.expires_at is not None and now >= verified.expires_at:
            refusal = Refusal("expired", "The credential has expired", principal.client_id, principal.user_id)
            raise self._invalid(refusal, request)
        verifier.record_use(principal, now)
        self._check_scope(principal, request)
        first_call(request, principal.credential_id, client_id=principal.client_id, account_id=principal.user_id)
        return principal

    def _matching(self, presented: Presented) -> CredentialVerifier:
        """The verifier of a credential validated before (its validation is cached)."""
        for verifier in self.verifiers:
            if verifier.matches(presented.raw):
                return verifier
        raise LookupError("no verifier recognises a cached credential")  # pragma: no cover - cached means matched

    def _verifier_for(self, request: web.Request, presented: Presented) -> CredentialVerifier:
        """The first registered verifier that recognises the credential; refuses one that none (or its own
        verifier's shape check) accepts, before any lookup."""
        for verifier in self.verifiers:
            if verifier.matches(presented.raw):
                refusal = verifier.refuse_early(presented)
                if refusal is not None:
                    raise self._invalid(refusal, request)
                return verifier
        raise self._invalid(Refusal("malformed", "The access token is invalid"), request)

    async def _validation(
        self, verifier: CredentialVerifier, presented: Presented, *, cached: bool
    ) -> Verified | Refusal:
        lookup = self.cache.validation if cached else self.cache.reload
        try:
            return await lookup(presented.digest, lambda: verifier.verify(presented))
        except StorageUnavailable as exc:
            raise ServiceUnavailable("Credential store unavailable, retry shortly") from exc

    def _refused(self, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.auth_failures.labels(reason=bounded(reason, AUTH_FAILURE_REASONS)).inc()

    def _invalid(self, refusal: Refusal, request: web.Request) -> InvalidToken:
        self._refused(refusal.reason)
        note(request, reason=refusal.reason, client_id=refusal.client_id, account_id=refusal.account_id)
        return InvalidToken(refusal.description, headers=self.challenge.headers("invalid_token"))

    def _check_scope(self, principal: Principal, request: web.Request) -> None:
        if principal.scope is None:
            return
        if not set(self._required) <= set(principal.scope.split()):
            self._refused("insufficient_scope")
            note(request, reason="insufficient_scope", client_id=principal.client_id, account_id=principal.user_id)
            raise InsufficientScope(
                "The access token does not carry the scope this resource needs",
                headers=Challenge(self.challenge.resource_metadata, " ".join(self._required)).headers(
                    "insufficient_scope"
                ),
            )

    async def revalidate(self, presented: Presented) -> bool:
        """Check the credential in storage now (bypassing and refreshing the cache): still valid and unexpired?

        Raises ``ServiceUnavailable`` when storage cannot say."""
        verifier = next((v for v in self.verifiers if v.matches(presented.raw)), None)
        if verifier is None:
            return False
        verified = await self._validation(verifier, presented, cached=False)
        if isinstance(verified, Refusal):
            return False
        return verified.expires_at is None or self._clock.now() < verified.expires_at

    def on_revocation(self, revocation: Revocation) -> None:
        """A ``RevocationBus`` listener: drop every cached validation the revocation names."""
        self.cache.drop_revoked(revocation)
        if self._metrics is not None and revocation.committed_at > 0:
            self._metrics.revocation_propagation.observe(max(0.0, self._clock.now() - revocation.committed_at))

    def flush(self) -> None:
        """Drop every cached validation (announcements may have been lost)."""
        self.cache.flush()
