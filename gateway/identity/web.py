"""The identity side's HTTP surface so far: ``GET /.well-known/jwks.json`` (RFC 7517 key set)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web

from gateway.appkeys import CLOCK, CONFIG, STORAGE
from gateway.clock import Clock
from gateway.config import GatewayConfig
from gateway.errors import ServiceUnavailable
from gateway.identity.sealing import EncryptionKeys
from gateway.identity.signing_keys import SigningKeys, SigningUnavailable
from gateway.identity.tokens import IdentityTokens
from gateway.storage.base import StorageError
from gateway.storage.identity import SigningKeyStore

log = logging.getLogger("gateway.identity")

JWKS_PATH = "/.well-known/jwks.json"
JWKS_MAX_AGE = 60
"""Seconds verifiers may cache the key set (they re-fetch it on an unknown ``kid`` anyway)."""


@dataclass(frozen=True)
class IdentityServices:
    keys: SigningKeys
    tokens: IdentityTokens


IDENTITY = web.AppKey("identity", IdentityServices)


def identity_services(config: GatewayConfig, store: SigningKeyStore, clock: Clock) -> IdentityServices:
    encryption = config.identity.encryption_keys
    keys = SigningKeys(store, clock, EncryptionKeys.parse(encryption) if encryption else None)
    tokens = IdentityTokens(keys, clock, issuer=config.issuer, audience=config.identity.audience)
    return IdentityServices(keys, tokens)


def setup_identity(app: web.Application) -> None:
    """Register after the storage context (``create_app`` calls it with the other ``setup_*``); the route
    (``JWKS_PATH`` → ``jwks``) is a line of the route table (``gateway.routes``)."""
    app.cleanup_ctx.append(_identity_ctx)


@contextlib.asynccontextmanager
async def _identity_ctx(app: web.Application) -> AsyncIterator[None]:
    services = app[IDENTITY] = identity_services(app[CONFIG], app[STORAGE], app[CLOCK])
    if app[CONFIG].identity.encryption_keys:
        # The first key exists before the first token, so verifiers find it in the JWKS.
        try:
            await services.keys.current()
        except (SigningUnavailable, StorageError) as exc:
            log.error("identity signing key unavailable: %s", exc)
    yield


async def jwks(request: web.Request) -> web.Response:
    try:
        keys = await request.app[IDENTITY].keys.published()
    except StorageError as exc:
        raise ServiceUnavailable("The key set is unavailable, retry shortly") from exc
    return web.json_response(
        {"keys": keys},
        content_type="application/jwk-set+json",
        headers={"Cache-Control": f"public, max-age={JWKS_MAX_AGE}"},
    )
