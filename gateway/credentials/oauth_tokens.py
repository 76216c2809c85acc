"""Gateway access tokens (opaque ``gwat_…``, RFC 6750 bearer tokens): the token's row, its audience, its account.

The verifier owns every opaque gateway secret shape, so a refresh token or an authorization code presented to the
resource server is refused as malformed without a lookup.
"""

from __future__ import annotations

from gateway.credentials.extract import API_KEY_HEADER, Presented
from gateway.credentials.principal import Principal, Refusal, Verified
from gateway.last_used import LastUsedRecorder
from gateway.oauth.token_formats import TokenType, classify
from gateway.storage.base import UserStore
from gateway.storage.oauth import GrantStore


class AccessTokenVerifier:
    kind = "oauth"

    def __init__(self, *, grants: GrantStore, users: UserStore, resource: str, grant_use: LastUsedRecorder) -> None:
        self._grants = grants
        self._users = users
        self._resource = resource
        self._use = grant_use

    def matches(self, raw: str) -> bool:
        return classify(raw) is not None

    def refuse_early(self, presented: Presented) -> Refusal | None:
        if classify(presented.raw) is not TokenType.ACCESS:
            return Refusal("malformed", "The access token is invalid")
        if presented.header == API_KEY_HEADER:
            # RFC 6750 §2 / MCP authorization: access tokens travel only as ``Authorization: Bearer``.
            return Refusal("malformed", "Send access tokens in the Authorization header")
        return None

    async def verify(self, presented: Presented) -> Verified | Refusal:
        token = await self._grants.get_access_token(presented.digest)
        if token is None:
            return Refusal("unknown")
        whose = {"client_id": token.client_id, "account_id": token.user_id}
        if token.revoked_at is not None:
            return Refusal("revoked", **whose)
        # RFC 8707: a token bound to another resource is not valid here.
        if token.resource != self._resource:
            return Refusal("wrong_audience", **whose)
        user = await self._users.get_user(token.user_id)
        if user is None or not user.active:
            return Refusal("disabled", **whose)
        principal = Principal(
            user_id=user.id,
            email=user.email,
            method="oauth",
            credential_id=token.family_id,
            client_id=token.client_id,
            scope=token.scope,
            plan=user.plan,
        )
        return Verified(principal, token.expires_at)

    def record_use(self, principal: Principal, now: float) -> None:
        self._use.record(principal.credential_id, now)
