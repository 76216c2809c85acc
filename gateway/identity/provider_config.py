"""The ``identity_providers:`` section: third-party OpenID Connect / OAuth 2 providers people sign in with.

    identity_providers:
      google:                                  # a preset: only the client is needed
        client_id: 1234.apps.googleusercontent.com
        client_secret: ${GOOGLE_CLIENT_SECRET}
      github:                                  # a preset: OAuth 2 without OIDC; the verified e-mail from its API
        client_id: Iv1.abc
        client_secret: ${GITHUB_CLIENT_SECRET}
      corp:                                    # any OpenID provider, by discovery (Keycloak, Okta, Entra ID…)
        display_name: Corp SSO
        issuer: https://sso.example.com/realms/corp
        client_id: mcp-gateway
        client_secret: ${CORP_CLIENT_SECRET}
        scopes: [openid, email, profile]       # the default for OIDC
        authorization_params: {prompt: select_account}
      legacy:                                  # plain OAuth 2: the endpoints, and where the user's e-mail comes from
        authorization_endpoint: https://legacy.example.com/oauth/authorize
        token_endpoint: https://legacy.example.com/oauth/token
        userinfo_endpoint: https://legacy.example.com/api/me
        client_id: …
        client_secret: ${LEGACY_SECRET}

A provider named ``google`` or ``github`` (or with ``preset: google|github``) starts from that preset; anything
given overrides it. ``google`` asks for ``access_type=offline`` with ``prompt=consent``: without both, Google never
returns a refresh token.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_SCOPE = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+$")
_ENDPOINTS = ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri", "emails_endpoint")
_KEYS = {"preset", "display_name", "issuer", "client_id", "client_secret", "scopes", "authorization_params", "pkce"}
_KEYS |= set(_ENDPOINTS)


@dataclass(frozen=True)
class ProviderConfig:
    name: str
    client_id: str
    client_secret: str
    display_name: str = ""
    issuer: str | None = None
    """OpenID Connect: the issuer, discovered at ``<issuer>/.well-known/openid-configuration``."""
    authorization_endpoint: str | None = None
    token_endpoint: str | None = None
    userinfo_endpoint: str | None = None
    jwks_uri: str | None = None
    emails_endpoint: str | None = None
    """GitHub's ``/user/emails``: where the verified e-mail of a plain OAuth 2 provider comes from."""
    scopes: tuple[str, ...] = ("openid", "email", "profile")
    authorization_params: tuple[tuple[str, str], ...] = ()
    pkce: bool = True
    """Send a PKCE S256 challenge (providers that do not know PKCE ignore it)."""

    @property
    def oidc(self) -> bool:
        return self.issuer is not None and "openid" in self.scopes


@dataclass(frozen=True)
class IdentityProvidersConfig:
    providers: tuple[ProviderConfig, ...] = field(default_factory=tuple)

    def get(self, name: str) -> ProviderConfig | None:
        return next((p for p in self.providers if p.name == name), None)


PRESETS: dict[str, dict[str, Any]] = {
    "google": {
        "display_name": "Google",
        "issuer": "https://accounts.google.com",
        "scopes": ["openid", "email", "profile"],
        "authorization_params": {"access_type": "offline", "prompt": "consent"},
    },
    "github": {
        "display_name": "GitHub",
        "authorization_endpoint": "https://github.com/login/oauth/authorize",
        "token_endpoint": "https://github.com/login/oauth/access_token",
        "userinfo_endpoint": "https://api.github.com/user",
        "emails_endpoint": "https://api.github.com/user/emails",
        "scopes": ["read:user", "user:email"],
    },
}


def parse_identity_providers(
    raw: object, path: str = "identity_providers"
) -> tuple[IdentityProvidersConfig, list[str]]:
    problems: list[str] = []
    if raw is None:
        return IdentityProvidersConfig(), problems
    if not isinstance(raw, dict):
        return IdentityProvidersConfig(), [f"{path}: expected a mapping of provider names to providers"]
    providers = []
    for name, body in raw.items():
        provider = _parse_provider(name, body, f"{path}.{name}", problems)
        if provider is not None:
            providers.append(provider)
    return IdentityProvidersConfig(tuple(providers)), problems


def _parse_provider(name: object, body: object, path: str, problems: list[str]) -> ProviderConfig | None:
    if not isinstance(name, str) or not _NAME.match(name):
        problems.append(f"{path}: provider names are 1-32 lowercase letters, digits, '_' or '-'")
        return None
    if not isinstance(body, dict):
        problems.append(f"{path}: expected a mapping")
        return None
    count = len(problems)
    problems += [f"{path}.{key}: unknown key" for key in body if key not in _KEYS]
    preset_name = body.get("preset", name if name in PRESETS else None)
    if preset_name is not None and preset_name not in PRESETS:
        problems.append(f"{path}.preset: expected one of {', '.join(sorted(PRESETS))}")
        return None
    merged: dict[str, Any] = {**PRESETS.get(preset_name or "", {}), **{k: v for k, v in body.items() if k in _KEYS}}
    merged.pop("preset", None)
    strings = {k: merged.get(k) for k in ("display_name", "issuer", "client_id", "client_secret", *_ENDPOINTS)}
    for key, value in strings.items():
        if value is not None and not isinstance(value, str):
            problems.append(f"{path}.{key}: expected a string")
    for key in ("client_id", "client_secret"):
        if not strings[key]:
            problems.append(f"{path}.{key}: required (pass the secret as ${{ENV}})")
    for key in ("issuer", *_ENDPOINTS):
        if isinstance(strings[key], str):
            problems += _check_url(f"{path}.{key}", str(strings[key]))
    scopes = merged.get("scopes", ["openid", "email", "profile"])
    if not isinstance(scopes, list) or not all(isinstance(s, str) and _SCOPE.match(s) for s in scopes) or not scopes:
        problems.append(f"{path}.scopes: a non-empty list of scope tokens")
        scopes = []
    params = merged.get("authorization_params", {})
    reserved = {"client_id", "redirect_uri", "state", "nonce", "code_challenge", "code_challenge_method", "scope"}
    if not isinstance(params, dict) or not all(isinstance(v, str) for v in params.values()):
        problems.append(f"{path}.authorization_params: a mapping of parameter names to strings")
        params = {}
    elif reserved & set(params) or "response_type" in params:
        problems.append(f"{path}.authorization_params: the gateway sets {', '.join(sorted(reserved & set(params)))}")
    pkce = merged.get("pkce", True)
    if not isinstance(pkce, bool):
        problems.append(f"{path}.pkce: expected true or false")
    if not strings["issuer"] and not (strings["authorization_endpoint"] and strings["token_endpoint"]):
        problems.append(f"{path}: give an issuer (OpenID Connect) or authorization_endpoint and token_endpoint")
    elif strings["issuer"] and "openid" not in scopes and not strings["authorization_endpoint"]:
        problems.append(f"{path}.scopes: include openid for discovery by issuer, or give the endpoints")
    elif not strings["issuer"] and not strings["userinfo_endpoint"]:
        problems.append(f"{path}.userinfo_endpoint: required without an issuer (it gives the user's identity)")
    if len(problems) > count:
        return None
    urls: dict[str, str | None] = {k: strings[k] or None for k in ("issuer", *_ENDPOINTS)}
    return ProviderConfig(
        name=name,
        client_id=str(strings["client_id"]),
        client_secret=str(strings["client_secret"]),
        display_name=str(strings["display_name"] or name),
        issuer=urls["issuer"],
        authorization_endpoint=urls["authorization_endpoint"],
        token_endpoint=urls["token_endpoint"],
        userinfo_endpoint=urls["userinfo_endpoint"],
        jwks_uri=urls["jwks_uri"],
        emails_endpoint=urls["emails_endpoint"],
        scopes=tuple(scopes),
        authorization_params=tuple(sorted((str(k), v) for k, v in params.items())),
        pkce=bool(pkce),
    )


def _check_url(name: str, url: str) -> list[str]:
    parts = urlsplit(url)
    loopback = parts.hostname in ("127.0.0.1", "localhost", "::1")
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        return [f"{name}: expected an https:// URL (http:// only on loopback)"]
    if parts.username or parts.password or parts.fragment:
        return [f"{name}: no credentials or fragment"]
    return []
