"""The cache of Client ID Metadata Documents (``gateway.oauth.cimd``): HTTP freshness, refresh pacing, stale copies.

A document is fresh for its HTTP lifetime (``cache_ttl``: ``Cache-Control``/``Expires``, clamped to
``[cache_min_ttl, cache_max_ttl]``; ``no-store`` is not stored). A refresh (a flow the cached copy does not
satisfy, such as an unlisted ``redirect_uri``) is answered from the cache while the copy is less than
``min_refresh`` old, so strangers cannot make the gateway fetch at will. An expired copy is kept ``keep_stale``
more seconds, to serve while the document's fetch budget is spent; a failed fetch ends an expired copy but
leaves a fresh one alone (it would serve until it expires anyway). Times are on the clock's monotonic scale.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Final, Generic, TypeVar

from multidict import MultiMapping

MAX_CACHE_ENTRIES: Final = 1024
T = TypeVar("T")


def cache_ttl(headers: MultiMapping[str], *, now: float, min_ttl: float, max_ttl: float) -> float | None:
    """Seconds to keep a document per RFC 9111 freshness, clamped; None when it must not be stored."""
    directives: dict[str, str] = {}
    for part in ",".join(headers.getall("Cache-Control", [])).split(","):
        name, _, value = part.strip().partition("=")
        directives[name.strip().lower()] = value.strip().strip('"')
    if "no-store" in directives:
        return None
    lifetime: float | None = None
    if "no-cache" in directives:
        lifetime = 0.0
    elif "max-age" in directives:
        value = directives["max-age"]
        lifetime = float(value) if value.isdigit() else 0.0
    elif "Expires" in headers:
        lifetime = _seconds_until(headers["Expires"], headers.get("Date"), now)
    if lifetime is None:
        return min_ttl
    age = headers.get("Age", "")
    if age.isdigit():
        lifetime -= float(age)
    return min(max_ttl, max(min_ttl, lifetime))


def _seconds_until(expires: str, date: str | None, now: float) -> float:
    # RFC 9111 §5.3: an invalid Expires means "already expired".
    try:
        end = parsedate_to_datetime(expires).timestamp()
        start = parsedate_to_datetime(date).timestamp() if date else now
    except (TypeError, ValueError):
        return 0.0
    return end - start


@dataclass(frozen=True, slots=True)
class _Entry(Generic[T]):
    value: T
    fetched_at: float
    expires_at: float
    stale_until: float


class DocumentCache(Generic[T]):
    """Documents by URL, the least recently used dropped past ``MAX_CACHE_ENTRIES``."""

    def __init__(self, *, min_refresh: float, keep_stale: float, max_entries: int = MAX_CACHE_ENTRIES) -> None:
        self._min_refresh = min_refresh
        self._keep_stale = keep_stale
        self._max = max_entries
        self._entries: OrderedDict[str, _Entry[T]] = OrderedDict()

    def fresh(self, url: str, now: float, *, refresh: bool = False) -> T | None:
        """The copy that answers without a fetch: fresh, and for a refresh also fetched under ``min_refresh`` ago."""
        entry = self._entries.get(url)
        if entry is None or now >= entry.expires_at:
            return None
        if refresh and now - entry.fetched_at >= self._min_refresh:
            return None
        self._entries.move_to_end(url)
        return entry.value

    def copy(self, url: str, now: float) -> T | None:
        """Any copy still kept, fresh or expired (for when a fetch is refused)."""
        entry = self._entries.get(url)
        if entry is not None and now >= entry.stale_until:
            del self._entries[url]
            return None
        return entry.value if entry is not None else None

    def store(self, url: str, value: T, now: float, ttl: float | None) -> None:
        """A fetched document (``ttl`` None: must not be stored, and an older copy goes too)."""
        if ttl is None:
            self._entries.pop(url, None)
            return
        self._entries[url] = _Entry(value, now, now + ttl, now + ttl + self._keep_stale)
        self._entries.move_to_end(url)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def failed(self, url: str, now: float) -> None:
        """A fetch failed: an expired copy goes, a fresh one stays."""
        entry = self._entries.get(url)
        if entry is not None and now >= entry.expires_at:
            del self._entries[url]

    def forget(self, url: str) -> None:
        self._entries.pop(url, None)

    def clear(self) -> None:
        self._entries.clear()
