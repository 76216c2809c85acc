"""Filtered lists: ``tools/list``, ``resources/list``, ``resources/templates/list`` and ``prompts/list`` answers
show only what the principal may use, in JSON answers and in SSE streams, page by page (``nextCursor`` passes).

A filtered result is marked ``cacheScope: "private"`` (MCP 2026-07-28): it depends on who asked, so it must never
be cached as one answer for everyone. Answers are recognised by shape (a JSON-RPC result holding ``tools``,
``prompts``, ``resources`` or ``resourceTemplates``), which also covers the legacy SSE stream, where answers
arrive on the ``GET`` stream rather than on the ``POST`` that asked. An answer the gateway cannot read (an
unknown content encoding, an oversized event) is never passed on unfiltered.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from typing import Final

from aiohttp import web

from gateway.errors import UpstreamError
from gateway.policy.match import Held, Kind, Policy
from gateway.proxy.headers import downstream_response_headers
from gateway.proxy.http1 import Response
from gateway.proxy.upstream import EVENT_STREAM, ChunkFilter, EndStream, Upstream, error_event

RESULT_LISTS: Final[Mapping[str, tuple[Kind, str]]] = {
    "tools": ("tool", "name"),
    "prompts": ("prompt", "name"),
    "resources": ("resource", "uri"),
    "resourceTemplates": ("resource", "uriTemplate"),
}
PRIVATE: Final = "private"
MAX_ANSWER_BYTES: Final = 16 * 1024 * 1024
_RESULT_MARK: Final = b'"result"'


def filter_result(policy: Policy, held: Held, result: dict[str, object]) -> bool:
    """Drop from a list result what ``held`` does not cover; True when ``result`` is a list result."""
    found = False
    for key, (kind, field) in RESULT_LISTS.items():
        items = result.get(key)
        if not isinstance(items, list):
            continue
        found = True
        result[key] = [
            item
            for item in items
            if isinstance(item, dict)
            and isinstance(item.get(field), str)
            and held.covers(policy.need(kind, item[field]))
        ]
    if found:
        result["cacheScope"] = PRIVATE
    return found


def filter_message(policy: Policy, held: Held, message: object) -> bool:
    """Filter every list result in a JSON-RPC message or batch, in place; True when one was found."""
    members = message if isinstance(message, list) else [message]
    found = False
    for member in members:
        if isinstance(member, dict) and "id" in member and isinstance(member.get("result"), dict):
            found = filter_result(policy, held, member["result"]) or found
    return found


def filter_body(policy: Policy, held: Held, body: bytes) -> bytes:
    """A JSON answer with its list results filtered (unchanged bytes when it holds none, or is not JSON)."""
    if _RESULT_MARK not in body:
        return body
    try:
        message = json.loads(body)
    except ValueError:
        return body
    if not filter_message(policy, held, message):
        return body
    return json.dumps(message, separators=(",", ":")).encode()


class SseFilter:
    """A stream filter (``ChunkFilter``): passes each complete event on, its list results filtered."""

    def __init__(self, policy: Policy, held: Held, *, max_event_bytes: int = MAX_ANSWER_BYTES) -> None:
        self._policy = policy
        self._held = held
        self._max = max_event_bytes
        self._buffer = bytearray()
        self._pending_cr = b""

    async def __call__(self, chunk: bytes) -> bytes:
        data = (self._pending_cr + chunk).replace(b"\r\n", b"\n")
        self._pending_cr = b""
        if data.endswith(b"\r"):
            data, self._pending_cr = data[:-1], b"\r"
        data = data.replace(b"\r", b"\n")
        # Only the new bytes (and the last one before them) can complete an event: never rescan the buffer.
        ends_event = b"\n\n" in self._buffer[-1:] + data
        self._buffer += data
        if not ends_event:
            if len(self._buffer) > self._max:
                raise EndStream(error_event("upstream event too large"))
            return b""
        complete, rest = bytes(self._buffer).rsplit(b"\n\n", 1)
        self._buffer = bytearray(rest)
        return b"".join(self._event(event) + b"\n\n" for event in complete.split(b"\n\n"))

    def _event(self, event: bytes) -> bytes:
        if _RESULT_MARK not in event:
            return event
        lines = event.split(b"\n")
        data = b"\n".join(line[5:].removeprefix(b" ") for line in lines if line.startswith(b"data:"))
        filtered = filter_body(self._policy, self._held, data)
        if filtered is data:
            return event
        kept = [line for line in lines if not line.startswith(b"data:")]
        return b"\n".join([*kept, b"data: " + filtered])


def chained(first: ChunkFilter, second: ChunkFilter | None) -> ChunkFilter:
    """``first`` then ``second`` (when there is one)."""
    if second is None:
        return first
    after = second

    async def both(chunk: bytes) -> bytes:
        return await after(await first(chunk))

    return both


async def relay_filtered(
    upstream_api: Upstream,
    request: web.Request,
    upstream: Response,
    *,
    policy: Policy,
    held: Held,
    extra_headers: Mapping[str, str] | None = None,
) -> web.StreamResponse:
    """Relay ``upstream``'s answer with its list results filtered for ``held``."""
    encoding = upstream.headers.get("Content-Encoding", "identity").strip().lower()
    if upstream.content_type == EVENT_STREAM:
        if encoding != "identity":
            raise UpstreamError("Upstream answer cannot be filtered (encoded event stream)")
        transform = SseFilter(policy, held)
        return await upstream_api.relay(request, upstream, transform=transform, extra_headers=extra_headers)
    raw = b""
    try:
        while chunk := await upstream.content.readany():
            raw += chunk
            if len(raw) > MAX_ANSWER_BYTES:
                raise UpstreamError("Upstream answer too large to filter")
    except OSError as exc:  # a broken body, or none within the idle timeout
        raise UpstreamError("Upstream MCP server broke off its answer") from exc
    body = filter_body(policy, held, _decoded(raw, encoding))
    headers = downstream_response_headers(upstream.headers)
    headers.popall("Content-Encoding", None)
    headers.update(extra_headers or {})
    return web.Response(status=upstream.status, headers=headers, body=body)


def _decoded(raw: bytes, encoding: str) -> bytes:
    if encoding == "identity":
        return raw
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise UpstreamError("Upstream answer cannot be filtered (unknown content encoding)")
    decoder = zlib.decompressobj(wbits=47)  # gzip or zlib, detected
    try:
        body = decoder.decompress(raw, MAX_ANSWER_BYTES)
    except zlib.error as exc:
        raise UpstreamError("Upstream answer cannot be filtered (bad content encoding)") from exc
    if decoder.unconsumed_tail:
        raise UpstreamError("Upstream answer too large to filter")
    return body
