"""OAuth 2.0 Dynamic Client Registration (RFC 7591): ``POST /register`` for public clients only.

Registration is an open write endpoint, so it is bounded: the body (``max_body_bytes``, 413 above it),
the number of redirect URIs, the length of every string, the total number of clients (``max_clients``,
then 429 ``temporarily_unavailable`` with ``Retry-After``: capacity comes back when the reaper deletes
clients that never completed an authorization), and, through the ``RegistrationThrottle`` seam, the
rate per client address. Identical registrations are idempotent: the SHA-256 of the validated metadata's
canonical JSON finds the client registered before (clients that re-register on every connect do not
pile up). The ``client_id`` is always server-chosen and never looks like a metadata document URL.

The metadata rules (``validate_metadata``) are shared with Client ID Metadata Documents, whose documents
are RFC 7591 metadata too.

State it expects in the app: ``CLIENTS`` (a ``ClientStore``; filled from ``gateway.appkeys.STORAGE`` at
startup when not set) and, optionally, ``REGISTRATION_THROTTLE``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from aiohttp import web

from gateway.appkeys import STORAGE
from gateway.clock import Clock
from gateway.errors import NO_STORE
from gateway.net import client_address
from gateway.oauth.context import OAUTH_SETTINGS
from gateway.oauth.errors import (
    InvalidClientMetadata,
    InvalidRedirectUri,
    OAuthError,
    ServiceUnavailable,
    TooManyRequests,
)
from gateway.oauth.redirect_uris import RedirectUriKind, classify_redirect_uri
from gateway.oauth.scopes import OFFLINE_ACCESS
from gateway.security_events import client_registered
from gateway.storage.base import StorageUnavailable
from gateway.storage.oauth import ClientStore, OAuthClient
from gateway.text_safety import has_unsafe_characters

log = logging.getLogger("gateway.oauth.registration")

CLIENT_ID_PREFIX = "mcpc_"
MAX_REDIRECT_URIS = 20
MAX_CLIENT_NAME_CHARS = 200
MAX_SCOPE_CHARS = 1000
CAPACITY_RETRY_AFTER = 3600
JSON_MEDIA_TYPE = "application/json"

SUPPORTED_GRANT_TYPES = ("authorization_code", "refresh_token")
APPLICATION_TYPES = ("native", "web")
# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
_SCOPE_TOKEN_CHARS = frozenset(chr(c) for c in range(0x21, 0x7F)) - {'"', "\\"}


class RegistrationTooLarge(InvalidClientMetadata):
    status = 413


class RegistrationDisabled(OAuthError):
    """Dynamic registration is switched off (``oauth.registration.enabled: false``): the endpoint does not exist."""

    status = 404
    error = "not_found"


class RegistrationCapacity(TooManyRequests):
    """The global ``max_clients`` cap is reached: 429 with ``Retry-After``, like a storage limit."""

    error = "temporarily_unavailable"


class RegistrationThrottle(Protocol):
    """Per-address registration budget (the quota feature implements it)."""

    async def check(self, ip: str) -> None:
        """Return when ``ip`` may register now; raise ``TooManyRequests`` (with ``Retry-After``) otherwise."""
        ...


CLIENTS = web.AppKey("oauth_clients", ClientStore)
"""Dynamically registered clients (defaults to the app's storage)."""
REGISTRATION_THROTTLE = web.AppKey("oauth_registration_throttle", RegistrationThrottle)


@dataclass(frozen=True, slots=True)
class MetadataPolicy:
    private_use_schemes: frozenset[str]
    supported_scopes: frozenset[str] | None
    """Scopes a client may list (plus ``offline_access``); None accepts any well-formed scope."""
    max_redirect_uris: int = MAX_REDIRECT_URIS


@dataclass(frozen=True, slots=True)
class ValidatedMetadata:
    """Client metadata after validation, defaults applied: what is stored and hashed."""

    redirect_uris: tuple[str, ...]
    grant_types: tuple[str, ...]
    response_types: tuple[str, ...]
    client_name: str | None
    client_uri: str | None
    logo_uri: str | None
    scope: str | None
    application_type: str

    def metadata_hash(self) -> str:
        """SHA-256 of the canonical JSON (sorted keys, no whitespace) of the validated metadata."""
        canonical = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def _field(raw: dict[str, Any], name: str) -> Any:
    return raw.get(name)  # JSON null is the same as absent


def _string_list(raw: dict[str, Any], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    value = _field(raw, name)
    if value is None:
        return default
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise InvalidClientMetadata(f"{name} must be an array of strings")
    return tuple(dict.fromkeys(value))  # duplicates dropped, order kept


def _redirect_uris(raw: dict[str, Any], policy: MetadataPolicy) -> tuple[str, ...]:
    value = _field(raw, "redirect_uris")
    if value is None or value == []:
        # RFC 7591 §2: redirect-based grants need registered redirect URIs.
        raise InvalidRedirectUri("At least one redirect URI is required")
    uris = _string_list(raw, "redirect_uris", ())
    if len(value) > policy.max_redirect_uris:
        raise InvalidClientMetadata(f"At most {policy.max_redirect_uris} redirect URIs may be registered")
    for index, uri in enumerate(uris):
        try:
            classify_redirect_uri(uri, private_use_schemes=policy.private_use_schemes)
        except InvalidRedirectUri as exc:
            # RFC 7591 §3.2.2: one invalid URI fails the whole registration (never the valid subset).
            raise InvalidRedirectUri(f"redirect_uris[{index}]: {exc.description}") from exc
    return uris


def _grant_and_response_types(raw: dict[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    grant_types = _string_list(raw, "grant_types", SUPPORTED_GRANT_TYPES)
    if not set(grant_types) <= set(SUPPORTED_GRANT_TYPES):
        raise InvalidClientMetadata("Supported grant types: authorization_code, refresh_token")
    if "authorization_code" not in grant_types:
        raise InvalidClientMetadata("grant_types must include authorization_code")
    response_types = _string_list(raw, "response_types", ("code",))
    # RFC 7591 §2.1: grant_types and response_types must agree: authorization_code <=> "code".
    if response_types != ("code",):
        raise InvalidClientMetadata('response_types must be ["code"]')
    return grant_types, response_types


def _client_name(raw: dict[str, Any]) -> str | None:
    value = _field(raw, "client_name")
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidClientMetadata("client_name must be a string")
    if len(value) > MAX_CLIENT_NAME_CHARS:
        raise InvalidClientMetadata(f"client_name is longer than {MAX_CLIENT_NAME_CHARS} characters")
    # RFC 7591 §5 / OAuth 2.1 §7.9: self-asserted and shown on the consent page, so no control or bidi tricks.
    if has_unsafe_characters(value):
        raise InvalidClientMetadata("client_name contains control or formatting characters")
    return value.strip() or None


def _https_uri(raw: dict[str, Any], name: str) -> str | None:
    value = _field(raw, name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidClientMetadata(f"{name} must be a string")
    try:
        kind = classify_redirect_uri(value, private_use_schemes=())
    except InvalidRedirectUri:
        kind = None
    if kind is not RedirectUriKind.HTTPS:
        # RFC 7591 §5: URIs shown to users; https only, and the gateway never fetches them.
        raise InvalidClientMetadata(f"{name} must be an https URL")
    return value


def _scope(raw: dict[str, Any], policy: MetadataPolicy) -> str | None:
    value = _field(raw, "scope")
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_SCOPE_CHARS:
        raise InvalidClientMetadata("scope must be a space-separated string")
    words = tuple(dict.fromkeys(value.split(" ")) if value else ())
    if any(not word or not set(word) <= _SCOPE_TOKEN_CHARS for word in words):
        raise InvalidClientMetadata("scope is not a valid list of scope tokens")
    if policy.supported_scopes is not None and not set(words) <= policy.supported_scopes | {OFFLINE_ACCESS}:
        raise InvalidClientMetadata("scope names a scope this server does not support")
    return " ".join(words) or None


def validate_metadata(raw: object, policy: MetadataPolicy) -> ValidatedMetadata:
    """RFC 7591 §2 client metadata of a public client, or ``InvalidClientMetadata`` / ``InvalidRedirectUri``.

    Unknown fields are ignored (RFC 7591 §2), and so are identifiers and secrets a client supplies
    (``client_id``, ``client_secret``, ``registration_access_token``...): the server chooses those (§3.2.1).
    ``application_type`` is recorded, not cross-checked with the redirect URIs (browser-based tools on
    localhost register as ``web``).
    """
    if not isinstance(raw, dict):
        raise InvalidClientMetadata("The client metadata must be a JSON object")
    method = _field(raw, "token_endpoint_auth_method")
    if method not in (None, "none"):
        # Public clients only (spec-notes): no secret is ever issued or stored.
        raise InvalidClientMetadata('token_endpoint_auth_method must be "none": clients are public')
    grant_types, response_types = _grant_and_response_types(raw)
    application_type = _field(raw, "application_type")
    if application_type is None:
        application_type = "native"
    if application_type not in APPLICATION_TYPES:
        raise InvalidClientMetadata('application_type must be "native" or "web"')
    client_name = _client_name(raw)
    client_uri = _https_uri(raw, "client_uri")
    logo_uri = _https_uri(raw, "logo_uri")
    for shown_only in ("policy_uri", "tos_uri"):
        _https_uri(raw, shown_only)
    return ValidatedMetadata(
        redirect_uris=_redirect_uris(raw, policy),
        grant_types=grant_types,
        response_types=response_types,
        client_name=client_name,
        client_uri=client_uri,
        logo_uri=logo_uri,
        scope=_scope(raw, policy),
        application_type=application_type,
    )


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate key")
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json_object(body: bytes) -> object:
    """Strict JSON: UTF-8, no duplicate keys, no NaN/Infinity; ``ValueError`` otherwise."""
    try:
        return json.loads(
            body.decode("utf-8"), object_pairs_hook=_reject_duplicate_keys, parse_constant=_reject_constant
        )
    except RecursionError as exc:
        raise ValueError("nested too deeply") from exc


async def _read_json(request: web.Request, max_bytes: int) -> object:
    if request.content_type != JSON_MEDIA_TYPE or (request.charset or "utf-8").lower() not in ("utf-8", "utf8"):
        raise InvalidClientMetadata(f"The request body must be {JSON_MEDIA_TYPE}")
    if request.content_length is not None and request.content_length > max_bytes:
        raise RegistrationTooLarge("Request body too large")
    body = bytearray()
    while chunk := await request.content.read(max_bytes + 1 - len(body)):
        body += chunk
        if len(body) > max_bytes:
            raise RegistrationTooLarge("Request body too large")
    try:
        return parse_json_object(bytes(body))
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError included
        raise InvalidClientMetadata("The request body is not valid JSON") from exc


def registration_response(client: OAuthClient) -> dict[str, Any]:
    """RFC 7591 §3.2.1: the client identifier and every registered metadata value."""
    body: dict[str, Any] = {
        "client_id": client.client_id,
        "client_id_issued_at": int(client.created_at),
        "redirect_uris": list(client.redirect_uris),
        "grant_types": list(client.grant_types),
        "response_types": list(client.response_types),
        "token_endpoint_auth_method": "none",
        "application_type": client.application_type,
    }
    optional = {
        "client_name": client.client_name,
        "scope": client.scope,
        "client_uri": client.client_uri,
        "logo_uri": client.logo_uri,
    }
    body.update({name: value for name, value in optional.items() if value is not None})
    return body


async def register(request: web.Request) -> web.Response:
    settings = request.app[OAUTH_SETTINGS]
    config = settings.config
    registration = config.oauth.registration
    if not registration.enabled:
        raise RegistrationDisabled("Dynamic client registration is disabled on this server")
    throttle = request.app.get(REGISTRATION_THROTTLE)
    if throttle is not None:
        await throttle.check(client_address(request, config.security.trusted_proxies))
    raw = await _read_json(request, registration.max_body_bytes)
    policy = MetadataPolicy(
        private_use_schemes=frozenset(registration.private_use_schemes),
        supported_scopes=frozenset(config.oauth.scopes_supported),
    )
    metadata = validate_metadata(raw, policy)
    store = request.app[CLIENTS]
    try:
        if await store.count_clients() >= registration.max_clients:
            log.warning("client registration refused: max_clients reached", extra={"event": "registration_full"})
            raise RegistrationCapacity("Client registration capacity reached", retry_after=CAPACITY_RETRY_AFTER)
        client = await store.create_client(
            OAuthClient(
                # RFC 7591 §3.2.1: server-chosen; CIMD §3: never starting with https:// like a metadata URL.
                client_id=CLIENT_ID_PREFIX + secrets.token_urlsafe(16),
                client_name=metadata.client_name,
                redirect_uris=metadata.redirect_uris,
                grant_types=metadata.grant_types,
                response_types=metadata.response_types,
                scope=metadata.scope,
                application_type=metadata.application_type,
                client_uri=metadata.client_uri,
                logo_uri=metadata.logo_uri,
                metadata_hash=metadata.metadata_hash(),
                created_at=settings.clock.now(),
            )
        )
    except StorageUnavailable as exc:
        raise ServiceUnavailable("Registration service unavailable, retry shortly") from exc
    log.info("client registered", extra={"event": "client_registered", "client_id": client.client_id})
    client_registered(request.app, kind="dcr", client_id=client.client_id)
    # RFC 7591 §3.2.1: 201 Created; no-store as for every response carrying client credentials.
    return web.json_response(registration_response(client), status=201, headers=NO_STORE)


async def reap_unused_clients(store: ClientStore, clock: Clock, ttl: float) -> int:
    """Delete registered clients that never completed an authorization within ``ttl`` seconds of registering;
    returns how many went. Storage errors propagate (the caller's loop logs and retries later)."""
    removed = await store.delete_unused_clients(created_before=clock.now() - ttl)
    if removed:
        log.info("reaped %d unused registered clients", removed, extra={"event": "clients_reaped"})
    return removed


async def _default_client_store(app: web.Application) -> None:
    if CLIENTS not in app:
        app[CLIENTS] = app[STORAGE]


def use_storage_for_clients(app: web.Application) -> None:
    """At startup, fill ``CLIENTS`` from ``STORAGE`` unless something set it first."""
    if _default_client_store not in app.on_startup:
        app.on_startup.append(_default_client_store)


def setup_registration(app: web.Application, *, throttle: RegistrationThrottle | None = None) -> None:
    """Prepare ``POST /register`` (its route and CORS preflight are in ``gateway.routes``).

    When registration is disabled in the config the route still answers, with 404 ``not_found`` and a
    description saying so (the metadata document omits ``registration_endpoint`` then)."""
    use_storage_for_clients(app)
    if throttle is not None:
        app[REGISTRATION_THROTTLE] = throttle
