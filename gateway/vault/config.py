"""The ``services:`` section: the third-party APIs the gateway calls on a user's behalf (``/v1/proxy/NAME/…``).

    services:
      google:                                   # a preset: provider google, api_base https://www.googleapis.com
        scopes: [openid, email, https://www.googleapis.com/auth/gmail.readonly]
      github: {}                                # a preset: provider github, api_base https://api.github.com
      crm:
        provider: corp                          # a name from identity_providers
        api_base: https://api.crm.example.com/v2
        scopes: [openid, offline_access, crm.read]
        methods: [GET, POST]                    # default: GET, HEAD
        forward_headers: [Accept, Content-Type, If-None-Match]   # default: Accept, Accept-Language, Content-Type

``api_base`` is the only place the proxy may reach for the service: https, or http on loopback only (tests).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from gateway.identity.provider_config import IdentityProvidersConfig

_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_SCOPE = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+$")
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_KEYS = {"preset", "provider", "api_base", "scopes", "methods", "forward_headers"}
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
DEFAULT_METHODS = ("GET", "HEAD")
DEFAULT_FORWARD_HEADERS = ("Accept", "Accept-Language", "Content-Type")
NEVER_FORWARDED = frozenset(
    {"authorization", "x-api-key", "cookie", "host", "proxy-authorization", "forwarded", "x-forwarded-for"}
)
"""Headers no configuration can forward: the app's credentials, the person's cookies, routing headers."""

PRESETS: dict[str, dict[str, Any]] = {
    "google": {"provider": "google", "api_base": "https://www.googleapis.com"},
    "github": {"provider": "github", "api_base": "https://api.github.com"},
}


@dataclass(frozen=True)
class ServiceConfig:
    name: str
    provider: str
    api_base: str
    """Scheme, host and optional path prefix (no trailing slash): every proxied URL starts with it."""
    scopes: tuple[str, ...] = ()
    methods: tuple[str, ...] = DEFAULT_METHODS
    forward_headers: tuple[str, ...] = DEFAULT_FORWARD_HEADERS


@dataclass(frozen=True)
class ServicesConfig:
    services: tuple[ServiceConfig, ...] = field(default_factory=tuple)

    def get(self, name: str) -> ServiceConfig | None:
        return next((s for s in self.services if s.name == name), None)

    @property
    def names(self) -> frozenset[str]:
        return frozenset(s.name for s in self.services)


def parse_services(raw: object, path: str = "services") -> tuple[ServicesConfig, list[str]]:
    if raw is None:
        return ServicesConfig(), []
    if not isinstance(raw, dict):
        return ServicesConfig(), [f"{path}: expected a mapping of service names to services"]
    problems: list[str] = []
    services = [s for name, body in raw.items() if (s := _parse_service(name, body, f"{path}.{name}", problems))]
    return ServicesConfig(tuple(services)), problems


def check_services(services: ServicesConfig, providers: IdentityProvidersConfig) -> list[str]:
    """Cross-section check: each service names a configured identity provider."""
    return [
        f"services.{s.name}.provider: {s.provider!r} is not in identity_providers"
        for s in services.services
        if providers.get(s.provider) is None
    ]


def _parse_service(name: object, body: object, path: str, problems: list[str]) -> ServiceConfig | None:
    if not isinstance(name, str) or not _NAME.match(name):
        problems.append(f"{path}: service names are 1-32 lowercase letters, digits, '_' or '-'")
        return None
    body = {} if body is None else body
    if not isinstance(body, dict):
        problems.append(f"{path}: expected a mapping")
        return None
    count = len(problems)
    problems += [f"{path}.{key}: unknown key" for key in body if key not in _KEYS]
    preset = body.get("preset", name if name in PRESETS else None)
    if preset is not None and preset not in PRESETS:
        problems.append(f"{path}.preset: expected one of {', '.join(sorted(PRESETS))}")
        return None
    merged: dict[str, Any] = {**PRESETS.get(preset or "", {}), **{k: v for k, v in body.items() if k in _KEYS}}
    provider, api_base = merged.get("provider"), merged.get("api_base")
    if not isinstance(provider, str) or not provider:
        problems.append(f"{path}.provider: required (a name from identity_providers)")
    if not isinstance(api_base, str) or not api_base:
        problems.append(f"{path}.api_base: required (the https URL the proxy may reach)")
    else:
        problems += check_api_base(f"{path}.api_base", api_base)
    scopes = merged.get("scopes", [])
    if not isinstance(scopes, list) or not all(isinstance(s, str) and _SCOPE.match(s) for s in scopes):
        problems.append(f"{path}.scopes: a list of scope tokens")
    methods = merged.get("methods", list(DEFAULT_METHODS))
    if not isinstance(methods, list) or not methods or not all(isinstance(m, str) and m in METHODS for m in methods):
        problems.append(f"{path}.methods: a non-empty list of {', '.join(sorted(METHODS))}")
    headers = merged.get("forward_headers", list(DEFAULT_FORWARD_HEADERS))
    if not isinstance(headers, list) or not all(isinstance(h, str) and _TOKEN.match(h) for h in headers):
        problems.append(f"{path}.forward_headers: a list of header names")
    elif forbidden := [h for h in headers if h.lower() in NEVER_FORWARDED]:
        problems.append(f"{path}.forward_headers: {', '.join(forbidden)} may never be forwarded")
    if len(problems) > count:
        return None
    return ServiceConfig(
        name=name,
        provider=str(provider),
        api_base=str(api_base).rstrip("/"),
        scopes=tuple(scopes),
        methods=tuple(dict.fromkeys(methods)),
        forward_headers=tuple(dict.fromkeys(headers)),
    )


def check_api_base(name: str, url: str) -> list[str]:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return [f"{name}: not a URL"]
    loopback = parts.hostname in ("127.0.0.1", "localhost", "::1")
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        return [f"{name}: expected an https:// URL (http:// only on loopback)"]
    if not parts.hostname or parts.username or parts.password or parts.query or parts.fragment or "%" in url:
        return [f"{name}: a host and optional path only (no credentials, query, fragment or escapes)"]
    if port == 0 or any(seg in (".", "..") for seg in parts.path.split("/")):
        return [f"{name}: no dot segments or port 0"]
    return []
