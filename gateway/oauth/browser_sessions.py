"""Browser login sessions and the browser-binding cookie.

The session cookie holds a random id; only its SHA-256 is stored, with idle and absolute expiry. A new
id is issued at every login (no fixation). The browser-binding cookie ties a pending authorization to
the browser that started it, so a transaction started by someone else cannot be completed here.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from aiohttp import web

from gateway.clock import Clock
from gateway.errors import ServiceUnavailable
from gateway.secrets_hashing import secret_hash
from gateway.storage.base import StorageUnavailable, User, UserStore
from gateway.storage.oauth import BrowserSession, BrowserSessionStore
from gateway.web_pages import clear_cookie, set_cookie

SESSION_COOKIE = "__Host-gw_session"
BROWSER_COOKIE = "__Host-gw_browser"
MAX_COOKIE_LENGTH = 128


def _cookie(request: web.Request, name: str) -> str | None:
    """The cookie's value, or None when absent or not one the gateway could have set (the ids are printable
    ASCII; undecodable bytes arrive as surrogates, which would fail hashing)."""
    value = request.cookies.get(name)
    if value is None or not 0 < len(value) <= MAX_COOKIE_LENGTH or not (value.isascii() and value.isprintable()):
        return None
    return value


def session_cookie(request: web.Request) -> str | None:
    return _cookie(request, SESSION_COOKIE)


def browser_id(request: web.Request) -> str | None:
    return _cookie(request, BROWSER_COOKIE)


def new_browser_id() -> str:
    return secrets.token_urlsafe(32)


def bind_browser(response: web.StreamResponse, value: str) -> None:
    set_cookie(response, BROWSER_COOKIE, value)


@dataclass(frozen=True)
class LoginSessions:
    store: BrowserSessionStore
    users: UserStore
    clock: Clock
    idle_ttl: float
    absolute_ttl: float

    async def current_user(self, request: web.Request) -> User | None:
        """The signed-in, active user of this browser, or None (expired, revoked or absent sessions)."""
        value = _cookie(request, SESSION_COOKIE)
        if value is None:
            return None
        now = self.clock.now()
        try:
            session = await self.store.get_browser_session(secret_hash(value))
            if (
                session is None
                or session.revoked_at is not None
                or now >= session.expires_at
                or now - session.last_seen_at >= self.idle_ttl
            ):
                return None
            user = await self.users.get_user(session.user_id)
            if user is None or not user.active:
                return None
            await self.store.touch_browser_session(session.session_hash, now)
        except StorageUnavailable as exc:
            raise ServiceUnavailable("Sign-in service unavailable, retry shortly") from exc
        return user

    async def start(self, request: web.Request, response: web.StreamResponse, user: User) -> None:
        """Sign the user in with a fresh session id; any session this browser had is ended."""
        now = self.clock.now()
        old = _cookie(request, SESSION_COOKIE)
        value = secrets.token_urlsafe(32)
        try:
            if old is not None:
                await self.store.revoke_browser_session(secret_hash(old), now=now)
            await self.store.create_browser_session(
                BrowserSession(
                    session_hash=secret_hash(value),
                    user_id=user.id,
                    created_at=now,
                    last_seen_at=now,
                    expires_at=now + self.absolute_ttl,
                )
            )
        except StorageUnavailable as exc:
            raise ServiceUnavailable("Sign-in service unavailable, retry shortly") from exc
        set_cookie(response, SESSION_COOKIE, value)

    async def end(self, request: web.Request, response: web.StreamResponse) -> None:
        value = _cookie(request, SESSION_COOKIE)
        if value is not None:
            await self.store.revoke_browser_session(secret_hash(value), now=self.clock.now())
        clear_cookie(response, SESSION_COOKIE)


LOGIN_SESSIONS = web.AppKey("login_sessions", LoginSessions)
