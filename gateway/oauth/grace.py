"""The refresh-token grace window (OAuth 2.1 §4.3.1 rotation; security-cases §3) without storing usable tokens.

When a refresh token is rotated, its successor pair is sealed with AES-256-GCM under a key derived by
HKDF-SHA256 (RFC 5869) from the retired refresh token itself. The server stores only that token's hash,
so the blob at rest is useless: only a client presenting the old token again can open it and get the
same pair back (a lost response, a parallel refresh).

Blob layout: ``version (1) | salt (16) | nonce (12) | AES-GCM ciphertext and tag``.
"""

from __future__ import annotations

import json
import os
from enum import Enum

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.oauth.issuance import TokenPair
from gateway.secrets_hashing import secret_hash
from gateway.storage.oauth import GrantStore

VERSION = b"\x01"
SALT_BYTES = 16
NONCE_BYTES = 12
TAG_BYTES = 16
KEY_BYTES = 32
INFO = b"mcp-gateway refresh-token grace v1"
_HEADER = len(VERSION) + SALT_BYTES + NONCE_BYTES


def _key(old_token: str, salt: bytes) -> bytes:
    # RFC 5869: the old refresh token carries 256 random bits, so HKDF (no password stretching) suffices.
    hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=salt, info=INFO)
    return hkdf.derive(old_token.encode("utf-8"))


def seal(old_token: str, pair: TokenPair) -> bytes:
    """Encrypt ``pair`` so that only ``old_token`` opens it."""
    salt = os.urandom(SALT_BYTES)
    nonce = os.urandom(NONCE_BYTES)
    plaintext = json.dumps(
        {
            "access_token": pair.access_token,
            "refresh_token": pair.refresh_token,
            "access_expires_at": pair.access_expires_at,
            "scope": pair.scope,
        },
        separators=(",", ":"),
    ).encode("utf-8")
    # The version byte is authenticated data: a blob cannot be replayed under another format.
    return VERSION + salt + nonce + AESGCM(_key(old_token, salt)).encrypt(nonce, plaintext, VERSION)


def open_(old_token: str, blob: bytes) -> TokenPair | None:
    """The sealed pair, or None when ``blob`` was not sealed with ``old_token`` (or is damaged)."""
    blob = bytes(blob)
    if len(blob) < _HEADER + TAG_BYTES or blob[:1] != VERSION:
        return None
    salt = blob[1 : 1 + SALT_BYTES]
    nonce = blob[1 + SALT_BYTES : _HEADER]
    try:
        plaintext = AESGCM(_key(old_token, salt)).decrypt(nonce, blob[_HEADER:], VERSION)
        fields = json.loads(plaintext)
    except (InvalidTag, ValueError):
        return None
    if not isinstance(fields, dict):
        return None
    access, refresh, expires_at, scope = (
        fields.get("access_token"),
        fields.get("refresh_token"),
        fields.get("access_expires_at"),
        fields.get("scope"),
    )
    if not (
        isinstance(access, str)
        and isinstance(refresh, str)
        and isinstance(expires_at, int | float)
        and isinstance(scope, str)
    ):
        return None
    return TokenPair(access_token=access, refresh_token=refresh, access_expires_at=float(expires_at), scope=scope)


class Retired(Enum):
    """What a retired refresh token presented again is, when it is not a grace replay (``judge_retired``)."""

    BUSY = "busy"
    """Inside the window but past the replay budget: parallel refreshes, not an attack. Refuse without revoking."""
    REUSE = "reuse"
    """Reuse (OAuth 2.1 §4.3.1): the caller revokes the family."""


async def judge_retired(
    grants: GrantStore, token: str, token_hash: str, family_id: str, *, now: float, max_replays: int
) -> TokenPair | Retired:
    """A retired refresh token presented again: the same successor pair within the grace window when it is the
    immediate predecessor of the family's current token, else ``Retired``. Shared by ``/token`` and the app flow."""
    row = await grants.get_refresh_token(token_hash)
    pair = open_(token, row.grace_blob) if row is not None and row.grace_blob is not None else None
    in_window = row is not None and row.grace_until is not None and now < row.grace_until
    if pair is not None and in_window and await _is_current(grants, pair.refresh_token, family_id, now):
        # Revocation beats grace: count_grace_replay refuses when the family is revoked or expired.
        if await grants.count_grace_replay(token_hash, max_replays=max_replays, now=now):
            return pair
        return Retired.BUSY
    return Retired.REUSE


async def _is_current(grants: GrantStore, successor: str, family_id: str, now: float) -> bool:
    """Only the immediate predecessor of the current refresh token qualifies (DOT #1617)."""
    row = await grants.get_refresh_token(secret_hash(successor))
    return row is not None and row.family_id == family_id and row.used_at is None and now < row.expires_at
