"""API key format: ``<prefix>_<32 random base62 chars><6-char base62 CRC32 checksum>``.

32 base62 characters carry about 190 random bits. The checksum lets a malformed or mistyped key be
refused before any storage lookup (and lets secret scanners recognise real keys). Only the SHA-256
digest of the whole key is stored; lists show the prefix and the last four characters.
"""

from __future__ import annotations

import re
import secrets
import zlib
from dataclasses import dataclass

from gateway.secrets_hashing import secret_hash

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
RANDOM_CHARS = 32
CHECKSUM_CHARS = 6
DISPLAY_CHARS = 4


@dataclass(frozen=True, slots=True)
class MintedKey:
    key: str
    """The full key: shown exactly once, never stored or logged."""
    key_hash: str
    display_prefix: str
    last_four: str


def _base62(value: int, width: int) -> str:
    out = []
    for _ in range(width):
        value, digit = divmod(value, 62)
        out.append(ALPHABET[digit])
    return "".join(reversed(out))


def _checksum(prefix: str, body: str) -> str:
    return _base62(zlib.crc32(f"{prefix}_{body}".encode("ascii")), CHECKSUM_CHARS)


class ApiKeyFormat:
    """Mints and recognises keys with one fixed prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._pattern = re.compile(
            rf"^{re.escape(prefix)}_([0-9A-Za-z]{{{RANDOM_CHARS}}})([0-9A-Za-z]{{{CHECKSUM_CHARS}}})$"
        )

    def mint(self) -> MintedKey:
        body = "".join(secrets.choice(ALPHABET) for _ in range(RANDOM_CHARS))
        key = f"{self.prefix}_{body}{_checksum(self.prefix, body)}"
        return MintedKey(
            key=key,
            key_hash=secret_hash(key),
            display_prefix=f"{self.prefix}_{body[:DISPLAY_CHARS]}",
            last_four=key[-4:],
        )

    def looks_like_key(self, candidate: str) -> bool:
        """True when the candidate carries this prefix (it may still be malformed)."""
        return candidate.startswith(self.prefix + "_")

    def is_well_formed(self, candidate: str) -> bool:
        """Format and checksum; constant work whatever the input, and no storage lookup."""
        match = self._pattern.match(candidate)
        if match is None:
            return False
        return secrets.compare_digest(_checksum(self.prefix, match.group(1)), match.group(2))
