"""The MCP resource as an OAuth audience (RFC 8707): canonical form and what clients may send."""

from __future__ import annotations

from urllib.parse import urlsplit


def canonical_resource(uri: str) -> str | None:
    """Lowercase scheme and host, no fragment, no trailing slash; None when ``uri`` is not an absolute URI
    or carries a fragment (RFC 8707 §2: the resource MUST NOT include a fragment)."""
    if "#" in uri or any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in uri):
        return None
    parts = urlsplit(uri)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc or parts.username or parts.password:
        return None
    path = parts.path.rstrip("/")
    query = f"?{parts.query}" if parts.query else ""
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{path}{query}"


def matches_resource(requested: str, resource: str) -> bool:
    """True when ``requested`` names this resource (trailing slash and letter case of scheme/host forgiven)."""
    return canonical_resource(requested) == resource
