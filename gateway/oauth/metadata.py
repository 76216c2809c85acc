"""Discovery: OAuth 2.0 Authorization Server Metadata (RFC 8414), the same document at the OpenID
Connect discovery path (MCP 2025-11-25 lets clients try either), and OAuth 2.0 Protected Resource
Metadata (RFC 9728) for the MCP resource.

Every URL here derives from ``public_url``; nothing is taken from request headers (RFC 8414 §3.3:
the ``issuer`` must be identical to the one the client used).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from gateway.errors import NotFound
from gateway.oauth.context import (
    AUTHORIZE_PATH,
    OAUTH_SETTINGS,
    REGISTER_PATH,
    REVOKE_PATH,
    TOKEN_PATH,
    OAuthSettings,
)
from gateway.oauth.scopes import OFFLINE_ACCESS

AS_METADATA_PATH = "/.well-known/oauth-authorization-server"
OIDC_DISCOVERY_PATH = "/.well-known/openid-configuration"
PRM_PATH = "/.well-known/oauth-protected-resource"
PUBLIC_CORS = {"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Methods": "GET, OPTIONS"}
CACHEABLE = {"Cache-Control": "public, max-age=300"}


def authorization_server_metadata(settings: OAuthSettings) -> dict[str, Any]:
    oauth = settings.config.oauth
    document: dict[str, Any] = {
        "issuer": settings.issuer,
        "authorization_endpoint": settings.endpoint(AUTHORIZE_PATH),
        "token_endpoint": settings.endpoint(TOKEN_PATH),
        "revocation_endpoint": settings.endpoint(REVOKE_PATH),
        "scopes_supported": [*oauth.scopes_supported, OFFLINE_ACCESS],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "token_endpoint_auth_methods_supported": ["none"],
        "revocation_endpoint_auth_methods_supported": ["none"],
        # MCP authorization: clients refuse servers that do not advertise S256 (RFC 8414 §2, RFC 7636).
        "code_challenge_methods_supported": ["S256"],
        # RFC 9207 §3: every authorization response carries ``iss``.
        "authorization_response_iss_parameter_supported": True,
        "client_id_metadata_document_supported": oauth.cimd.enabled,
    }
    if oauth.registration.enabled:
        document["registration_endpoint"] = settings.endpoint(REGISTER_PATH)
    return document


def protected_resource_metadata(settings: OAuthSettings) -> dict[str, Any]:
    """RFC 9728 §2; MCP authorization: ``offline_access`` is not listed for the resource."""
    return {
        "resource": settings.resource,
        "authorization_servers": [settings.issuer],
        "scopes_supported": list(settings.config.oauth.scopes_supported),
        "bearer_methods_supported": ["header"],
        "resource_name": "MCP server",
    }


def resource_metadata_url(settings: OAuthSettings) -> str:
    """RFC 9728 §3.1: the well-known path inserted before the resource's path."""
    return settings.config.public_url + PRM_PATH + urlsplit(settings.resource).path


async def as_metadata(request: web.Request) -> web.Response:
    settings = request.app[OAUTH_SETTINGS]
    return web.json_response(authorization_server_metadata(settings), headers={**PUBLIC_CORS, **CACHEABLE})


async def prm(request: web.Request) -> web.Response:
    settings = request.app[OAUTH_SETTINGS]
    suffix = request.match_info.get("tail", "")
    resource_path = urlsplit(settings.resource).path
    # RFC 9728 §3.1: the root document and the path-inserted one for the MCP path; nothing else.
    if suffix not in ("", resource_path.lstrip("/")):
        raise NotFound("No protected resource at this path", headers=PUBLIC_CORS)
    return web.json_response(protected_resource_metadata(settings), headers={**PUBLIC_CORS, **CACHEABLE})


async def preflight(request: web.Request) -> web.Response:
    return web.Response(
        status=204,
        headers={**PUBLIC_CORS, "Access-Control-Allow-Headers": "MCP-Protocol-Version, Content-Type"},
    )
