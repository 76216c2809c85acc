"""The callback URLs an API key allows in the app flow (``keys create --redirect-uri``, the dashboard's key form,
the admin API), checked like OAuth clients' redirect URIs: ``https://`` or loopback ``http://`` only, no fragment,
no wildcard, printable ASCII; matched exactly, except that a registered loopback URL matches on any port."""

from __future__ import annotations

from collections.abc import Iterable

from gateway.oauth.redirect_uris import is_valid_redirect_uri, redirect_uri_matches
from gateway.storage.app_flow import KeyApp

MAX_REDIRECT_URIS = 10
TOKENS_IN_URL_RISK = (
    "tokens in the callback URL leak through browser history, server logs and the Referer header; "
    "prefer the one-time code (the default)"
)
"""Shown next to the setting wherever it can be turned on."""


class CallbackUrlError(ValueError):
    """A callback URL the app flow cannot accept; the message is safe to show."""


def checked_redirect_uris(uris: Iterable[str]) -> tuple[str, ...]:
    """The URLs, deduplicated in order, or ``CallbackUrlError`` naming the first bad one."""
    out: list[str] = []
    for raw in uris:
        uri = raw.strip()
        if not uri:
            continue
        if not is_valid_redirect_uri(uri, private_use_schemes=()):
            shown = uri if len(uri) <= 80 and uri.isprintable() else uri[:80].encode("ascii", "replace").decode()
            raise CallbackUrlError(
                f"callback URL {shown!r} is not accepted: https://host/path or http://127.0.0.1|localhost/path, "
                "with no fragment"
            )
        if uri not in out:
            out.append(uri)
    if len(out) > MAX_REDIRECT_URIS:
        raise CallbackUrlError(f"at most {MAX_REDIRECT_URIS} callback URLs per key")
    return tuple(out)


def allows(app: KeyApp | None, requested: str) -> bool:
    """Whether the key's app settings allow ``requested`` as its callback URL."""
    return app is not None and any(redirect_uri_matches(registered, requested) for registered in app.redirect_uris)


def key_app_for(api_key_id: str, uris: Iterable[str], *, tokens_in_url: bool = False) -> KeyApp | None:
    """The app settings to store with a new key (None: the key takes no part in the app flow), or
    ``CallbackUrlError``. Check it before minting the key, so a bad URL creates nothing."""
    checked = checked_redirect_uris(uris)
    if tokens_in_url and not checked:
        raise CallbackUrlError("tokens in the callback URL need at least one callback URL")
    return KeyApp(api_key_id, checked, tokens_in_url) if checked else None
