"""The ``identity:`` section of the configuration.

    identity:
      audience: mcp-servers                      # the ``aud`` of the identity tokens
      encryption_keys: ${GATEWAY_SECRET_KEYS}    # "ID:KEY[,ID:KEY…]": the first seals, every one unseals

An encryption key is 32 random bytes in base64url (``mcp-gateway signing-keys generate-secret`` prints one with a
fresh id). Signing keys' private halves are stored only sealed under it (AES-256-GCM). To rotate it, put a new
key first and keep the old one listed until ``mcp-gateway signing-keys rotate`` has replaced the keys it sealed
and they have left the JWKS.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.identity.sealing import EncryptionKeys

DEFAULT_AUDIENCE = "mcp-servers"
_AUDIENCE = re.compile(r"^[\x21-\x7e]{1,200}$")


@dataclass(frozen=True)
class IdentityConfig:
    audience: str = DEFAULT_AUDIENCE
    """The ``aud`` claim of identity tokens (MCP servers check it)."""
    encryption_keys: str = ""
    """Operator keys sealing the signing keys at rest, ``ID:BASE64URL[,ID:BASE64URL…]``; pass it as ``${ENV}``.
    Empty: the JWKS is still served, but no token can be signed."""


def check_identity(config: IdentityConfig) -> list[str]:
    problems: list[str] = []
    if not _AUDIENCE.match(config.audience):
        problems.append("identity.audience: 1-200 printable characters, no spaces")
    if config.encryption_keys:
        try:
            EncryptionKeys.parse(config.encryption_keys)
        except ValueError as exc:
            problems.append(f"identity.encryption_keys: {exc}")
    return problems
