"""The flight recorder's trail in Redis: one capped list per subject, expiring with its retention."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict

from gateway.flight.steps import Record
from gateway.redis_clients import RedisClient


class RedisTrail:
    def __init__(self, redis: RedisClient, *, prefix: str, ring_size: int, retention: float) -> None:
        self.redis = redis
        self.prefix = prefix
        self.ring_size = ring_size
        self.retention = int(retention)

    def _key(self, subject: str) -> str:
        # Hashed: a client id is a URL of the client's choosing; one key per subject (no multi-key commands).
        return f"{self.prefix}:trail:{hashlib.sha256(subject.encode()).hexdigest()[:32]}"

    async def append(self, entries: Sequence[tuple[str, Record]]) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for subject, record in entries:
                key = self._key(subject)
                pipe.lpush(key, json.dumps(asdict(record), separators=(",", ":")))
                pipe.ltrim(key, 0, self.ring_size - 1)
                pipe.expire(key, self.retention)
            await pipe.execute()

    async def read(self, subject: str, *, limit: int) -> list[Record]:
        raw = await self.redis.lrange(self._key(subject), 0, limit - 1)
        return [Record(**json.loads(item)) for item in raw]
