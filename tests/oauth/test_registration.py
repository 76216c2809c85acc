"""Dynamic client registration over real HTTP against SQLite (security-cases 5-13), plus the reaper and the
client resolver's view of registered clients."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata

from gateway.clock import ManualClock
from gateway.config import GatewayConfig
from gateway.errors import ServiceUnavailable
from gateway.oauth.clients import ClientResolver
from gateway.oauth.context import REGISTER_PATH
from gateway.oauth.errors import TooManyRequests
from gateway.oauth.registration import CLIENTS, REGISTRATION_THROTTLE, reap_unused_clients
from gateway.storage import Storage, StorageUnavailable
from gateway.storage.oauth import OAuthClient
from tests.support.gateway import UNUSED_UPSTREAM, running_gateway
from tests.support.https_server import make_local_ca, serve_https

LOOPBACK = "http://127.0.0.1/callback"
MINIMAL = {"redirect_uris": [LOOPBACK]}


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> dict[str, Any]:
        value = json.loads(self.body)
        assert isinstance(value, dict)
        return value

    @property
    def error(self) -> str | None:
        return self.json().get("error")


@dataclass
class Gateway:
    url: str
    config: GatewayConfig
    app: web.Application
    storage: Storage
    clock: ManualClock
    http: aiohttp.ClientSession
    registered: list[str] = field(default_factory=list)

    async def post(
        self, body: bytes, *, content_type: str | None = "application/json", headers: Mapping[str, str] | None = None
    ) -> Reply:
        all_headers = {**({"Content-Type": content_type} if content_type else {}), **(headers or {})}
        data: Any = io.BytesIO(body) if len(body) > 64 * 1024 else body  # aiohttp warns about large raw bodies
        async with self.http.post(self.url + REGISTER_PATH, data=data, headers=all_headers) as response:
            return Reply(response.status, dict(response.headers), await response.read())

    async def register(self, metadata: Any, **kwargs: Any) -> Reply:
        return await self.post(json.dumps(metadata).encode(), **kwargs)

    async def client_count(self) -> int:
        return await self.storage.count_clients()


@contextlib.asynccontextmanager
async def registration_gateway(
    storage: Storage,
    clock: ManualClock,
    *,
    overrides: Mapping[str, Any] | None = None,
    clients: Any = None,
    throttle: Any = None,
) -> AsyncIterator[Gateway]:
    def prepare(app: web.Application) -> None:
        if clients is not None:
            app[CLIENTS] = clients
        if throttle is not None:
            app[REGISTRATION_THROTTLE] = throttle  # what the quota feature will pass to setup_registration

    async with (
        running_gateway(
            storage=storage, upstream_url=UNUSED_UPSTREAM, overrides=overrides, clock=clock, prepare=prepare
        ) as running,
        aiohttp.ClientSession() as http,
    ):
        yield Gateway(url=running.url, config=running.config, app=running.app, storage=storage, clock=clock, http=http)


@pytest.fixture
async def gw(sqlite_storage: Storage, clock: ManualClock) -> AsyncIterator[Gateway]:
    async with registration_gateway(sqlite_storage, clock) as gateway:
        yield gateway


def _assert_no_store(reply: Reply) -> None:
    assert reply.headers["Cache-Control"] == "no-store"
    assert reply.headers["Pragma"] == "no-cache"


# --- the happy path ---


async def test_a_public_client_registers_and_gets_every_registered_field_back(gw: Gateway) -> None:
    reply = await gw.register(
        {
            "redirect_uris": [LOOPBACK, "cursor://anysphere.cursor-mcp/oauth/callback"],
            "client_name": "Example CLI",
            "token_endpoint_auth_method": "none",
            "scope": "mcp:tools offline_access",
            "client_uri": "https://cli.example/",
            "logo_uri": "https://cli.example/logo.png",
        }
    )
    assert reply.status == 201, reply.body
    _assert_no_store(reply)
    body = reply.json()
    assert body["client_id"].startswith("mcpc_")
    assert len(body["client_id"]) >= 25
    assert body["client_id_issued_at"] == int(gw.clock.now())
    assert body["redirect_uris"] == [LOOPBACK, "cursor://anysphere.cursor-mcp/oauth/callback"]
    assert body["grant_types"] == ["authorization_code", "refresh_token"]
    assert body["response_types"] == ["code"]
    assert body["token_endpoint_auth_method"] == "none"
    assert body["application_type"] == "native"
    assert body["client_name"] == "Example CLI"
    assert body["scope"] == "mcp:tools offline_access"
    assert body["client_uri"] == "https://cli.example/"
    assert "client_secret" not in body
    stored = await gw.storage.get_client(body["client_id"])
    assert stored is not None
    assert stored.redirect_uris == tuple(body["redirect_uris"])


async def test_json_null_fields_count_as_absent(gw: Gateway) -> None:
    reply = await gw.register({**MINIMAL, "scope": None, "client_uri": None, "grant_types": None, "client_name": None})
    assert reply.status == 201, reply.body
    assert "scope" not in reply.json()
    assert "client_name" not in reply.json()


async def test_the_mcp_sdk_registration_request_and_response_round_trip(gw: Gateway) -> None:
    metadata = OAuthClientMetadata(
        client_name="SDK client",
        redirect_uris=["http://127.0.0.1:33418/callback"],  # type: ignore[list-item]
        grant_types=["authorization_code", "refresh_token"],
        response_types=["code"],
        token_endpoint_auth_method="none",
    )
    reply = await gw.register(metadata.model_dump(by_alias=True, mode="json", exclude_none=True))
    assert reply.status == 201, reply.body
    info = OAuthClientInformationFull.model_validate_json(reply.body)
    assert info.client_id == reply.json()["client_id"]


async def test_browser_clients_may_register_across_origins(gw: Gateway) -> None:
    reply = await gw.register(MINIMAL, headers={"Origin": "https://inspector.example"})
    assert reply.headers["Access-Control-Allow-Origin"] == "*"
    async with gw.http.options(gw.url + REGISTER_PATH) as preflight:
        assert preflight.status == 204
        assert "POST" in preflight.headers["Access-Control-Allow-Methods"]


# --- case 5: public clients only ---


@pytest.mark.parametrize(
    "method", ["client_secret_basic", "client_secret_post", "client_secret_jwt", "private_key_jwt", "", 0, ["none"]]
)
async def test_secret_based_authentication_methods_are_refused(gw: Gateway, method: Any) -> None:
    reply = await gw.register({**MINIMAL, "token_endpoint_auth_method": method})
    assert (reply.status, reply.error) == (400, "invalid_client_metadata")
    assert b'client_secret"' not in reply.body
    _assert_no_store(reply)
    assert await gw.client_count() == 0


# --- cases 6-8: redirect URIs ---

REFUSED_REDIRECTS = [
    "https://c.example/cb#f",
    "https://c.example/cb#",
    "http://c.example/cb",
    "https://*.c.example/cb",
    "https://u:p@c.example/cb",
    "/cb",
    "",
    "http://localhost.evil.example/cb",
    "http://127.0.0.1.nip.io/cb",
    "http://testlocalhost/cb",
    "javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    "\tjavascript:alert(1)",
    "java\nscript:alert(1)",
    "\x00javascript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
    "vbscript:msgbox(1)",
    "file:///etc/passwd",
    "blob:https://c.example/uuid",
    "mailto:a@c.example",
    "https://c.example/c\x01b",
    "https://c.example/c\x85b",
    "https://c.example/c\x7fb",
    "myapp://cb",
]


@pytest.mark.parametrize("uri", REFUSED_REDIRECTS)
async def test_unacceptable_redirect_uris_are_refused_and_nothing_is_stored(gw: Gateway, uri: str) -> None:
    reply = await gw.register({"redirect_uris": [uri]})
    assert (reply.status, reply.error) == (400, "invalid_redirect_uri")
    assert await gw.client_count() == 0


@pytest.mark.parametrize(
    "uri",
    [
        "http://127.0.0.1/cb",
        "http://[::1]/cb",
        "http://localhost/cb",
        "https://c.example/cb",
        "cursor://anysphere.cursor-mcp/oauth/callback",
        "com.example.app:/cb",
    ],
)
async def test_acceptable_redirect_uris_register(gw: Gateway, uri: str) -> None:
    reply = await gw.register({"redirect_uris": [uri]})
    assert reply.status == 201, reply.body


async def test_one_bad_redirect_uri_refuses_the_whole_registration(gw: Gateway) -> None:
    reply = await gw.register({"redirect_uris": [LOOPBACK, "https://c.example/cb", "javascript:alert(1)"]})
    assert (reply.status, reply.error) == (400, "invalid_redirect_uri")
    assert "redirect_uris[2]" in reply.json()["error_description"]
    assert await gw.client_count() == 0


@pytest.mark.parametrize("redirect_uris", [None, [], "http://127.0.0.1/callback", [42]])
async def test_redirect_uris_must_be_a_non_empty_list_of_strings(gw: Gateway, redirect_uris: Any) -> None:
    reply = await gw.register({"redirect_uris": redirect_uris})
    assert reply.status == 400
    assert reply.error in ("invalid_redirect_uri", "invalid_client_metadata")


async def test_the_operator_allowlist_admits_a_private_scheme_without_a_period(
    sqlite_storage: Storage, clock: ManualClock
) -> None:
    overrides = {"oauth": {"registration": {"private_use_schemes": ["myapp"]}}}
    async with registration_gateway(sqlite_storage, clock, overrides=overrides) as gateway:
        assert (await gateway.register({"redirect_uris": ["myapp://cb"]})).status == 201
        refused = await gateway.register({"redirect_uris": ["cursor://anysphere.cursor-mcp/oauth/callback"]})
        assert refused.error == "invalid_redirect_uri"


# --- case 9: grant and response types ---


@pytest.mark.parametrize(
    "fields",
    [
        {"grant_types": ["client_credentials"]},
        {"grant_types": ["password"]},
        {"grant_types": ["implicit"]},
        {"grant_types": ["authorization_code", "urn:ietf:params:oauth:grant-type:jwt-bearer"]},
        {"grant_types": ["refresh_token"]},
        {"grant_types": []},
        {"grant_types": "authorization_code"},
        {"response_types": ["token"]},
        {"response_types": ["code", "token"]},
        {"response_types": ["code id_token"]},
        {"grant_types": ["authorization_code"], "response_types": []},
        {"application_type": "desktop"},
        {"scope": "mcp:tools admin"},
        {"scope": 42},
        {"scope": "mcp:tools  offline_access"},
    ],
)
async def test_inconsistent_or_unsupported_metadata_is_refused(gw: Gateway, fields: dict[str, Any]) -> None:
    reply = await gw.register({**MINIMAL, **fields})
    assert (reply.status, reply.error) == (400, "invalid_client_metadata")
    assert await gw.client_count() == 0


async def test_authorization_code_alone_and_web_clients_are_fine(gw: Gateway) -> None:
    reply = await gw.register({**MINIMAL, "grant_types": ["authorization_code"], "application_type": "web"})
    assert reply.status == 201, reply.body
    assert reply.json()["grant_types"] == ["authorization_code"]
    assert reply.json()["application_type"] == "web"


# --- case 10: malformed and oversize bodies ---


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"null", "application/json"),
        (b"[]", "application/json"),
        (b'"x"', "application/json"),
        (b"{", "application/json"),
        (b"", "application/json"),
        (b'{"redirect_uris": ["http://127.0.0.1/callback"], "scope": NaN}', "application/json"),
        (b'{"redirect_uris": [], "redirect_uris": ["http://127.0.0.1/callback"]}', "application/json"),
        (b"\xff\xfe{}", "application/json"),
        (b"[" * 8000 + b"]" * 8000, "application/json"),
        (json.dumps(MINIMAL).encode(), "text/plain"),
        (json.dumps(MINIMAL).encode(), "application/x-www-form-urlencoded"),
        (json.dumps(MINIMAL).encode(), None),
        (json.dumps(MINIMAL).encode(), "application/json; charset=latin-1"),
    ],
)
async def test_bodies_that_are_not_a_json_object_are_refused(
    gw: Gateway, body: bytes, content_type: str | None
) -> None:
    reply = await gw.post(body, content_type=content_type)
    assert (reply.status, reply.error) == (400, "invalid_client_metadata")
    _assert_no_store(reply)


async def test_a_body_over_the_cap_is_413(gw: Gateway) -> None:
    reply = await gw.register({**MINIMAL, "client_name": "x" * (64 * 1024)})
    assert reply.status == 413
    big = await gw.post(b'{"x": "' + b"a" * (1024 * 1024) + b'"}')
    assert big.status == 413
    assert await gw.client_count() == 0


async def test_a_chunked_body_over_the_cap_is_413(gw: Gateway) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"client_name": "'
        for _ in range(40):
            yield b"a" * 1024
        yield b'"}'

    async with gw.http.post(
        gw.url + REGISTER_PATH, data=chunks(), headers={"Content-Type": "application/json"}
    ) as response:
        assert response.status == 413


async def test_too_many_redirect_uris_are_refused(gw: Gateway) -> None:
    uris = [f"http://127.0.0.1/cb{i}" for i in range(500)]
    reply = await gw.register({"redirect_uris": uris})
    assert (reply.status, reply.error) == (400, "invalid_client_metadata")
    assert (await gw.register({"redirect_uris": uris[:20]})).status == 201


# --- case 11: identifiers are server-chosen ---


async def test_supplied_identifiers_and_secrets_are_ignored(gw: Gateway) -> None:
    first = (await gw.register({**MINIMAL, "client_name": "First"})).json()
    reply = await gw.register(
        {
            **MINIMAL,
            "client_name": "Second",
            "client_id": first["client_id"],
            "client_secret": "chosen-secret",
            "client_id_issued_at": 1,
            "client_secret_expires_at": 0,
            "registration_access_token": "chosen-token",
            "registration_client_uri": "https://evil.example/",
        }
    )
    assert reply.status == 201, reply.body
    body = reply.json()
    assert body["client_id"] != first["client_id"]
    assert not body["client_id"].startswith("https://")
    assert {"client_secret", "registration_access_token", "registration_client_uri"}.isdisjoint(body)
    assert b"chosen-" not in reply.body
    original = await gw.storage.get_client(first["client_id"])
    assert original is not None
    assert original.client_name == "First"


async def test_a_metadata_url_supplied_as_client_id_is_ignored(gw: Gateway) -> None:
    reply = await gw.register({**MINIMAL, "client_id": "https://evil.example/client.json"})
    assert reply.status == 201
    assert reply.json()["client_id"].startswith("mcpc_")


# --- case 12: self-asserted display data ---


async def test_markup_in_the_client_name_is_stored_as_text(gw: Gateway) -> None:
    name = "<img src=x onerror=alert(1)>"
    reply = await gw.register({**MINIMAL, "client_name": name})
    assert reply.status == 201
    assert reply.json()["client_name"] == name


@pytest.mark.parametrize(
    "name",
    ["Claude\u202eedualC", "Claude\u200b", "Claude\u2066x\u2069", "Cla\x00ude", "Claude\nCode", "x" * 201, 42, ["x"]],
)
async def test_client_names_with_control_or_bidi_characters_or_too_long_are_refused(gw: Gateway, name: Any) -> None:
    reply = await gw.register({**MINIMAL, "client_name": name})
    assert (reply.status, reply.error) == (400, "invalid_client_metadata")


@pytest.mark.parametrize("field_name", ["client_uri", "logo_uri", "policy_uri", "tos_uri"])
@pytest.mark.parametrize(
    "uri", ["http://c.example/x", "javascript:alert(1)", "data:image/png;base64,AAAA", "//c.example/x", 7]
)
async def test_display_uris_must_be_https(gw: Gateway, field_name: str, uri: Any) -> None:
    reply = await gw.register({**MINIMAL, field_name: uri})
    assert (reply.status, reply.error) == (400, "invalid_client_metadata")


async def test_display_uris_on_other_hosts_are_accepted_but_never_fetched(gw: Gateway, tmp_path: Path) -> None:
    ca = make_local_ca(tmp_path)
    async with serve_https(web.Application(), ca) as logo_host:
        reply = await gw.register({**MINIMAL, "logo_uri": logo_host.url("/logo.png"), "client_uri": logo_host.url("/")})
        assert reply.status == 201
        assert logo_host.connections == 0


# --- case 13: idempotency, bounds, expiry ---


async def test_identical_registrations_get_the_same_client(gw: Gateway) -> None:
    metadata = {**MINIMAL, "client_name": "Re-registers on every connect", "scope": "mcp:tools"}
    first = await gw.register(metadata)
    again = await gw.post(json.dumps(dict(reversed(list(metadata.items())))).encode())
    assert first.status == again.status == 201
    assert again.json()["client_id"] == first.json()["client_id"]
    assert again.json()["client_id_issued_at"] == first.json()["client_id_issued_at"]
    _assert_no_store(again)
    assert await gw.client_count() == 1
    other = await gw.register({**metadata, "client_name": "Someone else"})
    assert other.json()["client_id"] != first.json()["client_id"]
    assert await gw.client_count() == 2


async def test_defaults_make_spelled_out_and_implicit_metadata_identical(gw: Gateway) -> None:
    implicit = await gw.register(MINIMAL)
    explicit = await gw.register(
        {
            **MINIMAL,
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
            "application_type": "native",
        }
    )
    assert implicit.json()["client_id"] == explicit.json()["client_id"]


async def test_registration_beyond_the_global_cap_is_429_with_retry_after(
    sqlite_storage: Storage, clock: ManualClock
) -> None:
    overrides = {"oauth": {"registration": {"max_clients": 2}}}
    async with registration_gateway(sqlite_storage, clock, overrides=overrides) as gateway:
        for i in range(2):
            assert (await gateway.register({**MINIMAL, "client_name": f"c{i}"})).status == 201
        full = await gateway.register({**MINIMAL, "client_name": "c3"})
        assert (full.status, full.error) == (429, "temporarily_unavailable")
        assert int(full.headers["Retry-After"]) > 0
        _assert_no_store(full)
        assert await gateway.client_count() == 2


async def test_unused_clients_are_reaped_after_the_ttl_and_used_ones_stay(gw: Gateway) -> None:
    ttl = gw.config.oauth.registration.unused_client_ttl
    unused = (await gw.register({**MINIMAL, "client_name": "unused"})).json()["client_id"]
    used = (await gw.register({**MINIMAL, "client_name": "used"})).json()["client_id"]
    await gw.storage.mark_client_used(used, gw.clock.now() + 1)
    gw.clock.advance(ttl - 10)
    young = (await gw.register({**MINIMAL, "client_name": "young"})).json()["client_id"]
    assert await reap_unused_clients(gw.storage, gw.clock, ttl) == 0
    gw.clock.advance(20)
    assert await reap_unused_clients(gw.storage, gw.clock, ttl) == 1
    assert await gw.storage.get_client(unused) is None
    assert await gw.storage.get_client(used) is not None
    assert await gw.storage.get_client(young) is not None
    again = await gw.register({**MINIMAL, "client_name": "unused"})
    assert again.status == 201
    assert again.json()["client_id"] != unused


async def test_disabled_registration_says_so(sqlite_storage: Storage, clock: ManualClock) -> None:
    overrides = {"oauth": {"registration": {"enabled": False}}}
    async with registration_gateway(sqlite_storage, clock, overrides=overrides) as gateway:
        reply = await gateway.register(MINIMAL)
        assert (reply.status, reply.error) == (404, "not_found")
        assert "disabled" in reply.json()["error_description"]
        assert await gateway.client_count() == 0


@dataclass
class RecordingThrottle:
    refuse: bool = False
    seen: list[str] = field(default_factory=list)

    async def check(self, ip: str) -> None:
        self.seen.append(ip)
        if self.refuse:
            raise TooManyRequests("Too many registrations from this address", retry_after=30)


async def test_the_registration_throttle_seam_sees_the_client_address_and_can_refuse(
    sqlite_storage: Storage, clock: ManualClock
) -> None:
    throttle = RecordingThrottle()
    overrides = {"security": {"trusted_proxies": ["127.0.0.1"]}}
    async with registration_gateway(sqlite_storage, clock, overrides=overrides, throttle=throttle) as gateway:
        assert (await gateway.register(MINIMAL)).status == 201
        assert (await gateway.register(MINIMAL, headers={"X-Forwarded-For": "203.0.113.9"})).status == 201
        throttle.refuse = True
        refused = await gateway.register(MINIMAL)
        assert refused.status == 429
        assert refused.headers["Retry-After"] == "30"
    assert throttle.seen == ["127.0.0.1", "203.0.113.9", "127.0.0.1"]


class DownClients:
    """A ClientStore whose database is unreachable."""

    async def create_client(self, client: OAuthClient) -> OAuthClient:
        raise StorageUnavailable("down")

    async def get_client(self, client_id: str) -> OAuthClient | None:
        raise StorageUnavailable("down")

    async def mark_client_used(self, client_id: str, now: float) -> None:
        raise StorageUnavailable("down")

    async def delete_unused_clients(self, *, created_before: float) -> int:
        raise StorageUnavailable("down")

    async def count_clients(self) -> int:
        raise StorageUnavailable("down")


async def test_storage_outage_is_503_with_retry_after(sqlite_storage: Storage, clock: ManualClock) -> None:
    async with registration_gateway(sqlite_storage, clock, clients=DownClients()) as gateway:
        reply = await gateway.register(MINIMAL)
        assert (reply.status, reply.error) == (503, "temporarily_unavailable")
        assert "Retry-After" in reply.headers


# --- the resolver's view of registered clients ---


async def test_registered_clients_resolve_as_unverified_dcr_clients(gw: Gateway) -> None:
    body = (await gw.register({**MINIMAL, "client_name": "Example", "scope": "mcp:tools"})).json()
    resolver = ClientResolver(gw.storage, None)
    client = await resolver.resolve(body["client_id"])
    assert client is not None
    assert (client.kind, client.verified, client.host) == ("dcr", False, None)
    assert (client.client_name, client.redirect_uris, client.scope) == ("Example", (LOOPBACK,), "mcp:tools")
    assert client.grant_types == ("authorization_code", "refresh_token")
    assert await resolver.resolve("mcpc_unknown") is None
    assert await resolver.resolve("") is None
    assert await resolver.resolve("x" * 10_000) is None


async def test_resolving_during_a_storage_outage_is_503_not_unknown() -> None:
    with pytest.raises(ServiceUnavailable):
        await ClientResolver(DownClients(), None).resolve("mcpc_x")


async def test_one_address_registering_too_often_gets_429_with_retry_after_and_the_budget_refills(
    sqlite_storage: Storage, clock: ManualClock
) -> None:
    overrides = {"oauth": {"registration": {"max_per_address_per_hour": 3}}}
    async with registration_gateway(sqlite_storage, clock, overrides=overrides) as gateway:
        for i in range(3):
            assert (await gateway.register({"redirect_uris": [f"https://c{i}.example/cb"]})).status == 201
        refused = await gateway.register({"redirect_uris": ["https://c9.example/cb"]})
        assert refused.status == 429
        assert int(refused.headers["Retry-After"]) > 0
        clock.advance(3601)
        assert (await gateway.register({"redirect_uris": ["https://c9.example/cb"]})).status == 201
