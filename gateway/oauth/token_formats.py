"""Opaque, type-prefixed secrets: access tokens, refresh tokens and authorization codes.

Each is a fixed prefix and 43 base64url characters (256 random bits). The prefix says what a string
claims to be, so a code presented as a refresh token (or an API key as a code) is refused without a
lookup in another type's table. Only ``secret_hash(token)`` is ever stored.
"""

from __future__ import annotations

import re
import secrets
from enum import Enum

from gateway.secrets_hashing import secret_hash

RANDOM_BYTES = 32


class TokenType(Enum):
    ACCESS = "gwat_"
    REFRESH = "gwrt_"
    CODE = "gwac_"


_SHAPE = re.compile(r"^(gwat_|gwrt_|gwac_)[A-Za-z0-9_-]{43}$")


def mint(kind: TokenType) -> tuple[str, str]:
    """A new secret of this type and its storage hash."""
    token = kind.value + secrets.token_urlsafe(RANDOM_BYTES)
    return token, secret_hash(token)


def classify(candidate: str) -> TokenType | None:
    """The type a well-shaped secret claims to be; None for anything else (no storage lookup needed)."""
    if len(candidate) > 64 or not _SHAPE.match(candidate):
        return None
    return TokenType(candidate[:5])


def is_kind(candidate: str, kind: TokenType) -> bool:
    return classify(candidate) is kind
