"""Wiring of the flight recorder: its backend (Redis when configured, the database otherwise), the background
flush, and the places it hears from — the audit log (what succeeded), responses that refused a client (what
failed, and why), and requests for paths this server does not serve (a client pointed at the wrong URL)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Final

from aiohttp import web

from gateway.appkeys import CLOCK, CONFIG, REDIS, STORAGE
from gateway.audit import AUDIT
from gateway.errors import GatewayError
from gateway.flight.backend import trail_backend
from gateway.flight.recorder import FlightRecorder
from gateway.flight.steps import Outcome, Step
from gateway.hooks import add_refusal_listener, add_response_hook
from gateway.metrics import METRICS
from gateway.net import address_bucket, client_address

FLIGHT = web.AppKey("flight_recorder", FlightRecorder)
FLIGHT_NOTE = web.RequestKey("flight_note", dict)
"""What a handler learnt about the caller before refusing it (client id, account id, reason), for the hooks."""

# Audit events that are steps of a connection, and which step and outcome each is.
AUDIT_STEPS: Final[dict[str, tuple[Step, Outcome, str]]] = {
    "client.registered": ("registration", "ok", "ok"),
    "login.succeeded": ("sign_in", "ok", "ok"),
    "login.failed": ("sign_in", "failed", "invalid_credentials"),
    "consent.granted": ("consent", "ok", "ok"),
    "consent.denied": ("consent", "failed", "denied"),
    "token.issued": ("token", "ok", "ok"),
    "token.refreshed": ("refresh", "ok", "ok"),
    "refresh.reuse_detected": ("refresh", "failed", "invalid_grant"),
    "token.revoked": ("revocation", "ok", "ok"),
    "app.revoked": ("revocation", "ok", "ok"),
    "sessions.revoked": ("revocation", "ok", "ok"),
}
DISCOVERY_PREFIX: Final = "/.well-known/"
BROWSER_NOISE: Final = ("/favicon.ico", "/robots.txt", "/apple-touch-icon")
"""Paths browsers ask every site for: their 404s are no client's mistake."""


def flight_of(app: web.Application) -> FlightRecorder | None:
    return app.get(FLIGHT)


def note(request: web.Request, **facts: str | None) -> None:
    """Remember, for this request's flight step, who the caller was found to be (``client_id``, ``account_id``)
    and why it is refused (``reason``, ``detail``)."""
    known = request.get(FLIGHT_NOTE)
    if known is None:
        known = request[FLIGHT_NOTE] = {}
    known.update({k: v for k, v in facts.items() if v is not None})


def record_request(
    request: web.Request, step: Step, outcome: Outcome, reason: str, *, detail: str = "", **ids: str | None
) -> None:
    recorder = flight_of(request.app)
    if recorder is None:
        return
    known = {**{k: v for k, v in ids.items() if v is not None}, **request.get(FLIGHT_NOTE, {})}
    config = request.app[CONFIG]
    recorder.record(
        step,
        outcome,
        known.get("reason", reason),
        detail=known.get("detail", detail),
        client_id=known.get("client_id"),
        account_id=known.get("account_id"),
        address=address_bucket(client_address(request, config.security.trusted_proxies)),
    )


def first_call(request: web.Request, credential_id: str, *, client_id: str | None, account_id: str) -> None:
    """An authenticated MCP request: a step only the first time this replica sees the credential (afterwards a
    set lookup, nothing measurable on the hot path)."""
    recorder = flight_of(request.app)
    if recorder is not None and recorder.first_seen(credential_id):
        recorder.record("mcp", "ok", "first_call", client_id=client_id, account_id=account_id)


def _discovery_and_unserved_paths(request: web.Request, response: web.StreamResponse) -> None:
    """Discovery documents fetched (or not), and 404s for paths no route serves: a client looking in the wrong
    place. Filed by the caller's address (no client is known yet)."""
    discovery = request.path.startswith(DISCOVERY_PREFIX)
    if discovery and response.status == 200 and request.method == "GET":
        record_request(request, "discovery", "ok", "ok", detail=f"GET {request.path}")
        return
    if response.status != 404 or (request.match_info.route.resource is not None and not discovery):
        return
    if request.path.startswith(BROWSER_NOISE):
        return
    public = request.app[CONFIG].public_url
    record_request(
        request,
        "discovery",
        "failed",
        "not_found",
        detail=f"{request.method} {request.path} answered 404 (this server's MCP URL is {public}/mcp)",
    )


_FAILING_STEPS: Final[dict[str, Step]] = {
    "/register": "registration",
    "/token": "token",
    "/revoke": "revocation",
    "/mcp": "mcp",
    "/mcp/sse": "mcp",
    "/mcp/sse/messages": "mcp",
}


def _refused(request: web.Request, exc: GatewayError) -> None:
    """A refusal listener (``gateway.hooks``): refusals of the raising endpoints (``/register``, ``/token``,
    ``/revoke``, ``/mcp``) as failed steps; the handler may have noted who the caller is (``note``) first."""
    step = _FAILING_STEPS.get(request.path)
    # A 429 is a budget doing its job: counted in metrics, never a step (strangers could fill the trail).
    if step is not None and exc.status < 500 and exc.status != 429:
        if step == "token" and request.get(FLIGHT_NOTE, {}).get("grant_type") == "refresh_token":
            step = "refresh"
        reason = "no_credential" if step == "mcp" and exc.error == "unauthorized" else exc.error
        record_request(request, step, "failed", reason, detail=exc.description)


def _audit_listener(app: web.Application) -> None:
    audit = app[AUDIT]

    def heard(event: str, fields: dict[str, object]) -> None:
        recorder = flight_of(app)
        known = AUDIT_STEPS.get(event)
        if recorder is None or known is None:
            return
        if event.startswith("login.") and fields.get("client_id") is None:
            return  # a dashboard sign-in is no client's connection attempt
        step, outcome, reason = known
        actor = fields.get("actor")
        account = fields.get("user_id") or (
            actor if isinstance(actor, str) and actor not in ("cli", "system", "anonymous") else None
        )
        client = fields.get("client_id")
        recorder.record(
            step,
            outcome,
            reason,
            detail=str(fields.get("reason") or ""),
            client_id=client if isinstance(client, str) else None,
            account_id=account if isinstance(account, str) and not account.startswith("admin:") else None,
        )

    audit.listen(heard)


@contextlib.asynccontextmanager
async def _flight_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG].flight_recorder
    recorder = app[FLIGHT] = FlightRecorder(
        trail_backend(app[CONFIG], app.get(REDIS), app[STORAGE]),
        app[CLOCK],
        ring_size=config.ring_size,
        anonymous_per_minute=config.anonymous_per_minute,
        enabled=config.enabled,
        metrics=app[METRICS],
        api_key_prefix=app[CONFIG].api_keys.prefix,
    )
    async with recorder.running():
        yield


def setup_flight(app: web.Application) -> None:
    app.cleanup_ctx.append(_flight_ctx)
    add_response_hook(app, _discovery_and_unserved_paths)
    add_refusal_listener(app, _refused)
    _audit_listener(app)
