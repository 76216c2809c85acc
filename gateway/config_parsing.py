"""Typed YAML: ``${NAME}`` / ``${NAME:-default}`` substitution and frozen dataclasses built from plain data.

Every problem is appended to ``problems`` with its path (``upstream.connect_timeout: expected a number``) and
parsing carries on, so one pass reports them all. A field that fails its type check keeps its default, so the
checks that run afterwards on the built tree stay quiet about it.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

Parser = Callable[[object, str], tuple[Any, list[str]]]
"""A section with its own parser: ``(raw, path) -> (value, problems)``."""
Parsers = Mapping[Any, Parser]

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

_INVALID: Any = object()
"""Stands for a value already reported as a problem."""


def substitute_env(raw: object, env: Mapping[str, str], problems: list[str]) -> object:
    """``raw`` with every ``${NAME}`` reference in its strings replaced from ``env``."""
    return _substitute(raw, env, "", problems)


def build_dataclass(cls: type[Any], raw: object, problems: list[str], *, parsers: Parsers | None = None) -> object:
    """An instance of the dataclass ``cls`` from ``raw`` (unknown keys reported), or ``None`` when ``raw`` is not
    a mapping at all. ``parsers`` handle the section types that have their own parser."""
    built = _build(cls, raw, "", problems, parsers or {})
    return None if built is _INVALID else built


def _substitute(value: object, env: Mapping[str, str], path: str, problems: list[str]) -> object:
    if isinstance(value, str):
        missing: list[str] = []

        def replace(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            missing.append(name)
            return ""

        result = _ENV_REF.sub(replace, value)
        for name in missing:
            problems.append(f"{path or '<root>'}: environment variable {name} is not set")
        return _INVALID if missing else result
    if isinstance(value, dict):
        return {k: _substitute(v, env, _join(path, str(k)), problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, env, f"{path}[{i}]", problems) for i, v in enumerate(value)]
    return value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _build(cls: type[Any], raw: object, path: str, problems: list[str], parsers: Parsers) -> object:
    if not isinstance(raw, dict):
        problems.append(f"{path or '<root>'}: expected a mapping")
        return _INVALID
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            problems.append(f"{_join(path, str(key))}: unknown key")
    values: dict[str, Any] = {}
    for name in fields:
        if name in raw:
            value = _coerce(hints[name], raw[name], _join(path, name), problems, parsers)
            if value is not _INVALID:
                values[name] = value
    return cls(**values)


def _coerce(hint: Any, value: object, path: str, problems: list[str], parsers: Parsers) -> Any:
    """The value as ``hint``, or ``_INVALID`` after recording why not."""
    if value is _INVALID:
        return _INVALID
    if hint in parsers:
        parsed, found = parsers[hint](value, path)
        problems.extend(found)
        return parsed
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return _build(hint, value, path, problems, parsers)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(inner, value, path, problems, parsers)
    if origin is tuple:
        if not isinstance(value, list):
            problems.append(f"{path}: expected a list")
            return _INVALID
        (inner,) = {a for a in typing.get_args(hint) if a is not Ellipsis}
        items = [_coerce(inner, v, f"{path}[{i}]", problems, parsers) for i, v in enumerate(value)]
        return _INVALID if any(item is _INVALID for item in items) else tuple(items)
    if hint is bool:
        if not isinstance(value, bool):
            problems.append(f"{path}: expected true or false")
            return _INVALID
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{path}: expected an integer")
            return _INVALID
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(f"{path}: expected a number")
            return _INVALID
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            problems.append(f"{path}: expected a string")
            return _INVALID
        return value
    raise TypeError(f"unsupported config type {hint!r} at {path}")  # pragma: no cover
