"""Moved to ``gateway.credentials`` (issue 11, item 17). This alias stays only while files that concurrent branches
edit (proxy/headers.py, legacy_sse.py, sessions.py, quota/gate.py) still import ``Principal`` from here: once they
are merged, point those imports at ``gateway.credentials`` and delete this module."""

from gateway.credentials import DEFAULT_CACHE_TTL, MAX_CACHE_TTL, Authenticator, Challenge, Principal

__all__ = ["DEFAULT_CACHE_TTL", "MAX_CACHE_TTL", "Authenticator", "Challenge", "Principal"]
