"""The scopes an API key may be created with: the policy's scopes and ``mcp:tools`` (none: everything)."""

from __future__ import annotations

from collections.abc import Iterable

from gateway.policy.config import ALL_SCOPE, AuthorizationConfig


class UnknownKeyScope(ValueError):
    """A scope the policy does not define; the message names it and the known ones."""


def key_scope(authorization: AuthorizationConfig, requested: Iterable[str]) -> str | None:
    """The key's scope (space-separated, deduplicated, in the order given), or None when none was asked."""
    words: list[str] = []
    for item in requested:
        for word in item.replace(",", " ").split():
            if word not in words:
                words.append(word)
    if not words:
        return None
    known = [ALL_SCOPE, *authorization.scopes]
    for word in words:
        if word not in known:
            raise UnknownKeyScope(f"unknown scope {word!r} (known: {', '.join(known)})")
    return " ".join(words)
