"""The app flow's stores on PostgreSQL, mixed into ``PostgresStorage``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.storage.app_flow import IDENTITY_RESOURCE, AppSignIn, KeyApp

_SELECT_SIGN_IN = (
    "SELECT state_hash, provider, api_key_id, redirect_uri, app_state, code_verifier, nonce, created_at, expires_at, "
    "used_at FROM app_sign_ins"
)


class PostgresAppFlowStores:
    """``AppFlowStore``."""

    if TYPE_CHECKING:
        # Provided by PostgresStorage.
        async def _execute(self, sql: str, *args: Any) -> str: ...
        async def _fetch(self, sql: str, *args: Any) -> list[Any]: ...

    async def set_key_app(self, app: KeyApp) -> None:
        await self._execute(
            "INSERT INTO api_key_apps (api_key_id, redirect_uris, tokens_in_url) VALUES ($1, $2, $3) "
            "ON CONFLICT (api_key_id) DO UPDATE SET redirect_uris = EXCLUDED.redirect_uris, "
            "tokens_in_url = EXCLUDED.tokens_in_url",
            app.api_key_id,
            list(app.redirect_uris),
            app.tokens_in_url,
        )

    async def get_key_app(self, api_key_id: str) -> KeyApp | None:
        rows = await self._fetch(
            "SELECT api_key_id, redirect_uris, tokens_in_url FROM api_key_apps WHERE api_key_id = $1", api_key_id
        )
        if not rows:
            return None
        return KeyApp(rows[0][0], tuple(rows[0][1]), bool(rows[0][2]))

    async def create_app_sign_in(self, sign_in: AppSignIn) -> None:
        s = sign_in
        await self._execute(
            "INSERT INTO app_sign_ins (state_hash, provider, api_key_id, redirect_uri, app_state, code_verifier, "
            "nonce, created_at, expires_at, used_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            s.state_hash,
            s.provider,
            s.api_key_id,
            s.redirect_uri,
            s.app_state,
            s.code_verifier,
            s.nonce,
            s.created_at,
            s.expires_at,
            s.used_at,
        )

    async def get_app_sign_in(self, state_hash: str) -> AppSignIn | None:
        rows = await self._fetch(_SELECT_SIGN_IN + " WHERE state_hash = $1", state_hash)
        return AppSignIn(*rows[0]) if rows else None

    async def claim_app_sign_in(self, state_hash: str, *, now: float) -> bool:
        status = await self._execute(
            "UPDATE app_sign_ins SET used_at = $1 WHERE state_hash = $2 AND used_at IS NULL", now, state_hash
        )
        return status.endswith(" 1")

    async def purge_app_sign_ins(self, *, expired_before: float) -> int:
        status = await self._execute("DELETE FROM app_sign_ins WHERE expires_at < $1", expired_before)
        return int(status.rsplit(" ", 1)[-1])

    async def identity_not_before(self, api_key_id: str, user_id: str) -> float | None:
        rows = await self._fetch(
            "SELECT MAX(revoked_at) FROM token_families WHERE user_id = $1 AND client_id = $2 AND resource = $3",
            user_id,
            api_key_id,
            IDENTITY_RESOURCE,
        )
        value = rows[0][0] if rows else None
        return float(value) if value is not None else None
