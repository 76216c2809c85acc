"""Operator encryption keys sealing secrets at rest (AES-256-GCM), each with an id so they can rotate.

``EncryptionKeys.parse("k2:BASE64URL,k1:BASE64URL")``: the first key seals, every listed key unseals. A sealed
blob is base64url(12-byte nonce ‖ ciphertext ‖ tag); the caller stores the key id next to it and passes the same
associated data (e.g. the row's id) to both calls, so a blob cannot be moved to another row.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12
_KEY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")


class UnsealError(Exception):
    """The blob was sealed under an unknown key, or is corrupt or was moved (the message names no secret)."""


@dataclass(frozen=True)
class EncryptionKeys:
    current_id: str
    keys: Mapping[str, bytes]

    @classmethod
    def parse(cls, text: str) -> EncryptionKeys:
        """Raises ``ValueError`` with a description that never quotes key material."""
        keys: dict[str, bytes] = {}
        entries = [entry.strip() for entry in text.split(",") if entry.strip()]
        if not entries:
            raise ValueError("expected ID:KEY[,ID:KEY...]")
        for position, entry in enumerate(entries, 1):
            key_id, sep, encoded = entry.partition(":")
            if not sep or not _KEY_ID.match(key_id):
                raise ValueError(f"entry {position}: expected ID:KEY with an id of 1-32 letters, digits, _ . -")
            if key_id in keys:
                raise ValueError(f"entry {position}: the id {key_id!r} appears twice")
            try:
                raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
            except (binascii.Error, ValueError):
                raw = b""
            if len(raw) != KEY_BYTES:
                raise ValueError(f"entry {position} ({key_id}): the key must be {KEY_BYTES} bytes in base64url")
            keys[key_id] = raw
        return cls(entries[0].partition(":")[0], keys)

    def seal(self, plaintext: bytes, *, associated_data: bytes) -> tuple[str, str]:
        """``(key id, blob)`` under the current key."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = AESGCM(self.keys[self.current_id]).encrypt(nonce, plaintext, associated_data)
        return self.current_id, base64.urlsafe_b64encode(nonce + sealed).decode("ascii")

    def unseal(self, key_id: str, blob: str, *, associated_data: bytes) -> bytes:
        key = self.keys.get(key_id)
        if key is None:
            raise UnsealError(f"sealed under encryption key {key_id!r}, which is not configured")
        try:
            raw = base64.urlsafe_b64decode(blob)
            return AESGCM(key).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], associated_data)
        except (InvalidTag, binascii.Error, ValueError) as exc:
            raise UnsealError(f"cannot unseal with encryption key {key_id!r}: corrupt or moved") from exc


def generate_secret(key_id: str | None = None) -> str:
    """A fresh ``ID:KEY`` entry for ``identity.encryption_keys``."""
    key_id = key_id or f"k{secrets.token_hex(3)}"
    return f"{key_id}:{base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES)).decode('ascii').rstrip('=')}"
