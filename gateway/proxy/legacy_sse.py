"""The legacy HTTP+SSE transport (MCP 2024-11-05) at ``/mcp/sse``.

``GET /mcp/sse`` opens the upstream's SSE stream. Its first ``endpoint`` event names where to POST
messages, a URL on the upstream; the gateway binds that session to the caller and rewrites the URL
to its own ``/mcp/sse/messages``. An endpoint on another origin closes the stream with an error.
``POST /mcp/sse/messages?session_id=...`` is forwarded to the upstream only for the session's owner.
"""

from __future__ import annotations

import contextlib
from urllib.parse import parse_qs, quote, urljoin, urlsplit

from aiohttp import web

from gateway.credentials import Principal
from gateway.errors import ServiceUnavailable, SessionNotFound, UpstreamError
from gateway.policy.filter import chained
from gateway.policy.setup import POLICY
from gateway.proxy.body import parse_message, read_body
from gateway.proxy.context import PROXY, ProxyContext
from gateway.proxy.guard import authenticate
from gateway.proxy.headers import refuse_repeats
from gateway.proxy.sessions import LEGACY_SSE
from gateway.proxy.upstream import EndStream, error_event
from gateway.quota.plans import STREAM_OPEN_COST

MESSAGES_PATH = "/mcp/sse/messages"
MAX_EVENT_BYTES = 1024 * 1024


class EndpointRewriter:
    """A stream filter: passes events through, rewriting the ``endpoint`` event."""

    def __init__(self, proxy: ProxyContext, principal: Principal, sse_url: str) -> None:
        self._proxy = proxy
        self._principal = principal
        self._sse_url = sse_url
        self._buffer = b""
        self._pending_cr = b""
        self.session_id: str | None = None

    async def __call__(self, chunk: bytes) -> bytes:
        if self.bound():
            return chunk
        data = (self._pending_cr + chunk).replace(b"\r\n", b"\n")
        self._pending_cr = b""
        if data.endswith(b"\r"):
            data, self._pending_cr = data[:-1], b"\r"
        self._buffer += data.replace(b"\r", b"\n")
        if len(self._buffer) > MAX_EVENT_BYTES:
            raise EndStream(error_event("upstream event too large"))
        out = b""
        while b"\n\n" in self._buffer:
            event, self._buffer = self._buffer.split(b"\n\n", 1)
            out += await self._event(event) + b"\n\n"
            if self.bound():
                out, self._buffer = out + self._buffer + self._pending_cr, b""
                self._pending_cr = b""
                break
        return out

    def bound(self) -> bool:
        """True once the endpoint event has been rewritten; the rest of the stream passes untouched."""
        return self.session_id is not None

    async def _event(self, event: bytes) -> bytes:
        lines = event.decode("utf-8", errors="replace").split("\n")
        name = next((ln[6:].strip() for ln in lines if ln.startswith("event:")), "message")
        if name != "endpoint":
            return event
        data = "\n".join(ln[5:].lstrip(" ") for ln in lines if ln.startswith("data:"))
        target = urljoin(self._sse_url, data.strip())
        announced, expected = urlsplit(target), urlsplit(self._sse_url)
        if (announced.scheme, announced.netloc) != (expected.scheme, expected.netloc):
            raise EndStream(error_event("upstream announced an endpoint on another origin"))
        session_ids = parse_qs(announced.query).get("session_id")
        if not session_ids:
            raise EndStream(error_event("upstream endpoint has no session id"))
        session_id = session_ids[0]
        await self._proxy.sessions.bind(session_id, self._principal, kind=LEGACY_SSE, upstream_path=announced.path)
        self.session_id = session_id
        public = f"{self._proxy.public_url}{MESSAGES_PATH}?session_id={quote(session_id, safe='')}"
        return f"event: endpoint\ndata: {public}".encode()


async def handle_sse(request: web.Request) -> web.StreamResponse:
    if request.method == "HEAD":  # a header-only answer would still open (and charge) an upstream stream
        raise web.HTTPMethodNotAllowed("HEAD", ["GET"])
    proxy = request.app[PROXY]
    proxy.check_origin(request)
    principal = await authenticate(request)
    refuse_repeats(request.headers)
    sse_url = proxy.upstream_sse_url
    if sse_url is None:
        raise web.HTTPNotFound()
    admission = await proxy.quota.admit(principal, STREAM_OPEN_COST, stream=True)
    headers = await proxy.upstream_headers(request, principal)
    rewriter = EndpointRewriter(proxy, principal, sse_url)
    async with admission.around(proxy.upstream.open("GET", sse_url, headers=headers, body=None)) as upstream:
        try:
            async with proxy.streams.watch(request, principal, upstream):
                return await proxy.upstream.relay(
                    request,
                    upstream,
                    transform=chained(rewriter, request.app[POLICY].stream_filter(principal)),
                    extra_headers=admission.headers,
                )
        finally:
            if rewriter.session_id is not None:
                with contextlib.suppress(ServiceUnavailable):
                    await proxy.sessions.forget(rewriter.session_id)


async def handle_message(request: web.Request) -> web.StreamResponse:
    proxy = request.app[PROXY]
    proxy.check_origin(request)
    principal = await authenticate(request)
    if proxy.upstream_sse_url is None:
        raise web.HTTPNotFound()
    session_id = request.query.get("session_id")
    if session_id is None:
        raise SessionNotFound("Session not found")
    refuse_repeats(request.headers)
    session = await proxy.sessions.require(session_id, principal, kind=LEGACY_SSE)
    body = await read_body(request)
    message = parse_message(body)
    if not session.upstream_path.startswith("/"):
        raise UpstreamError("Upstream session endpoint unknown")
    verdict = request.app[POLICY].judge(request, principal, message)
    cost = proxy.quota.cost_of(principal, message) + verdict.extra_cost(proxy.quota.plan(principal))
    admission = await proxy.quota.admit(principal, cost)
    base = urlsplit(proxy.upstream_sse_url)
    url = f"{base.scheme}://{base.netloc}{session.upstream_path}?session_id={quote(session_id, safe='')}"
    headers = await proxy.upstream_headers(request, principal)
    async with admission.around(proxy.upstream.open("POST", url, headers=headers, body=body)) as upstream:
        return await proxy.upstream.relay(request, upstream, extra_headers=admission.headers)
