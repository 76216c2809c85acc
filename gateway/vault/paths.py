"""Where a proxied request may go: ``api_base`` + the request's path, normalised, and never anywhere else (SSRF).

Read from the raw request target (never aiohttp's decoded path). Refused: dot segments (``.``/``..``, plain or
percent-encoded), encoded ``/`` ``\\`` ``.`` and ``%`` (double encoding), empty segments (``//host``), a scheme
(``http:``) or userinfo (``@``) where the path starts, ``\\``, and control characters anywhere, decoded or not.
"""

from __future__ import annotations

import re

from yarl import URL

from gateway.vault.errors import UnsafeProxyPath

_ESCAPE = re.compile(r"%(..)")
_PATH_CHARS = re.compile(r"^[A-Za-z0-9\-._~!$&'()*+,;=:@%/]*$")
_QUERY_CHARS = re.compile(r"^[A-Za-z0-9\-._~!$&'()*+,;=:@%/?]*$")
_FORBIDDEN_DECODED = frozenset("/\\.%")


def _decoded_control(text: str) -> bool:
    return any(ord(c) < 0x20 or ord(c) == 0x7F for c in text)


def _check_escapes(text: str, *, in_path: bool) -> None:
    for match in _ESCAPE.finditer(text):
        try:
            char = chr(int(match.group(1), 16))
        except ValueError:
            raise UnsafeProxyPath("The path holds an invalid percent-escape") from None
        if _decoded_control(char) or (in_path and char in _FORBIDDEN_DECODED):
            raise UnsafeProxyPath("The path holds an encoded slash, dot, percent or control character")
    if text.count("%") != len(_ESCAPE.findall(text)):
        raise UnsafeProxyPath("The path holds an invalid percent-escape")


def upstream_url(api_base: str, raw_target: str, prefix: str) -> URL:
    """The URL to call for the raw request target ``raw_target`` (path and query, as received), whose path starts
    with ``prefix`` (``/v1/proxy/NAME/``). Raises ``UnsafeProxyPath``."""
    path, _, query = raw_target.partition("?")
    if not path.startswith(prefix) or _decoded_control(raw_target):
        raise UnsafeProxyPath("The path is not a proxy path")
    tail = path[len(prefix) :]
    if not _PATH_CHARS.match(tail) or not _QUERY_CHARS.match(query):
        raise UnsafeProxyPath("The path holds characters that are not allowed")
    _check_escapes(tail, in_path=True)
    _check_escapes(query, in_path=False)
    segments = tail.split("/")
    if tail and (
        any(segment in ("", ".", "..") for segment in segments[:-1])
        or segments[-1] in (".", "..")
        or ":" in segments[0]
        or "@" in segments[0]
    ):
        raise UnsafeProxyPath("The path must stay under the service's API (no dot segments, //, scheme or @host)")
    base = URL(api_base)
    target = URL(f"{api_base}/{tail}" + (f"?{query}" if query else ""), encoded=True)
    base_path = base.raw_path.rstrip("/") + "/"
    if (target.scheme, target.raw_host, target.port) != (base.scheme, base.raw_host, base.port) or not (
        target.raw_path + "/"
    ).startswith(base_path):
        raise UnsafeProxyPath("The path must stay under the service's API")
    return target
