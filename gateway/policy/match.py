"""Which scopes a target needs (the first matching rule, else the default) and which scopes a credential holds.

A credential's scopes are closed under ``implies``; ``mcp:tools`` implies everything, and so does a credential
without any scope (an API key created without ``--scope``): both keep today's meaning.
"""

from __future__ import annotations

import fnmatch
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final, Literal

from gateway.policy.config import ALL_SCOPE, AuthorizationConfig, Rule

Kind = Literal["tool", "resource", "prompt"]
DEFAULT_RULE: Final = "default"
"""The metric label and audit name of a target no rule matches."""
_HELD_CACHE: Final = 1024
_NEED_CACHE: Final = 16384


@dataclass(frozen=True, slots=True)
class Need:
    """What one target needs: the rule that decided (``default`` when none did) and every scope of it."""

    rule: str
    scopes: tuple[str, ...]
    weight: int | None = None


@dataclass(frozen=True, slots=True)
class Held:
    """The scopes a credential holds, closed under ``implies`` (``everything``: no check at all)."""

    scopes: frozenset[str]
    everything: bool

    def covers(self, need: Need) -> bool:
        return self.everything or all(scope in self.scopes for scope in need.scopes)


EVERYTHING: Final = Held(frozenset(), everything=True)


def _pattern(globs: tuple[str, ...]) -> re.Pattern[str] | None:
    return re.compile("|".join(fnmatch.translate(g) for g in globs)) if globs else None


class _CompiledRule:
    __slots__ = ("need", "prompts", "resources", "tools")

    def __init__(self, rule: Rule) -> None:
        self.need = Need(rule.name, rule.scopes, rule.weight)
        self.tools = _pattern(rule.tools)
        self.prompts = _pattern(rule.prompts)
        self.resources = rule.resources

    def matches(self, kind: Kind, target: str) -> bool:
        if kind == "resource":
            return target.startswith(self.resources)
        pattern = self.tools if kind == "tool" else self.prompts
        return pattern is not None and pattern.match(target) is not None


class Policy:
    def __init__(self, config: AuthorizationConfig) -> None:
        self.config = config
        self.enabled = config.enabled
        self._rules = tuple(_CompiledRule(rule) for rule in config.rules)
        self._default = Need(DEFAULT_RULE, config.default_scopes)
        self._implies = {name: scope.implies for name, scope in config.scopes.items()}
        self._held: OrderedDict[str, Held] = OrderedDict()
        self._needs: dict[tuple[Kind, str], Need] = {}
        self.rule_names = frozenset({DEFAULT_RULE, *(rule.name for rule in config.rules)})
        """The closed set of metric labels: the configured rule names and ``default``."""

    def need(self, kind: Kind, target: str) -> Need:
        """The first matching rule's need (remembered: lists name the same targets again and again)."""
        key = (kind, target)
        need = self._needs.get(key)
        if need is None:
            need = next((rule.need for rule in self._rules if rule.matches(kind, target)), self._default)
            if len(self._needs) >= _NEED_CACHE:
                self._needs.clear()
            self._needs[key] = need
        return need

    def held(self, scope: str | None) -> Held:
        """What a credential with ``scope`` (space-separated; None: a key without scopes) may use."""
        if not self.enabled or scope is None:
            return EVERYTHING
        cached = self._held.get(scope)
        if cached is not None:
            return cached
        closed: set[str] = set()
        pending = scope.split()
        while pending:
            name = pending.pop()
            if name not in closed:
                closed.add(name)
                pending.extend(self._implies.get(name, ()))
        held = EVERYTHING if ALL_SCOPE in closed else Held(frozenset(closed), everything=False)
        self._held[scope] = held
        if len(self._held) > _HELD_CACHE:
            self._held.popitem(last=False)
        return held
