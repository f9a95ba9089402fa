"""RedisCache: the byte cache on redis-py, for ``redis.Redis`` and ``RedisCluster`` clients."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.exceptions import AskError, RedisClusterException, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.retry import Retry

from ._breaker import CircuitBreaker, is_outage, is_routing, is_timeout
from ._connect import build_client
from ._fence import (
    DELETE_FENCED,
    FENCE_MARK,
    FENCE_TTL_MS,
    SET_MANY_FENCED,
    SET_MANY_IF_FENCE,
    TAKE_FENCE,
    fence_key,
    new_token,
)
from ._fork import after_fork_in_child
from ._invalidation import ClusterInvalidationListener, InvalidationListener, listener_for
from ._node_breaker import ClusterRouter, NodeBreakers, Router, failed_node
from ._redis_keys import escape_glob, fence_shares_slot
from ._sentinel import SentinelGuard
from ._urls import parse_url
from ._validate import (
    MISSING,
    RESERVED_MARK,
    TTL,
    check_entries,
    check_items,
    check_key,
    check_keys,
    check_value,
    has_segment,
    is_reserved,
    ttl_ms,
    ttl_seconds,
)
from .errors import BackendError, CacheMiss, CircuitOpenError

if TYPE_CHECKING:
    from ._lease_lock import LeaseLockFactory

__all__ = ["REDIS_ERRORS", "RESERVED_MARK", "RedisCache", "escape_glob", "wrap_redis_error"]

#: Every exception redis-py raises (RedisClusterException is not a RedisError).
REDIS_ERRORS: Final = (RedisError, RedisClusterException)

#: Client settings used by ``from_url``: redis-py's defaults (5 s timeouts, 3 retries with
#: backoff) turn one call against a dead Redis into seconds. One retry, on connection errors only,
#: lets a pooled connection that a server restart broke reconnect transparently; a timeout is not
#: retried, so a paused server costs one ``socket_timeout``.
FROM_URL_DEFAULTS: Final[dict[str, Any]] = {
    "socket_timeout": 0.25,
    "socket_connect_timeout": 0.25,
}

#: How long a command keeps retrying while its cluster slot is migrating (TRYAGAIN, TTL
#: exhausted) before the caller gets a BackendError; routing errors never count as outages.
_ROUTING_PATIENCE: Final = 2.0
_ROUTING_PAUSE: Final = 0.05
_SCAN_COUNT: Final = 1000
_MAX_PENDING_DELETES: Final = 100_000
_SET_MANY_CHUNK: Final = 1000
_R = TypeVar("_R")
log = logging.getLogger("cache_core")
_DEFAULT_BREAKER: Final[Any] = object()


def wrap_redis_error(op: str, exc: BaseException) -> BackendError:
    """A ``BackendError`` for a failed Redis command; the caller raises it ``from exc``."""
    return BackendError(f"redis {op} failed: {type(exc).__name__}: {exc}")


def _seconds_left(pttl: int) -> float | None:
    # PTTL: -1 no expiry, -2 gone (expired between the GET and the PTTL: treat as ~0 left).
    if pttl == -1:
        return None
    return max(pttl, 0) / 1000.0


#: Ops whose command writes cache data: behind Sentinel they wait for the replicas.
_WRITE_OPS: Final = frozenset(
    {"SET", "UNLINK", "MSET", "FENCE", "SCAN/UNLINK", "SET NX", "INCRBY", "CAS", "TOUCH"}
)


def _route_keys(fn: Any, args: tuple[Any, ...]) -> list[Any] | None:
    """The Redis keys of a client call: its leading ``str`` arguments, or a first collection.

    Values travel as bytes and keys as str in this module, so ``set(rkey, data)`` routes by
    ``rkey``; scripts and ``mget_nonatomic`` take their keys as a first list, ``mset_nonatomic``
    as a mapping; ``execute_command(name, key, ...)`` routes by ``key``.
    """
    if not args:
        return None
    if getattr(fn, "__name__", "") == "execute_command":
        return [args[1]] if len(args) > 1 and isinstance(args[1], str | bytes) else None
    first = args[0]
    if isinstance(first, list | tuple | Mapping):
        return list(first)
    keys = []
    for arg in args:
        if not isinstance(arg, str):
            break
        keys.append(arg)
    return keys or None


def _allow_all(breakers: list[CircuitBreaker]) -> None:
    """``allow()`` each breaker; if one refuses, free the probes the others granted."""
    allowed: list[CircuitBreaker] = []
    try:
        for b in breakers:
            b.allow()
            allowed.append(b)
    except CircuitOpenError:
        for b in allowed:
            b.abandon()
        raise


def _short_retry() -> Retry:
    return Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))


class RedisCache:
    """Byte cache on a Redis server or Redis Cluster, keys namespaced by ``prefix``.

    The cache never closes a client it was given; ``from_url`` builds a client with short
    timeouts, owns it and closes it on ``close()``. Keys are stored as ``prefix + ":" + key``.

    ``breaker``: a ``CircuitBreaker`` that every command goes through (``from_url`` builds one
    by default; for a client you pass in, give one explicitly). While it is open, calls raise
    ``CircuitOpenError`` (a ``BackendError``) at once instead of waiting for timeouts.
    """

    def __init__(
        self,
        client: redis.Redis | RedisCluster,
        *,
        prefix: str = "",
        default_ttl: TTL | None = None,
        allow_clear_all: bool = False,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        if not isinstance(client, redis.Redis | RedisCluster):
            raise TypeError(
                f"client must be a redis.Redis or redis.cluster.RedisCluster, "
                f"not {type(client).__name__}"
            )
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be str, not {type(prefix).__name__}")
        if is_reserved(prefix):
            raise ValueError(
                f"prefix {prefix!r} lies in the library's reserved space (a ':'-segment "
                f"starting with {RESERVED_MARK!r}); choose another prefix"
            )
        try:
            prefix.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"prefix must be encodable as UTF-8, got {prefix!r}") from None
        if breaker is not None and not isinstance(breaker, CircuitBreaker):
            raise TypeError(
                f"breaker must be a CircuitBreaker or None, not {type(breaker).__name__}"
            )
        if client.get_connection_kwargs().get("decode_responses"):
            raise ValueError(
                "client must be built with decode_responses=False: cached values are bytes"
            )
        self._client = client
        self._cluster = isinstance(client, RedisCluster)
        self._prefix = prefix
        self._kp = prefix + ":" if prefix else ""
        self._default_ttl = ttl_seconds(default_ttl, None, "default_ttl")
        self._allow_clear_all = bool(allow_clear_all)
        self._owns_client = False
        self._breaker = breaker
        # key -> sequence number of the failed delete, so a write only cancels older deletes
        self._pending_deletes: dict[str, int] = {}
        self._pending_seq = 0
        self._kp_len = len(self._kp.encode("utf-8"))
        self._pending_lock = threading.Lock()
        self._replay_lock = threading.Lock()
        self._take_fence = client.register_script(TAKE_FENCE)
        self._delete_fenced = client.register_script(DELETE_FENCED)
        self._set_many_fenced = client.register_script(SET_MANY_FENCED)
        self._set_many_if_fence = client.register_script(SET_MANY_IF_FENCE)
        # Cluster (and Sentinel): one breaker per node, spawned from ``breaker``; see
        # _node_breaker. A plain server keeps the one breaker.
        self._router: Router | None = None
        self._nodes: NodeBreakers | None = None
        self._guard: SentinelGuard | None = None
        self._warned_moved = False
        self._lease_locks: LeaseLockFactory | None = None  # built by lease_locks(), once
        #: commands retried because their slot was migrating (TRYAGAIN, MOVED, TTL exhausted)
        self.routing_retries = 0
        if breaker is not None and isinstance(client, RedisCluster):
            self._router = ClusterRouter(client)
            self._nodes = NodeBreakers(breaker)
        after_fork_in_child(self._after_fork_in_child)

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
        target = parse_url(url)
        if cluster and target.kind == "sentinel":
            raise ValueError("cluster=True does not go with a redis+sentinel:// URL")
        if cluster and target.kind == "redis":
            scheme, rest = url.split("://", 1)
            if scheme.lower() == "unix":
                raise ValueError("cluster=True needs a redis:// or rediss:// URL, not unix://")
            target = parse_url(f"{scheme}+cluster://{rest}")
        kwargs: dict[str, Any] = {**FROM_URL_DEFAULTS, "retry": _short_retry()}
        kwargs.update(client_kwargs)
        try:
            client, guard = build_client(target, kwargs)
        except ValueError:
            raise
        except REDIS_ERRORS as exc:
            raise wrap_redis_error("connect", exc) from exc
        if breaker is _DEFAULT_BREAKER:
            where = target.display.rsplit("@", 1)[-1].split("://", 1)[-1]
            breaker = CircuitBreaker(name=f"redis {prefix or where}")
        cache = cls(
            client,
            prefix=prefix,
            default_ttl=default_ttl,
            allow_clear_all=allow_clear_all,
            breaker=breaker,
        )
        cache._owns_client = True
        if guard is not None:
            cache._guard = guard
            cache._router = guard
            cache._nodes = NodeBreakers(breaker) if breaker is not None else None
        return cache

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

    def _after_fork_in_child(self) -> None:
        # A replay of deletes (network I/O under the lock) may have been running in a thread
        # that the child does not have. The pending deletes themselves stay: still owed.
        self._pending_lock = threading.Lock()
        self._replay_lock = threading.Lock()

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
            from ._lease_lock import LeaseLockFactory  # (it imports this module)

            with self._pending_lock:
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
        kp = self._kp
        wanted = check_keys(keys)
        return wanted, [kp + k for k in wanted] if kp else wanted

    def _px(self, ttl: TTL | None) -> int | None:
        seconds = ttl_seconds(ttl, self._default_ttl)
        return None if seconds is None else ttl_ms(seconds)

    # -- the one path every command takes: breaker, error wrapping, pending deletes ------------

    def run(self, op: str, fn: Callable[..., _R], *args: Any, **kwargs: Any) -> _R:
        """Call ``fn`` (a client method) through the breaker; Redis errors become BackendError.

        Deletes that failed during an outage are replayed first, before the command: a write
        that follows is never undone by the replay, and a read sees the deletes. Other
        components that talk to this cache's Redis (the lease lock) go through here too, so
        an open breaker protects every call.
        """
        if self._cluster or self._guard is not None:
            return self.run_routed(op, _route_keys(fn, args), fn, *args, **kwargs)
        return self._call(op, fn, args, kwargs, count_timeouts=True)

    def run_blocking(self, op: str, fn: Callable[..., _R], *args: Any, **kwargs: Any) -> _R:
        """``run`` for a command that blocks on the server (BLPOP) close to the socket timeout.

        Its timeout may be a late server tick on a busy machine, not an outage: it neither
        opens nor closes the breaker. Any other failure counts as in ``run``.
        """
        if self._cluster or self._guard is not None:  # per-node breakers count as in run()
            return self.run_routed(op, _route_keys(fn, args), fn, *args, **kwargs)
        return self._call(op, fn, args, kwargs, count_timeouts=False)

    def _call(
        self,
        op: str,
        fn: Callable[..., _R],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        count_timeouts: bool,
    ) -> _R:
        """The single-server path of ``run``: breaker, replay, error wrapping."""
        breaker = self._breaker
        if breaker is not None:
            breaker.allow()
        try:
            if self._pending_deletes:
                self._replay_deletes()
            result = fn(*args, **kwargs)
        except REDIS_ERRORS as exc:
            if breaker is not None:
                if count_timeouts or not is_timeout(exc):
                    breaker.record_failure(exc)
                else:
                    breaker.abandon()
            if not self._warned_moved and isinstance(exc, AskError):  # MOVED/ASK
                self._warn_moved()
            raise wrap_redis_error(op, exc) from exc
        except BaseException:
            if breaker is not None:
                breaker.abandon()
            raise
        if breaker is not None:
            breaker.record_success()
        return result

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
        (``is_routing``: a slot migrating) are retried for up to ``_ROUTING_PATIENCE`` seconds
        and never count as an outage. Behind Sentinel, writes wait for the replicas
        (``SentinelGuard.write``).
        """
        if not self._cluster and self._guard is None:
            return self.run(op, fn, *args, **kwargs)
        nodes = self._nodes
        router = self._router
        names: list[str] = []
        breakers: list[CircuitBreaker] = []
        if nodes is not None and router is not None and route is not None:
            route = list(route)
            names = router.nodes_for(route)
            breakers = [nodes.get(n) for n in names]
            try:
                _allow_all(breakers)
            except CircuitOpenError:
                # The node may have been replaced (a promoted replica): learn the topology
                # (throttled) and route again before refusing the call.
                router.refresh()
                fresh = router.nodes_for(route)
                if fresh == names:
                    raise
                names = fresh
                breakers = [nodes.get(n) for n in names]
                _allow_all(breakers)
        guard = self._guard if op in _WRITE_OPS else None
        deadline = 0.0
        while True:
            try:
                if self._pending_deletes:
                    self._replay_deletes()
                result = guard.write(fn, args, kwargs) if guard is not None else fn(*args, **kwargs)
            except REDIS_ERRORS as exc:
                if is_routing(exc):
                    now = time.monotonic()
                    if not deadline:
                        deadline = now + _ROUTING_PATIENCE
                    if now < deadline:
                        self.routing_retries += 1
                        time.sleep(_ROUTING_PAUSE)
                        continue
                    for b in breakers:
                        b.abandon()
                    raise wrap_redis_error(op, exc) from exc
                if nodes is not None:
                    where = failed_node(exc)
                    if where is not None and (where in names or not names):
                        for n, b in zip(names, breakers, strict=True):
                            if n != where:
                                b.abandon()
                        nodes.get(where).record_failure(exc)
                    else:
                        for b in breakers:
                            b.record_failure(exc)
                raise wrap_redis_error(op, exc) from exc
            except BaseException:
                for b in breakers:
                    b.abandon()
                raise
            for b in breakers:
                b.record_success()
            return result

    def _warn_moved(self) -> None:
        self._warned_moved = True
        log.warning(
            "cache_core: Redis answered MOVED: this is a Redis Cluster node used through a "
            "plain client, and most keys will miss. Use redis.cluster.RedisCluster, or "
            "RedisCache.from_url('redis+cluster://host:port')"
        )

    @property
    def breaker(self) -> CircuitBreaker | None:
        """The breaker (on a cluster or behind Sentinel: the template of the node breakers)."""
        return self._breaker

    @property
    def sentinel(self) -> SentinelGuard | None:
        """Behind Sentinel (``redis+sentinel://``): the current primary and write confirmation."""
        return self._guard

    @property
    def node_breakers(self) -> dict[str, CircuitBreaker]:
        """The per-node breakers created so far, by ``"host:port"`` (empty for one server)."""
        return self._nodes.snapshot() if self._nodes is not None else {}

    @property
    def breaker_openings(self) -> int:
        """How many times a breaker of this cache opened (summed over nodes on a cluster)."""
        if self._nodes is not None:
            return self._nodes.opened_count
        return self._breaker.opened_count if self._breaker is not None else 0

    @property
    def pending_deletes(self) -> int:
        """Deletes that failed during an outage and will be replayed when Redis answers."""
        return len(self._pending_deletes)

    def _remember_deletes(self, keys: Iterable[str]) -> None:
        with self._pending_lock:
            room = _MAX_PENDING_DELETES - len(self._pending_deletes)
            for key in keys:
                if room <= 0:
                    log.error(
                        "cache_core: more than %d deletes pending during the outage; "
                        "%r will not be replayed",
                        _MAX_PENDING_DELETES,
                        key,
                    )
                    break
                if key not in self._pending_deletes:
                    room -= 1
                self._pending_seq += 1
                self._pending_deletes[key] = self._pending_seq

    def _forget_deletes(self, keys: Iterable[str], upto: int) -> None:
        """Deletes of these keys numbered ``upto`` or lower are done or superseded by a write.

        A delete that failed after the write started (a higher number) stays pending.
        """
        with self._pending_lock:
            pending = self._pending_deletes
            for key in keys:
                seq = pending.get(key)
                if seq is not None and seq <= upto:
                    del pending[key]

    def _replay_deletes(self) -> None:
        # Blocking, not skip-if-busy: a thread that went ahead while another replays could
        # write a key that the replay's UNLINK then removes.
        with self._replay_lock:
            with self._pending_lock:
                batch = list(self._pending_deletes)
                upto = self._pending_seq
            if not batch:
                return
            guard = self._guard
            try:
                if guard is not None:  # behind Sentinel: confirmed by the replicas too
                    guard.write(self._unlink_fenced, (batch,), {})
                else:
                    self._unlink_fenced(batch)  # pages, like clear(); fences dropped too
            except REDIS_ERRORS as exc:
                log.debug("cache_core: replaying %d deletes failed: %s", len(batch), exc)
                raise
            self._forget_deletes(batch, upto)
            log.info(
                "cache_core: replayed %d invalidations (failed writes and deletes) from an outage",
                len(batch),
            )

    # -- Cache -------------------------------------------------------------------------------

    def get(self, key: str, default: Any = MISSING) -> Any:
        check_key(key)
        # A key with a pending invalidation is never read before the replay: run() replays
        # first, and raises while Redis cannot be reached (an L1 above may then answer).
        value = self.run("GET", self._client.get, self._kp + key)
        if value is None:
            if default is MISSING:
                raise CacheMiss(key)
            return default
        return value

    def get_with_ttl(self, key: str) -> tuple[bytes, float | None] | None:
        """``(value, seconds left or None)`` in one round trip (pipelined GET + PTTL)."""
        rkey = self._kp + check_key(key)

        def get_and_pttl() -> list[Any]:
            pipe = self._client.pipeline(transaction=False)
            pipe.get(rkey)
            pipe.pttl(rkey)
            return pipe.execute()

        value, pttl = self.run_routed("GET/PTTL", (rkey,), get_and_pttl)
        if value is None:
            return None
        return value, _seconds_left(pttl)

    def mget_with_ttl(self, keys: Iterable[str]) -> dict[str, tuple[bytes, float | None]]:
        """Like ``mget``, with each hit's remaining lifetime (one pipelined round trip)."""
        wanted, rkeys = self._redis_keys(keys)
        if not wanted:
            return {}

        def gets_and_pttls() -> list[Any]:
            pipe = self._client.pipeline(transaction=False)
            for rkey in rkeys:
                pipe.get(rkey)
                pipe.pttl(rkey)
            return pipe.execute()

        # Snapshot before the call: run() may replay (and forget) the pending deletes after
        # reading values that the replay then removed.
        pending = set(self._pending_deletes) if self._pending_deletes else None
        replies = self.run_routed("GET/PTTL", rkeys, gets_and_pttls)
        found: dict[str, tuple[bytes, float | None]] = {}
        for i, key in enumerate(wanted):
            value = replies[2 * i]
            if value is not None and not (pending and key in pending):
                found[key] = (value, _seconds_left(replies[2 * i + 1]))
        return found

    def set(self, key: str, value: bytes, ttl: TTL | None = None) -> None:
        """SET the value and drop the key's fence, atomically (a Lua script).

        Dropping the fence refuses every store of a value loaded before this write (see
        ``_fence``). If Redis is unreachable the error is raised and the write is remembered
        as an invalidation of the key, replayed before any other command when Redis answers.
        """
        data = check_value(value)
        px = self._px(ttl)
        rkey = self._kp + check_key(key)
        upto = self._pending_seq
        try:
            fence = self.redis_fence_key(key)
            if fence is not None:
                self.run("SET", self._set_many_fenced, [rkey, fence], [data, px or 0])
            else:
                self.run("SET", self._client.set, rkey, data, px=px)
        except BackendError as exc:
            self._on_failed_write(exc, [key])
            raise
        if self._pending_deletes:
            self._forget_deletes([key], upto)

    def _fenceable(self, rkey: str) -> bool:
        # On a cluster the fence must share the value's slot (one script touches both).
        return not self._cluster or fence_shares_slot(rkey)

    def redis_fence_key(self, key: str) -> str | None:
        """The Redis key of ``key``'s fence (see ``_fence``), in the value's slot; None on a
        cluster when the key's braces are not a hash tag (it is then stored unfenced). A script
        that writes ``key`` outside this class drops this key too."""
        if not self._fenceable(self._kp + key):
            return None
        return fence_key(self._kp, key)

    def _on_failed_write(self, exc: BackendError, keys: Iterable[str]) -> None:
        """A write that may not have reached Redis becomes a remembered invalidation."""
        if is_outage(exc.__cause__) or isinstance(exc, CircuitOpenError):
            self._remember_deletes(keys)

    # -- fences: stores of loaded values that lose to writes (see _fence) ----------------------

    def fence(self, key: str) -> str | None:
        """Take the fence token of ``key`` before loading it (one round trip).

        None when the key cannot be fenced (on a cluster, a key whose braces are not a hash
        tag): store it with ``set``. Raises ``BackendError`` when Redis cannot be asked.
        """
        fence = self.redis_fence_key(check_key(key))
        if fence is None:
            return None
        (token,) = self.run("FENCE", self._take_fence, [fence], [new_token(), FENCE_TTL_MS])
        return token.decode() if isinstance(token, bytes) else str(token)

    def set_fenced(self, key: str, value: bytes, ttl: TTL | None, token: str) -> bool:
        """Store a loaded value only if no write to ``key`` came after ``fence(key)``.

        Returns whether it was stored. Checked by Redis when the command executes, so a store
        that arrives late (a slow connection, a paused server) is refused just the same.
        """
        data = check_value(value)
        px = self._px(ttl)
        rkey = self._kp + check_key(key)
        if not isinstance(token, str):
            raise TypeError(f"token must be str, not {type(token).__name__}")
        stored = self.run(
            "SET", self._set_many_if_fence, [rkey, fence_key(self._kp, key)], [token, data, px or 0]
        )
        return bool(stored)

    def fence_many(self, keys: Iterable[str]) -> dict[str, str | None]:
        """``fence`` for a batch: key -> token, or None (unfenceable).

        One script per chunk of 1000 keys on a single server (the warmer's path); on a cluster
        the fences span slots: a pipeline of SET NX + GET per key, which redis-py splits per node.
        """
        wanted = list(dict.fromkeys(check_keys(keys)))
        kp = self._kp
        fenced = [k for k in wanted if self._fenceable(kp + k)]
        route = [fence_key(kp, k) for k in fenced]
        found: list[Any] = []
        if fenced and self._cluster:

            def take() -> list[Any]:
                # In order on the key's node: a new token, or the one a loader already holds.
                pipe = self._client.pipeline(transaction=False)
                for fence in route:
                    pipe.set(fence, new_token(), nx=True, px=FENCE_TTL_MS)
                    pipe.get(fence)
                return pipe.execute()[1::2]

            found = self.run_routed("FENCE", route, take)
        else:  # a single server (or behind Sentinel); nothing to do when nothing is fenced
            for start in range(0, len(route), _SET_MANY_CHUNK):
                chunk = route[start : start + _SET_MANY_CHUNK]
                found += self.run("FENCE", self._take_fence, chunk, [new_token(), FENCE_TTL_MS])
        tokens: dict[str, str | None] = dict.fromkeys(wanted)
        for key, token in zip(fenced, found, strict=True):
            tokens[key] = token.decode() if isinstance(token, bytes) else None
        return tokens

    def mset_fenced(
        self, entries: Mapping[str, tuple[bytes, TTL | None]], tokens: Mapping[str, str]
    ) -> frozenset[str]:
        """Store loaded values, each only if its fence still holds its token; the keys stored.

        A key without a token in ``tokens`` is not stored. One script per chunk on a single
        server; on a cluster a pipeline of one EVAL per key (redis-py splits it per node).
        """
        checked = check_entries(entries, self._default_ttl)
        kp = self._kp
        rows = [
            (key, value, 0 if seconds is None else ttl_ms(seconds), tokens[key])
            for key, (value, seconds) in checked.items()
            if isinstance(tokens.get(key), str)
        ]
        if not rows:
            return frozenset()

        def store() -> set[str]:
            stored: set[str] = set()
            if self._cluster:
                pipe = self._client.pipeline(transaction=False)
                for key, value, px, token in rows:
                    fence = fence_key(kp, key)
                    pipe.execute_command(
                        "EVAL", SET_MANY_IF_FENCE, 2, kp + key, fence, token, value, px
                    )
                replies = pipe.execute()
                return {row[0] for row, ok in zip(rows, replies, strict=True) if ok}
            for start in range(0, len(rows), _SET_MANY_CHUNK):
                chunk = rows[start : start + _SET_MANY_CHUNK]
                keys = [kp + r[0] for r in chunk] + [fence_key(kp, r[0]) for r in chunk]
                args: list[Any] = []
                for _, value, px, token in chunk:
                    args += [token, value, px]
                stored.update(chunk[int(i) - 1][0] for i in self._set_many_if_fence(keys, args))
            return stored

        return frozenset(self.run_routed("SET", [kp + r[0] for r in rows], store))

    def delete(self, key: str) -> bool:
        """UNLINK the key. If Redis is unreachable the delete is remembered and replayed.

        The failure is still raised (``BackendError``), but from then on this cache never
        serves the key's old value: every command replays the pending deletes before it runs
        (and raises while it cannot), until a write supersedes the delete or the replay reaches
        Redis. Other processes may read the old value until the replay (they cannot be told
        while Redis is down).
        """
        rkey = self._kp + check_key(key)
        try:
            fence = self.redis_fence_key(key)
            if fence is not None:
                return bool(self.run("UNLINK", self._delete_fenced, [rkey, fence]))
            return bool(self.run("UNLINK", self._client.unlink, rkey))
        except BackendError as exc:
            self._on_failed_write(exc, [key])
            raise

    def exists(self, key: str) -> bool:
        rkey = self._kp + check_key(key)
        return bool(self.run("EXISTS", self._client.exists, rkey))

    def clear(self) -> int:
        """Remove this cache's keys with SCAN + UNLINK per page, on every primary.

        Never KEYS (blocks the server) nor FLUSHDB/FLUSHALL (not ours to flush). Glob characters
        in the prefix are escaped, so ``a*`` never matches a neighbour's ``ab:`` keys. An empty
        prefix would mean the whole database: refused unless ``allow_clear_all=True``.
        Prefixes nest like folders: the entries of a cache prefixed ``app:sessions`` are removed
        by ``clear()`` of ``app`` too, but a library key (a ``__cc`` segment) of any cache never.
        """
        if not self._kp and not self._allow_clear_all:
            raise ValueError(
                "clear() on a RedisCache with an empty prefix would remove every key in the "
                "database; give the cache a prefix or build it with allow_clear_all=True"
            )
        match = escape_glob(self._kp) + "*" if self._kp else None

        library = self._library_key
        cut = self._kp_len
        fence = FENCE_MARK.encode()

        def scan_and_unlink() -> int:
            removed = 0
            for page in self._scan_pages(match):
                # The library's own keys under the prefix, of this cache or of a cache whose
                # prefix nests under it (lease locks, shared bloom filters, snapshots), are not
                # cache entries: they expire by themselves or belong to a guard. Fences go with
                # the entries (uncounted): a clear is a write, and refuses the stores of loads
                # in flight.
                entries: list[bytes] = []
                fences: list[bytes] = []
                for raw in page:
                    if not library(raw):
                        entries.append(raw)
                    elif has_segment(raw[cut:], fence):
                        fences.append(raw)
                if fences:
                    self._client.unlink(*fences)
                if entries:
                    removed += int(self._client.unlink(*entries))
            return removed

        return self.run("SCAN/UNLINK", scan_and_unlink)

    def _library_key(self, raw: bytes) -> bool:
        """Whether a Redis key found under the prefix is a library key of some cache.

        User keys never enter the reserved space (``check_key``), so a ``__cc`` segment after
        this cache's prefix marks a key of the library: this cache's own, or one of a cache
        whose prefix extends this one (``app`` sees ``app:sessions:__ccbf__:...``).
        """
        return has_segment(raw[self._kp_len :])

    def _scan_pages(self, match: str | None) -> Iterator[list[Any]]:
        if not self._cluster:
            client = self._client
            cursor = 0
            while True:
                cursor, keys = client.scan(cursor=cursor, match=match, count=_SCAN_COUNT)
                if keys:
                    yield keys
                if cursor == 0:
                    return
        # RedisCluster.scan_iter walks every primary; page its stream so each UNLINK stays small.
        page: list[Any] = []
        for key in self._client.scan_iter(match=match, count=_SCAN_COUNT):
            page.append(key)
            if len(page) >= _SCAN_COUNT:
                yield page
                page = []
        if page:
            yield page

    def scan_keys(self, match: str = "*") -> Iterator[str]:
        """This cache's keys (prefix removed) whose remainder matches the glob ``match``.

        SCAN, never KEYS; on a cluster, every primary.
        """
        if not isinstance(match, str):
            raise TypeError(f"match must be str, not {type(match).__name__}")
        pattern = escape_glob(self._kp) + match
        cut = len(self._kp)
        library = self._library_key
        breaker = self._breaker
        if breaker is not None:
            breaker.allow()
        try:
            for page in self._scan_pages(pattern):
                for raw in page:
                    if library(raw):
                        continue  # the library's own keys: never reported as cache keys
                    yield raw.decode("utf-8", "surrogateescape")[cut:]
        except REDIS_ERRORS as exc:
            if breaker is not None:
                breaker.record_failure(exc)
            raise wrap_redis_error("SCAN", exc) from exc
        except BaseException:
            if breaker is not None:
                breaker.abandon()
            raise
        if breaker is not None:
            breaker.record_success()

    # -- BatchCache --------------------------------------------------------------------------

    def mget(self, keys: Iterable[str]) -> dict[str, bytes]:
        """One MGET on a single server; per-slot MGETs (``mget_nonatomic``) on a cluster."""
        wanted, rkeys = self._redis_keys(keys)
        if not wanted:
            return {}
        pending = set(self._pending_deletes) if self._pending_deletes else None
        if self._cluster:
            values = self.run("MGET", self._client.mget_nonatomic, rkeys)  # type: ignore[union-attr]
        else:
            values = self.run("MGET", self._client.mget, rkeys)
        found = dict(zip(wanted, values, strict=True))
        if None in values:  # C-level scan; the all-hits case skips the filtering loop
            found = {k: v for k, v in found.items() if v is not None}
        if pending:
            for key in [k for k in found if k in pending]:
                del found[key]
        return found

    def mset(self, items: Mapping[str, bytes], ttl: TTL | None = None) -> None:
        """``SET [PX]`` per key and drop its fence, in one round trip (``_set_many``)."""
        px = self._px(ttl)
        checked = check_items(items)
        if not checked:
            return
        upto = self._pending_seq
        self._set_many([(k, v, px) for k, v in checked.items()])
        if self._pending_deletes:
            self._forget_deletes(checked, upto)

    def mset_with_ttls(self, entries: Mapping[str, tuple[bytes, TTL | None]]) -> None:
        """Store items that each carry their own TTL, in one round trip (``_set_many``)."""
        checked = check_entries(entries, self._default_ttl)
        if not checked:
            return
        upto = self._pending_seq
        self._set_many(
            [
                (key, value, None if seconds is None else ttl_ms(seconds))
                for key, (value, seconds) in checked.items()
            ]
        )
        if self._pending_deletes:
            self._forget_deletes(checked, upto)

    def _set_many(self, rows: list[tuple[str, bytes, int | None]]) -> None:
        """SET each (key, value, px or None) and drop its fence, in one round trip per chunk.

        On one server: a Lua script per chunk of up to 1000 keys (drop fence, then SET, per
        key), so redis-py packs and parses one command instead of one per key (the warming
        path). On a cluster the keys span slots: a non-transactional pipeline, which redis-py
        splits per node keeping each node's commands in order; a key's fence shares its slot,
        so DEL fence reaches Redis before the SET, and no store slips between them unchecked.
        A failed batch is remembered as invalidations of its keys.
        """
        kp = self._kp
        try:
            if self._cluster:

                def pipelined() -> None:
                    pipe = self._client.pipeline(transaction=False)
                    for key, value, px in rows:
                        rkey = kp + key
                        if fence_shares_slot(rkey):
                            pipe.delete(fence_key(kp, key))
                        pipe.set(rkey, value, px=px)
                    pipe.execute()

                self.run_routed("MSET", [kp + r[0] for r in rows], pipelined)
                return
            for start in range(0, len(rows), _SET_MANY_CHUNK):
                chunk = rows[start : start + _SET_MANY_CHUNK]
                args: list[Any] = []
                for _, value, px in chunk:
                    args.append(value)
                    args.append(px or 0)
                keys = [kp + r[0] for r in chunk] + [fence_key(kp, r[0]) for r in chunk]
                self.run("MSET", self._set_many_fenced, keys, args)
        except BackendError as exc:
            self._on_failed_write(exc, [r[0] for r in rows])
            raise

    def mdelete(self, keys: Iterable[str]) -> int:
        """UNLINK (split per slot on a cluster); returns how many keys existed.

        Like ``delete``, a batch that cannot reach Redis is remembered and replayed.
        """
        wanted = list(dict.fromkeys(check_keys(keys)))
        if not wanted:
            return 0
        try:
            route = [self._kp + k for k in wanted]
            return self.run_routed("UNLINK", route, self._unlink_fenced, wanted)
        except BackendError as exc:
            self._on_failed_write(exc, wanted)
            raise

    def _unlink_fenced(self, keys: list[str]) -> int:
        """UNLINK values and DEL their fences (fence first on a cluster); count the values.

        One script per chunk on a single server; on a cluster a pipeline split per node, each
        fence ordered before its value (same slot, so same node and same connection).
        """
        kp = self._kp
        if not self._cluster:
            removed = 0
            for start in range(0, len(keys), _SCAN_COUNT):
                chunk = keys[start : start + _SCAN_COUNT]
                script_keys = [kp + k for k in chunk] + [fence_key(kp, k) for k in chunk]
                removed += int(self._delete_fenced(script_keys))
            return removed
        pipe = self._client.pipeline(transaction=False)
        counted: list[bool] = []
        for key in keys:
            rkey = kp + key
            if fence_shares_slot(rkey):
                pipe.delete(fence_key(kp, key))
                counted.append(False)
            pipe.unlink(rkey)
            counted.append(True)
        replies = pipe.execute()
        return sum(int(r) for r, value in zip(replies, counted, strict=True) if value)
