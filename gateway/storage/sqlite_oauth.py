"""The OAuth stores of :mod:`gateway.storage.oauth` on SQLite, mixed into ``SqliteStorage``.

Every multi-statement change runs in one ``BEGIN IMMEDIATE`` transaction on the single writer (see
``SqliteStorage._write``), so claims made by a conditional ``UPDATE`` cannot interleave with another writer,
whether in this process or in another process sharing the file.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import astuple, fields
from typing import TYPE_CHECKING, Any, TypeVar

import aiosqlite

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

T = TypeVar("T")


def _columns(row_type: type) -> str:
    return ", ".join(field.name for field in fields(row_type))


def _insert(table: str, row_type: type) -> str:
    count = len(fields(row_type))
    return f"INSERT INTO {table} ({_columns(row_type)}) VALUES ({', '.join('?' * count)})"  # noqa: S608


_SELECT_CLIENT = f"SELECT {_columns(OAuthClient)} FROM oauth_clients"  # noqa: S608
_SELECT_REQUEST = f"SELECT {_columns(AuthorizationRequest)} FROM authorization_requests"  # noqa: S608
_SELECT_CODE = f"SELECT {_columns(AuthorizationCode)} FROM authorization_codes"  # noqa: S608
_SELECT_FAMILY = f"SELECT {_columns(TokenFamily)} FROM token_families"  # noqa: S608
_SELECT_ACCESS = f"SELECT {_columns(AccessToken)} FROM access_tokens"  # noqa: S608
_SELECT_REFRESH = f"SELECT {_columns(RefreshToken)} FROM refresh_tokens"  # noqa: S608
_SELECT_CONSENT = f"SELECT {_columns(Consent)} FROM consents"  # noqa: S608
_SELECT_BROWSER = f"SELECT {_columns(BrowserSession)} FROM browser_sessions"  # noqa: S608

_INSERT_CLIENT = _insert("oauth_clients", OAuthClient) + " ON CONFLICT (metadata_hash) DO NOTHING"
_INSERT_FAMILY = _insert("token_families", TokenFamily)
_INSERT_ACCESS = _insert("access_tokens", AccessToken)
_INSERT_REFRESH = _insert("refresh_tokens", RefreshToken)


class SqliteOAuthStores:
    """``ClientStore``, ``AuthorizationRequestStore``, ``GrantStore``, ``ConsentStore`` and ``BrowserSessionStore``."""

    if TYPE_CHECKING:
        # Provided by SqliteStorage.
        async def _fetch(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]: ...
        async def _execute(self, sql: str, params: Iterable[Any] = ()) -> int: ...
        async def _write(self, work: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T: ...

    # Clients

    async def create_client(self, client: OAuthClient) -> OAuthClient:
        async def create(conn: aiosqlite.Connection) -> OAuthClient:
            await _exec(conn, _INSERT_CLIENT, _client_params(client))
            row = await _one(conn, _SELECT_CLIENT + " WHERE metadata_hash = ?", (client.metadata_hash,))
            assert row is not None  # inserted, or already there: one transaction
            return _client(row)

        return await self._write(create)

    async def get_client(self, client_id: str) -> OAuthClient | None:
        rows = await self._fetch(_SELECT_CLIENT + " WHERE client_id = ?", (client_id,))
        return _client(rows[0]) if rows else None

    async def mark_client_used(self, client_id: str, now: float) -> None:
        await self._execute(
            "UPDATE oauth_clients SET last_used_at = ? "
            "WHERE client_id = ? AND (last_used_at IS NULL OR last_used_at < ?)",
            (now, client_id, now),
        )

    async def delete_unused_clients(self, *, created_before: float) -> int:
        return await self._execute(
            "DELETE FROM oauth_clients WHERE last_used_at IS NULL AND created_at < ?", (created_before,)
        )

    async def count_clients(self) -> int:
        rows = await self._fetch("SELECT COUNT(*) FROM oauth_clients")
        return int(rows[0][0])

    # Authorization requests

    async def create_authorization_request(self, request: AuthorizationRequest) -> None:
        await self._execute(_insert("authorization_requests", AuthorizationRequest), astuple(request))

    async def get_authorization_request(self, request_hash: str) -> AuthorizationRequest | None:
        rows = await self._fetch(_SELECT_REQUEST + " WHERE request_hash = ?", (request_hash,))
        return _request(rows[0]) if rows else None

    async def set_authorization_user(self, request_hash: str, user_id: str) -> bool:
        changed = await self._execute(
            "UPDATE authorization_requests SET user_id = ? WHERE request_hash = ? AND completed_at IS NULL",
            (user_id, request_hash),
        )
        return changed == 1

    async def complete_authorization_request(self, request_hash: str, *, now: float) -> bool:
        changed = await self._execute(
            "UPDATE authorization_requests SET completed_at = ? WHERE request_hash = ? AND completed_at IS NULL",
            (now, request_hash),
        )
        return changed == 1

    async def purge_authorization_requests(self, *, expired_before: float) -> int:
        return await self._execute("DELETE FROM authorization_requests WHERE expires_at < ?", (expired_before,))

    # Codes and token families

    async def create_code(self, code: AuthorizationCode) -> None:
        await self._execute(_insert("authorization_codes", AuthorizationCode), astuple(code))

    async def get_code(self, code_hash: str) -> AuthorizationCode | None:
        rows = await self._fetch(_SELECT_CODE + " WHERE code_hash = ?", (code_hash,))
        return _code(rows[0]) if rows else None

    async def record_code_failure(self, code_hash: str, *, max_failures: int, now: float) -> None:
        await self._execute(
            "UPDATE authorization_codes SET failed_attempts = failed_attempts + 1, "
            "used_at = CASE WHEN used_at IS NULL AND failed_attempts + 1 >= ? THEN ? ELSE used_at END "
            "WHERE code_hash = ?",
            (max_failures, now, code_hash),
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
        async def redeem(conn: aiosqlite.Connection) -> bool:
            claimed = await _exec(
                conn,
                "UPDATE authorization_codes SET used_at = ?, family_id = ? "
                "WHERE code_hash = ? AND used_at IS NULL AND expires_at > ?",
                (now, family.family_id, code_hash, now),
            )
            if claimed != 1:
                return False
            await _exec(conn, _INSERT_FAMILY, astuple(family))
            await _exec(conn, _INSERT_ACCESS, astuple(access))
            if refresh is not None:
                await _exec(conn, _INSERT_REFRESH, astuple(refresh))
            return True

        return await self._write(redeem)

    async def get_family(self, family_id: str) -> TokenFamily | None:
        rows = await self._fetch(_SELECT_FAMILY + " WHERE family_id = ?", (family_id,))
        return TokenFamily(*rows[0]) if rows else None

    async def get_access_token(self, token_hash: str) -> AccessToken | None:
        rows = await self._fetch(_SELECT_ACCESS + " WHERE token_hash = ?", (token_hash,))
        return AccessToken(*rows[0]) if rows else None

    async def get_refresh_token(self, token_hash: str) -> RefreshToken | None:
        rows = await self._fetch(_SELECT_REFRESH + " WHERE token_hash = ?", (token_hash,))
        return RefreshToken(*rows[0]) if rows else None

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
        async def rotate(conn: aiosqlite.Connection) -> RotateOutcome:
            claimed = await _exec(
                conn,
                "UPDATE refresh_tokens SET used_at = ?, grace_until = ?, grace_blob = ? "
                "WHERE token_hash = ? AND used_at IS NULL AND expires_at > ? AND EXISTS (SELECT 1 FROM token_families "
                "AS f WHERE f.family_id = refresh_tokens.family_id AND f.revoked_at IS NULL AND f.expires_at > ?)",
                (now, grace_until, grace_blob, token_hash, now, now),
            )
            if claimed != 1:
                return await _failed_rotation(conn, token_hash, now)
            await _exec(conn, _INSERT_ACCESS, astuple(access))
            await _exec(conn, _INSERT_REFRESH, astuple(refresh))
            await _exec(
                conn,
                "UPDATE token_families SET last_used_at = MAX(COALESCE(last_used_at, ?), ?) "
                "WHERE family_id = (SELECT family_id FROM refresh_tokens WHERE token_hash = ?)",
                (now, now, token_hash),
            )
            return RotateOutcome.ROTATED

        return await self._write(rotate)

    async def count_grace_replay(self, token_hash: str, *, max_replays: int, now: float) -> bool:
        changed = await self._execute(
            "UPDATE refresh_tokens SET grace_replays = grace_replays + 1 "
            "WHERE token_hash = ? AND used_at IS NOT NULL AND grace_blob IS NOT NULL AND grace_until > ? "
            "AND grace_replays < ? AND EXISTS (SELECT 1 FROM token_families AS f "
            "WHERE f.family_id = refresh_tokens.family_id AND f.revoked_at IS NULL AND f.expires_at > ?)",
            (token_hash, now, max_replays, now),
        )
        return changed == 1

    async def revoke_family(self, family_id: str, *, now: float, reason: str) -> bool:
        async def revoke(conn: aiosqlite.Connection) -> bool:
            changed = await _exec(
                conn,
                "UPDATE token_families SET revoked_at = ?, revoked_reason = ? "
                "WHERE family_id = ? AND revoked_at IS NULL",
                (now, reason, family_id),
            )
            if changed != 1:
                return False
            await _kill_family_tokens(conn, [family_id], now)
            return True

        return await self._write(revoke)

    async def revoke_access_token(self, token_hash: str, *, now: float) -> bool:
        changed = await self._execute(
            "UPDATE access_tokens SET revoked_at = ? WHERE token_hash = ? AND revoked_at IS NULL", (now, token_hash)
        )
        return changed == 1

    async def list_families(self, user_id: str, *, include_revoked: bool = False) -> list[TokenFamily]:
        live_only = "" if include_revoked else " AND revoked_at IS NULL"
        rows = await self._fetch(
            _SELECT_FAMILY + f" WHERE user_id = ?{live_only} ORDER BY created_at DESC, family_id DESC", (user_id,)
        )
        return [TokenFamily(*row) for row in rows]

    async def revoke_user_families(
        self, user_id: str, *, now: float, reason: str, client_id: str | None = None, redirect_uri: str | None = None
    ) -> list[str]:
        scope = (client_id, client_id, redirect_uri, redirect_uri)

        async def revoke(conn: aiosqlite.Connection) -> list[str]:
            await _exec(
                conn,
                "UPDATE authorization_codes SET used_at = ? WHERE user_id = ? AND used_at IS NULL "
                "AND (? IS NULL OR client_id = ?) AND (? IS NULL OR redirect_uri = ?)",
                (now, user_id, *scope),
            )
            async with conn.execute(
                "UPDATE token_families SET revoked_at = ?, revoked_reason = ? "
                "WHERE user_id = ? AND revoked_at IS NULL AND expires_at > ? "
                "AND (? IS NULL OR client_id = ?) AND (? IS NULL OR redirect_uri = ?) RETURNING family_id",
                (now, reason, user_id, now, *scope),
            ) as cursor:
                family_ids = sorted(str(row[0]) for row in await cursor.fetchall())
            await _kill_family_tokens(conn, family_ids, now)
            return family_ids

        return await self._write(revoke)

    async def touch_families(self, last_used: Mapping[str, float]) -> None:
        if not last_used:
            return
        rows = [(used_at, family_id, used_at) for family_id, used_at in sorted(last_used.items())]

        async def touch(conn: aiosqlite.Connection) -> None:
            await conn.executemany(
                "UPDATE token_families SET last_used_at = ? "
                "WHERE family_id = ? AND (last_used_at IS NULL OR last_used_at < ?)",
                rows,
            )

        await self._write(touch)

    async def purge_expired_tokens(self, *, before: float) -> int:
        ended = "family_id IN (SELECT family_id FROM token_families WHERE expires_at < ?)"

        async def purge(conn: aiosqlite.Connection) -> int:
            deleted = 0
            for table in ("authorization_codes", "access_tokens", "refresh_tokens"):
                sql = f"DELETE FROM {table} WHERE expires_at < ? OR {ended}"  # noqa: S608
                deleted += await _exec(conn, sql, (before, before))
            return deleted + await _exec(conn, "DELETE FROM token_families WHERE expires_at < ?", (before,))

        return await self._write(purge)

    # Consents

    async def get_consent(self, user_id: str, client_id: str, redirect_uri: str, resource: str) -> Consent | None:
        rows = await self._fetch(
            _SELECT_CONSENT + " WHERE user_id = ? AND client_id = ? AND redirect_uri = ? AND resource = ?",
            (user_id, client_id, redirect_uri, resource),
        )
        return Consent(*rows[0]) if rows else None

    async def save_consent(self, consent: Consent) -> None:
        await self._execute(
            _insert("consents", Consent) + " ON CONFLICT (user_id, client_id, redirect_uri, resource) "
            "DO UPDATE SET scope = excluded.scope, updated_at = excluded.updated_at",
            astuple(consent),
        )

    async def forget_consents(self, user_id: str, client_id: str, redirect_uri: str | None = None) -> int:
        return await self._execute(
            "DELETE FROM consents WHERE user_id = ? AND client_id = ? AND (? IS NULL OR redirect_uri = ?)",
            (user_id, client_id, redirect_uri, redirect_uri),
        )

    # Browser sessions

    async def create_browser_session(self, session: BrowserSession) -> None:
        await self._execute(_insert("browser_sessions", BrowserSession), astuple(session))

    async def get_browser_session(self, session_hash: str) -> BrowserSession | None:
        rows = await self._fetch(_SELECT_BROWSER + " WHERE session_hash = ?", (session_hash,))
        return BrowserSession(*rows[0]) if rows else None

    async def touch_browser_session(self, session_hash: str, now: float) -> None:
        await self._execute(
            "UPDATE browser_sessions SET last_seen_at = ? WHERE session_hash = ? AND last_seen_at < ?",
            (now, session_hash, now),
        )

    async def revoke_browser_session(self, session_hash: str, *, now: float) -> None:
        await self._execute(
            "UPDATE browser_sessions SET revoked_at = ? WHERE session_hash = ? AND revoked_at IS NULL",
            (now, session_hash),
        )

    async def revoke_user_browser_sessions(self, user_id: str, *, now: float) -> int:
        return await self._execute(
            "UPDATE browser_sessions SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL", (now, user_id)
        )


async def _exec(conn: aiosqlite.Connection, sql: str, params: Iterable[Any] = ()) -> int:
    async with conn.execute(sql, tuple(params)) as cursor:
        return cursor.rowcount


async def _one(conn: aiosqlite.Connection, sql: str, params: Iterable[Any] = ()) -> Any:
    async with conn.execute(sql, tuple(params)) as cursor:
        return await cursor.fetchone()


async def _failed_rotation(conn: aiosqlite.Connection, token_hash: str, now: float) -> RotateOutcome:
    """Why a rotation claim failed: RETIRED for an already rotated token of a live family, else DEAD."""
    row = await _one(
        conn,
        "SELECT r.used_at, f.revoked_at, f.expires_at FROM refresh_tokens AS r "
        "JOIN token_families AS f ON f.family_id = r.family_id WHERE r.token_hash = ?",
        (token_hash,),
    )
    if row is None:
        return RotateOutcome.DEAD
    used_at, family_revoked_at, family_expires_at = row
    if family_revoked_at is not None or family_expires_at <= now:
        return RotateOutcome.DEAD
    return RotateOutcome.RETIRED if used_at is not None else RotateOutcome.DEAD


async def _kill_family_tokens(conn: aiosqlite.Connection, family_ids: list[str], now: float) -> None:
    """Revoke the access tokens and retire the refresh tokens (grace blobs erased) of revoked families."""
    if not family_ids:
        return
    await conn.executemany(
        "UPDATE access_tokens SET revoked_at = ? WHERE family_id = ? AND revoked_at IS NULL",
        [(now, family_id) for family_id in family_ids],
    )
    await conn.executemany(
        "UPDATE refresh_tokens SET used_at = COALESCE(used_at, ?), grace_blob = NULL WHERE family_id = ?",
        [(now, family_id) for family_id in family_ids],
    )


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


def _request(row: Any) -> AuthorizationRequest:
    values = list(row)
    values[5] = bool(values[5])  # redirect_uri_given
    return AuthorizationRequest(*values)


def _code(row: Any) -> AuthorizationCode:
    values = list(row)
    values[4] = bool(values[4])  # redirect_uri_given
    return AuthorizationCode(*values)
