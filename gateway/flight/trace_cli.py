"""``mcp-gateway clients trace CLIENT_ID [--user EMAIL] [--json]``: the flight recorder from the command line,
read from the same trail the running replicas write (Redis when ``redis.url`` is set, the database otherwise)."""

from __future__ import annotations

import argparse
import json

from redis.asyncio import Redis

from gateway.clock import SystemClock
from gateway.config import GatewayConfig
from gateway.flight.backend import trail_backend
from gateway.flight.reading import json_rows, render_lines
from gateway.flight.recorder import FlightRecorder
from gateway.storage import Storage


class TraceError(Exception):
    """Reported as ``error: <message>``."""


async def run_trace(config: GatewayConfig, storage: Storage, args: argparse.Namespace) -> None:
    settings = config.flight_recorder
    redis = Redis.from_url(config.redis.url, socket_timeout=5) if config.redis.url else None
    try:
        recorder = FlightRecorder(trail_backend(config, redis, storage), SystemClock(), ring_size=settings.ring_size)
        if args.user:
            user = await storage.get_user_by_email(args.user)
            if user is None:
                raise TraceError(f"no account {args.user!r}")
            records = [r for r in await recorder.account_trail(user.id) if r.client_id in (None, args.client_id)]
        else:
            records = await recorder.client_trail(args.client_id)
    finally:
        if redis is not None:
            await redis.aclose()
    print(json.dumps(json_rows(records), indent=2) if args.json else render_lines(records))
