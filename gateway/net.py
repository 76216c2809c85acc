"""Who is on the other end of a connection, when the gateway sits behind a load balancer."""

from __future__ import annotations

from collections.abc import Collection

from aiohttp import web


def client_address(request: web.Request, trusted_proxies: Collection[str]) -> str:
    """The client's address: the last ``X-Forwarded-For`` hop when the peer is a trusted proxy, else the peer.

    Only the hop the trusted proxy appended is believed; anything a client wrote earlier in the header is not.
    """
    peer = request.remote or "unknown"
    if peer in trusted_proxies:
        hops = [hop.strip() for hop in request.headers.get("X-Forwarded-For", "").split(",") if hop.strip()]
        if hops:
            return hops[-1]
    return peer
