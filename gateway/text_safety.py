"""Text that people type and the gateway later shows, prints or logs: one rule for what is refused and one way
to escape what is shown.

Refused at every entrance (client names, e-mail addresses): control characters (ESC, NUL, CR, LF...), format
characters (bidi overrides such as U+202E, zero-width characters), line/paragraph separators, surrogates,
private-use and unassigned code points. What was stored before the rule (or arrives from elsewhere, such as a
request path) is escaped when it reaches a terminal or a log line, so it can neither move the cursor nor start a
new line.
"""

from __future__ import annotations

import unicodedata
from typing import Final

UNSAFE_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def _unsafe(char: str) -> bool:
    return unicodedata.category(char) in UNSAFE_CATEGORIES


def has_unsafe_characters(value: str) -> bool:
    """True when ``value`` holds a character that must never be accepted into a name or an address."""
    if value.isascii() and value.isprintable():  # printable ASCII holds none of them (the common case, at C speed)
        return False
    return any(_unsafe(char) for char in value)


def _escaped(char: str) -> str:
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def escape_unsafe(value: str) -> str:
    """``value`` with every unsafe character written as a Python-style escape (``\\x1b``, ``\\u202e``): safe on a
    terminal and on one log line; unchanged when there is nothing to escape."""
    if not has_unsafe_characters(value):
        return value
    return "".join(_escaped(char) if _unsafe(char) else char for char in value)
