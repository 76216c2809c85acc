"""Typed application state shared by several features (each feature owns its own keys otherwise)."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from gateway.clock import Clock
from gateway.config import GatewayConfig
from gateway.redis_clients import RedisClient
from gateway.storage.base import Storage

CONFIG = web.AppKey("config", GatewayConfig)
CLOCK = web.AppKey("clock", Clock)
STORAGE = web.AppKey("storage", Storage)
UPSTREAM_SESSION = web.AppKey("upstream_session", aiohttp.ClientSession)
REDIS = web.AppKey[RedisClient]("redis")
"""The Redis client (one server or a cluster: ``redis.cluster``) of the quota, the protective limits and the
flight recorder; absent when ``redis.url`` is not set."""
