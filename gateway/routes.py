"""The route table: every path the gateway answers, and the one place where errors become responses.

Each line names the path, methods, handler (features keep their handlers), the metrics label, how errors are
shown (``ErrorStyle``: an HTML page, OAuth-style JSON, or JSON-RPC on the MCP data plane) and the body cap
(``BodyCap``). ``setup_routes`` registers the table; ``error_middleware`` reads the line of each request to cap
its body before anything is buffered and to render whatever the handler raises in the route's style.
"""

from __future__ import annotations

import logging
import traceback

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from gateway import health, metrics_endpoint, web_pages
from gateway.admin import api as admin
from gateway.admin import key_callbacks
from gateway.appkeys import CONFIG
from gateway.config import MCP_PATH, GatewayConfig
from gateway.dashboard import pages as account
from gateway.dashboard import signin
from gateway.dashboard.context import ACCOUNT_PATH, SIGNIN_PATH
from gateway.errors import (
    ErrorStyle,
    GatewayError,
    Handler,
    InvalidRequest,
    PayloadTooLarge,
    ServiceUnavailable,
    from_http_exception,
    render,
)
from gateway.flight import views as flight_views
from gateway.hooks import tell_refusal
from gateway.identity import app_flow, signin_web
from gateway.identity import web as identity_web
from gateway.identity.signin import CALLBACK_PATH
from gateway.oauth import authorize, interaction, metadata, registration, revocation, token_endpoint
from gateway.oauth.context import (
    AUTHORIZE_PATH,
    CONSENT_PATH,
    LOGIN_PATH,
    REGISTER_PATH,
    REVOKE_PATH,
    TOKEN_PATH,
)
from gateway.proxy import cors, legacy_sse, streamable
from gateway.routing import ROUTE_INDEX, BodyCap, Route, RouteIndex, route_of
from gateway.storage.base import StorageError
from gateway.vault import connect, connect_app
from gateway.vault import proxy as vault_proxy

log = logging.getLogger("gateway.errors")

GET, POST, OPTIONS = ("GET",), ("POST",), ("OPTIONS",)
ANY = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
JSON, JSONRPC, PAGE, ACCOUNT = ErrorStyle.JSON, ErrorStyle.JSONRPC, ErrorStyle.PAGE, ErrorStyle.ACCOUNT_PAGE
SMALL = BodyCap.SMALL
ADMIN = admin.PREFIX
PRM = metadata.PRM_PATH
STORAGE_DOWN = "The database is unreachable; the change may be incomplete. Retry shortly."


def route_table(config: GatewayConfig) -> list[Route]:
    """Every route of a gateway with ``config`` (``GET`` routes answer ``HEAD`` too)."""
    with_cors = token_endpoint.with_cors
    table = [
        # Operations
        Route("/healthz", GET, health.healthz, "health"),
        Route("/readyz", GET, health.readyz, "health"),
        # OAuth discovery (RFC 8414, RFC 9728), registration, tokens, revocation: JSON for programs
        Route(metadata.AS_METADATA_PATH, GET, metadata.as_metadata, "metadata"),
        Route(metadata.AS_METADATA_PATH, OPTIONS, metadata.preflight, "metadata"),
        Route(metadata.OIDC_DISCOVERY_PATH, GET, metadata.as_metadata, "metadata"),
        Route(metadata.OIDC_DISCOVERY_PATH, OPTIONS, metadata.preflight, "metadata"),
        Route(identity_web.JWKS_PATH, GET, identity_web.jwks, "metadata"),
        Route(PRM, GET, metadata.prm, "metadata"),
        Route(PRM, OPTIONS, metadata.preflight, "metadata"),
        Route(PRM + "/{tail:.+}", GET, metadata.prm, "metadata"),
        Route(PRM + "/{tail:.+}", OPTIONS, metadata.preflight, "metadata"),
        Route(REGISTER_PATH, POST, with_cors(registration.register), "register"),
        Route(REGISTER_PATH, OPTIONS, token_endpoint.preflight, "register"),
        Route(TOKEN_PATH, POST, with_cors(token_endpoint.token), "token"),
        Route(TOKEN_PATH, OPTIONS, token_endpoint.preflight, "token"),
        Route(REVOKE_PATH, POST, with_cors(revocation.revoke), "revoke"),
        Route(REVOKE_PATH, OPTIONS, token_endpoint.preflight, "revoke"),
        # The app flow (identity tokens for apps holding an API key): JSON for the app's server, pages for people
        Route(app_flow.INITIATE_PATH, GET, connect_app.initiate, "app_auth"),  # with an identity token: connect
        Route(connect_app.APP_CALLBACK_PATH, GET, connect_app.callback, "app_auth", PAGE),
        Route(app_flow.CALLBACK_PATH, GET, app_flow.callback, "app_auth", PAGE),
        Route(app_flow.TOKEN_PATH, POST, app_flow.token, "app_auth"),
        Route(app_flow.REVOKE_PATH, POST, app_flow.revoke, "app_auth"),
        Route(connect_app.DISCONNECT_PATH, ("DELETE",), connect_app.disconnect, "app_auth"),
        # OAuth pages people see: sign-in and consent
        Route(AUTHORIZE_PATH, GET, authorize.handle_authorize, "authorize", PAGE),
        Route(LOGIN_PATH, GET, interaction.login_page, "login", PAGE),
        Route(LOGIN_PATH, POST, interaction.login_submit, "login", PAGE, SMALL),
        Route(LOGIN_PATH + "/{provider}", GET, signin_web.oauth_start, "login", PAGE),
        Route(CALLBACK_PATH, GET, signin_web.callback, "login", PAGE),
        Route(CONSENT_PATH, GET, interaction.consent_page, "consent", PAGE),
        Route(CONSENT_PATH, POST, interaction.consent_submit, "consent", PAGE, SMALL),
        # The dashboard
        Route(SIGNIN_PATH, GET, signin.signin_page, "dashboard", ACCOUNT),
        Route(SIGNIN_PATH, POST, signin.signin_submit, "dashboard", ACCOUNT, SMALL),
        Route(SIGNIN_PATH + "/{provider}", GET, signin_web.dashboard_start, "dashboard", ACCOUNT),
        Route(signin.SIGNUP_PATH, GET, signin.signup_page, "dashboard", ACCOUNT),
        Route(signin.SIGNUP_PATH, POST, signin.signup_submit, "dashboard", ACCOUNT, SMALL),
        Route(signin.LOGOUT_PATH, POST, signin.logout, "dashboard", ACCOUNT, SMALL),
        Route(ACCOUNT_PATH, GET, account.account_page, "dashboard", ACCOUNT),
        Route(ACCOUNT_PATH + "/apps/revoke-all", POST, account.revoke_all, "dashboard", ACCOUNT, SMALL),
        Route(ACCOUNT_PATH + "/apps/{app_id}/revoke", POST, account.revoke_app, "dashboard", ACCOUNT, SMALL),
        Route(ACCOUNT_PATH + "/keys", POST, account.create_key, "dashboard", ACCOUNT, SMALL),
        Route(ACCOUNT_PATH + "/keys/{key_id}/revoke", POST, account.revoke_key, "dashboard", ACCOUNT, SMALL),
        Route(ACCOUNT_PATH + "/password", POST, account.change_password, "dashboard", ACCOUNT, SMALL),
        Route(connect.SERVICES_PATH + "/{service}/connect", POST, connect.connect_start, "dashboard", ACCOUNT, SMALL),
        Route(connect.SERVICES_PATH + "/{service}/disconnect", POST, connect.disconnect, "dashboard", ACCOUNT, SMALL),
        Route(connect.CONNECT_CALLBACK_PATH, GET, connect.connect_callback, "dashboard", ACCOUNT),
        Route(connect.CONNECT_LINK_PATH + "/{service}", GET, connect.connect_link_page, "dashboard", ACCOUNT),
        Route("/static/gateway.css", GET, web_pages.stylesheet, "static"),
        Route("/static/copy.js", GET, account.copy_script, "static"),
        # The admin API (JSON)
        Route(f"{ADMIN}/users", GET, admin.list_users, "admin"),
        Route(f"{ADMIN}/users/{{user_id}}", GET, admin.show_user, "admin"),
        Route(f"{ADMIN}/users/{{user_id}}/disable", POST, admin.disable_user, "admin", JSON, SMALL),
        Route(f"{ADMIN}/users/{{user_id}}/enable", POST, admin.enable_user, "admin", JSON, SMALL),
        Route(f"{ADMIN}/users/{{user_id}}/revoke", POST, admin.revoke_user, "admin", JSON, SMALL),
        Route(f"{ADMIN}/users/{{user_id}}/apps/{{app_id}}/revoke", POST, admin.revoke_user_app, "admin", JSON, SMALL),
        Route(f"{ADMIN}/clients/revoke", POST, admin.revoke_client, "admin", JSON, SMALL),
        Route(f"{ADMIN}/keys/{{key_id}}/revoke", POST, admin.revoke_key, "admin", JSON, SMALL),
        Route(f"{ADMIN}/users/{{user_id}}/keys", POST, admin.create_key, "admin", JSON, SMALL),
        Route(f"{ADMIN}/keys/{{key_id}}/callbacks", POST, key_callbacks.set_key_callbacks, "admin", JSON, SMALL),
        Route(f"{ADMIN}/clients/trace", GET, flight_views.client_trace, "admin"),
        Route(f"{ADMIN}/users/{{user_id}}/trace", GET, flight_views.user_trace, "admin"),
        # The MCP data plane (Streamable HTTP, legacy HTTP+SSE): JSON-RPC errors
        Route(MCP_PATH, ("POST", "GET", "DELETE"), streamable.handle_mcp, "mcp", JSONRPC),
        Route(MCP_PATH + "/sse", GET, legacy_sse.handle_sse, "mcp_sse", JSONRPC),
        Route(legacy_sse.MESSAGES_PATH, POST, legacy_sse.handle_message, "mcp_sse_messages", JSONRPC),
        Route(MCP_PATH, OPTIONS, cors.preflight("POST", "GET", "DELETE"), "mcp", JSONRPC),
        Route(MCP_PATH + "/sse", OPTIONS, cors.preflight(*GET), "mcp_sse", JSONRPC),
        Route(legacy_sse.MESSAGES_PATH, OPTIONS, cors.preflight(*POST), "mcp_sse_messages", JSONRPC),
        # Connected services: an app calls a provider's API with the user's vaulted credential (JSON errors)
        Route(vault_proxy.PREFIX + "/{service}/{path:[\\s\\S]*}", ANY, vault_proxy.proxy, "vault_proxy"),
    ]
    if config.metrics.enabled:
        table.append(Route(metrics_endpoint.METRICS_PATH, GET, metrics_endpoint.metrics, "metrics"))
    return table


def setup_routes(app: web.Application) -> None:
    index = app[ROUTE_INDEX] = RouteIndex()
    for route in route_table(app[CONFIG]):
        index.add(app, route)


def _capped(request: web.Request, route: Route) -> web.Request:
    """A form route's body is bounded by ``limits.max_form_bytes`` before anything is buffered: at once by its
    declared length, and while a body without one (chunked) is read."""
    if route.body is not BodyCap.SMALL:
        return request
    cap = request.app[CONFIG].limits.max_form_bytes
    if request.content_length is not None and request.content_length > cap:
        raise PayloadTooLarge("Request body too large")
    return request.clone(client_max_size=cap) if request.body_exists else request


def _as_gateway_error(request: web.Request, exc: Exception) -> GatewayError:
    """What the client is told about an exception that is not one of the gateway's error classes."""
    if isinstance(exc, RequestPayloadError):
        return InvalidRequest("The request body could not be read (does its Content-Encoding match it?)")
    if isinstance(exc, UnicodeEncodeError) and exc.reason == "surrogates not allowed":
        # Undecodable bytes in a header, cookie or path arrive as surrogates: the client's fault, never a 500.
        where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
        log.warning("undecodable bytes refused on %s %s (at %s)", request.method, request.path, where and where[:2])
        return InvalidRequest("The request holds bytes that are not valid UTF-8")
    if isinstance(exc, StorageError):
        # Unreachable, or failed halfway (a deadlock, a broken connection): every action is safe to repeat, and
        # whatever it committed before the failure was already announced.
        log.warning("%s %s -> 503: %s", request.method, request.path, type(exc).__name__)
        return ServiceUnavailable(STORAGE_DOWN)
    log.error("unhandled error on %s %s", request.method, request.path, exc_info=exc)
    return GatewayError("Internal error")


def respond(request: web.Request, exc: GatewayError) -> web.Response:
    """``exc`` as the response its route's ``ErrorStyle`` asks for."""
    style = route_of(request).errors
    if style.is_page:
        return web_pages.error_response(exc, back=ACCOUNT_PATH if style is ErrorStyle.ACCOUNT_PAGE else None)
    return render(exc, style)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one place that turns exceptions into responses (after ``request_metrics`` and CORS)."""
    served = request  # what the handler saw (a capped clone keeps its own notes for the refusal listeners)
    try:
        served = _capped(request, route_of(request))
        return await handler(served)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return respond(request, from_http_exception(exc))
    except GatewayError as exc:
        tell_refusal(served, exc)
        if exc.status >= 500:
            log.warning("%s %s -> %d %s", request.method, request.path, exc.status, exc.description)
        return respond(request, exc)
    except Exception as exc:
        return respond(request, _as_gateway_error(request, exc))
