"""API keys (``<prefix>_…`` with a checksum): the key's row, then its account."""

from __future__ import annotations

from gateway.apikeys import ApiKeyFormat
from gateway.credentials.extract import Presented
from gateway.credentials.principal import Principal, Refusal, Verified
from gateway.last_used import LastUsedRecorder
from gateway.storage.base import ApiKeyStore, UserStore


class ApiKeyVerifier:
    kind = "api_key"

    def __init__(
        self, key_format: ApiKeyFormat, *, keys: ApiKeyStore, users: UserStore, key_use: LastUsedRecorder
    ) -> None:
        self._format = key_format
        self._keys = keys
        self._users = users
        self._use = key_use

    def matches(self, raw: str) -> bool:
        return self._format.looks_like_key(raw)

    def refuse_early(self, presented: Presented) -> Refusal | None:
        if not self._format.is_well_formed(presented.raw):
            return Refusal("malformed", "The API key is malformed")
        return None

    async def verify(self, presented: Presented) -> Verified | Refusal:
        key = await self._keys.get_api_key_by_hash(presented.digest)
        if key is None:
            return Refusal("unknown")
        if key.revoked_at is not None:
            return Refusal("revoked", account_id=key.user_id)
        user = await self._users.get_user(key.user_id)
        if user is None or not user.active:
            return Refusal("disabled", account_id=key.user_id)
        principal = Principal(
            user_id=user.id, email=user.email, method="api_key", credential_id=key.id, scope=key.scope, plan=user.plan
        )
        return Verified(principal, key.expires_at)

    def record_use(self, principal: Principal, now: float) -> None:
        self._use.record(principal.credential_id, now)
