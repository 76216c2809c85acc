"""The identity side of the gateway: signing keys and their JWKS, identity tokens (JWTs) for apps and MCP
servers, and (later) sign-in through third-party OpenID / OAuth providers."""
