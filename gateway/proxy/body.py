"""The body of an MCP POST: decoded at most once, parsed strictly, and forwarded exactly as parsed.

The gateway charges and checks (``Mcp-Method`` / ``Mcp-Name``) what it parsed, so the upstream must receive
those bytes and nothing it could read differently: a request ``Content-Encoding`` of ``gzip`` or ``deflate``
is decoded once (by aiohttp, as the body arrives) and the decoded JSON is forwarded without the header; any
other coding, a list of codings or a repeated field is refused (415); a body that does not match its coding
is a 400. The JSON must be UTF-8 (RFC 8259 §8.1), without duplicate member names (RFC 8259 §4: parsers
disagree on which one wins) or non-standard constants (``NaN``); anything else is a JSON-RPC parse error,
answered by the gateway, never forwarded.
"""

from __future__ import annotations

import json
from typing import Any, Final

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from gateway import jsonsafe
from gateway.errors import JSONRPC_INVALID_REQUEST, BadJsonRpc, GatewayError, InvalidJson

DECODED_CODINGS: Final = frozenset({"gzip", "deflate"})
"""Codings aiohttp decodes as the body arrives (it reads only the first ``Content-Encoding`` line)."""
UNREADABLE = web.RequestKey("body_unreadable", bool)


class UnsupportedContentEncoding(GatewayError):
    """A request ``Content-Encoding`` the gateway does not decode (RFC 9110 §15.5.16: 415, ``Accept-Encoding``)."""

    status = 415
    error = "unsupported_media_type"
    jsonrpc_code = JSONRPC_INVALID_REQUEST


class UndecodableBody(BadJsonRpc):
    """The body could not be read: it does not match its ``Content-Encoding``, or its framing is broken."""


def check_content_encoding(request: web.Request) -> None:
    """415 unless the body arrives unencoded or in one coding aiohttp decodes (see the module docstring)."""
    lines = request.headers.getall("Content-Encoding", ())
    if not lines:
        return
    coding = lines[0].lower()
    if len(lines) == 1 and (coding in DECODED_CODINGS or coding.strip() in ("", "identity")):
        return
    raise UnsupportedContentEncoding(
        "Unsupported Content-Encoding: send the body as is, or in one of gzip, deflate",
        headers={"Accept-Encoding": "gzip, deflate"},
    )


async def read_body(request: web.Request) -> bytes:
    """The request body, decoded once; 415 / 400 as the module docstring says, 413 past the size limit."""
    check_content_encoding(request)
    try:
        return await request.read()
    except RequestPayloadError as exc:
        # The connection's framing is lost: answer, then close it (and do not let aiohttp drain the broken
        # body afterwards, which would log an unhandled exception).
        request.content.feed_eof()
        request[UNREADABLE] = True
        raise UndecodableBody("Request body could not be read: it does not match its Content-Encoding") from exc


def close_after_unreadable_body(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: the answer to an unreadable body is the connection's last."""
    if response.status == UndecodableBody.status and request.get(UNREADABLE):  # (a 400: checked first, cheaply)
        response.force_close()


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("duplicate member name")
    return obj


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER: Final = json.JSONDecoder(object_pairs_hook=_object, parse_constant=_constant)
"""One strict decoder for every message (``json.loads`` with hooks would build a new one per call)."""


def parse_message(body: bytes) -> object:
    """The JSON-RPC message (or batch) in a POST body, or ``InvalidJson`` (400, JSON-RPC -32700)."""
    try:
        text = body.decode("utf-8")
        value = _DECODER.decode(text)
    except RecursionError as exc:
        raise InvalidJson(jsonsafe.TOO_DEEP) from exc
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError included
        raise InvalidJson("Parse error: the body is not one JSON text in UTF-8") from exc
    if jsonsafe.too_deep(text, value):
        raise InvalidJson(jsonsafe.TOO_DEEP)
    return value
