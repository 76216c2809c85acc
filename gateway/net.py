"""Who is on the other end of a connection, when the gateway sits behind a load balancer."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Collection

from aiohttp import web

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@functools.lru_cache(maxsize=16)
def _networks(trusted: frozenset[str]) -> tuple[Network, ...]:
    found: list[Network] = []
    for entry in trusted:
        try:
            found.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            continue  # refused by the configuration's checks; never trusted here
    return tuple(found)


def is_trusted(address: str, trusted_proxies: Collection[str]) -> bool:
    """Whether ``address`` is one of ``trusted_proxies`` (addresses or CIDR ranges, e.g. a pod network)."""
    if not trusted_proxies:
        return False
    if address in trusted_proxies:
        return True
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    return any(ip in network for network in _networks(frozenset(trusted_proxies)))


def client_address(request: web.Request, trusted_proxies: Collection[str]) -> str:
    """The client's address: when the peer is a trusted proxy, the nearest ``X-Forwarded-For`` hop that is not
    itself a trusted proxy (a chain of them, e.g. a cloud load balancer in front of an ingress); else the peer.

    Only hops trusted proxies appended are believed; anything a client wrote earlier in the header is not.
    """
    peer = request.remote or "unknown"
    if not is_trusted(peer, trusted_proxies):
        return peer
    # RFC 9110 §5.3: several field lines are one comma-separated list; a proxy may append its own line.
    joined = ",".join(request.headers.getall("X-Forwarded-For", ()))
    hops = [hop.strip() for hop in joined.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not is_trusted(hop, trusted_proxies):
            return hop
    return hops[0] if hops else peer


@functools.lru_cache(maxsize=4096)
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
