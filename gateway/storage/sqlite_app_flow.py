"""The app flow's stores on SQLite, mixed into ``SqliteStorage``."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import astuple
from typing import TYPE_CHECKING, Any

from gateway.storage.app_flow import IDENTITY_RESOURCE, AppSignIn, KeyApp

_SELECT_SIGN_IN = (
    "SELECT state_hash, provider, api_key_id, redirect_uri, app_state, code_verifier, nonce, created_at, expires_at, "
    "used_at FROM app_sign_ins"
)


class SqliteAppFlowStores:
    """``AppFlowStore``."""

    if TYPE_CHECKING:
        # Provided by SqliteStorage.
        async def _fetch(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]: ...
        async def _execute(self, sql: str, params: Iterable[Any] = ()) -> int: ...

    async def set_key_app(self, app: KeyApp) -> None:
        await self._execute(
            "INSERT INTO api_key_apps (api_key_id, redirect_uris, tokens_in_url) VALUES (?, ?, ?) "
            "ON CONFLICT (api_key_id) DO UPDATE SET redirect_uris = excluded.redirect_uris, "
            "tokens_in_url = excluded.tokens_in_url",
            (app.api_key_id, json.dumps(list(app.redirect_uris)), int(app.tokens_in_url)),
        )

    async def get_key_app(self, api_key_id: str) -> KeyApp | None:
        rows = await self._fetch(
            "SELECT api_key_id, redirect_uris, tokens_in_url FROM api_key_apps WHERE api_key_id = ?", (api_key_id,)
        )
        if not rows:
            return None
        return KeyApp(rows[0][0], tuple(json.loads(rows[0][1])), bool(rows[0][2]))

    async def create_app_sign_in(self, sign_in: AppSignIn) -> None:
        await self._execute(
            "INSERT INTO app_sign_ins (state_hash, provider, api_key_id, redirect_uri, app_state, code_verifier, "
            "nonce, created_at, expires_at, used_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            astuple(sign_in),
        )

    async def get_app_sign_in(self, state_hash: str) -> AppSignIn | None:
        rows = await self._fetch(_SELECT_SIGN_IN + " WHERE state_hash = ?", (state_hash,))
        return AppSignIn(*rows[0]) if rows else None

    async def claim_app_sign_in(self, state_hash: str, *, now: float) -> bool:
        changed = await self._execute(
            "UPDATE app_sign_ins SET used_at = ? WHERE state_hash = ? AND used_at IS NULL", (now, state_hash)
        )
        return changed == 1

    async def purge_app_sign_ins(self, *, expired_before: float) -> int:
        return await self._execute("DELETE FROM app_sign_ins WHERE expires_at < ?", (expired_before,))

    async def identity_not_before(self, api_key_id: str, user_id: str) -> float | None:
        rows = await self._fetch(
            "SELECT MAX(revoked_at) FROM token_families WHERE user_id = ? AND client_id = ? AND resource = ?",
            (user_id, api_key_id, IDENTITY_RESOURCE),
        )
        value = rows[0][0] if rows else None
        return float(value) if value is not None else None
