"""Redirect URIs: validation at registration (RFC 7591 §2, OAuth 2.1 §2.3.1, RFC 8252 §7) and matching at
authorization (OAuth 2.1 §4.1.1, RFC 8252 §7.3).

Validation is an allowlist applied to the raw string, never a blocklist and never after normalising
(security-cases 6-8, 22, 23; stack pitfall: ``urlparse`` drops ``;params`` and fragments). Three shapes
are accepted:

- ``https://host[:port][/path][?query]`` with no fragment (not even a bare ``#``), no userinfo, no wildcard;
- loopback ``http://`` on exactly ``127.0.0.1``, ``[::1]`` or ``localhost``, port optional;
- a private-use scheme (``com.example.app:/cb``) that is reverse-domain or on the operator's allowlist.

Every character must be printable ASCII: C0, C1, DEL, whitespace and non-ASCII are refused anywhere, and
so is a scheme that is not lowercase. Matching is exact string comparison, except that a registered
loopback URI matches the same host, path and query on any port.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from enum import Enum

from gateway.oauth.errors import InvalidRedirectUri

MAX_REDIRECT_URI_LENGTH = 2048

LOOPBACK_REDIRECT_HOSTS = ("127.0.0.1", "[::1]", "localhost")

_PRINTABLE_ASCII = re.compile(r"[\x21-\x7e]+")
_SCHEME = re.compile(r"([a-z][a-z0-9+.\-]*):")
_DOTTED_SCHEME = re.compile(r"[a-z][a-z0-9+\-]*(\.[a-z0-9][a-z0-9+\-]*)+")
# RFC 3986 §3.2.2 reg-name restricted to DNS labels, or a bracketed IPv6 literal; then an optional port.
_HTTPS = re.compile(
    r"https://(?P<host>\[[0-9a-f:.]+\]|[a-z0-9](?:[a-z0-9\-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9\-]*[a-z0-9])?)*\.?)"
    r"(?::(?P<port>[0-9]{1,5}))?(?P<rest>[/?].*)?",
    re.IGNORECASE,
)
_LOOPBACK = re.compile(
    r"http://(?P<host>127\.0\.0\.1|\[::1\]|localhost)(?::(?P<port>[0-9]{1,5}))?(?P<path>/[^?]*)?(?P<query>\?.*)?"
)


class RedirectUriKind(Enum):
    HTTPS = "https"
    LOOPBACK = "loopback"
    """``http`` on a loopback host (RFC 8252 §7.3)."""
    PRIVATE_USE = "private_use"
    """A native app's private-use URI scheme (RFC 8252 §7.1)."""


@dataclass(frozen=True, slots=True)
class _Loopback:
    host: str
    path: str
    query: str


def _port_ok(port: str | None) -> bool:
    return port is None or 0 < int(port) <= 65535


def _parse_loopback(uri: str) -> _Loopback | None:
    match = _LOOPBACK.fullmatch(uri)
    if match is None or not _port_ok(match["port"]):
        return None
    return _Loopback(match["host"], match["path"] or "", match["query"] or "")


def classify_redirect_uri(uri: str, *, private_use_schemes: Collection[str]) -> RedirectUriKind:
    """The kind of an acceptable redirect URI, or ``InvalidRedirectUri`` with a short reason (never the URI)."""
    if not isinstance(uri, str) or not uri:
        raise InvalidRedirectUri("A redirect URI must be a non-empty string")
    if len(uri) > MAX_REDIRECT_URI_LENGTH:
        raise InvalidRedirectUri("A redirect URI is too long")
    if _PRINTABLE_ASCII.fullmatch(uri) is None:
        raise InvalidRedirectUri("A redirect URI contains whitespace, control or non-ASCII characters")
    if "#" in uri:
        # RFC 6749 §3.1.2: the redirection endpoint URI MUST NOT include a fragment component.
        raise InvalidRedirectUri("A redirect URI must not contain a fragment")
    if "\\" in uri:
        raise InvalidRedirectUri("A redirect URI must not contain a backslash")
    scheme_match = _SCHEME.match(uri)
    if scheme_match is None:
        # RFC 7591 §2 / OAuth 2.1 §2.3.1: absolute URIs only; a scheme is lowercase here (no case tricks).
        raise InvalidRedirectUri("A redirect URI must be absolute, with a lowercase scheme")
    scheme = scheme_match.group(1)
    if scheme == "https":
        return _check_https(uri)
    if scheme == "http":
        # OAuth 2.1 §2.3.1, RFC 8252 §7.3: plain http only for the loopback interface, named exactly.
        if _parse_loopback(uri) is None:
            raise InvalidRedirectUri("http redirect URIs are allowed only on 127.0.0.1, [::1] or localhost")
        return RedirectUriKind.LOOPBACK
    return _check_private_use(uri, scheme, private_use_schemes)


def _check_https(uri: str) -> RedirectUriKind:
    authority = uri[len("https://") :].split("/", 1)[0].split("?", 1)[0]
    if "@" in authority:
        raise InvalidRedirectUri("A redirect URI must not contain user information")
    if "*" in authority:
        raise InvalidRedirectUri("A redirect URI must not contain a wildcard")
    match = _HTTPS.fullmatch(uri)
    if match is None or not _port_ok(match["port"]):
        raise InvalidRedirectUri("A redirect URI has an invalid host or port")
    return RedirectUriKind.HTTPS


def _check_private_use(uri: str, scheme: str, allowed: Collection[str]) -> RedirectUriKind:
    # RFC 8252 §7.1 / OAuth 2.1 §2.3.1: private-use schemes are reverse-domain names; schemes without a
    # period SHOULD be rejected, so only the operator's allowlist (Cursor, VS Code...) gets an exception.
    if scheme not in allowed and _DOTTED_SCHEME.fullmatch(scheme) is None:
        raise InvalidRedirectUri("Redirect URIs must use https, loopback http, or a reverse-domain app scheme")
    rest = uri[len(scheme) + 1 :]
    if not rest.strip("/"):
        raise InvalidRedirectUri("A redirect URI has no path")
    if rest.startswith("//") and "@" in rest[2:].split("/", 1)[0]:
        raise InvalidRedirectUri("A redirect URI must not contain user information")
    return RedirectUriKind.PRIVATE_USE


def is_valid_redirect_uri(uri: str, *, private_use_schemes: Collection[str]) -> bool:
    try:
        classify_redirect_uri(uri, private_use_schemes=private_use_schemes)
    except InvalidRedirectUri:
        return False
    return True


def is_loopback_redirect_uri(uri: str) -> bool:
    """A well-formed ``http`` URI on ``127.0.0.1``, ``[::1]`` or ``localhost``."""
    return _PRINTABLE_ASCII.fullmatch(uri) is not None and "#" not in uri and _parse_loopback(uri) is not None


def redirect_uri_matches(registered: str, requested: str) -> bool:
    """Whether ``requested`` (from an authorization request) is the ``registered`` redirect URI.

    Simple string comparison (OAuth 2.1 §4.1.1, RFC 3986 §6.2.1), with one exception: a loopback ``http``
    URI matches on any port, host, path and query unchanged (RFC 8252 §7.3, OAuth 2.1 §8.4.2), so a client
    that registered ``http://127.0.0.1/callback`` may come back with ``http://127.0.0.1:53412/callback``.
    ``127.0.0.1``, ``[::1]`` and ``localhost`` never stand in for each other.
    """
    if registered == requested:
        return True
    if not (is_loopback_redirect_uri(registered) and is_loopback_redirect_uri(requested)):
        return False
    ours, theirs = _parse_loopback(registered), _parse_loopback(requested)
    return ours is not None and ours == theirs


@dataclass(frozen=True, slots=True)
class RedirectReceiver:
    """What receives a code sent to a redirect URI: its kind and, in words, who it is."""

    kind: RedirectUriKind | None
    """None for a URI of no accepted shape (a stored value from an older release), shown in full."""
    text: str

    def __str__(self) -> str:
        return self.text

    @property
    def on_this_computer(self) -> bool:
        return self.kind is RedirectUriKind.LOOPBACK

    @property
    def app_scheme(self) -> bool:
        """Any app on the device may claim a private-use scheme (RFC 8252 §8.1)."""
        return self.kind is RedirectUriKind.PRIVATE_USE


def redirect_receiver(uri: str) -> RedirectReceiver:
    """What really receives a code sent to ``uri``, for the consent page and Authorized Apps alike.

    The authority of a private-use URI names nothing (``com.evil.app://claude.ai/cb`` goes to whichever app
    claims ``com.evil.app:``, not to claude.ai), so such a URI is shown by its scheme and in full; a loopback
    URI is an app on the person's own computer, told apart by its port; an ``https`` URI is its host.
    """
    loopback = _LOOPBACK.fullmatch(uri) if _PRINTABLE_ASCII.fullmatch(uri) else None
    if loopback is not None:
        return RedirectReceiver(RedirectUriKind.LOOPBACK, f"an app on this computer (port {loopback['port'] or 80})")
    https = _HTTPS.fullmatch(uri)
    if https is not None:
        port = f":{https['port']}" if https["port"] else ""
        return RedirectReceiver(RedirectUriKind.HTTPS, f"{https['host'].lower()}{port}")
    scheme = _SCHEME.match(uri)
    if scheme is not None and scheme.group(1) not in ("http", "https"):
        text = f"the app that opens {scheme.group(1)}: links ({uri})"
        return RedirectReceiver(RedirectUriKind.PRIVATE_USE, text)
    return RedirectReceiver(None, uri)
