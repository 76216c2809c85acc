"""Proof Key for Code Exchange (RFC 7636), S256 only.

``plain`` is refused and a missing ``code_challenge_method`` is an error, never a silent ``plain``
(OAuth 2.1 §4.1.1, RFC 9700 §2.1.1; authlib's default is ``plain``, see security-cases §1c).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

from gateway.oauth.errors import InvalidRequest

S256 = "S256"

# RFC 7636 §4.2: BASE64URL(SHA256(verifier)) is 43 characters without "=" padding.
_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")
# RFC 7636 §4.1: code-verifier = 43*128unreserved; unreserved = ALPHA / DIGIT / "-" / "." / "_" / "~"
_VERIFIER = re.compile(r"[A-Za-z0-9._~-]{43,128}")


def validate_challenge(challenge: str | None, method: str | None) -> str:
    """The challenge of an authorization request, or ``InvalidRequest`` (safe to show the client).

    For the authorize endpoint: ``method`` must be exactly ``"S256"``; absent is an error, not ``plain``.
    """
    if not challenge:
        # OAuth 2.1 §4.1.1: the authorization server MUST reject requests without a code_challenge.
        raise InvalidRequest("code_challenge is required")
    if method is None:
        # RFC 7636 §4.3 would default to "plain"; we support S256 only, so a missing method is refused.
        raise InvalidRequest("code_challenge_method is required and must be S256")
    if method != S256:
        raise InvalidRequest("code_challenge_method must be S256")
    if not _CHALLENGE.fullmatch(challenge):
        raise InvalidRequest("code_challenge must be 43 base64url characters without padding")
    return challenge


def is_well_formed_verifier(verifier: str) -> bool:
    """RFC 7636 §4.1: 43 to 128 unreserved characters."""
    return _VERIFIER.fullmatch(verifier) is not None


def s256(verifier: str) -> str:
    """RFC 7636 §4.2: BASE64URL-ENCODE(SHA256(ASCII(code_verifier))), no padding."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def verify(verifier: str, challenge: str) -> bool:
    """True when ``verifier`` is well formed and hashes to ``challenge`` (RFC 7636 §4.6).

    A stored challenge that is empty or malformed never verifies (no PKCE downgrade, RFC 9700 §4.8).
    """
    if not is_well_formed_verifier(verifier) or not _CHALLENGE.fullmatch(challenge):
        return False
    # Constant-time comparison: the challenge is not secret, but there is no reason to leak timing.
    return hmac.compare_digest(s256(verifier), challenge)
