"""Typed application state shared by several features (each feature owns its own keys otherwise)."""

from __future__ import annotations

import aiohttp
from aiohttp import web
from redis.asyncio import Redis

from gateway.clock import Clock
from gateway.config import GatewayConfig
from gateway.storage.base import Storage

CONFIG = web.AppKey("config", GatewayConfig)
CLOCK = web.AppKey("clock", Clock)
STORAGE = web.AppKey("storage", Storage)
UPSTREAM_SESSION = web.AppKey("upstream_session", aiohttp.ClientSession)
REDIS = web.AppKey("redis", Redis)
"""The Redis client of the quota and the protective limits; absent when ``redis.url`` is not set."""
