"""The proxy's errors (rendered as JSON ``{"error", "error_description"}`` by ``gateway.routes``)."""

from __future__ import annotations

from gateway.errors import Forbidden, GatewayError, InvalidRequest, NotFound, Unauthorized, UpstreamError


class UnsafeProxyPath(InvalidRequest):
    """The path could leave ``api_base`` (dot segments, encoded slashes or dots, another host, control characters):
    refused before anything is sent."""


class UnknownService(NotFound):
    error = "unknown_service"


class MethodNotAllowed(GatewayError):
    status = 405
    error = "method_not_allowed"


class ServiceNotConnected(Forbidden):
    """The user never connected the service (or disconnected it): the app should run the connect flow."""

    error = "service_not_connected"


class ServiceReconnectRequired(Unauthorized):
    """The provider refused the connection's refresh token (``invalid_grant``): the user must connect again."""

    error = "service_reconnect_required"


class ProviderUnavailable(UpstreamError):
    """The provider's API or token endpoint failed transiently: a 502, the connection stays usable."""

    error = "provider_unavailable"


class VaultUnavailable(GatewayError):
    """The stored tokens cannot be unsealed (the encryption key that sealed them is not configured)."""

    status = 500
    error = "vault_unavailable"
