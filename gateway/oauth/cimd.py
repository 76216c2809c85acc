"""OAuth Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document; § numbers are draft -02's).

A ``client_id`` that is an https URL names a JSON document of RFC 7591 metadata, fetched by the gateway.
The fetch is the gateway's one outbound request chosen by strangers, so it is SSRF-hardened (§8.6):

- the URL must be a proper client identifier URL (§3), and hosts in non-standard numeric forms
  (``2130706433``, ``0x7f.1``, ``127.1``) are refused outright;
- the host is resolved once, through the ``Resolver`` seam; any special-use address (RFC 6890: loopback,
  private, link-local, CGNAT, multicast, reserved, unspecified, IPv4-mapped/6to4/NAT64 forms of those)
  fails the fetch before a connection is attempted, unless ``allow_private_addresses``;
- the connection goes to exactly the addresses that were checked (a per-fetch connector whose resolver
  answers only those: no second lookup to rebind), with TLS verified against the hostname;
- no redirects, 200 only, JSON only, no content coding, ``max_bytes`` enforced while streaming, and one
  ``timeout`` covering resolution, connection, TLS and the whole body.

Valid documents are cached per HTTP caching (``gateway.oauth.cimd_cache``); failures are never cached (§5.2).
Concurrent fetches of one URL share one request. A refresh (a flow the cached copy does not satisfy, such as an
unlisted ``redirect_uri``) re-fetches a document at most once per ``cache_min_ttl`` and replaces the cached copy
only when it succeeds: strangers can neither make the gateway fetch for them at will nor spend the document's
fetch budget and turn the app's sign-in into a 429. An expired copy is kept (``cache_max_ttl`` more) to serve
while the fetch budget is spent.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import re
import socket
import ssl
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from gateway.clock import Clock
from gateway.config import CimdConfig
from gateway.oauth.cimd_cache import DocumentCache, cache_ttl
from gateway.oauth.errors import OAuthError
from gateway.oauth.registration import MetadataPolicy, parse_json_object, validate_metadata

log = logging.getLogger("gateway.oauth.cimd")

MAX_CLIENT_ID_URL_LENGTH = 2048
USER_AGENT = "mcp-gateway (client metadata fetch)"

_PRINTABLE_ASCII = re.compile(r"[\x21-\x7e]+")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_DNS_NAME = re.compile(r"[a-z0-9](?:[a-z0-9\-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9\-]*[a-z0-9])?)*", re.IGNORECASE)
# WHATWG URL: a host whose last label is a number is parsed as IPv4 (in decimal, octal or hex forms).
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*", re.IGNORECASE)
_DOT_SEGMENT = re.compile(r"(?:\.|%2e){1,2}", re.IGNORECASE)
_JWK_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "k", "oth"})
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class CimdError(OAuthError):
    """The metadata document could not be fetched or is invalid. ``reason`` is short and safe to show or log.

    The authorize endpoint turns it into an error page; left uncaught it renders as 400 ``invalid_client``."""

    error = "invalid_client"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Resolver(Protocol):
    async def resolve(self, host: str) -> list[str]:
        """The IP addresses of ``host`` (empty or ``OSError`` when it has none)."""
        ...


class SystemResolver:
    """The event loop's ``getaddrinfo``."""

    async def resolve(self, host: str) -> list[str]:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
        return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True, slots=True)
class ClientMetadata:
    """A validated Client ID Metadata Document."""

    client_id: str
    client_name: str | None
    redirect_uris: tuple[str, ...]
    grant_types: tuple[str, ...]
    response_types: tuple[str, ...]
    scope: str | None
    client_uri: str | None
    logo_uri: str | None
    application_type: str


@dataclass(frozen=True, slots=True)
class _Target:
    host: str
    """Without brackets for IPv6 literals."""
    literal: ipaddress.IPv4Address | ipaddress.IPv6Address | None


def _parse_client_id(client_id: str) -> _Target | None:
    if len(client_id) > MAX_CLIENT_ID_URL_LENGTH or _PRINTABLE_ASCII.fullmatch(client_id) is None:
        return None
    # §3: https scheme; no fragment; a path; no dot segments; no userinfo. Backslashes and broken
    # percent-escapes are refused too: other URL parsers read them differently.
    if not client_id.startswith("https://") or "#" in client_id or "\\" in client_id or _BAD_PERCENT.search(client_id):
        return None
    rest = client_id[len("https://") :]
    authority, slash, path_and_query = rest.partition("/")
    if not slash or "?" in authority or "@" in authority:
        return None
    path = "/" + path_and_query.split("?", 1)[0]
    if path == "/" or any(_DOT_SEGMENT.fullmatch(segment) for segment in path.split("/")):
        return None
    if authority.startswith("["):
        host, bracket, after = authority[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            return None
        port = after[1:]
    else:
        host, _, port = authority.partition(":")
    if (port or authority.endswith(":")) and (not port.isdigit() or not 0 < int(port) <= 65535):
        return None
    if "%" in host:
        return None  # no percent-encoded hosts, no IPv6 zone ids
    if authority.startswith("["):
        try:
            return _Target(host, ipaddress.IPv6Address(host))
        except ValueError:
            return None  # zone ids and malformed literals included
    if _DNS_NAME.fullmatch(host) is None:
        return None
    if _NUMERIC_LABEL.fullmatch(host.rsplit(".", 1)[-1]):
        try:
            literal = ipaddress.IPv4Address(host)
        except ValueError:
            return None
        # Only the canonical dotted quad; 2130706433, 0x7f.1 and 127.1 never reach a resolver.
        return _Target(host, literal) if str(literal) == host else None
    return _Target(host, None)


def is_cimd_client_id(client_id: str) -> bool:
    """Whether ``client_id`` is a valid client identifier URL (§3)."""
    return _parse_client_id(client_id) is not None


def is_public_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """False for every RFC 6890 special-use address, and for IPv6 forms that embed a non-public IPv4 one."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.teredo is not None:
            return False
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None and not is_public_address(embedded):
            return False
        if address.is_site_local:
            return False
    # ``is_global`` alone lets multicast through, hence the explicit checks.
    return address.is_global and not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def default_ssl_context(ca_file: str | None) -> ssl.SSLContext:
    """The system trust store, plus ``ca_file`` when configured; hostname verification on."""
    context = ssl.create_default_context()
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    return context


class _PinnedResolver(AbstractResolver):
    """Answers the connector with exactly the addresses that were checked: no second lookup."""

    def __init__(self, host: str, addresses: list[str]) -> None:
        self._host = host.rstrip(".").lower()
        self._addresses = addresses

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host.rstrip(".").lower() != self._host:
            raise OSError(f"unexpected host {host!r}")
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in self._addresses
        ]

    async def close(self) -> None:
        pass


class CimdFetcher:
    """Fetches, validates and caches Client ID Metadata Documents. ``close()`` cancels fetches under way."""

    def __init__(
        self,
        config: CimdConfig,
        *,
        clock: Clock,
        resolver: Resolver | None = None,
        ssl_context: ssl.SSLContext | None = None,
        private_use_schemes: Collection[str] = (),
        on_fetched: Callable[[str], None] | None = None,
    ) -> None:
        """``on_fetched(client_id)`` is told of every document fetched and validated (not served from cache)."""
        self._config = config
        self._on_fetched = on_fetched
        self._clock = clock
        self._resolver = resolver or SystemResolver()
        self._ssl = ssl_context or default_ssl_context(config.ca_file)
        self._policy = MetadataPolicy(private_use_schemes=frozenset(private_use_schemes), supported_scopes=None)
        self._cache: DocumentCache[ClientMetadata] = DocumentCache(
            min_refresh=config.cache_min_ttl, keep_stale=config.cache_max_ttl
        )
        self._inflight: dict[str, asyncio.Task[ClientMetadata]] = {}

    async def fetch(self, client_id: str, *, refresh: bool = False, network: bool = True) -> ClientMetadata:
        """The validated document at ``client_id``, from the cache while fresh; ``refresh`` fetches again a
        copy the flow no longer matches (unless it was fetched less than ``cache_min_ttl`` ago); ``network``
        False answers from the cache only, even an expired copy (a fetch budget is spent). Raises
        ``CimdError``."""
        now = self._clock.monotonic()
        if not network:
            copy = self._cache.copy(client_id, now)
            if copy is None:
                raise CimdError("the metadata document cannot be fetched right now; try again later")
            return copy
        fresh = self._cache.fresh(client_id, now, refresh=refresh)
        if fresh is not None:
            return fresh
        task = self._inflight.get(client_id)
        if task is None:
            task = asyncio.create_task(self._load(client_id), name="cimd-fetch")
            self._inflight[client_id] = task
            task.add_done_callback(functools.partial(self._finished, client_id))
        # A caller that goes away does not cancel the fetch others wait for (it ends by its own timeout).
        return await asyncio.shield(task)

    def cached(self, client_id: str, *, refresh: bool = False) -> bool:
        """True when ``fetch`` would answer from the cache (or join a fetch already under way)."""
        fresh = self._cache.fresh(client_id, self._clock.monotonic(), refresh=refresh) is not None
        return fresh or client_id in self._inflight

    def has_copy(self, client_id: str) -> bool:
        """True when ``fetch(network=False)`` would answer (a copy, fresh or kept past its expiry)."""
        return self._cache.copy(client_id, self._clock.monotonic()) is not None

    def forget(self, client_id: str) -> None:
        self._cache.forget(client_id)

    async def close(self) -> None:
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._cache.clear()

    def _finished(self, client_id: str, task: asyncio.Task[ClientMetadata]) -> None:
        if self._inflight.get(client_id) is task:
            del self._inflight[client_id]
        if not task.cancelled():
            task.exception()  # retrieved here: waiters may all have gone

    async def _load(self, client_id: str) -> ClientMetadata:
        target = _parse_client_id(client_id)
        if target is None:
            raise CimdError("client_id is not a valid metadata document URL")
        try:
            async with asyncio.timeout(self._config.timeout):
                metadata, ttl = await self._download(client_id, target)
        except CimdError as exc:
            log.info("metadata document refused: %s", exc.reason, extra={"event": "cimd_failed", "host": target.host})
            self._cache.failed(client_id, self._clock.monotonic())
            raise
        except TimeoutError as exc:
            log.info("metadata document fetch timed out", extra={"event": "cimd_failed", "host": target.host})
            self._cache.failed(client_id, self._clock.monotonic())
            raise CimdError("fetching the metadata document timed out") from exc
        self._cache.store(client_id, metadata, self._clock.monotonic(), ttl)
        if self._on_fetched is not None:
            self._on_fetched(metadata.client_id)
        return metadata

    async def _addresses(self, target: _Target) -> list[str]:
        if target.literal is not None:
            addresses = [target.literal]
        else:
            try:
                found = await self._resolver.resolve(target.host)
                addresses = [ipaddress.ip_address(address.split("%", 1)[0]) for address in found]
            except (OSError, ValueError) as exc:
                raise CimdError("the metadata host could not be resolved") from exc
        if not addresses:
            raise CimdError("the metadata host could not be resolved")
        # §8.6 / RFC 9728 §7.7: refuse special-use addresses, every one of them, before connecting.
        if not self._config.allow_private_addresses and not all(is_public_address(a) for a in addresses):
            raise CimdError("the metadata host is not a public address")
        return [str(address) for address in addresses]

    async def _download(self, client_id: str, target: _Target) -> tuple[ClientMetadata, float | None]:
        addresses = await self._addresses(target)
        connector = aiohttp.TCPConnector(
            resolver=_PinnedResolver(target.host, addresses), use_dns_cache=False, force_close=True, ssl=self._ssl
        )
        session = aiohttp.ClientSession(
            connector=connector,
            trust_env=False,  # no proxy from the environment: the checked address is the one connected to
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=self._config.timeout),
        )
        headers = {"Accept": "application/json", "Accept-Encoding": "identity", "User-Agent": USER_AGENT}
        try:
            async with (
                session,
                session.get(URL(client_id, encoded=True), headers=headers, allow_redirects=False) as response,
            ):
                body = await self._read(response)
                ttl = cache_ttl(
                    response.headers,
                    now=self._clock.now(),
                    min_ttl=self._config.cache_min_ttl,
                    max_ttl=self._config.cache_max_ttl,
                )
        except aiohttp.ClientSSLError as exc:
            raise CimdError("the metadata host's TLS certificate is not trusted") from exc
        except TimeoutError:
            raise  # aiohttp's own timeouts included; reported once, by the caller
        except aiohttp.ClientError as exc:
            raise CimdError("the metadata host could not be reached") from exc
        return self._validate(client_id, body), ttl

    async def _read(self, response: aiohttp.ClientResponse) -> bytes:
        if 300 <= response.status < 400:
            # §5: MUST NOT follow redirects.
            raise CimdError("the metadata URL redirects; redirects are not followed")
        if response.status != 200:
            # §5: any status but 200 is an error.
            raise CimdError(f"the metadata URL answered HTTP {response.status}")
        media_type = response.content_type.lower()
        if media_type != "application/json" and not (
            media_type.startswith("application/") and media_type.endswith("+json")
        ):
            raise CimdError("the metadata document is not JSON")
        if response.headers.get("Content-Encoding", "identity").lower() != "identity":
            raise CimdError("the metadata document has a content coding")
        limit = self._config.max_bytes
        # §8.7: bounded size; a declared length is refused up front, an undeclared one while streaming.
        if response.content_length is not None and response.content_length > limit:
            raise CimdError("the metadata document is too large")
        body = bytearray()
        async for chunk in response.content.iter_any():
            body += chunk
            if len(body) > limit:
                raise CimdError("the metadata document is too large")
        return bytes(body)

    def _validate(self, client_id: str, body: bytes) -> ClientMetadata:
        try:
            raw: Any = parse_json_object(body)
        except ValueError as exc:
            raise CimdError("the metadata document is not valid JSON") from exc
        if not isinstance(raw, dict):
            raise CimdError("the metadata document is not a JSON object")
        if raw.get("client_id") != client_id:
            # §4: simple string comparison (RFC 3986 §6.2.1): no case, port or trailing-slash normalisation.
            raise CimdError("the document's client_id is not its URL")
        # §4: no shared secret can exist with a metadata document.
        if "client_secret" in raw or "client_secret_expires_at" in raw:
            raise CimdError("the metadata document contains a client secret")
        if _has_private_jwk(raw.get("jwks")):
            raise CimdError("the metadata document contains private key material")
        try:
            metadata = validate_metadata(raw, self._policy)
        except OAuthError as exc:
            raise CimdError(f"invalid client metadata: {exc.description}") from exc
        return ClientMetadata(client_id=client_id, **asdict(metadata))


def _has_private_jwk(jwks: object) -> bool:
    keys = jwks.get("keys") if isinstance(jwks, dict) else None
    if not isinstance(keys, list):
        return False
    return any(isinstance(key, dict) and _JWK_PRIVATE_MEMBERS & key.keys() for key in keys)
