"""The PKCE verifier of a sign-in under way, stored only encrypted, under a key derived from its ``state``.

A pending sign-in's row is keyed by the SHA-256 of the ``state`` sent to the provider; the state itself is never
stored. The verifier is sealed (AES-256-GCM) under a key derived from that state, so the row alone opens nothing:
whoever reads the database cannot redeem an authorization code they intercepted, and whoever intercepts the
provider's redirect (code and state) does not have the row. Only the callback, holding both, opens it.

Rows written before this scheme (a verifier in clear, which never contains ``.``) are read as they are: they
expire within ``PENDING_TTL`` of an upgrade.
"""

from __future__ import annotations

import base64
import hashlib
import os
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.identity.provider_http import ProviderError

PREFIX: Final = "v1."
_CONTEXT: Final = b"mcp-gateway pending sign-in PKCE verifier\x00"
_NONCE: Final = 12


def _key(state: str) -> bytes:
    # Not the row's key (SHA-256 of the state alone): a distinct, domain-separated digest.
    return hashlib.sha256(_CONTEXT + state.encode("utf-8")).digest()


def seal_verifier(verifier: str | None, state: str) -> str | None:
    """``verifier`` as stored: ``v1.`` + base64url(nonce + AES-GCM ciphertext); None stays None (no PKCE)."""
    if verifier is None:
        return None
    nonce = os.urandom(_NONCE)
    sealed = AESGCM(_key(state)).encrypt(nonce, verifier.encode("utf-8"), _CONTEXT)
    return PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode("ascii")


def open_verifier(stored: str | None, state: str) -> str | None:
    """The verifier sealed under ``state``; ``ProviderError("invalid_state")`` when it does not open."""
    if stored is None or not stored.startswith(PREFIX):
        return stored  # no PKCE, or a row from before the upgrade
    try:
        raw = base64.urlsafe_b64decode(stored[len(PREFIX) :])
        return AESGCM(_key(state)).decrypt(raw[:_NONCE], raw[_NONCE:], _CONTEXT).decode("utf-8")
    except (InvalidTag, ValueError) as exc:
        raise ProviderError("invalid_state", "This sign-in could not be resumed; start again.") from exc
