"""What the OAuth endpoints share: configuration, storage, the clock and the scope policy."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from gateway.clock import Clock
from gateway.config import GatewayConfig
from gateway.oauth.scopes import ScopePolicy


@dataclass(frozen=True)
class OAuthSettings:
    config: GatewayConfig
    clock: Clock
    scopes: ScopePolicy

    @property
    def issuer(self) -> str:
        """The one exact issuer string (RFC 8414 §2, RFC 9207), derived from ``public_url`` only."""
        return self.config.issuer

    @property
    def resource(self) -> str:
        """The canonical MCP resource URI every token is bound to (RFC 8707)."""
        return self.config.mcp_resource

    @property
    def public_origin(self) -> str:
        return self.config.public_url

    def endpoint(self, path: str) -> str:
        return self.config.public_url + path

    @classmethod
    def from_config(cls, config: GatewayConfig, clock: Clock) -> OAuthSettings:
        return cls(
            config=config,
            clock=clock,
            scopes=ScopePolicy(
                supported=config.oauth.scopes_supported,
                default=config.oauth.default_scopes,
                descriptions={name: s.description for name, s in config.authorization.scopes.items()},
            ),
        )


OAUTH_SETTINGS = web.AppKey("oauth_settings", OAuthSettings)

AUTHORIZE_PATH = "/authorize"
TOKEN_PATH = "/token"  # noqa: S105 - a URL path, not a secret
REGISTER_PATH = "/register"
REVOKE_PATH = "/revoke"
LOGIN_PATH = "/login"
CONSENT_PATH = "/consent"
