"""Reaching Redis for the shared bloom filters (``_bloom_redis``, ``_bloom_snapshot``).

A *target* is a ``RedisCache`` (its client, key prefix and circuit breaker are used) or a raw
``redis.Redis`` / ``RedisCluster`` (no prefix, no breaker). ``resolve_target`` turns either into
a ``RedisPlace``; ``key_head`` gives the common start of every Redis key of one filter or
snapshot, with a hash tag so that, on a Cluster, they all live in one slot: a batch is one
pipeline to one node, one round trip. The trade-off: a filter's memory and traffic sit on one
primary; spread load by using several filters (e.g. one per entity type).
"""

from __future__ import annotations

import functools
from typing import Any, Final, NamedTuple

import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot

from ._redis import RedisCache
from ._redis_keys import slot_tag

__all__ = [
    "MIB",
    "PENDING_TTL_MS",
    "BloomRedisTarget",
    "GuardedClient",
    "GuardedPipeline",
    "RedisPlace",
    "check_name",
    "key_head",
    "resolve_target",
]

MIB: Final = 1 << 20
PENDING_TTL_MS: Final = 600_000
"""TTL of keys that are written but not yet published (chunks of a new snapshot version, a
merge's temporary keys): a writer that dies half-way leaves nothing behind for long."""

BloomRedisTarget = RedisCache | redis.Redis | RedisCluster
"""Where a shared bloom filter or snapshot lives."""

# Client methods that do no network I/O.
_LOCAL_CLIENT_METHODS: Final = frozenset({"get_connection_kwargs", "keyslot", "get_encoder"})


class GuardedClient:
    """A RedisCache's client whose network calls go through ``RedisCache.run``.

    So the shared filters obey the cache's circuit breaker (an open breaker fails them in
    microseconds instead of a socket timeout each) and replay its pending deletes first.
    Queueing commands on a pipeline does no I/O; only ``execute`` is guarded.
    """

    def __init__(self, cache: RedisCache) -> None:
        self._cache = cache
        self._client: Any = cache.client

    def pipeline(self, transaction: bool = False) -> GuardedPipeline:
        return GuardedPipeline(self._cache, self._client.pipeline(transaction=transaction))

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr) or name in _LOCAL_CLIENT_METHODS:
            return attr
        return functools.partial(self._cache.run, name.upper(), attr)


class GuardedPipeline:
    """Queues like the client's pipeline, remembering each command's key for routing.

    On a cluster, ``execute`` asks (and charges) only the breaker of the node that holds the
    filter (its keys share one hash tag), as every other command of the cache does.
    """

    def __init__(self, cache: RedisCache, pipe: Any) -> None:
        self._cache = cache
        self._pipe = pipe
        self._route: list[Any] = []

    def execute(self) -> Any:
        route, self._route = self._route, []
        return self._cache.run_routed("pipeline", route or None, self._pipe.execute)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._pipe, name)
        if not callable(attr) or name.startswith("_"):
            return attr

        def queue(*args: Any, **kwargs: Any) -> Any:
            key = args[1] if name == "execute_command" and len(args) > 1 else None
            if name != "execute_command" and args:
                key = args[0]
            if isinstance(key, str | bytes):
                self._route.append(key)
            attr(*args, **kwargs)
            return self

        return queue


class RedisPlace(NamedTuple):
    """A resolved target: the client to talk to, the key prefix, and whether it is a Cluster."""

    client: Any  # GuardedClient, redis.Redis or RedisCluster
    key_prefix: str
    is_cluster: bool


def resolve_target(target: object) -> RedisPlace:
    """The place of a RedisCache (its guarded client and namespace) or of a raw client;
    TypeError / ValueError naming ``target`` / ``client`` otherwise."""
    if isinstance(target, RedisCache):
        return RedisPlace(GuardedClient(target), target.redis_key_prefix, target.is_cluster)
    if isinstance(target, redis.Redis | RedisCluster):
        if target.get_connection_kwargs().get("decode_responses"):
            raise ValueError("client must be built with decode_responses=False: bits are bytes")
        return RedisPlace(target, "", isinstance(target, RedisCluster))
    raise TypeError(
        f"target must be a RedisCache, redis.Redis or RedisCluster, not {type(target).__name__}"
    )


def check_name(name: object) -> str:
    """``name`` if it is a non-empty str, else TypeError / ValueError naming ``name``."""
    if not isinstance(name, str):
        raise TypeError(f"name must be str, not {type(name).__name__}: {name!r:.80}")
    if not name:
        raise ValueError("name must be a non-empty str, got ''")
    return name


def key_head(place: RedisPlace, mark: str, name: str) -> str:
    """The common start of every Redis key of one filter/snapshot, with its hash tag.

    Every key is ``head + suffix``; Redis hashes the first ``{...}``, which lies in ``head``, so
    all of them share a slot. A prefix whose braces defeat that (``a{}``) is refused on Cluster.
    """
    kp = place.key_prefix
    if "{" in name or "}" in name:
        head = f"{kp}{mark}:{{{slot_tag(name)}}}:{name}"
    else:
        head = f"{kp}{mark}:{{{name}}}"
    if place.is_cluster and key_slot((head + ":a").encode()) != key_slot((head + ":b").encode()):
        raise ValueError(
            f"the keys of {name!r} under prefix {kp!r} would not share a Redis Cluster slot "
            "(the prefix has braces that are not a hash tag); change the prefix"
        )
    return head
