"""RedisCache: the byte cache on redis-py, for ``redis.Redis`` and ``RedisCluster`` clients.

The cache checks arguments; its collaborators do the rest: ``_redis_dispatch`` (the one path
every command takes: breakers, routing, errors), ``_redis_pending`` (deletes owed after an
outage), ``_redis_writes`` (the fenced write paths), ``_redis_reads`` (GET + PTTL),
``_redis_scan`` (SCAN for ``clear``/``scan_keys``), ``_connect`` (the client of a URL).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any, Final, TypeVar

import redis
from redis.cluster import RedisCluster

from ._breaker import CircuitBreaker, check_breaker
from ._connect import Connected, check_client, connect_url
from ._invalidation import ClusterInvalidationListener, InvalidationListener, listener_for
from ._lease_lock import LeaseLockFactory
from ._node_breaker import node_routing
from ._redis_dispatch import REDIS_ERRORS, Dispatcher, wrap_redis_error
from ._redis_keys import check_prefix, escape_glob
from ._redis_pending import PendingDeletes
from ._redis_reads import TimedReads
from ._redis_scan import KeyScanner
from ._redis_writes import RedisWrites
from ._sentinel import SentinelGuard
from ._validate import (
    MISSING,
    RESERVED_MARK,
    TTL,
    check_entries,
    check_items,
    check_key,
    check_keys,
    check_value,
    ttl_ms,
    ttl_seconds,
)
from .errors import CacheMiss

__all__ = ["REDIS_ERRORS", "RESERVED_MARK", "RedisCache", "escape_glob", "wrap_redis_error"]

_R = TypeVar("_R")
_DEFAULT_BREAKER: Final[Any] = object()


class RedisCache:
    """Byte cache on a Redis server or Redis Cluster, keys namespaced by ``prefix``.

    The cache never closes a client it was given; ``from_url`` builds a client with short
    timeouts, owns it and closes it on ``close()``. Keys are stored as ``prefix + ":" + key``.

    ``breaker``: a ``CircuitBreaker`` that every command goes through (``from_url`` builds one
    by default; for a client you pass in, give one explicitly). While it is open, calls raise
    ``CircuitOpenError`` (a ``BackendError``) at once instead of waiting for timeouts.
    (``_connected`` is ``from_url``'s: the client it built, which the cache then owns.)
    """

    def __init__(
        self,
        client: redis.Redis | RedisCluster,
        *,
        prefix: str = "",
        default_ttl: TTL | None = None,
        allow_clear_all: bool = False,
        breaker: CircuitBreaker | None = None,
        _connected: Connected | None = None,
    ) -> None:
        check_client(client)
        check_prefix(prefix)
        check_breaker(breaker)
        self._client = client
        self._cluster = isinstance(client, RedisCluster)
        self._prefix = prefix
        self._kp = prefix + ":" if prefix else ""
        self._default_ttl = ttl_seconds(default_ttl, None, "default_ttl")
        self._allow_clear_all = bool(allow_clear_all)
        # from_url: the cache owns the client it built (and the Sentinel guard, if any)
        self._owns_client = _connected is not None
        self._guard = None if _connected is None else _connected.guard
        self._pending = PendingDeletes()
        self._pending_deletes = self._pending.keys  # the same dict: read on every command
        router, nodes = node_routing(client, breaker, self._guard)
        self._dispatch = Dispatcher(
            breaker=breaker,
            pending=self._pending_deletes,
            replay=lambda: self._writes.replay_pending(),  # before any command, while owed
            routed=self._cluster,
            router=router,
            nodes=nodes,
            guard=self._guard,
        )
        self._run = self._dispatch.run
        self._writes = RedisWrites(client, self._kp, self._dispatch, self._pending, self._guard)
        self._scanner = KeyScanner(client, self._kp)
        self._timed = TimedReads(client, self._dispatch, self._pending_deletes)
        self._lease_locks: LeaseLockFactory | None = None  # built by lease_locks(), once

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = "",
        default_ttl: TTL | None = None,
        cluster: bool = False,
        allow_clear_all: bool = False,
        breaker: Any = _DEFAULT_BREAKER,
        **client_kwargs: Any,
    ) -> RedisCache:
        """Build a client for ``url`` with cache-friendly timeouts; the cache owns and closes it.

        URL forms (see ``cache_core._urls``): ``redis://``, ``rediss://``, ``unix://`` (one
        server), ``redis+cluster://h1:p1,h2:p2`` (Redis Cluster; any seed may be down) and
        ``redis+sentinel://s1:26379,s2:26379/service_name[/db]``. Unknown query options raise
        ``ValueError`` here. ``cluster=True`` is ``redis+cluster://`` for a ``redis://`` URL.
        A plain URL that names a cluster node, a sentinel, a missing database or a port that
        does not speak Redis raises ``ValueError``; an unreachable server logs one WARNING.

        Any redis-py keyword in ``client_kwargs`` overrides the defaults (0.25 s timeouts, one
        retry on connection errors only). A ``CircuitBreaker()`` with default settings guards
        the client unless ``breaker`` names another one, or is None for none; on a cluster
        and behind Sentinel it is the template of one breaker per node.
        """
        connected = connect_url(url, cluster=cluster, client_kwargs=client_kwargs)
        if breaker is _DEFAULT_BREAKER:
            breaker = CircuitBreaker(name=f"redis {prefix or connected.where}")
        return cls(
            connected.client,
            prefix=prefix,
            default_ttl=default_ttl,
            allow_clear_all=allow_clear_all,
            breaker=breaker,
            _connected=connected,
        )

    @property
    def client(self) -> redis.Redis | RedisCluster:
        return self._client

    @property
    def prefix(self) -> str:
        return self._prefix

    @property
    def default_ttl(self) -> float | None:
        return self._default_ttl

    @property
    def is_cluster(self) -> bool:
        return self._cluster

    @property
    def redis_key_prefix(self) -> str:
        """What every Redis key of this cache starts with (``prefix + ":"``, or empty)."""
        return self._kp

    def redis_key(self, key: str) -> str:
        """The Redis key that holds ``key`` (``prefix:key``)."""
        return self._kp + check_key(key)

    @property
    def routing_retries(self) -> int:
        """Commands retried because their slot was migrating (TRYAGAIN, MOVED, TTL exhausted)."""
        return self._dispatch.routing_retries

    def invalidation_listener(self) -> InvalidationListener | ClusterInvalidationListener:
        """The shared listener that hears every write under this cache's prefix, by anyone.

        One per client and prefix (see ``_invalidation``; on a cluster, one connection per
        primary); ``MultiLevelCache`` subscribes its L1 to it.
        """
        return listener_for(self._client, self._kp, cluster=self._cluster)

    def lease_locks(self) -> LeaseLockFactory:
        """The lease-lock factory for this cache's keys (``LeaseLockSource``), built on first
        use: a cache whose readers never take a lease registers none of its scripts."""
        locks = self._lease_locks
        if locks is None:
            with self._pending.lock():
                locks = self._lease_locks
                if locks is None:
                    locks = self._lease_locks = LeaseLockFactory(self)
        return locks

    def close(self) -> None:
        """Close the client if this cache built it (``from_url``); a caller's client stays open."""
        if self._guard is not None:
            self._guard.close()
        if self._owns_client:
            self.invalidation_listener().close()
            self._client.close()

    def __enter__(self) -> RedisCache:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        kind = "cluster" if self._cluster else "redis"
        return f"RedisCache({kind}, prefix={self._prefix!r}, default_ttl={self._default_ttl})"

    def _redis_keys(self, keys: Iterable[str]) -> tuple[list[str], list[str]]:
        """Validate a batch of keys and prefix them."""
        wanted = check_keys(keys)
        return wanted, [self._kp + k for k in wanted] if self._kp else wanted

    def _px(self, ttl: TTL | None) -> int | None:
        seconds = ttl_seconds(ttl, self._default_ttl)
        return None if seconds is None else ttl_ms(seconds)

    # -- the one path every command takes (see _redis_dispatch) --------------------------------

    def run(self, op: str, fn: Callable[..., _R], *args: Any, **kwargs: Any) -> _R:
        """Call ``fn`` (a client method) through the breaker; Redis errors become BackendError.

        Deletes that failed during an outage are replayed first, before the command: a write
        that follows is never undone by the replay, and a read sees the deletes. Other
        components that talk to this cache's Redis (the lease lock) go through here too, so
        an open breaker protects every call.
        """
        return self._run(op, fn, *args, **kwargs)

    def run_blocking(self, op: str, fn: Callable[..., _R], *args: Any, **kwargs: Any) -> _R:
        """``run`` for a command that blocks on the server (BLPOP) close to the socket timeout.

        Its timeout may be a late server tick on a busy machine, not an outage: it neither
        opens nor closes the breaker. Any other failure counts as in ``run``.
        """
        return self._dispatch.run_blocking(op, fn, *args, **kwargs)

    def run_routed(
        self,
        op: str,
        route: Iterable[Any] | None,
        fn: Callable[..., _R],
        /,
        *args: Any,
        **kwargs: Any,
    ) -> _R:
        """``run`` for a command on the Redis keys ``route`` (None: no key, e.g. SCAN).

        On a cluster (or behind Sentinel) the breakers of the nodes serving ``route`` are
        asked, and a failure counts against the node it came from only. Routing errors
        (``is_routing``: a slot migrating) are retried for up to ``ROUTING_PATIENCE`` seconds
        and never count as an outage. Behind Sentinel, writes wait for the replicas
        (``SentinelGuard.write``).
        """
        return self._dispatch.run_routed(op, route, fn, *args, **kwargs)

    @property
    def breaker(self) -> CircuitBreaker | None:
        """The breaker (on a cluster or behind Sentinel: the template of the node breakers)."""
        return self._dispatch.breaker

    @property
    def sentinel(self) -> SentinelGuard | None:
        """Behind Sentinel (``redis+sentinel://``): the current primary and write confirmation."""
        return self._guard

    @property
    def node_breakers(self) -> dict[str, CircuitBreaker]:
        """The per-node breakers created so far, by ``"host:port"`` (empty for one server)."""
        nodes = self._dispatch.nodes
        return nodes.snapshot() if nodes is not None else {}

    @property
    def breaker_openings(self) -> int:
        """How many times a breaker of this cache opened (summed over nodes on a cluster)."""
        return self._dispatch.breaker_openings

    @property
    def pending_deletes(self) -> int:
        """Deletes that failed during an outage and will be replayed when Redis answers."""
        return len(self._pending_deletes)

    # -- Cache -------------------------------------------------------------------------------

    def get(self, key: str, default: Any = MISSING) -> Any:
        check_key(key)
        # A key with a pending invalidation is never read before the replay: run() replays
        # first, and raises while Redis cannot be reached (an L1 above may then answer).
        value = self._run("GET", self._client.get, self._kp + key)
        if value is None:
            if default is MISSING:
                raise CacheMiss(key)
            return default
        return value

    def get_with_ttl(self, key: str) -> tuple[bytes, float | None] | None:
        """``(value, seconds left or None)`` in one round trip (pipelined GET + PTTL)."""
        return self._timed.one(self._kp + check_key(key))

    def mget_with_ttl(self, keys: Iterable[str]) -> dict[str, tuple[bytes, float | None]]:
        """Like ``mget``, with each hit's remaining lifetime (one pipelined round trip)."""
        wanted, rkeys = self._redis_keys(keys)
        return self._timed.many(wanted, rkeys) if wanted else {}

    def set(self, key: str, value: bytes, ttl: TTL | None = None) -> None:
        """SET the value and drop the key's fence, atomically (a Lua script).

        Dropping the fence refuses every store of a value loaded before this write (see
        ``_fence``). If Redis is unreachable the error is raised and the write is remembered
        as an invalidation of the key, replayed before any other command when Redis answers.
        """
        data = check_value(value)
        px = self._px(ttl)
        check_key(key)
        self._writes.set_one(key, data, px)

    def redis_fence_key(self, key: str) -> str | None:
        """The Redis key of ``key``'s fence (see ``_fence``), in the value's slot; None on a
        cluster when the key's braces are not a hash tag (it is then stored unfenced). A script
        that writes ``key`` outside this class drops this key too."""
        return self._writes.fence_of(key)

    # -- fences: stores of loaded values that lose to writes (see _fence) ----------------------

    def fence(self, key: str) -> str | None:
        """Take the fence token of ``key`` before loading it (one round trip).

        None when the key cannot be fenced (on a cluster, a key whose braces are not a hash
        tag): store it with ``set``. Raises ``BackendError`` when Redis cannot be asked.
        """
        return self._writes.fence(check_key(key))

    def set_fenced(self, key: str, value: bytes, ttl: TTL | None, token: str) -> bool:
        """Store a loaded value only if no write to ``key`` came after ``fence(key)``.

        Returns whether it was stored. Checked by Redis when the command executes, so a store
        that arrives late (a slow connection, a paused server) is refused just the same.
        """
        data = check_value(value)
        px = self._px(ttl)
        check_key(key)
        if not isinstance(token, str):
            raise TypeError(f"token must be str, not {type(token).__name__}")
        return self._writes.set_fenced(key, data, px, token)

    def fence_many(self, keys: Iterable[str]) -> dict[str, str | None]:
        """``fence`` for a batch: key -> token, or None (unfenceable).

        One script per chunk of 1000 keys on a single server (the warmer's path); on a cluster
        the fences span slots: a pipeline of SET NX + GET per key, which redis-py splits per node.
        """
        return self._writes.fence_many(list(dict.fromkeys(check_keys(keys))))

    def mset_fenced(
        self, entries: Mapping[str, tuple[bytes, TTL | None]], tokens: Mapping[str, str]
    ) -> frozenset[str]:
        """Store loaded values, each only if its fence still holds its token; the keys stored.

        A key without a token in ``tokens`` is not stored. One script per chunk on a single
        server; on a cluster a pipeline of one EVAL per key (redis-py splits it per node).
        """
        return self._writes.mset_fenced(check_entries(entries, self._default_ttl), tokens)

    def delete(self, key: str) -> bool:
        """UNLINK the key. If Redis is unreachable the delete is remembered and replayed.

        The failure is still raised (``BackendError``), but from then on this cache never
        serves the key's old value: every command replays the pending deletes before it runs
        (and raises while it cannot), until a write supersedes the delete or the replay reaches
        Redis. Other processes may read the old value until the replay (they cannot be told
        while Redis is down).
        """
        return self._writes.delete_one(check_key(key))

    def exists(self, key: str) -> bool:
        rkey = self._kp + check_key(key)
        return bool(self._run("EXISTS", self._client.exists, rkey))

    def clear(self) -> int:
        """Remove this cache's keys with SCAN + UNLINK per page, on every primary.

        Never KEYS (blocks the server) nor FLUSHDB/FLUSHALL (not ours to flush). Glob characters
        in the prefix are escaped, so ``a*`` never matches a neighbour's ``ab:`` keys. An empty
        prefix would mean the whole database: refused unless ``allow_clear_all=True``.
        Prefixes nest like folders: the entries of a cache prefixed ``app:sessions`` are removed
        by ``clear()`` of ``app`` too, but a library key (a ``__cc`` segment) of any cache never.
        """
        match = self._scanner.clear_match(self._allow_clear_all)  # before any I/O
        return self._run("SCAN/UNLINK", self._scanner.unlink_all, match)

    def scan_keys(self, match: str = "*") -> Iterator[str]:
        """This cache's keys (prefix removed) whose remainder matches the glob ``match``.

        SCAN, never KEYS; on a cluster, every primary.
        """
        if not isinstance(match, str):
            raise TypeError(f"match must be str, not {type(match).__name__}")
        yield from self._scanner.keys(escape_glob(self._kp) + match, self._dispatch.breaker)

    # -- BatchCache --------------------------------------------------------------------------

    def mget(self, keys: Iterable[str]) -> dict[str, bytes]:
        """One MGET on a single server; per-slot MGETs (``mget_nonatomic``) on a cluster."""
        wanted, rkeys = self._redis_keys(keys)
        if not wanted:
            return {}
        pending = set(self._pending_deletes) if self._pending_deletes else None
        if self._cluster:
            values = self._run("MGET", self._client.mget_nonatomic, rkeys)  # type: ignore[union-attr]
        else:
            values = self._run("MGET", self._client.mget, rkeys)
        found = dict(zip(wanted, values, strict=True))
        if None in values:  # C-level scan; the all-hits case skips the filtering loop
            found = {k: v for k, v in found.items() if v is not None}
        if pending:
            for key in [k for k in found if k in pending]:
                del found[key]
        return found

    def mset(self, items: Mapping[str, bytes], ttl: TTL | None = None) -> None:
        """``SET [PX]`` per key and drop its fence, in one round trip (see ``_redis_writes``)."""
        px = self._px(ttl)
        self._writes.set_many([(k, v, px) for k, v in check_items(items).items()])

    def mset_with_ttls(self, entries: Mapping[str, tuple[bytes, TTL | None]]) -> None:
        """Store items that each carry their own TTL, in one round trip (``_redis_writes``)."""
        self._writes.set_many(
            [
                (key, value, None if seconds is None else ttl_ms(seconds))
                for key, (value, seconds) in check_entries(entries, self._default_ttl).items()
            ]
        )

    def mdelete(self, keys: Iterable[str]) -> int:
        """UNLINK (split per slot on a cluster); returns how many keys existed.

        Like ``delete``, a batch that cannot reach Redis is remembered and replayed.
        """
        wanted = list(dict.fromkeys(check_keys(keys)))
        if not wanted:
            return 0
        return self._writes.delete_many(wanted)
