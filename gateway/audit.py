"""The audit log: one structured event per security-relevant action, on the ``gateway.audit`` logger.

An event names the action, the actor (an account id, ``"admin:<id>"``, ``"cli"`` or ``"system"``), the client,
the ids involved and a reason. It never carries a secret: callers pass ids and hashes' prefixes, never tokens,
codes, keys, passwords or cookies, and values are checked here as a last guard: a value holding something shaped
like one of the gateway's secrets (a token's ``gwat_``/``gwrt_``/``gwac_`` prefix, an API key with the configured
``api_keys.prefix``, a ``Bearer`` credential, a password hash) is replaced by ``[redacted]``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Final

from aiohttp import web

from gateway.apikeys import CHECKSUM_CHARS, RANDOM_CHARS
from gateway.config import DEFAULT_API_KEY_PREFIX

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
        "api_key.callbacks_set",
        "api_key.revoked",
        "user.created",
        "identity.linked",
        "user.disabled",
        "user.enabled",
        "user.plan_changed",
        "admin.action",
        "policy.allowed",
        "policy.refused",
        "service.refresh_failed",
    }
)

REDACTED: Final = "[redacted]"
# The ``TokenType`` prefixes of gateway.oauth.token_formats (not imported: that package imports this module).
TOKEN_PREFIXES: Final = ("gwat_", "gwrt_", "gwac_")
_FIXED_SECRET_PREFIXES: Final = (*TOKEN_PREFIXES, "Bearer ", "$argon2")
# More of a key's body than any row id has (``key_`` + 16 hex), so a prefix that happens to equal an id prefix
# (``api_keys.prefix: key``) does not hide ids; a key has RANDOM_CHARS + CHECKSUM_CHARS.
_KEY_BODY_CHARS: Final = (RANDOM_CHARS + CHECKSUM_CHARS) // 2


class SecretGuard:
    """Recognises a value that holds one of the gateway's secrets, anywhere after a word boundary."""

    def __init__(self, api_key_prefix: str = DEFAULT_API_KEY_PREFIX) -> None:
        fixed = "|".join(re.escape(prefix) for prefix in _FIXED_SECRET_PREFIXES)
        key = rf"{re.escape(api_key_prefix)}_[0-9A-Za-z]{{{_KEY_BODY_CHARS},}}"
        self._secret = re.compile(rf"(?:^|[^0-9A-Za-z_])(?:{fixed}|{key})")

    def safe(self, value: object) -> object:
        """``value``, or ``REDACTED`` when it is a string holding something shaped like a secret."""
        if isinstance(value, str) and self._secret.search(value):
            return REDACTED
        return value


class AuditLog:
    """Writes audit events. Passed to the features that act; tests read them from the logger."""

    def __init__(self, logger: logging.Logger = log, *, api_key_prefix: str = DEFAULT_API_KEY_PREFIX) -> None:
        """``api_key_prefix`` is the configured ``api_keys.prefix``: keys with it are redacted from every event."""
        self._log = logger
        self._guard = SecretGuard(api_key_prefix)
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
        _safe = self._guard.safe
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
            try:
                listener(event, fields)
            except Exception:  # what was audited has happened: a listener's failure must not undo the answer
                log.exception("audit listener failed on %s", event)


AUDIT = web.AppKey("audit", AuditLog)
