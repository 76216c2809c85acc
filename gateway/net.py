"""Who is on the other end of a connection, when the gateway sits behind a load balancer."""

from __future__ import annotations

import ipaddress
from collections.abc import Collection

from aiohttp import web


def client_address(request: web.Request, trusted_proxies: Collection[str]) -> str:
    """The client's address: the last ``X-Forwarded-For`` hop when the peer is a trusted proxy, else the peer.

    Only the hop the trusted proxy appended is believed; anything a client wrote earlier in the header is not.
    """
    peer = request.remote or "unknown"
    if peer in trusted_proxies:
        # RFC 9110 §5.3: several field lines are one comma-separated list; a proxy may append its own line.
        joined = ",".join(request.headers.getall("X-Forwarded-For", ()))
        hops = [hop.strip() for hop in joined.split(",") if hop.strip()]
        if hops:
            return hops[-1]
    return peer


def address_bucket(address: str) -> str:
    """The unit an address-based limit counts: an IPv4 address, or the /64 an IPv6 address belongs to (one
    subscriber usually holds a whole /64, so counting single IPv6 addresses would be no limit at all)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)
