"""The ``authorization:`` section of the gateway configuration: named scopes and ordered rules.

    authorization:
      scopes:                                   # each with the sentence the consent page shows
        tools:read:  {description: "Use the read-only tools"}
        tools:write: {description: "Use the tools that change things", implies: [tools:read]}
      rules:                                    # the first rule that matches a target decides
        - {name: admin, tools: ["admin_*"], scopes: [tools:write], weight: 10}
        - {name: reading, tools: ["*"], resources: ["file:///public/"], prompts: ["*"], scopes: [tools:read]}
      default_scopes: [mcp:tools]               # what a target no rule matches needs

``mcp:tools`` always implies every scope (it keeps meaning everything). A rule's ``tools`` and ``prompts`` are
shell-style name patterns, its ``resources`` URI prefixes; a target needs every scope of its rule. A rule with
``weight`` makes each ``tools/call`` it matches cost that many quota units (instead of the plan's weight).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

ALL_SCOPE: Final = "mcp:tools"
"""The historical scope: it implies every other one."""
MAX_WEIGHT: Final = 1000
MAX_RULES: Final = 200

_SCOPE_TOKEN: Final = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]{1,64}$")  # RFC 6749 §3.3 scope-token
_RULE_NAME: Final = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_RULE_KEYS: Final = frozenset({"name", "tools", "resources", "prompts", "scopes", "weight"})


@dataclass(frozen=True, slots=True)
class ScopeDefinition:
    name: str
    description: str
    implies: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    scopes: tuple[str, ...]
    tools: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    prompts: tuple[str, ...] = ()
    weight: int | None = None


@dataclass(frozen=True)
class AuthorizationConfig:
    scopes: Mapping[str, ScopeDefinition] = field(default_factory=lambda: MappingProxyType({}))
    rules: tuple[Rule, ...] = ()
    default_scopes: tuple[str, ...] = (ALL_SCOPE,)

    @property
    def enabled(self) -> bool:
        """Whether any policy is configured (without one, every credential may use everything, as before)."""
        return bool(self.scopes or self.rules)


def parse_authorization_config(raw: object, path: str = "authorization") -> tuple[AuthorizationConfig, list[str]]:
    """The section as an ``AuthorizationConfig`` and every problem found (reported by path)."""
    problems: list[str] = []
    if raw is None:
        return AuthorizationConfig(), problems
    if not isinstance(raw, dict):
        return AuthorizationConfig(), [f"{path}: expected a mapping"]
    problems += [f"{path}.{key}: unknown key" for key in raw if key not in ("scopes", "rules", "default_scopes")]
    scopes = _parse_scopes(raw.get("scopes"), f"{path}.scopes", problems)
    known = set(scopes) | {ALL_SCOPE}
    for scope in scopes.values():
        for i, implied in enumerate(scope.implies):
            if implied not in known:
                problems.append(f"{path}.scopes.{scope.name}.implies[{i}]: unknown scope {implied!r}")
    rules = _parse_rules(raw.get("rules"), f"{path}.rules", known, problems)
    default: tuple[str, ...] = (ALL_SCOPE,)
    if "default_scopes" in raw:
        default = _scope_list(raw["default_scopes"], f"{path}.default_scopes", known, problems)
    return AuthorizationConfig(MappingProxyType(scopes), rules, default), problems


def _parse_scopes(raw: object, path: str, problems: list[str]) -> dict[str, ScopeDefinition]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.append(f"{path}: expected a mapping of scope names to {{description, implies}}")
        return {}
    scopes: dict[str, ScopeDefinition] = {}
    for name, body in raw.items():
        where = f"{path}.{name}"
        if not isinstance(name, str) or not _SCOPE_TOKEN.match(name) or name in (ALL_SCOPE, "offline_access"):
            problems.append(f"{where}: not an acceptable scope name (a scope token; not mcp:tools or offline_access)")
            continue
        if not isinstance(body, dict) or not isinstance(body.get("description"), str) or not body["description"]:
            problems.append(f"{where}: expected {{description: <a sentence>, implies: [...]}}")
            continue
        problems += [f"{where}.{key}: unknown key" for key in body if key not in ("description", "implies")]
        implies = _strings(body.get("implies", []), f"{where}.implies", problems)
        scopes[name] = ScopeDefinition(name, body["description"].strip(), implies)
    return scopes


def _parse_rules(raw: object, path: str, known: set[str], problems: list[str]) -> tuple[Rule, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or len(raw) > MAX_RULES:
        problems.append(f"{path}: expected a list of at most {MAX_RULES} rules")
        return ()
    rules: list[Rule] = []
    names: set[str] = set()
    for i, body in enumerate(raw):
        where = f"{path}[{i}]"
        if not isinstance(body, dict):
            problems.append(f"{where}: expected a mapping")
            continue
        problems += [f"{where}.{key}: unknown key" for key in body if key not in _RULE_KEYS]
        name = body.get("name")
        if not isinstance(name, str) or not _RULE_NAME.match(name):
            problems.append(
                f"{where}.name: 1-32 characters: lowercase letters, digits, _ and -, starting with a letter"
            )
            continue
        if name in names or name == "default":
            problems.append(f"{where}.name: {name!r} is used twice (or is the reserved name 'default')")
            continue
        names.add(name)
        targets = {
            key: _strings(body.get(key, []), f"{where}.{key}", problems) for key in ("tools", "resources", "prompts")
        }
        if not any(targets.values()):
            problems.append(f"{where}: name at least one of tools, resources, prompts")
        scopes = _scope_list(body.get("scopes", []), f"{where}.scopes", known, problems)
        weight = body.get("weight")
        if weight is not None and (
            isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= MAX_WEIGHT
        ):
            problems.append(f"{where}.weight: an integer from 0 to {MAX_WEIGHT}")
            weight = None
        rules.append(Rule(name, scopes, targets["tools"], targets["resources"], targets["prompts"], weight))
    return tuple(rules)


def _scope_list(raw: object, path: str, known: set[str], problems: list[str]) -> tuple[str, ...]:
    scopes = _strings(raw, path, problems)
    for i, scope in enumerate(scopes):
        if scope not in known:
            problems.append(f"{path}[{i}]: unknown scope {scope!r} (define it under authorization.scopes)")
    return tuple(s for s in scopes if s in known)


def _strings(raw: object, path: str, problems: list[str]) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(isinstance(item, str) and item for item in raw):
        problems.append(f"{path}: expected a list of non-empty strings")
        return ()
    return tuple(raw)


def merged_scopes(supported: tuple[str, ...], authorization: AuthorizationConfig) -> tuple[str, ...]:
    """The OAuth ``scopes_supported`` with the policy's scopes added (in their configured order)."""
    return supported + tuple(name for name in authorization.scopes if name not in supported)
