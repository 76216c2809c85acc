"""MCP sessions bound to the principal that opened them.

A session id is not a credential, but whoever holds one can join a conversation; so the gateway
records who opened each session (by the id's SHA-256, never the id) and answers 404 to anyone else,
forwarding nothing. Bindings never change once made, so they are cached freely.
"""

from __future__ import annotations

import re
from collections import OrderedDict

from gateway.clock import Clock
from gateway.credentials import Principal
from gateway.errors import ServiceUnavailable, SessionNotFound
from gateway.secrets_hashing import secret_hash
from gateway.storage.base import McpSession, McpSessionStore, StorageUnavailable

STREAMABLE = "streamable"
LEGACY_SSE = "legacy_sse"
MAX_SESSION_ID_LENGTH = 256
_VISIBLE_ASCII = re.compile(r"[\x21-\x7e]+")


class SessionBindings:
    def __init__(self, store: McpSessionStore, clock: Clock, *, cache_size: int = 50_000) -> None:
        self._store = store
        self._clock = clock
        self._size = cache_size
        self._cache: OrderedDict[str, McpSession] = OrderedDict()

    async def bind(self, session_id: str, principal: Principal, *, kind: str, upstream_path: str = "") -> None:
        session = McpSession(
            session_hash=secret_hash(session_id),
            user_id=principal.user_id,
            kind=kind,
            upstream_path=upstream_path,
            created_at=self._clock.now(),
        )
        try:
            await self._store.bind_session(session)
            stored = await self._store.get_session(session.session_hash)
        except StorageUnavailable as exc:
            raise ServiceUnavailable("Session store unavailable, retry shortly") from exc
        if stored is not None:
            self._remember(stored)

    async def require(self, session_id: str, principal: Principal, *, kind: str) -> McpSession:
        """The binding, when this principal opened the session; otherwise ``SessionNotFound``."""
        # MCP transports: a session id is visible ASCII (0x21-0x7E); anything else was never issued.
        if not session_id or len(session_id) > MAX_SESSION_ID_LENGTH or not _VISIBLE_ASCII.fullmatch(session_id):
            raise SessionNotFound("Session not found")
        session_hash = secret_hash(session_id)
        session = self._cache.get(session_hash)
        if session is None:
            try:
                session = await self._store.get_session(session_hash)
            except StorageUnavailable as exc:
                raise ServiceUnavailable("Session store unavailable, retry shortly") from exc
            if session is not None:
                self._remember(session)
        if session is None or session.user_id != principal.user_id or session.kind != kind:
            raise SessionNotFound("Session not found")
        return session

    async def forget(self, session_id: str) -> None:
        session_hash = secret_hash(session_id)
        self._cache.pop(session_hash, None)
        try:
            await self._store.forget_session(session_hash)
        except StorageUnavailable as exc:
            raise ServiceUnavailable("Session store unavailable, retry shortly") from exc

    def _remember(self, session: McpSession) -> None:
        self._cache[session.session_hash] = session
        self._cache.move_to_end(session.session_hash)
        while len(self._cache) > self._size:
            self._cache.popitem(last=False)
