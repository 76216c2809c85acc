"""Wires the credential layer into the app: ``setup_credentials(app)`` publishes ``AUTHENTICATOR`` and ``WATERMARK``
(after the storage, the revocation bus and the OAuth settings exist)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from gateway.apikeys import ApiKeyFormat
from gateway.appkeys import CLOCK, CONFIG, STORAGE
from gateway.credentials.api_keys import ApiKeyVerifier
from gateway.credentials.authenticator import Authenticator
from gateway.credentials.cache import ValidationCache
from gateway.credentials.extract import Challenge
from gateway.credentials.oauth_tokens import AccessTokenVerifier
from gateway.credentials.verifier import CredentialVerifier
from gateway.credentials.watermark import Watermark
from gateway.last_used import LastUsedRecorder
from gateway.metrics import METRICS
from gateway.oauth.context import OAUTH_SETTINGS
from gateway.oauth.metadata import resource_metadata_url
from gateway.revocation import REVOCATIONS

AUTHENTICATOR = web.AppKey("authenticator", Authenticator)
WATERMARK = web.AppKey("revocation_watermark", Watermark)
"""The revocation watermark reader: the validation cache's freshness, and the open streams' re-check timer."""


@contextlib.asynccontextmanager
async def _credentials_ctx(app: web.Application) -> AsyncIterator[None]:
    config, storage, clock, settings = app[CONFIG], app[STORAGE], app[CLOCK], app[OAUTH_SETTINGS]
    interval = config.api_keys.last_used_flush_interval
    key_use = LastUsedRecorder(storage.touch_api_keys, interval=interval, name="api key")
    grant_use = LastUsedRecorder(storage.touch_families, interval=interval, name="grant")
    # The order is the precedence: gateway-minted opaque secrets first, then API keys by their prefix.
    verifiers: list[CredentialVerifier] = [
        AccessTokenVerifier(grants=storage, users=storage, resource=settings.resource, grant_use=grant_use),
        ApiKeyVerifier(
            ApiKeyFormat(config.api_keys.prefix, config.api_keys.format), keys=storage, users=storage, key_use=key_use
        ),
    ]
    watermark = app[WATERMARK] = Watermark(storage, clock, interval=config.revocation.stream_recheck_interval)
    authn = app[AUTHENTICATOR] = Authenticator(
        verifiers,
        cache=ValidationCache(clock, watermark),
        clock=clock,
        challenge=Challenge(resource_metadata_url(settings), " ".join(config.oauth.default_scopes)),
        # With an authorization policy, each call is judged by its rule (gateway.policy) instead.
        required_scopes=() if config.authorization.enabled else config.oauth.default_scopes,
        metrics=app[METRICS],
    )
    bus = app[REVOCATIONS]
    bus.listen(authn.on_revocation)
    bus.listen_gaps(authn.flush)
    async with key_use.running(), grant_use.running(), watermark.running():
        yield


def setup_credentials(app: web.Application) -> None:
    app.cleanup_ctx.append(_credentials_ctx)
