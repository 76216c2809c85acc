"""Client ID Metadata Documents fetched from a real local HTTPS server (security-cases 14-18, 20).

The server runs on loopback, so positive tests set ``allow_private_addresses``; the SSRF tests leave it off
and prove, with a recording resolver and the server's connection counter, that nothing was connected to.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from multidict import CIMultiDict

from gateway.clock import ManualClock
from gateway.config import CimdConfig, RegistrationConfig
from gateway.oauth.cimd import CimdError, CimdFetcher, cache_ttl, is_cimd_client_id, is_public_address
from gateway.oauth.clients import ClientResolver
from gateway.oauth.redirect_uris import redirect_uri_matches
from tests.support.https_server import HttpsServer, LocalCA, make_local_ca, serve_https, silent_tcp_server

SCHEMES = RegistrationConfig().private_use_schemes
Behaviour = Callable[[web.Request], Awaitable[web.StreamResponse]]
DOC_PATH = "/oauth/client.json"


@dataclass
class Docs:
    """What the metadata host serves, path by path, and every request it received."""

    routes: dict[str, Behaviour] = field(default_factory=dict)
    requests: list[web.Request] = field(default_factory=list)
    received: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def paths(self) -> list[str]:
        return [request.path for request in self.requests]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request)
        self.received.set()
        behaviour = self.routes.get(request.path)
        if behaviour is None:
            return web.Response(status=404)
        return await behaviour(request)


def serve_json(
    document: Any, *, headers: dict[str, str] | None = None, content_type: str = "application/json"
) -> Behaviour:
    async def behaviour(request: web.Request) -> web.StreamResponse:
        body = document if isinstance(document, bytes) else json.dumps(document).encode()
        return web.Response(body=body, headers={"Content-Type": content_type, **(headers or {})})

    return behaviour


def metadata(client_id: str, **fields: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "client_id": client_id,
        "client_name": "Example CLI",
        "redirect_uris": ["http://127.0.0.1/callback"],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    }
    document.update(fields)
    return {name: value for name, value in document.items() if value is not None}


@dataclass
class RecordingResolver:
    answers: dict[str, list[str]] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)

    async def resolve(self, host: str) -> list[str]:
        self.asked.append(host)
        if host not in self.answers:
            raise OSError(f"no such host {host}")
        return list(self.answers[host])


@pytest.fixture(scope="session")
def local_ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCA:
    return make_local_ca(tmp_path_factory.mktemp("cimd-ca"), hostnames=["localhost", "cimd.test"])


@dataclass
class Host:
    server: HttpsServer
    docs: Docs
    ca: LocalCA
    clock: ManualClock
    resolver: RecordingResolver
    fetchers: list[CimdFetcher] = field(default_factory=list)

    @property
    def doc_url(self) -> str:
        return self.server.url(DOC_PATH, host="localhost")

    def serve(self, path: str, behaviour: Behaviour) -> str:
        self.docs.routes[path] = behaviour
        return self.server.url(path, host="localhost")

    def fetcher(self, **config: Any) -> CimdFetcher:
        settings: dict[str, Any] = {"allow_private_addresses": True, "ca_file": str(self.ca.ca_path), **config}
        fetcher = CimdFetcher(
            CimdConfig(**settings), clock=self.clock, resolver=self.resolver, private_use_schemes=SCHEMES
        )
        self.fetchers.append(fetcher)
        return fetcher


@pytest.fixture
async def host(local_ca: LocalCA) -> AsyncIterator[Host]:
    docs = Docs()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", docs.handle)
    resolver = RecordingResolver({"localhost": ["127.0.0.1"], "cimd.test": ["127.0.0.1"]})
    async with serve_https(app, local_ca) as server:
        state = Host(server, docs, local_ca, ManualClock(start=time.time()), resolver)
        try:
            yield state
        finally:
            for fetcher in state.fetchers:
                await fetcher.close()


async def refused(fetcher: CimdFetcher, client_id: str, *, refresh: bool = False) -> str:
    with pytest.raises(CimdError) as caught:
        await asyncio.wait_for(fetcher.fetch(client_id, refresh=refresh), timeout=10)
    return caught.value.reason


# --- a valid document ---


async def test_a_valid_document_becomes_typed_client_metadata(host: Host) -> None:
    host.serve(DOC_PATH, serve_json(metadata(host.doc_url, scope="mcp:tools offline_access")))
    fetched = await host.fetcher().fetch(host.doc_url)
    assert fetched.client_id == host.doc_url
    assert fetched.client_name == "Example CLI"
    assert fetched.redirect_uris == ("http://127.0.0.1/callback",)
    assert fetched.grant_types == ("authorization_code", "refresh_token")
    assert fetched.response_types == ("code",)
    assert fetched.scope == "mcp:tools offline_access"
    request = host.docs.requests[0]
    assert request.headers["Accept"] == "application/json"
    assert request.headers["Accept-Encoding"] == "identity"


async def test_defaults_apply_to_a_minimal_document(host: Host) -> None:
    host.serve(DOC_PATH, serve_json({"client_id": host.doc_url, "redirect_uris": ["http://localhost/cb"]}))
    fetched = await host.fetcher().fetch(host.doc_url)
    assert fetched.grant_types == ("authorization_code", "refresh_token")
    assert fetched.response_types == ("code",)
    assert fetched.client_name is None


async def test_a_structured_json_media_type_is_accepted(host: Host) -> None:
    host.serve(DOC_PATH, serve_json(metadata(host.doc_url), content_type="application/client-metadata+json"))
    assert (await host.fetcher().fetch(host.doc_url)).client_id == host.doc_url


async def test_the_system_resolver_and_the_configured_ca_file_are_used_by_default(host: Host) -> None:
    host.serve(DOC_PATH, serve_json(metadata(host.doc_url)))
    fetcher = CimdFetcher(CimdConfig(allow_private_addresses=True, ca_file=str(host.ca.ca_path)), clock=host.clock)
    host.fetchers.append(fetcher)
    assert (await fetcher.fetch(host.doc_url)).client_id == host.doc_url


async def test_a_certificate_from_an_untrusted_ca_fails_the_fetch(host: Host) -> None:
    host.serve(DOC_PATH, serve_json(metadata(host.doc_url)))
    reason = await refused(host.fetcher(ca_file=None), host.doc_url)
    assert "TLS" in reason


# --- case 14: SSRF targets ---

LITERAL_TARGETS = [
    "https://169.254.169.254/latest/meta-data",
    "https://10.0.0.5/x",
    "https://192.168.1.1/x",
    "https://172.16.0.1/x",
    "https://100.64.0.1/x",
    "https://0.0.0.0/x",
    "https://224.0.0.1/x",
    "https://[::1]/x",
    "https://[::ffff:127.0.0.1]/x",
    "https://[::ffff:a00:5]/x",
    "https://[fe80::1]/x",
    "https://[fc00::1]/x",
    "https://[64:ff9b::7f00:1]/x",
    "https://[2002:7f00:1::]/x",
    "https://[ff0e::1]/x",
    "https://2130706433/x",
    "https://0x7f.1/x",
    "https://0x7f000001/x",
    "https://0177.0.0.1/x",
    "https://127.1/x",
]


@pytest.mark.parametrize("client_id", LITERAL_TARGETS)
async def test_special_use_and_numeric_hosts_are_refused_without_a_lookup(host: Host, client_id: str) -> None:
    await refused(host.fetcher(allow_private_addresses=False), client_id)
    assert host.resolver.asked == []


async def test_loopback_literal_is_refused_without_connecting(host: Host) -> None:
    client_id = host.server.url(DOC_PATH)  # https://127.0.0.1:<port>/...
    host.serve(DOC_PATH, serve_json(metadata(client_id)))
    reason = await refused(host.fetcher(allow_private_addresses=False), client_id)
    assert reason == "the metadata host is not a public address"
    assert host.server.connections == 0


async def test_a_name_resolving_to_a_private_address_is_refused_without_connecting(host: Host) -> None:
    host.resolver.answers["innocent.test"] = ["127.0.0.1"]
    client_id = host.server.url(DOC_PATH, host="innocent.test")
    host.serve(DOC_PATH, serve_json(metadata(client_id)))
    reason = await refused(host.fetcher(allow_private_addresses=False), client_id)
    assert reason == "the metadata host is not a public address"
    assert host.resolver.asked == ["innocent.test"]
    assert host.server.connections == 0


async def test_one_private_address_among_public_ones_refuses_the_whole_host(host: Host) -> None:
    host.resolver.answers["mixed.test"] = ["93.184.215.14", "10.0.0.5"]
    await refused(host.fetcher(allow_private_addresses=False), "https://mixed.test/client.json")
    assert host.server.connections == 0


async def test_the_connection_goes_to_the_checked_address_with_the_hostname_for_tls(host: Host) -> None:
    # cimd.test exists only in the test resolver: success proves the connector used the pinned address.
    client_id = host.server.url(DOC_PATH, host="cimd.test")
    host.serve(DOC_PATH, serve_json(metadata(client_id)))
    fetched = await host.fetcher().fetch(client_id)
    assert fetched.client_id == client_id
    assert host.resolver.asked == ["cimd.test"]  # resolved once, never again by the HTTP client
    assert host.server.server_names == ["cimd.test"]
    assert host.docs.requests[0].headers["Host"] == f"cimd.test:{host.server.port}"


async def test_an_unresolvable_host_fails_cleanly(host: Host) -> None:
    reason = await refused(host.fetcher(), "https://nowhere.test/client.json")
    assert reason == "the metadata host could not be resolved"


async def test_private_addresses_are_refused_by_default_with_the_system_resolver(host: Host) -> None:
    host.serve(DOC_PATH, serve_json(metadata(host.doc_url)))
    fetcher = CimdFetcher(CimdConfig(ca_file=str(host.ca.ca_path)), clock=host.clock)
    host.fetchers.append(fetcher)
    await refused(fetcher, host.doc_url)
    assert host.server.connections == 0


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.31.255.255",
        "192.168.0.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "255.255.255.255",
        "224.0.0.251",
        "239.255.255.250",
        "192.0.2.1",
        "198.18.0.1",
        "240.0.0.1",
        "::",
        "::1",
        "::ffff:127.0.0.1",
        "::ffff:8.8.8.8",
        "::127.0.0.1",
        "fe80::1",
        "fec0::1",
        "fc00::1",
        "fd12:3456::1",
        "ff02::1",
        "ff0e::1",
        "2001:db8::1",
        "2001::1",
        "64:ff9b::a00:1",
        "2002:a00:1::1",
    ],
)
def test_special_use_addresses_are_not_public(address: str) -> None:
    assert not is_public_address(ip_address(address))


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"])
def test_global_unicast_addresses_are_public(address: str) -> None:
    assert is_public_address(ip_address(address))


# --- case 15: redirects and statuses ---


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_redirects_are_never_followed(host: Host, status: int) -> None:
    target = host.serve("/elsewhere.json", serve_json(metadata(host.doc_url)))

    async def redirect(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, headers={"Location": target})

    host.serve(DOC_PATH, redirect)
    reason = await refused(host.fetcher(), host.doc_url)
    assert "redirect" in reason
    assert host.docs.paths == [DOC_PATH]


@pytest.mark.parametrize("status", [201, 203, 204, 404, 500, 503])
async def test_any_status_but_200_fails_and_is_not_cached(host: Host, status: int) -> None:
    async def answer(request: web.Request) -> web.StreamResponse:
        body = json.dumps(metadata(host.doc_url)).encode() if status != 204 else None
        return web.Response(status=status, body=body, content_type="application/json" if body else None)

    host.serve(DOC_PATH, answer)
    fetcher = host.fetcher()
    await refused(fetcher, host.doc_url)
    await refused(fetcher, host.doc_url)
    assert host.docs.paths == [DOC_PATH, DOC_PATH]


# --- case 16: size and time ---


async def test_a_declared_length_over_the_limit_is_refused(host: Host) -> None:
    padded = metadata(host.doc_url, client_name="x" * 100, padding="p" * 6000)
    host.serve(DOC_PATH, serve_json(padded))
    assert await refused(host.fetcher(), host.doc_url) == "the metadata document is too large"


async def test_an_undeclared_length_is_cut_off_as_soon_as_it_passes_the_limit(host: Host) -> None:
    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(b'{"client_id": "' + b"a" * 4000)
        await response.write(b"b" * 4000)
        await asyncio.Event().wait()  # never finishes: only the size limit can end the fetch
        return response

    host.serve(DOC_PATH, endless)
    async with asyncio.timeout(5):
        reason = await refused(host.fetcher(timeout=60.0), host.doc_url)
    assert reason == "the metadata document is too large"


async def test_a_trickling_body_is_cut_off_at_the_total_deadline(host: Host) -> None:
    async def trickle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(b"{")
        await asyncio.Event().wait()
        return response

    host.serve(DOC_PATH, trickle)
    async with asyncio.timeout(5):
        reason = await refused(host.fetcher(timeout=0.3), host.doc_url)
    assert reason == "fetching the metadata document timed out"


async def test_a_stalled_tls_handshake_is_cut_off_at_the_total_deadline(host: Host) -> None:
    async with silent_tcp_server() as port:
        client_id = f"https://localhost:{port}{DOC_PATH}"
        async with asyncio.timeout(5):
            reason = await refused(host.fetcher(timeout=0.3), client_id)
    assert reason == "fetching the metadata document timed out"


@pytest.mark.parametrize(
    ("content_type", "headers"),
    [
        ("text/html", {}),
        ("text/plain", {}),
        ("application/octet-stream", {}),
        ("application/json", {"Content-Encoding": "gzip"}),
    ],
)
async def test_only_uncompressed_json_is_accepted(host: Host, content_type: str, headers: dict[str, str]) -> None:
    host.serve(DOC_PATH, serve_json(metadata(host.doc_url), content_type=content_type, headers=headers))
    await refused(host.fetcher(), host.doc_url)


# --- case 17: identifier and document validation ---

VALID_IDS = [
    "https://app.example.com/client.json",
    "https://app.example.com:8443/oauth/client-metadata.json",
    "https://app.example.com/c?v=1",
    "https://app.example.com/a/b.c/d..e/...",
    "https://93.184.215.14/client.json",
    "https://[2606:4700:4700::1111]/client.json",
]

INVALID_IDS = [
    "https://app.example.com/c#f",
    "https://app.example.com/c#",
    "https://u:p@app.example.com/c",
    "https://u@app.example.com/c",
    "https://app.example.com/./c",
    "https://app.example.com/a/../c",
    "https://app.example.com/a/..",
    "https://app.example.com/a/%2e%2e/c",
    "https://app.example.com/a/%2E%2E/c",
    "https://app.example.com/a/.%2e/c",
    "https://app.example.com/a/%2e/c",
    "https://app.example.com",
    "https://app.example.com/",
    "https://app.example.com?x=/y",
    "http://app.example.com/c",
    "HTTPS://app.example.com/c",
    "https://app.example.com/c d",
    " https://app.example.com/c",
    "https://app.example.com\\c",
    "https://app.example.com/c%zz",
    "https://app%2eexample.com/c",
    "https://2130706433/x",
    "https://0x7f.1/x",
    "https://127.1/x",
    "https://0177.0.0.1/x",
    "https://app.example.123/x",
    "https://[fe80::1%25eth0]/x",
    "https://[::1/x",
    "https://[::1]x/y",
    "https://app.example.com:0/c",
    "https://app.example.com:99999/c",
    "https://app.example.com:/c",
    "https://app.example.com:44a/c",
    "https://app_example.com/c",
    "https://app.ex\u00e4mple.com/c",
    "https:///c",
    "https://app.example.com/" + "a" * 3000,
    "",
]


@pytest.mark.parametrize("client_id", VALID_IDS)
def test_well_formed_client_identifier_urls_are_recognised(client_id: str) -> None:
    assert is_cimd_client_id(client_id)


@pytest.mark.parametrize("client_id", INVALID_IDS)
def test_malformed_client_identifier_urls_are_refused(client_id: str) -> None:
    assert not is_cimd_client_id(client_id)


@pytest.mark.parametrize("client_id", INVALID_IDS[:12])
async def test_malformed_client_identifier_urls_are_never_fetched(host: Host, client_id: str) -> None:
    await refused(host.fetcher(), client_id)
    assert host.resolver.asked == []


def _variants(url: str) -> list[str]:
    return [url + "/", url.replace("localhost", "LOCALHOST"), url.replace("https://", "HTTPS://"), url + "?"]


async def test_the_documents_client_id_must_equal_the_url_exactly(host: Host) -> None:
    fetcher = host.fetcher()
    for other in [*_variants(host.doc_url), host.doc_url.replace(f":{host.server.port}", ""), None, 42]:
        host.serve(DOC_PATH, serve_json({**metadata(host.doc_url), "client_id": other}))
        assert await refused(fetcher, host.doc_url) == "the document's client_id is not its URL"


@pytest.mark.parametrize(
    "fields",
    [
        {"client_secret": "s3cret"},
        {"client_secret_expires_at": 0},
        {"token_endpoint_auth_method": "client_secret_post"},
        {"token_endpoint_auth_method": "client_secret_basic"},
        {"token_endpoint_auth_method": "private_key_jwt"},
        {"redirect_uris": []},
        {"redirect_uris": "http://127.0.0.1/callback"},
        {"redirect_uris": ["javascript:alert(1)"]},
        {"redirect_uris": ["https://c.example/cb#f"]},
        {"grant_types": ["client_credentials"]},
        {"grant_types": ["refresh_token"]},
        {"response_types": ["token"]},
        {"client_name": "Claude\u202eedoC"},
        {"logo_uri": "http://c.example/logo.png"},
        {"jwks": {"keys": [{"kty": "EC", "crv": "P-256", "x": "x", "y": "y", "d": "private"}]}},
        {"jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}},
    ],
)
async def test_documents_a_public_client_could_not_have_are_refused(host: Host, fields: dict[str, Any]) -> None:
    document = metadata(host.doc_url)
    document.update(fields)
    host.serve(DOC_PATH, serve_json(document))
    await refused(host.fetcher(), host.doc_url)


async def test_a_document_without_redirect_uris_is_refused(host: Host) -> None:
    document = metadata(host.doc_url)
    del document["redirect_uris"]
    host.serve(DOC_PATH, serve_json(document))
    await refused(host.fetcher(), host.doc_url)


@pytest.mark.parametrize("body", [b"[]", b'"x"', b"null", b"{", b'{"client_id": NaN}', b"\xff\xfe"])
async def test_a_body_that_is_not_a_json_object_is_refused(host: Host, body: bytes) -> None:
    host.serve(DOC_PATH, serve_json(body))
    await refused(host.fetcher(), host.doc_url)


async def test_duplicate_keys_are_refused(host: Host) -> None:
    body = json.dumps(metadata(host.doc_url))[:-1] + ', "client_id": "https://evil.example/x"}'
    host.serve(DOC_PATH, serve_json(body.encode()))
    await refused(host.fetcher(), host.doc_url)


async def test_a_public_jwks_is_tolerated(host: Host) -> None:
    jwks = {"keys": [{"kty": "EC", "crv": "P-256", "x": "x", "y": "y"}]}
    host.serve(DOC_PATH, serve_json(metadata(host.doc_url, jwks=jwks)))
    assert (await host.fetcher().fetch(host.doc_url)).client_id == host.doc_url


# --- case 18: the redirect URI must be in the document; the host is shown ---


async def test_the_resolved_client_carries_the_documents_redirect_uris_and_host(host: Host) -> None:
    host.serve(DOC_PATH, serve_json(metadata(host.doc_url)))
    resolver = ClientResolver(store=_NoStore(), cimd=host.fetcher())
    client = await resolver.resolve(host.doc_url)
    assert client is not None
    assert (client.kind, client.verified, client.host) == ("cimd", True, "localhost")
    assert client.redirect_uris == ("http://127.0.0.1/callback",)
    assert not any(redirect_uri_matches(uri, "https://evil.example/cb") for uri in client.redirect_uris)
    assert any(redirect_uri_matches(uri, "http://127.0.0.1:53412/callback") for uri in client.redirect_uris)


async def test_a_failing_document_surfaces_as_cimd_error_from_the_resolver(host: Host) -> None:
    resolver = ClientResolver(store=_NoStore(), cimd=host.fetcher())
    with pytest.raises(CimdError):
        await resolver.resolve(host.doc_url)  # 404
    with pytest.raises(CimdError):
        await resolver.resolve("https://app.example.com/a/../c")
    assert host.docs.paths == [DOC_PATH]


async def test_metadata_urls_are_unknown_clients_while_cimd_is_disabled(host: Host) -> None:
    resolver = ClientResolver(store=_NoStore(), cimd=None)
    assert await resolver.resolve(host.doc_url) is None
    assert host.server.connections == 0


class _NoStore:
    """A ClientStore with no clients (CIMD ids never reach it)."""

    async def create_client(self, client: Any) -> Any:
        raise AssertionError("not used")

    async def get_client(self, client_id: str) -> None:
        return None

    async def mark_client_used(self, client_id: str, now: float) -> None:
        return None

    async def delete_unused_clients(self, *, created_before: float) -> int:
        return 0

    async def count_clients(self) -> int:
        return 0


# --- case 20: cache bounds ---


async def test_a_long_max_age_is_clamped_to_the_maximum_ttl(host: Host) -> None:
    document = metadata(host.doc_url)
    host.serve(DOC_PATH, serve_json(document, headers={"Cache-Control": "max-age=31536000"}))
    fetcher = host.fetcher(cache_max_ttl=3600.0)
    await fetcher.fetch(host.doc_url)
    host.serve(DOC_PATH, serve_json({**document, "client_name": "Changed"}))
    host.clock.advance(3599)
    assert (await fetcher.fetch(host.doc_url)).client_name == "Example CLI"
    host.clock.advance(2)
    assert (await fetcher.fetch(host.doc_url)).client_name == "Changed"
    assert host.docs.paths == [DOC_PATH, DOC_PATH]


async def test_a_short_max_age_is_raised_to_the_minimum_ttl(host: Host) -> None:
    host.serve(DOC_PATH, serve_json(metadata(host.doc_url), headers={"Cache-Control": "max-age=0"}))
    fetcher = host.fetcher(cache_min_ttl=60.0)
    await fetcher.fetch(host.doc_url)
    host.clock.advance(59)
    await fetcher.fetch(host.doc_url)
    assert len(host.docs.requests) == 1
    host.clock.advance(2)
    await fetcher.fetch(host.doc_url)
    assert len(host.docs.requests) == 2


async def test_no_store_documents_are_fetched_every_time(host: Host) -> None:
    host.serve(DOC_PATH, serve_json(metadata(host.doc_url), headers={"Cache-Control": "no-store"}))
    fetcher = host.fetcher()
    await fetcher.fetch(host.doc_url)
    await fetcher.fetch(host.doc_url)
    assert len(host.docs.requests) == 2


async def test_a_failed_refresh_keeps_the_good_cached_copy_until_it_expires_then_the_failure_shows(
    host: Host,
) -> None:
    document = metadata(host.doc_url)
    host.serve(DOC_PATH, serve_json(document, headers={"Cache-Control": "max-age=3600"}))
    fetcher = host.fetcher()
    await fetcher.fetch(host.doc_url)
    host.serve(DOC_PATH, serve_json({**document, "client_id": "https://evil.example/x"}))
    assert (await fetcher.fetch(host.doc_url)).client_id == host.doc_url  # still cached
    host.clock.advance(61)
    await refused(fetcher, host.doc_url, refresh=True)
    assert (await fetcher.fetch(host.doc_url)).client_id == host.doc_url  # a stranger's refresh drops nothing
    host.clock.advance(3600)
    await refused(fetcher, host.doc_url)  # expired: fetched again, and the failure was not cached
    await refused(fetcher, host.doc_url, refresh=True)
    assert len(host.docs.requests) == 4


async def test_a_refresh_picks_up_a_newly_added_redirect_uri_in_one_request(host: Host) -> None:
    document = metadata(host.doc_url)
    host.serve(DOC_PATH, serve_json(document, headers={"Cache-Control": "max-age=3600"}))
    fetcher = host.fetcher()
    await fetcher.fetch(host.doc_url)
    added = [*document["redirect_uris"], "https://app.example.com/cb"]
    host.serve(DOC_PATH, serve_json({**document, "redirect_uris": added}))
    host.clock.advance(61)  # a document is re-fetched at most once per cache_min_ttl
    assert (await fetcher.fetch(host.doc_url, refresh=True)).redirect_uris == tuple(added)
    assert len(host.docs.requests) == 2


async def test_refreshes_within_cache_min_ttl_of_a_fetch_serve_the_cached_copy_without_a_request(host: Host) -> None:
    host.serve(DOC_PATH, serve_json(metadata(host.doc_url), headers={"Cache-Control": "max-age=3600"}))
    fetcher = host.fetcher(cache_min_ttl=60)
    await fetcher.fetch(host.doc_url)
    for _ in range(10):
        assert fetcher.cached(host.doc_url, refresh=True)
        assert (await fetcher.fetch(host.doc_url, refresh=True)).client_id == host.doc_url
    host.clock.advance(61)
    assert not fetcher.cached(host.doc_url, refresh=True)
    await fetcher.fetch(host.doc_url, refresh=True)
    await fetcher.fetch(host.doc_url, refresh=True)
    assert len(host.docs.requests) == 2


async def test_an_expired_copy_serves_without_a_request_only_when_asked_to_and_not_forever(host: Host) -> None:
    host.serve(DOC_PATH, serve_json(metadata(host.doc_url), headers={"Cache-Control": "max-age=100"}))
    fetcher = host.fetcher(cache_min_ttl=60, cache_max_ttl=1000)
    await fetcher.fetch(host.doc_url)
    host.clock.advance(500)
    assert not fetcher.cached(host.doc_url)
    assert fetcher.has_copy(host.doc_url)
    assert (await fetcher.fetch(host.doc_url, network=False)).client_id == host.doc_url
    host.clock.advance(700)  # past expiry + cache_max_ttl
    assert not fetcher.has_copy(host.doc_url)
    with pytest.raises(CimdError):
        await fetcher.fetch(host.doc_url, network=False)
    assert len(host.docs.requests) == 1


async def test_concurrent_fetches_of_one_url_share_one_request(host: Host) -> None:
    gate = asyncio.Event()
    serve = serve_json(metadata(host.doc_url))

    async def slow(request: web.Request) -> web.StreamResponse:
        await gate.wait()
        return await serve(request)

    host.serve(DOC_PATH, slow)
    fetcher = host.fetcher()
    async with asyncio.timeout(5):
        first = asyncio.create_task(fetcher.fetch(host.doc_url))
        await host.docs.received.wait()
        second = asyncio.create_task(fetcher.fetch(host.doc_url))
        gate.set()
        results = await asyncio.gather(first, second)
    assert results[0] == results[1]
    assert len(host.docs.requests) == 1


NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("headers", "ttl"),
    [
        ({}, 60.0),
        ({"Cache-Control": "max-age=600"}, 600.0),
        ({"Cache-Control": "public, max-age=600"}, 600.0),
        ({"Cache-Control": 'max-age="600"'}, 600.0),
        ({"Cache-Control": "max-age=600", "Age": "100"}, 500.0),
        ({"Cache-Control": "max-age=10"}, 60.0),
        ({"Cache-Control": "max-age=31536000"}, 86400.0),
        ({"Cache-Control": "max-age=-5"}, 60.0),
        ({"Cache-Control": "max-age=soon"}, 60.0),
        ({"Cache-Control": "no-cache"}, 60.0),
        ({"Cache-Control": "no-store"}, None),
        ({"Cache-Control": "max-age=600, no-store"}, None),
        ({"Cache-Control": "NO-STORE"}, None),
        ({"Expires": formatdate(NOW + 900, usegmt=True)}, 900.0),
        ({"Expires": formatdate(NOW + 900, usegmt=True), "Date": formatdate(NOW + 300, usegmt=True)}, 600.0),
        ({"Expires": "0"}, 60.0),
        ({"Expires": formatdate(NOW + 900, usegmt=True), "Cache-Control": "max-age=120"}, 120.0),
    ],
)
def local_cache_lifetime_follows_http_caching_within_bounds(headers: dict[str, str], ttl: float | None) -> None:
    assert cache_ttl(CIMultiDict(headers), now=NOW, min_ttl=60.0, max_ttl=86400.0) == ttl


def test_the_ca_helper_writes_pem_files(local_ca: LocalCA) -> None:
    assert Path(local_ca.ca_path).read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
