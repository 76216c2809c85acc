"""Security-relevant actions of the OAuth side, each recorded once: a Prometheus series and an audit event.

Handlers call one function per action with ids only (account, client, family), never a secret. Sign-in
failures name the account id when the address matches one; otherwise a 12-hex-digit prefix of the SHA-256 of the
normalised address, enough to correlate repeated attempts on one address but never the text typed into the
field (people type passwords there by mistake).
"""

from __future__ import annotations

import hashlib
from typing import Final, Literal

from aiohttp import web

from gateway.audit import AUDIT
from gateway.metrics import METRICS, REVOCATION_SOURCES, bounded

GRANT_TYPES: Final = frozenset({"authorization_code", "refresh_token"})
LOGIN_OUTCOMES: Final = frozenset({"succeeded", "failed", "throttled"})
REGISTRATION_KINDS: Final = frozenset({"dcr", "cimd"})
EMAIL_HASH_CHARS: Final = 12


def email_hash(email: str) -> str:
    """A short, stable pseudonym of an address for failed sign-ins (not reversible to the typed text)."""
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()[:EMAIL_HASH_CHARS]


def token_issued(
    app: web.Application, *, grant_type: str, user_id: str, client_id: str, family_id: str, generation: int
) -> None:
    app[METRICS].tokens_issued.labels(grant_type=bounded(grant_type, GRANT_TYPES)).inc()
    event = "token.issued" if grant_type == "authorization_code" else "token.refreshed"
    app[AUDIT].record(
        event,
        actor=user_id,
        client_id=client_id,
        grant_type=grant_type,
        family_id=family_id,
        generation=generation,
    )


def reuse_detected(app: web.Application, *, user_id: str, client_id: str, family_id: str, reason: str) -> None:
    """A retired refresh token (or a live one in another client's hands) was presented: the family is revoked."""
    app[METRICS].refresh_reuse.inc()
    app[AUDIT].record("refresh.reuse_detected", client_id=client_id, reason=reason, family_id=family_id)
    revoked(
        app, source="reuse", actor="system", user_id=user_id, client_id=client_id, family_id=family_id, reason=reason
    )


def revoked(
    app: web.Application,
    *,
    source: str,
    actor: str,
    user_id: str,
    client_id: str | None,
    family_id: str | None = None,
    reason: str,
) -> None:
    """A revocation committed to storage (after it, never before)."""
    app[METRICS].revocations.labels(source=bounded(source, REVOCATION_SOURCES)).inc()
    app[AUDIT].record(
        "token.revoked", actor=actor, client_id=client_id, reason=reason, user_id=user_id, family_id=family_id
    )


def client_registered(app: web.Application, *, kind: Literal["dcr", "cimd"], client_id: str) -> None:
    app[METRICS].registrations.labels(kind=bounded(kind, REGISTRATION_KINDS)).inc()
    app[AUDIT].record("client.registered", client_id=client_id, kind=kind)


def login_succeeded(app: web.Application, *, user_id: str, client_id: str | None, reason: str | None = None) -> None:
    """A sign-in for an OAuth client (``client_id``) or for the dashboard (``client_id=None``)."""
    app[METRICS].logins.labels(outcome="succeeded").inc()
    app[AUDIT].record("login.succeeded", actor=user_id, client_id=client_id, reason=reason)


def login_failed(
    app: web.Application, *, user_id: str | None, email: str, client_id: str | None, throttled: bool, reason: str
) -> None:
    app[METRICS].logins.labels(outcome="throttled" if throttled else "failed").inc()
    app[AUDIT].record(
        "login.failed",
        actor=user_id or "anonymous",
        client_id=client_id,
        reason=reason,
        email_hash=None if user_id else email_hash(email),
    )


def consent_decided(
    app: web.Application, *, granted: bool, user_id: str, client_id: str, scope: str, reason: str | None = None
) -> None:
    event = "consent.granted" if granted else "consent.denied"
    app[AUDIT].record(event, actor=user_id, client_id=client_id, reason=reason, scope=scope)
