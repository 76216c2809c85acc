"""API key formats (``api_keys.format``):

- ``checksummed`` (the default): ``<prefix>_<32 random base62 chars><6-char base62 CRC32 checksum>``. 32 base62
  characters carry about 190 random bits; the checksum lets a mistyped key be refused before any storage lookup
  (and lets secret scanners recognise real keys).
- ``hex32``: ``<prefix>_<32 lowercase hex chars>`` (128 random bits), the MCP Rank format
  (``sk_mcp_rank_a1b2c3d4e5f6789012345678abcdef01`` with ``prefix: sk_mcp_rank``). No checksum: only the shape is
  checked before the lookup.

The prefix may contain underscores. Only the SHA-256 digest of the whole key is stored; lists show the prefix and
the last four characters.
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
HEX_CHARS = 32
FORMATS = ("checksummed", "hex32")


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
    """Mints and recognises keys with one fixed prefix, in one of ``FORMATS``."""

    def __init__(self, prefix: str, kind: str = "checksummed") -> None:
        if kind not in FORMATS:
            raise ValueError(f"unknown API key format {kind!r}")
        self.prefix = prefix
        self.kind = kind
        body = f"[0-9a-f]{{{HEX_CHARS}}}" if kind == "hex32" else f"[0-9A-Za-z]{{{RANDOM_CHARS}}}"
        checksum = "" if kind == "hex32" else f"([0-9A-Za-z]{{{CHECKSUM_CHARS}}})"
        self._pattern = re.compile(rf"^{re.escape(prefix)}_({body}){checksum}$")

    def mint(self) -> MintedKey:
        if self.kind == "hex32":
            body = secrets.token_hex(HEX_CHARS // 2)
            key = f"{self.prefix}_{body}"
        else:
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
        if self.kind == "hex32":
            return True
        return secrets.compare_digest(_checksum(self.prefix, match.group(1)), match.group(2))
