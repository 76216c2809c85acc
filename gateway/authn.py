"""Moved to ``gateway.credentials`` (issue 11, item 17). This alias only lets branches written against the old
module merge; nothing in the tree imports it. Delete it once they have."""

from gateway.credentials import DEFAULT_CACHE_TTL, MAX_CACHE_TTL, Authenticator, Challenge, Principal

__all__ = ["DEFAULT_CACHE_TTL", "MAX_CACHE_TTL", "Authenticator", "Challenge", "Principal"]
