"""Revocation announcements: after a revocation commits to storage, every replica is told to drop what it caches.

Storage stays the source of truth; an announcement only makes replicas forget sooner. Losing one may delay a
replica by at most the validation cache's lifetime (one second), never longer.

Every path that revokes (RFC 7009, refresh-token reuse, the dashboard, the admin API and CLI, API-key revocation,
disabling a user) commits first, then calls ``RevocationBus.announce``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from aiohttp import web

log = logging.getLogger("gateway.revocation")


@dataclass(frozen=True, slots=True)
class Revocation:
    """What was revoked. Ids only, never a secret.

    ``family_ids``: OAuth grant families (their access and refresh tokens); ``api_key_ids``: API keys;
    ``all_credentials``: every token and key of ``account_id`` (sign out everywhere, user disabled).
    ``committed_at`` is the wall-clock time of the commit, for the propagation-time metric.
    """

    account_id: str
    committed_at: float
    family_ids: tuple[str, ...] = ()
    api_key_ids: tuple[str, ...] = ()
    all_credentials: bool = False
    source: str = "rfc7009"

    def to_wire(self) -> dict[str, object]:
        return {
            "account_id": self.account_id,
            "committed_at": self.committed_at,
            "family_ids": list(self.family_ids),
            "api_key_ids": list(self.api_key_ids),
            "all_credentials": self.all_credentials,
            "source": self.source,
        }

    @classmethod
    def from_wire(cls, data: dict[str, object]) -> Revocation:
        families, keys = data.get("family_ids", []), data.get("api_key_ids", [])
        if not isinstance(families, list) or not isinstance(keys, list):
            raise ValueError("malformed revocation message")
        committed = data.get("committed_at")
        return cls(
            account_id=str(data["account_id"]),
            committed_at=float(committed) if isinstance(committed, (int, float)) else 0.0,
            family_ids=tuple(str(f) for f in families),
            api_key_ids=tuple(str(k) for k in keys),
            all_credentials=bool(data.get("all_credentials", False)),
            source=str(data.get("source", "rfc7009")),
        )


Listener = Callable[[Revocation], Awaitable[None] | None]


class RevocationBus(Protocol):
    async def announce(self, revocation: Revocation) -> None:
        """Tell every replica (this one included, before returning) that ``revocation`` committed."""

    def listen(self, listener: Listener) -> None:
        """Call ``listener`` for every revocation announced by any replica."""

    def listen_gaps(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` when announcements may have been lost (after a broken subscription comes back)."""


@dataclass
class LocalRevocationBus:
    """The embedded default: one process, so announcing is calling the listeners."""

    _listeners: list[Listener] = field(default_factory=list)

    async def announce(self, revocation: Revocation) -> None:
        await deliver(self._listeners, revocation)

    def listen(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def listen_gaps(self, listener: Callable[[], None]) -> None:
        """In one process nothing is ever lost."""


async def deliver(listeners: list[Listener], revocation: Revocation) -> None:
    """Run each listener; one that fails is logged and does not stop the others."""
    for listener in listeners:
        try:
            result = listener(revocation)
            if asyncio.iscoroutine(result):
                await result
        except Exception:
            log.exception("revocation listener failed")


REVOCATIONS = web.AppKey("revocations", RevocationBus)
