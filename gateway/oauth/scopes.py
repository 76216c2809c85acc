"""Scopes: which ones exist, what they mean in words, and how a request's scope is settled.

``offline_access`` is never granted as a scope of its own: the gateway always issues a refresh token
to public clients doing the code flow, and silently accepts ``offline_access`` in requests (Claude Code
and other CLIs ask for the resource's scopes plus ``offline_access``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

OFFLINE_ACCESS = "offline_access"

DESCRIPTIONS = {
    "mcp:tools": "Access all MCP tools, resources and prompts of this server",
}


def describe(scope: str) -> str:
    return DESCRIPTIONS.get(scope, f"Use the permission “{scope}”")


@dataclass(frozen=True)
class ScopePolicy:
    supported: tuple[str, ...]
    default: tuple[str, ...]
    descriptions: Mapping[str, str] = field(default_factory=dict)
    """The sentences of the configured ``authorization.scopes`` (the consent page shows them)."""

    def describe(self, scope: str) -> str:
        return self.descriptions.get(scope) or describe(scope)

    def settle(self, requested: str | None) -> str | None:
        """The scope to grant (space-separated, in the configured order), or None when something unknown
        was requested. No scope means the defaults; ``offline_access`` is accepted and dropped."""
        words = set((requested or "").split())
        words.discard(OFFLINE_ACCESS)
        if not words:
            return " ".join(self.default)
        if not words <= set(self.supported):
            return None
        return " ".join(s for s in self.supported if s in words)

    @staticmethod
    def covers(granted: str, wanted: str) -> bool:
        return set(wanted.split()) <= set(granted.split())
