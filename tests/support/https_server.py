"""A real HTTPS server for tests: a throwaway CA and leaf certificate, an aiohttp app served over TLS, and a
record of every TCP connection and TLS server name, so a test can prove that nothing connected at all.

    ca = make_local_ca(tmp_path, hostnames=["localhost", "cimd.test"])
    async with serve_https(app, ca) as server:
        ...  # trust ca.ca_path; server.connections, server.server_names
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class LocalCA:
    ca_path: Path
    """The CA certificate (PEM): what a client must trust."""
    cert_path: Path
    """The leaf certificate chain (PEM) the server presents."""
    key_path: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_path, self.key_path)
        return context

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_path))


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_local_ca(
    directory: Path,
    *,
    hostnames: Sequence[str] = ("localhost",),
    addresses: Sequence[str] = ("127.0.0.1", "::1"),
) -> LocalCA:
    """A new CA and a leaf certificate for ``hostnames`` and ``addresses``, written as PEM under ``directory``."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("gateway test CA"))
        .issuer_name(_name("gateway test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName(host) for host in hostnames]
    names += [x509.IPAddress(ipaddress.ip_address(address)) for address in addresses]
    leaf_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hostnames[0] if hostnames else "test server"))
        .issuer_name(ca_cert.subject)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    ca_path, cert_path, key_path = directory / "ca.pem", directory / "server.pem", directory / "server-key.pem"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(leaf_cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return LocalCA(ca_path=ca_path, cert_path=cert_path, key_path=key_path)


@dataclass
class HttpsServer:
    host: str
    port: int
    connections: int = 0
    """TCP connections accepted (counted before the TLS handshake)."""
    server_names: list[str | None] = field(default_factory=list)
    """The SNI names clients sent, one per handshake."""

    def url(self, path: str, *, host: str | None = None) -> str:
        name = host or self.host
        name = f"[{name}]" if ":" in name else name
        return f"https://{name}:{self.port}{path}"


@contextlib.asynccontextmanager
async def serve_https(app: web.Application, ca: LocalCA, *, host: str = "127.0.0.1") -> AsyncIterator[HttpsServer]:
    """Serve ``app`` over TLS with ``ca``'s leaf certificate on an ephemeral port of ``host``."""
    # Handlers a test left stalled are cancelled when their client goes away, and shutdown never waits long.
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5)
    await runner.setup()
    server_state = HttpsServer(host=host, port=0)
    context = ca.server_context()

    def record_server_name(_: ssl.SSLObject, name: str | None, __: ssl.SSLContext) -> None:
        server_state.server_names.append(name)

    context.sni_callback = record_server_name
    handler_factory = runner.server
    assert handler_factory is not None

    def accept() -> asyncio.Protocol:
        server_state.connections += 1
        return handler_factory()

    server = await asyncio.get_running_loop().create_server(accept, host, 0, ssl=context)
    server_state.port = server.sockets[0].getsockname()[1]
    try:
        yield server_state
    finally:
        server.close()
        await runner.cleanup()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def silent_tcp_server(host: str = "127.0.0.1") -> AsyncIterator[int]:
    """A port that accepts connections and never says a word (a stalled TLS handshake); yields the port."""
    writers: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)

    server = await asyncio.start_server(hold, host, 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for writer in writers:
            writer.transport.abort()
        await server.wait_closed()


@dataclass
class DocumentServer:
    """A Client ID Metadata Document served over local HTTPS; ``client_id`` is its URL, ``document`` its body."""

    client_id: str
    document: dict[str, object]
    ca: LocalCA

    @property
    def gateway_overrides(self) -> dict[str, object]:
        """What a gateway needs to fetch it: private addresses allowed, the local CA trusted."""
        return {"oauth": {"cimd": {"allow_private_addresses": True, "ca_file": str(self.ca.ca_path)}}}


@contextlib.asynccontextmanager
async def serve_metadata_document(tmp_path: Path, **fields: object) -> AsyncIterator[DocumentServer]:
    """Serve ``{"client_id": <its own URL>, **fields}`` at ``https://localhost:<port>/oauth/client.json``
    (cacheable for 300 s); change ``DocumentServer.document`` to change what later fetches see."""
    ca = make_local_ca(tmp_path / "tls")
    document: dict[str, object] = {}

    async def serve_document(request: web.Request) -> web.Response:
        return web.json_response(document, headers={"Cache-Control": "max-age=300"})

    app = web.Application()
    app.router.add_get("/oauth/client.json", serve_document)
    async with serve_https(app, ca) as https:
        client_id = https.url("/oauth/client.json", host="localhost")
        document.update(client_id=client_id, **fields)
        yield DocumentServer(client_id, document, ca)
