"""Typed application state shared by several features (each feature owns its own keys otherwise)."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from gateway.clock import Clock
from gateway.config import GatewayConfig
from gateway.proxy.http1 import ConnectionPools
from gateway.redis_clients import RedisClient
from gateway.storage.base import Storage

CONFIG = web.AppKey("config", GatewayConfig)
CLOCK = web.AppKey("clock", Clock)
STORAGE = web.AppKey("storage", Storage)
UPSTREAM_SESSION = web.AppKey("upstream_session", aiohttp.ClientSession)
"""The readiness probe's session to the upstream (``gateway.health``)."""
UPSTREAM_POOLS = web.AppKey("upstream_pools", ConnectionPools)
"""The connections every proxied request goes through (``gateway.proxy.upstream.Upstream``)."""
REDIS = web.AppKey[RedisClient]("redis")
"""The Redis client (one server or a cluster: ``redis.cluster``) of the quota, the protective limits and the
flight recorder; absent when ``redis.url`` is not set."""
