"""The one place that builds Redis clients from ``redis.url`` / ``redis.cluster``: a single server or a Cluster.

With ``redis.cluster: true`` the URL names any one node of a Redis Cluster; redis-py's ``RedisCluster``
discovers the others and sends each command to the primary that holds its keys' slot. Every multi-key script
the gateway runs keeps its keys in one slot with a ``{…}`` hash tag (per account for the quota and the stream
leases, per endpoint for the protective limits), so nothing fails with ``CROSSSLOT``. A primary that is down
fails only the commands for its own slots (``ConnectionError`` for that call), which is what lets the quota
degrade per shard (``gateway.quota.degrading``).
"""

from __future__ import annotations

from collections.abc import Sequence
from hashlib import sha1
from typing import Any, Final, TypeAlias
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisClusterException, RedisError

RedisClient: TypeAlias = Redis | RedisCluster
"""What the quota, the stream leases, the protective limits and the revocation bus talk to."""

DEFAULT_MAX_CONNECTIONS: Final = 128
SINGLE_SHARD: Final = ""
"""The failure domain of every key on a single Redis (one server: one outage for all)."""
UNKNOWN_SHARD: Final = "cluster"


def redis_client(
    url: str, *, cluster: bool, timeout: float, max_connections: int = DEFAULT_MAX_CONNECTIONS
) -> RedisClient:
    """A client fit for admission: short socket timeouts and no client-side retries (the callers decide
    what a failure means: a degraded answer, a lost announcement).

    redis-py 6+ retries a failed command up to 10 times with backoff by default, which would hold every
    request for seconds on a dead Redis. On one server the pool waits (at most ``timeout``) for a free
    connection rather than failing at once when all are busy, so a burst is not mistaken for an outage. On a
    cluster ``max_connections`` is per node, and the client does not re-route a failed command elsewhere: a
    dead primary's slots fail fast while the other primaries keep answering for theirs.
    """
    if cluster:
        return RedisCluster.from_url(
            url,
            max_connections=max_connections,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
            require_full_coverage=False,
        )
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )
    return Redis.from_pool(pool)


def shard_of(client: RedisClient, key: str) -> str:
    """The failure domain of ``key``: on a cluster the primary (``host:port``) that holds its slot as far
    as the client knows (``UNKNOWN_SHARD`` before it has discovered the cluster: one domain, so an
    unreachable cluster is probed once per retry interval, not once per slot), on one server
    ``SINGLE_SHARD``."""
    if not isinstance(client, RedisCluster):
        return SINGLE_SHARD
    try:
        node = client.get_node_from_key(key)
    except (RedisError, RedisClusterException):  # the slot is not (yet) known to be covered
        node = None
    return node.name if node is not None else UNKNOWN_SHARD


def node_url(url: str, host: str, port: str | int) -> str:
    """``url`` (credentials, TLS and options kept) pointed at one node of its cluster."""
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@{host}:{port}" if credentials else f"{host}:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class LuaScript:
    """A Lua script run by ``EVALSHA``, falling back to ``EVAL`` (which caches it) on the node that lacks it.

    Called like redis-py's ``register_script`` objects (``await script(keys=[...], args=[...])``), but never
    sends ``SCRIPT LOAD``: on a cluster redis-py sends that to every primary, so one dead primary would fail
    the first call of a script for the accounts of every other shard too. ``EVALSHA`` and ``EVAL`` go to the
    primary of the keys' slot only.
    """

    def __init__(self, client: RedisClient, source: str) -> None:
        self._client = client
        self._source = source
        self._sha = sha1(source.encode("utf-8"), usedforsecurity=False).hexdigest()

    async def __call__(self, *, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        try:
            return await self._client.execute_command("EVALSHA", self._sha, len(keys), *keys, *args)
        except NoScriptError:
            return await self._client.execute_command("EVAL", self._source, len(keys), *keys, *args)
