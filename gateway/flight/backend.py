"""Which trail the flight recorder writes and reads: Redis when the gateway has one, the database otherwise."""

from __future__ import annotations

from gateway.config import GatewayConfig
from gateway.flight.recorder import TrailBackend
from gateway.flight.redis_trail import RedisTrail
from gateway.flight.store_trail import StoreTrail
from gateway.redis_clients import RedisClient
from gateway.storage.trail import TrailStore


def trail_backend(config: GatewayConfig, redis: RedisClient | None, store: TrailStore) -> TrailBackend:
    settings = config.flight_recorder
    if redis is None:
        return StoreTrail(store, ring_size=settings.ring_size)
    return RedisTrail(redis, prefix=config.quota.key_prefix, ring_size=settings.ring_size, retention=settings.retention)
