"""The steps of a client's connection attempt, as the flight recorder keeps them, and what each failure means.

A step is what one request taught the gateway about a client's or a person's attempt to connect: which endpoint,
whether it worked, and why not. It carries ids, codes and the gateway's own short descriptions, never a secret
(values that look like one are redacted, as in the audit log).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Final, Literal

STEPS: Final = (
    "discovery",  # protected-resource or authorization-server metadata fetched
    "registration",  # RFC 7591 dynamic client registration, or a Client ID Metadata Document fetched
    "authorize",  # GET /authorize checked
    "sign_in",  # the person signed in (or failed to)
    "consent",  # approved or denied
    "token",  # authorization code exchanged
    "refresh",  # refresh token used
    "mcp",  # a call to /mcp or /mcp/sse: the first that worked, and every refusal
    "revocation",  # a token, an app or a key revoked
)
Step = Literal["discovery", "registration", "authorize", "sign_in", "consent", "token", "refresh", "mcp", "revocation"]
Outcome = Literal["ok", "failed"]
REASONS: Final = frozenset(
    {
        "ok",
        "first_call",
        "not_found",
        "invalid_request",
        "invalid_client",
        "invalid_client_metadata",
        "invalid_redirect_uri",
        "invalid_grant",
        "invalid_scope",
        "invalid_target",
        "unsupported_grant_type",
        "unsupported_response_type",
        "access_denied",
        "temporarily_unavailable",
        "invalid_credentials",
        "denied",
        "no_credential",
        "malformed",
        "unknown",
        "expired",
        "revoked",
        "wrong_audience",
        "disabled",
        "insufficient_scope",
        "invalid_token",
    }
)
"""The metric's closed reason vocabulary (anything else is counted as ``other``)."""
MAX_DETAIL: Final = 300
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")
_JWT = r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"


class Redactor:
    """Makes one safe line of text: no control or bidi characters, nothing shaped like a secret (the gateway's
    tokens and codes, API keys with the configured prefix, bearer credentials, JWTs, password hashes), at most
    ``limit`` characters."""

    def __init__(self, api_key_prefix: str = "mgw") -> None:
        prefixes = "|".join(re.escape(p) for p in ("gwat", "gwrt", "gwac", "mgw", "sk", api_key_prefix))
        self._secret = re.compile(
            rf"(?:{prefixes})_[A-Za-z0-9_\-]{{8,}}|Bearer\s+\S+|\$argon2\S*|{_JWT}", re.IGNORECASE
        )

    def __call__(self, text: str, limit: int = MAX_DETAIL) -> str:
        text = self._secret.sub("[redacted]", _CONTROL.sub(" ", text))
        return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class Record:
    at: float
    step: str
    outcome: str
    reason: str
    """``ok``, an OAuth error code (``invalid_grant``), or the gateway's own short code (``expired``)."""
    detail: str = ""
    """The gateway's own description of what it saw (e.g. the resource asked for), already redacted."""
    client_id: str | None = None
    account_id: str | None = None
    count: int = 1
    """Identical steps within one flush are kept once, counted."""

    @property
    def advice(self) -> str:
        return advice(self)

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "advice": self.advice}


_ADVICE: Final[dict[tuple[str, str], str]] = {
    ("discovery", "not_found"): "The client looked for metadata at a path this server does not serve: give the "
    "client the exact MCP URL (ending in /mcp); it finds the rest from the 401 challenge.",
    ("registration", "invalid_redirect_uri"): "The client registered a redirect URI this server refuses: it must "
    "be https, a loopback http URL, or an app scheme.",
    ("registration", "invalid_client_metadata"): "The client's registration is malformed; update the client.",
    ("registration", "temporarily_unavailable"): "Registrations from this address are over budget; wait and retry.",
    ("authorize", "invalid_redirect_uri"): "The client uses a redirect URI it did not register: it must send "
    "exactly one of the URIs it registered (re-register the client, or fix its configuration).",
    ("authorize", "invalid_client"): "The client id is unknown (its registration expired or was never made): "
    "let the client register again (remove it and add it anew).",
    ("authorize", "invalid_target"): "The client asked for a resource other than this server's MCP URL: "
    "configure the client with this server's MCP URL exactly.",
    ("authorize", "invalid_request"): "The client's authorization request is malformed; see the detail.",
    ("authorize", "invalid_scope"): "The client asked for a scope this server does not offer.",
    ("authorize", "access_denied"): "The person denied the request, or it was not allowed for this account.",
    ("sign_in", "invalid_credentials"): "The e-mail or password was wrong.",
    ("sign_in", "throttled"): "Too many failed sign-ins; wait a few minutes.",
    ("consent", "denied"): "The person denied the request on the consent page.",
    ("token", "invalid_grant"): "The authorization code was wrong, used twice, expired, or sent with another "
    "redirect URI or PKCE verifier: start the sign-in again.",
    ("token", "invalid_target"): "The client asked for a resource other than this server's MCP URL when "
    "exchanging the code: configure the client with this server's MCP URL exactly.",
    ("token", "invalid_client"): "The client id is unknown or does not match the code.",
    ("refresh", "invalid_grant"): "The refresh token was revoked, expired or already used: the person must sign "
    "in again (reconnect the client).",
    ("mcp", "expired"): "The access token expired and the client did not refresh it: reconnect the client, or "
    "update it so that it refreshes.",
    ("mcp", "revoked"): "The credential was revoked (on the dashboard, by an operator, or because a refresh token "
    "was reused): reconnect the client.",
    ("mcp", "wrong_audience"): "The token was issued for another resource: configure the client with this "
    "server's MCP URL exactly.",
    ("mcp", "insufficient_scope"): "The token lacks a scope this call needs: the client must ask for it (it "
    "re-authorizes on the 403 challenge).",
    ("mcp", "unknown"): "The credential is not one this server issued (a typo, another server's token, or a key "
    "from before a reset).",
    ("mcp", "malformed"): "The credential is malformed (truncated or with extra characters).",
    ("mcp", "disabled"): "The account is disabled.",
    ("mcp", "no_credential"): "The client called without a credential; it should follow the 401 challenge to sign in.",
}


def advice(record: Record) -> str:
    """One sentence saying what to change, or nothing for a step that worked."""
    if record.outcome == "ok":
        return ""
    return _ADVICE.get((record.step, record.reason), "See the detail: " + (record.detail or record.reason))
