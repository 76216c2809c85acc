"""Revocation announcements between replicas, over Redis pub/sub on one channel.

Announcing delivers to this process's listeners first, then publishes ``Revocation.to_wire()`` as JSON.
A subscriber task hands every message from other replicas to the listeners. Pub/sub is at-most-once: while
Redis is unreachable messages are lost, so the task re-subscribes with backoff and, once back, tells the gap
listeners (the validation cache flushes itself). Whatever is lost, the one-second validation cache and the
stream re-checks bound how long a revoked credential can live on a replica; Redis only makes it faster.

On a Redis Cluster (``redis.cluster``) this stays classic pub/sub, not sharded pub/sub (``SPUBLISH``): a
classic ``PUBLISH`` on any node reaches the subscribers of every node over the cluster bus, so each replica
publishes through whichever primary answers and subscribes on one primary of the cluster, moving to the next
one when its connection fails. Sharded pub/sub would pin the channel to the one shard that owns its slot, and
announcements would stop while that shard is down; revocations are rare, so the cluster-wide broadcast costs
nothing that matters. The reconnect and gap flush are the same as on one Redis.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError

from gateway.background import background
from gateway.redis_clients import RedisClient, node_url, redis_client
from gateway.revocation import Listener, Revocation, deliver

log = logging.getLogger("gateway.revocation.redis")

PUBLISH_TIMEOUT = 0.5
"""Seconds an announcement may wait for Redis; after that the one-second cache bound is the guarantee."""
BACKOFF_FIRST = 0.05
BACKOFF_MAX = 2.0
READ_TIMEOUT = 0.5
PING_INTERVAL = 2.0
SILENCE_LIMIT = 5.0
MAX_MESSAGE_BYTES = 64 * 1024
_OWN_REMEMBERED = 1024

GapListener = Callable[[], None]


@dataclass
class RedisRevocationBus:
    """``RevocationBus`` across replicas. ``url`` is ``redis.url``; ``channel`` is ``redis.revocation_channel``;
    ``cluster`` is ``redis.cluster``."""

    url: str
    channel: str
    cluster: bool = False
    _listeners: list[Listener] = field(default_factory=list)
    _gap_listeners: list[GapListener] = field(default_factory=list)
    _own: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=_OWN_REMEMBERED))
    _publisher: RedisClient | None = None
    _turn: int = 0
    """On a cluster: which primary the next subscription (and the first publish attempt) goes to."""
    subscribed: bool = False
    """True while the subscription is live (readiness reports ``degraded`` otherwise)."""

    async def announce(self, revocation: Revocation) -> None:
        # Other replicas first: this replica's own listeners may wait on storage re-checks of open streams.
        payload = json.dumps(revocation.to_wire(), separators=(",", ":"), sort_keys=True)
        self._own.append(payload)
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT):
                await self._publish(payload)
        except (RedisError, RedisClusterException, OSError, TimeoutError) as exc:
            # Committed already: other replicas drop it within the cache lifetime (one second) instead.
            log.warning("revocation announcement not published: %s", type(exc).__name__)
        await deliver(self._listeners, revocation)

    def listen(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def listen_gaps(self, listener: GapListener) -> None:
        """Call ``listener`` when the subscription comes back after an outage (announcements may be lost)."""
        self._gap_listeners.append(listener)

    async def healthy(self) -> bool:
        """Subscribed, and Redis answers a PING within ``PUBLISH_TIMEOUT`` (on a cluster: subscribed, the
        subscription's own PINGs proving its node alive; a PING to every primary would fail for one dead shard)."""
        if not self.subscribed:
            return False
        if self.cluster:
            return True
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT):
                await self._client().ping()
        except (RedisError, OSError, TimeoutError):
            return False
        return True

    def _client(self) -> RedisClient:
        if self._publisher is None:
            self._publisher = redis_client(self.url, cluster=self.cluster, timeout=PUBLISH_TIMEOUT, max_connections=8)
        return self._publisher

    async def _publish(self, payload: str) -> None:
        client = self._client()
        if not isinstance(client, RedisCluster):
            await client.publish(self.channel, payload)
            return
        # Classic PUBLISH reaches every node's subscribers: any primary will do, the first that answers.
        await client.initialize()
        primaries = self._rotated(client)
        for i, node in enumerate(primaries):
            try:
                await client.execute_command("PUBLISH", self.channel, payload, target_nodes=node)
                return
            except (RedisError, RedisClusterException, OSError):
                if i == len(primaries) - 1:
                    raise

    def _rotated(self, cluster: RedisCluster) -> list[ClusterNode]:
        primaries = sorted(cluster.get_primaries(), key=lambda node: node.name)
        if not primaries:
            raise RedisConnectionError("no primary known in the Redis Cluster")
        start = self._turn % len(primaries)
        return primaries[start:] + primaries[:start]

    async def _subscriber_url(self) -> str:
        """One Redis: ``url``. A cluster: the next primary in turn (classic pub/sub is cluster-wide)."""
        if not self.cluster:
            return self.url
        client = self._client()
        assert isinstance(client, RedisCluster)
        async with asyncio.timeout(PUBLISH_TIMEOUT * 4):
            await client.initialize()
        node = self._rotated(client)[0]
        return node_url(self.url, node.host, node.port)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Subscribe in the background for the duration of the block."""
        try:
            async with background(self._subscribe_forever(), name="revocation-subscriber"):
                yield
        finally:
            await self.close()

    async def close(self) -> None:
        """Close the publishing connection (a process that only announces, like the CLI, calls this)."""
        if self._publisher is not None:
            await self._publisher.aclose()
            self._publisher = None

    async def _subscribe_forever(self) -> None:
        backoff, lost = BACKOFF_FIRST, False
        while True:
            # No silent retries inside redis-py: a broken subscription must surface here, so the gap is noticed
            # (announcements may have been lost) and the validation caches are flushed.
            client: aioredis.Redis | None = None
            try:
                url = await self._subscriber_url()
                client = aioredis.from_url(url, socket_connect_timeout=1.0, retry=Retry(NoBackoff(), 0))
                async with client.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self.channel)
                    self.subscribed = True
                    backoff = BACKOFF_FIRST
                    if lost:
                        log.warning("revocation subscription restored; flushing validation caches")
                        self._gap()
                        lost = False
                    await self._read(pubsub)
            except (RedisError, RedisClusterException, OSError, TimeoutError) as exc:
                if not lost:
                    log.warning("revocation subscription lost (%s); retrying", type(exc).__name__)
                lost, self.subscribed = True, False
                self._turn += 1  # on a cluster: the next primary
            except Exception:  # never let the subscriber die: the next subscription flushes the caches
                log.exception("revocation subscriber failed; retrying")
                lost, self.subscribed = True, False
            finally:
                self.subscribed = False
                if client is not None:
                    with contextlib.suppress(RedisError, OSError):
                        await client.aclose()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)

    async def _read(self, pubsub: PubSub) -> None:
        """Hand messages to the listeners until the connection fails. A PING every ``PING_INTERVAL`` s that
        gets no answer within ``SILENCE_LIMIT`` s counts as a failure (a black-holed connection sends no reset)."""
        loop = asyncio.get_running_loop()
        heard = pinged = loop.time()
        while True:
            message = await pubsub.get_message(timeout=READ_TIMEOUT)
            now = loop.time()
            if message is not None:
                heard = now
                if message.get("type") == "message":
                    await self._receive(message.get("data"))
            elif now - heard > SILENCE_LIMIT:
                raise RedisConnectionError("no answer to PING on the revocation subscription")
            if now - pinged >= PING_INTERVAL:
                await pubsub.ping()
                pinged = now

    def _gap(self) -> None:
        for listener in self._gap_listeners:
            try:
                listener()
            except Exception:
                log.exception("revocation gap listener failed")

    async def _receive(self, data: object) -> None:
        if not isinstance(data, (bytes, str)) or len(data) > MAX_MESSAGE_BYTES:
            return
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
        if text in self._own:
            self._own.remove(text)  # delivered locally when it was announced
            return
        try:
            decoded = json.loads(text)
            if not isinstance(decoded, dict):
                raise ValueError("not an object")
            revocation = Revocation.from_wire(decoded)
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring a malformed revocation message")
            return
        await deliver(self._listeners, revocation)
