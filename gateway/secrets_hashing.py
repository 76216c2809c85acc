"""Store what proves a secret, never the secret: SHA-256 digests and random ids."""

from __future__ import annotations

import hashlib
import secrets


def secret_hash(secret: str) -> str:
    """The SHA-256 hex digest under which a secret (key, token, code, session id) is stored."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_id(prefix: str) -> str:
    """A short random identifier for rows (not a secret), like ``key_3f9a0c1d2e4b5a69``."""
    return f"{prefix}_{secrets.token_hex(8)}"
