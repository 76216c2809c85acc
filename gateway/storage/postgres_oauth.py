"""The OAuth stores of :mod:`gateway.storage.oauth` on PostgreSQL, mixed into ``PostgresStorage``.

Transactions run at READ COMMITTED: every claim is a conditional ``UPDATE`` whose condition PostgreSQL
re-checks on the newest row version after waiting for a concurrent writer, so of racing claims exactly one
matches. Rows are locked in one order to rule out deadlocks between replicas: authorization codes, then token
families (several at once in ``family_id`` order), then tokens.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import astuple, fields
from typing import TYPE_CHECKING, Any

from gateway.storage.oauth import (
    AccessToken,
    AuthorizationCode,
    AuthorizationRequest,
    BrowserSession,
    Consent,
    OAuthClient,
    RefreshToken,
    RotateOutcome,
    TokenFamily,
)


def _columns(row_type: type) -> str:
    return ", ".join(field.name for field in fields(row_type))


def _insert(table: str, row_type: type) -> str:
    placeholders = ", ".join(f"${index}" for index in range(1, len(fields(row_type)) + 1))
    return f"INSERT INTO {table} ({_columns(row_type)}) VALUES ({placeholders})"  # noqa: S608


_SELECT_CLIENT = f"SELECT {_columns(OAuthClient)} FROM oauth_clients"  # noqa: S608
_SELECT_REQUEST = f"SELECT {_columns(AuthorizationRequest)} FROM authorization_requests"  # noqa: S608
_SELECT_CODE = f"SELECT {_columns(AuthorizationCode)} FROM authorization_codes"  # noqa: S608
_SELECT_FAMILY = f"SELECT {_columns(TokenFamily)} FROM token_families"  # noqa: S608
_SELECT_ACCESS = f"SELECT {_columns(AccessToken)} FROM access_tokens"  # noqa: S608
_SELECT_REFRESH = f"SELECT {_columns(RefreshToken)} FROM refresh_tokens"  # noqa: S608
_SELECT_CONSENT = f"SELECT {_columns(Consent)} FROM consents"  # noqa: S608
_SELECT_BROWSER = f"SELECT {_columns(BrowserSession)} FROM browser_sessions"  # noqa: S608

_INSERT_CLIENT = _insert("oauth_clients", OAuthClient) + " ON CONFLICT (metadata_hash) DO NOTHING"
_INSERT_REQUEST = _insert("authorization_requests", AuthorizationRequest)
_INSERT_CODE = _insert("authorization_codes", AuthorizationCode)
_INSERT_FAMILY = _insert("token_families", TokenFamily)
_INSERT_ACCESS = _insert("access_tokens", AccessToken)
_INSERT_REFRESH = _insert("refresh_tokens", RefreshToken)
_INSERT_BROWSER = _insert("browser_sessions", BrowserSession)
_UPSERT_CONSENT = _insert("consents", Consent) + (
    " ON CONFLICT (user_id, client_id, redirect_uri, resource) "
    "DO UPDATE SET scope = excluded.scope, updated_at = excluded.updated_at"
)


class PostgresOAuthStores:
    """``ClientStore``, ``AuthorizationRequestStore``, ``GrantStore``, ``ConsentStore`` and ``BrowserSessionStore``."""

    if TYPE_CHECKING:
        # Provided by PostgresStorage.
        def _connection(self) -> AbstractAsyncContextManager[Any]: ...
        async def _execute(self, sql: str, *args: Any) -> str: ...
        async def _execute_retrying(self, sql: str, *args: Any) -> str: ...
        async def _fetch(self, sql: str, *args: Any) -> list[Any]: ...
        async def _fetchrow(self, sql: str, *args: Any) -> Any: ...

    # Clients

    async def create_client(self, client: OAuthClient) -> OAuthClient:
        async with self._connection() as conn:
            # Two statements: the SELECT's fresh snapshot sees a row a concurrent registration just committed.
            # Should the reaper delete that row in between, insert again.
            while True:
                await conn.execute(_INSERT_CLIENT, *_client_params(client))
                row = await conn.fetchrow(_SELECT_CLIENT + " WHERE metadata_hash = $1", client.metadata_hash)
                if row is not None:
                    return _client(row)

    async def get_client(self, client_id: str) -> OAuthClient | None:
        row = await self._fetchrow(_SELECT_CLIENT + " WHERE client_id = $1", client_id)
        return _client(row) if row is not None else None

    async def mark_client_used(self, client_id: str, now: float) -> None:
        await self._execute(
            "UPDATE oauth_clients SET last_used_at = $2 "
            "WHERE client_id = $1 AND (last_used_at IS NULL OR last_used_at < $2)",
            client_id,
            now,
        )

    async def delete_unused_clients(self, *, created_before: float) -> int:
        status = await self._execute(
            "DELETE FROM oauth_clients WHERE last_used_at IS NULL AND created_at < $1", created_before
        )
        return _row_count(status)

    async def count_clients(self) -> int:
        rows = await self._fetch("SELECT COUNT(*) FROM oauth_clients")
        return int(rows[0][0])

    # Authorization requests

    async def create_authorization_request(self, request: AuthorizationRequest) -> None:
        await self._execute(_INSERT_REQUEST, *astuple(request))

    async def get_authorization_request(self, request_hash: str) -> AuthorizationRequest | None:
        row = await self._fetchrow(_SELECT_REQUEST + " WHERE request_hash = $1", request_hash)
        return AuthorizationRequest(*row) if row is not None else None

    async def set_authorization_user(self, request_hash: str, user_id: str) -> bool:
        status = await self._execute(
            "UPDATE authorization_requests SET user_id = $2 WHERE request_hash = $1 AND completed_at IS NULL",
            request_hash,
            user_id,
        )
        return _row_count(status) == 1

    async def complete_authorization_request(self, request_hash: str, *, now: float) -> bool:
        status = await self._execute(
            "UPDATE authorization_requests SET completed_at = $2 WHERE request_hash = $1 AND completed_at IS NULL",
            request_hash,
            now,
        )
        return _row_count(status) == 1

    async def purge_authorization_requests(self, *, expired_before: float) -> int:
        status = await self._execute("DELETE FROM authorization_requests WHERE expires_at < $1", expired_before)
        return _row_count(status)

    # Codes and token families

    async def create_code(self, code: AuthorizationCode) -> None:
        await self._execute(_INSERT_CODE, *astuple(code))

    async def get_code(self, code_hash: str) -> AuthorizationCode | None:
        row = await self._fetchrow(_SELECT_CODE + " WHERE code_hash = $1", code_hash)
        return AuthorizationCode(*row) if row is not None else None

    async def record_code_failure(self, code_hash: str, *, max_failures: int, now: float) -> None:
        await self._execute(
            "UPDATE authorization_codes SET failed_attempts = failed_attempts + 1, "
            "used_at = CASE WHEN used_at IS NULL AND failed_attempts + 1 >= $2 THEN $3 ELSE used_at END "
            "WHERE code_hash = $1",
            code_hash,
            max_failures,
            now,
        )

    async def redeem_code(
        self,
        code_hash: str,
        *,
        now: float,
        family: TokenFamily,
        access: AccessToken,
        refresh: RefreshToken | None,
    ) -> bool:
        async with self._connection() as conn, conn.transaction():
            claimed = await conn.fetchval(
                "UPDATE authorization_codes SET used_at = $2, family_id = $3 "
                "WHERE code_hash = $1 AND used_at IS NULL AND expires_at > $2 RETURNING 1",
                code_hash,
                now,
                family.family_id,
            )
            if claimed is None:
                return False
            await conn.execute(_INSERT_FAMILY, *astuple(family))
            await conn.execute(_INSERT_ACCESS, *astuple(access))
            if refresh is not None:
                await conn.execute(_INSERT_REFRESH, *astuple(refresh))
            return True

    async def get_family(self, family_id: str) -> TokenFamily | None:
        row = await self._fetchrow(_SELECT_FAMILY + " WHERE family_id = $1", family_id)
        return TokenFamily(*row) if row is not None else None

    async def get_access_token(self, token_hash: str) -> AccessToken | None:
        row = await self._fetchrow(_SELECT_ACCESS + " WHERE token_hash = $1", token_hash)
        return AccessToken(*row) if row is not None else None

    async def get_refresh_token(self, token_hash: str) -> RefreshToken | None:
        row = await self._fetchrow(_SELECT_REFRESH + " WHERE token_hash = $1", token_hash)
        return RefreshToken(*row) if row is not None else None

    async def rotate_refresh_token(
        self,
        token_hash: str,
        *,
        now: float,
        access: AccessToken,
        refresh: RefreshToken,
        grace_until: float,
        grace_blob: bytes,
    ) -> RotateOutcome:
        async with self._connection() as conn, conn.transaction():
            # Lock the family first (as revoke_family does), then claim the token.
            family = await conn.fetchrow(
                "SELECT f.family_id, f.revoked_at, f.expires_at FROM token_families AS f "
                "JOIN refresh_tokens AS r ON r.family_id = f.family_id WHERE r.token_hash = $1 "
                "FOR NO KEY UPDATE OF f",
                token_hash,
            )
            if family is None or family["revoked_at"] is not None or family["expires_at"] <= now:
                return RotateOutcome.DEAD
            claimed = await conn.fetchval(
                "UPDATE refresh_tokens SET used_at = $2, grace_until = $3, grace_blob = $4 "
                "WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2 RETURNING 1",
                token_hash,
                now,
                grace_until,
                grace_blob,
            )
            if claimed is None:
                used_at = await conn.fetchval("SELECT used_at FROM refresh_tokens WHERE token_hash = $1", token_hash)
                return RotateOutcome.RETIRED if used_at is not None else RotateOutcome.DEAD
            await conn.execute(_INSERT_ACCESS, *astuple(access))
            await conn.execute(_INSERT_REFRESH, *astuple(refresh))
            await conn.execute(
                "UPDATE token_families SET last_used_at = GREATEST(last_used_at, $2) WHERE family_id = $1",
                family["family_id"],
                now,
            )
            return RotateOutcome.ROTATED

    async def count_grace_replay(self, token_hash: str, *, max_replays: int, now: float) -> bool:
        status = await self._execute(
            "UPDATE refresh_tokens AS r SET grace_replays = r.grace_replays + 1 "
            "WHERE r.token_hash = $1 AND r.used_at IS NOT NULL AND r.grace_blob IS NOT NULL AND r.grace_until > $2 "
            "AND r.grace_replays < $3 AND EXISTS (SELECT 1 FROM token_families AS f "
            "WHERE f.family_id = r.family_id AND f.revoked_at IS NULL AND f.expires_at > $2)",
            token_hash,
            now,
            max_replays,
        )
        return _row_count(status) == 1

    async def revoke_family(self, family_id: str, *, now: float, reason: str) -> bool:
        async with self._connection() as conn, conn.transaction():
            revoked = await conn.fetchval(
                "UPDATE token_families SET revoked_at = $2, revoked_reason = $3 "
                "WHERE family_id = $1 AND revoked_at IS NULL RETURNING 1",
                family_id,
                now,
                reason,
            )
            if revoked is None:
                return False
            await _kill_family_tokens(conn, [family_id], now)
            return True

    async def revoke_access_token(self, token_hash: str, *, now: float) -> bool:
        status = await self._execute(
            "UPDATE access_tokens SET revoked_at = $2 WHERE token_hash = $1 AND revoked_at IS NULL", token_hash, now
        )
        return _row_count(status) == 1

    async def list_families(self, user_id: str, *, include_revoked: bool = False) -> list[TokenFamily]:
        rows = await self._fetch(
            _SELECT_FAMILY
            + " WHERE user_id = $1 AND ($2 OR revoked_at IS NULL) ORDER BY created_at DESC, family_id DESC",
            user_id,
            include_revoked,
        )
        return [TokenFamily(*row) for row in rows]

    async def revoke_user_families(
        self, user_id: str, *, now: float, reason: str, client_id: str | None = None, redirect_uri: str | None = None
    ) -> list[str]:
        async with self._connection() as conn, conn.transaction():
            # Codes first: waits for a redemption in flight, whose family the next statement then sees.
            await conn.execute(
                "UPDATE authorization_codes SET used_at = $2 WHERE code_hash IN ("
                "SELECT code_hash FROM authorization_codes WHERE user_id = $1 AND used_at IS NULL "
                "AND ($3::text IS NULL OR client_id = $3::text) AND ($4::text IS NULL OR redirect_uri = $4::text) "
                "ORDER BY code_hash FOR NO KEY UPDATE)",
                user_id,
                now,
                client_id,
                redirect_uri,
            )
            rows = await conn.fetch(
                "SELECT family_id FROM token_families WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2 "
                "AND ($3::text IS NULL OR client_id = $3::text) AND ($4::text IS NULL OR redirect_uri = $4::text) "
                "ORDER BY family_id FOR NO KEY UPDATE",
                user_id,
                now,
                client_id,
                redirect_uri,
            )
            family_ids = [str(row[0]) for row in rows]
            if family_ids:
                await conn.execute(
                    "UPDATE token_families SET revoked_at = $2, revoked_reason = $3 WHERE family_id = ANY($1::text[])",
                    family_ids,
                    now,
                    reason,
                )
                await _kill_family_tokens(conn, family_ids, now)
            return family_ids

    async def touch_families(self, last_used: Mapping[str, float]) -> None:
        if not last_used:
            return
        # The locking sub-select takes the row locks in family_id order (no deadlock with another batch).
        await self._execute_retrying(
            "UPDATE token_families AS f SET last_used_at = s.used_at FROM ("
            "SELECT t.family_id, v.used_at FROM token_families AS t "
            "JOIN unnest($1::text[], $2::double precision[]) AS v(family_id, used_at) ON t.family_id = v.family_id "
            "WHERE t.last_used_at IS NULL OR t.last_used_at < v.used_at "
            "ORDER BY t.family_id FOR NO KEY UPDATE OF t) AS s "
            "WHERE f.family_id = s.family_id AND (f.last_used_at IS NULL OR f.last_used_at < s.used_at)",
            list(last_used.keys()),
            list(last_used.values()),
        )

    async def purge_expired_tokens(self, *, before: float) -> int:
        deleted = 0
        async with self._connection() as conn, conn.transaction():
            for statement in _PURGE:
                deleted += _row_count(await conn.execute(statement, before))
        return deleted

    # Consents

    async def get_consent(self, user_id: str, client_id: str, redirect_uri: str, resource: str) -> Consent | None:
        row = await self._fetchrow(
            _SELECT_CONSENT + " WHERE user_id = $1 AND client_id = $2 AND redirect_uri = $3 AND resource = $4",
            user_id,
            client_id,
            redirect_uri,
            resource,
        )
        return Consent(*row) if row is not None else None

    async def save_consent(self, consent: Consent) -> None:
        await self._execute(_UPSERT_CONSENT, *astuple(consent))

    async def forget_consents(self, user_id: str, client_id: str, redirect_uri: str | None = None) -> int:
        status = await self._execute(
            "DELETE FROM consents "
            "WHERE user_id = $1 AND client_id = $2 AND ($3::text IS NULL OR redirect_uri = $3::text)",
            user_id,
            client_id,
            redirect_uri,
        )
        return _row_count(status)

    # Browser sessions

    async def create_browser_session(self, session: BrowserSession) -> None:
        await self._execute(_INSERT_BROWSER, *astuple(session))

    async def get_browser_session(self, session_hash: str) -> BrowserSession | None:
        row = await self._fetchrow(_SELECT_BROWSER + " WHERE session_hash = $1", session_hash)
        return BrowserSession(*row) if row is not None else None

    async def touch_browser_session(self, session_hash: str, now: float) -> None:
        await self._execute(
            "UPDATE browser_sessions SET last_seen_at = $2 WHERE session_hash = $1 AND last_seen_at < $2",
            session_hash,
            now,
        )

    async def revoke_browser_session(self, session_hash: str, *, now: float) -> None:
        await self._execute(
            "UPDATE browser_sessions SET revoked_at = $2 WHERE session_hash = $1 AND revoked_at IS NULL",
            session_hash,
            now,
        )

    async def revoke_user_browser_sessions(self, user_id: str, *, now: float) -> int:
        status = await self._execute(
            "UPDATE browser_sessions SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL", user_id, now
        )
        return _row_count(status)


_PURGE = (
    "DELETE FROM authorization_codes WHERE expires_at < $1 "
    "OR family_id IN (SELECT family_id FROM token_families WHERE expires_at < $1)",
    "DELETE FROM access_tokens WHERE expires_at < $1 "
    "OR family_id IN (SELECT family_id FROM token_families WHERE expires_at < $1)",
    "DELETE FROM refresh_tokens WHERE expires_at < $1 "
    "OR family_id IN (SELECT family_id FROM token_families WHERE expires_at < $1)",
    "DELETE FROM token_families WHERE family_id IN ("
    "SELECT family_id FROM token_families WHERE expires_at < $1 ORDER BY family_id FOR UPDATE)",
)
"""Tokens that expired, then whole families that ended (their remaining rows first, so the count is exact)."""


async def _kill_family_tokens(conn: Any, family_ids: list[str], now: float) -> None:
    """Revoke the access tokens and retire the refresh tokens (grace blobs erased) of revoked families."""
    await conn.execute(
        "UPDATE access_tokens SET revoked_at = $2 WHERE family_id = ANY($1::text[]) AND revoked_at IS NULL",
        family_ids,
        now,
    )
    await conn.execute(
        "UPDATE refresh_tokens SET used_at = COALESCE(used_at, $2), grace_blob = NULL "
        "WHERE family_id = ANY($1::text[])",
        family_ids,
        now,
    )


def _row_count(status: str) -> int:
    """The row count at the end of a command tag such as ``UPDATE 1`` or ``DELETE 3``."""
    return int(status.rsplit(" ", 1)[-1])


def _client_params(client: OAuthClient) -> tuple[Any, ...]:
    values = list(astuple(client))
    for index in (2, 3, 4):  # redirect_uris, grant_types, response_types
        values[index] = json.dumps(list(values[index]))
    return tuple(values)


def _client(row: Any) -> OAuthClient:
    values = list(row)
    for index in (2, 3, 4):
        values[index] = tuple(json.loads(values[index]))
    return OAuthClient(*values)
