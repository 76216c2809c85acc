"""JSON from strangers, parsed safely: never a ``RecursionError``, never nested deeper than a bound.

Python's parser recurses once per nesting level, so ``[[[[...]]]]`` a thousand deep raises ``RecursionError``
(a 500 with a traceback) and a few hundred deep is a trap for any code that walks the value afterwards.
Every JSON body the gateway reads goes through ``loads`` (refused: ``InvalidJson``, a 400 that is a JSON-RPC
parse error on the MCP data plane) or ``loads_lenient`` (for the proxy, which forwards what it cannot read).
"""

from __future__ import annotations

import json
from typing import Final

from gateway.errors import InvalidJson

MAX_DEPTH: Final = 64
"""Objects and arrays nested deeper than this are refused (MCP messages nest a handful of levels)."""
TOO_DEEP: Final = "The JSON body is nested too deeply"


class JsonTooDeep(ValueError):
    pass


def depth(value: object) -> int:
    """How deeply ``value``'s objects and arrays nest (0 for a scalar), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children if isinstance(child, dict | list))
    return deepest


def too_deep(text: str, value: object, max_depth: int = MAX_DEPTH) -> bool:
    """Whether ``value``, parsed from ``text``, nests deeper than ``max_depth``. Every level opens a bracket, so a
    text with no more brackets than that (counted at C speed; brackets inside strings only overcount) cannot, and
    the walk is skipped: what a typical MCP message costs."""
    return text.count("{") + text.count("[") > max_depth and depth(value) > max_depth


def parse(data: bytes | str, *, max_depth: int = MAX_DEPTH) -> object:
    """The JSON value of ``data``; ``ValueError`` (``JsonTooDeep`` included) for anything else, never
    ``RecursionError``. Bytes are UTF-8 (RFC 8259 §8.1)."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        value = json.loads(text)
    except RecursionError as exc:
        raise JsonTooDeep(TOO_DEEP) from exc
    if too_deep(text, value, max_depth):
        raise JsonTooDeep(TOO_DEEP)
    return value


def loads(data: bytes | str, *, max_depth: int = MAX_DEPTH) -> object:
    """The JSON value of ``data``, or ``InvalidJson`` (400) saying why in a few safe words."""
    try:
        return parse(data, max_depth=max_depth)
    except JsonTooDeep as exc:
        raise InvalidJson(TOO_DEEP) from exc
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError included
        raise InvalidJson("The body is not valid JSON") from exc


def loads_lenient(data: bytes | str, *, max_depth: int = MAX_DEPTH) -> object:
    """Like ``loads``, but None for a body that is not JSON at all (the proxy forwards it; the upstream
    answers); nesting past ``max_depth`` is still ``InvalidJson``."""
    try:
        return parse(data, max_depth=max_depth)
    except JsonTooDeep as exc:
        raise InvalidJson(TOO_DEEP) from exc
    except ValueError:
        return None
