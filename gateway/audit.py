"""The audit log: one structured event per security-relevant action, on the ``gateway.audit`` logger.

An event names the action, the actor (an account id, ``"admin:<id>"``, ``"cli"`` or ``"system"``), the client,
the ids involved and a reason. It never carries a secret: callers pass ids and hashes' prefixes, never tokens,
codes, keys, passwords or cookies, and values are checked here against the known secret prefixes as a last guard.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

from aiohttp import web

log = logging.getLogger("gateway.audit")
_RESERVED: Final = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}

EVENTS: Final = frozenset(
    {
        "login.succeeded",
        "login.failed",
        "logout",
        "signup",
        "password.changed",
        "consent.granted",
        "consent.denied",
        "client.registered",
        "token.issued",
        "token.refreshed",
        "refresh.reuse_detected",
        "token.revoked",
        "app.revoked",
        "sessions.revoked",
        "api_key.created",
        "api_key.revoked",
        "user.created",
        "user.disabled",
        "user.enabled",
        "user.plan_changed",
        "admin.action",
    }
)

# A value that starts like one of the gateway's secrets is replaced, whatever the caller passed.
_SECRET_PREFIXES: Final = ("gwat_", "gwrt_", "gwac_", "mgw_", "Bearer ", "$argon2")


def _safe(value: object) -> object:
    if isinstance(value, str) and value.startswith(_SECRET_PREFIXES):
        return "[redacted]"
    return value


class AuditLog:
    """Writes audit events. Passed to the features that act; tests read them from the logger."""

    def __init__(self, logger: logging.Logger = log) -> None:
        self._log = logger
        self._listeners: list[Callable[[str, dict[str, object]], None]] = []

    def listen(self, listener: Callable[[str, dict[str, object]], None]) -> None:
        """Also hand every event (its name and its already-guarded fields) to ``listener``."""
        self._listeners.append(listener)

    def record(
        self,
        event: str,
        *,
        actor: str | None = None,
        client_id: str | None = None,
        reason: str | None = None,
        **ids: str | int | None,
    ) -> None:
        if event not in EVENTS:
            raise ValueError(f"unknown audit event {event!r}")
        fields: dict[str, object] = {"audit": event, "actor": _safe(actor or "system")}
        if client_id is not None:
            fields["client_id"] = _safe(client_id)
        if reason is not None:
            fields["reason"] = _safe(reason)
        for key, value in ids.items():
            if key in _RESERVED:
                raise ValueError(f"audit field {key!r} is reserved by logging")
            if value is not None:
                fields[key] = _safe(value)
        self._log.info("audit %s", event, extra=fields)
        for listener in self._listeners:
            listener(event, fields)


AUDIT = web.AppKey("audit", AuditLog)
