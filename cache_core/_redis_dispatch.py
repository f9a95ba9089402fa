"""The one path every Redis command of a ``RedisCache`` takes: breakers, routing, error wrapping.

A ``Dispatcher`` runs a client call (``fn(*args, **kwargs)``) so that:

* an open ``CircuitBreaker`` refuses it at once (``CircuitOpenError``), and its outcome is
  recorded (success, failure, or "no verdict" when it was interrupted);
* on a Redis Cluster, or behind Sentinel, the breakers of the *nodes* that serve the call's
  keys are asked, and a failure counts against the node it came from only; a slot that is
  migrating (``is_routing``) is retried for up to ``ROUTING_PATIENCE`` seconds and never counts
  as an outage; behind Sentinel, writes wait for the replicas (``SentinelGuard.write``);
* the deletes an outage left pending are replayed first (the ``replay`` hook, see
  ``_redis_pending``): a write that follows is never undone by the replay, and a read sees them;
* every redis-py exception leaves as a ``BackendError`` naming the operation.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, TypeVar

from redis.exceptions import AskError, RedisClusterException, RedisError

from ._breaker import CircuitBreaker, is_routing, is_timeout
from ._node_breaker import NodeBreakers, Router, failed_node
from ._sentinel import SentinelGuard
from .errors import BackendError, CircuitOpenError

__all__ = [
    "REDIS_ERRORS",
    "ROUTING_PATIENCE",
    "WRITE_OPS",
    "Dispatcher",
    "allow_all",
    "route_keys",
    "wrap_redis_error",
]

#: Every exception redis-py raises (RedisClusterException is not a RedisError).
REDIS_ERRORS: Final = (RedisError, RedisClusterException)

#: How long a command keeps retrying while its cluster slot is migrating (TRYAGAIN, TTL
#: exhausted) before the caller gets a BackendError; routing errors never count as outages.
ROUTING_PATIENCE: Final = 2.0
_ROUTING_PAUSE: Final = 0.05

#: Ops whose command writes cache data: behind Sentinel they wait for the replicas.
WRITE_OPS: Final = frozenset(
    {"SET", "UNLINK", "MSET", "FENCE", "SCAN/UNLINK", "SET NX", "INCRBY", "CAS", "TOUCH"}
)

_R = TypeVar("_R")
log = logging.getLogger("cache_core")


def wrap_redis_error(op: str, exc: BaseException) -> BackendError:
    """A ``BackendError`` for a failed Redis command; the caller raises it ``from exc``."""
    return BackendError(f"redis {op} failed: {type(exc).__name__}: {exc}")


def route_keys(fn: Any, args: tuple[Any, ...]) -> list[Any] | None:
    """The Redis keys of a client call: its leading ``str`` arguments, or a first collection.

    Values travel as bytes and keys as str in the Redis modules, so ``set(rkey, data)`` routes
    by ``rkey``; scripts and ``mget_nonatomic`` take their keys as a first list,
    ``mset_nonatomic`` as a mapping; ``execute_command(name, key, ...)`` routes by ``key``.
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


def allow_all(breakers: list[CircuitBreaker]) -> None:
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


class Dispatcher:
    """Runs the client calls of one ``RedisCache`` (see the module doc).

    ``pending`` is the cache's map of pending deletes (read, never written here: a non-empty
    map makes every call run ``replay()`` first). ``router``/``nodes`` are the per-node breakers
    of a cluster or of a Sentinel-managed server; ``guard`` the Sentinel guard, if any.
    """

    def __init__(
        self,
        *,
        breaker: CircuitBreaker | None,
        pending: Mapping[str, int],
        replay: Callable[[], None],
        routed: bool,
        router: Router | None = None,
        nodes: NodeBreakers | None = None,
        guard: SentinelGuard | None = None,
    ) -> None:
        self.breaker = breaker
        self.router = router
        self.nodes = nodes
        self.guard = guard
        self._pending = pending
        self._replay = replay
        # On a cluster, or behind Sentinel: every call goes the routed way.
        self.routed = routed or guard is not None
        self._warned_moved = False
        #: commands retried because their slot was migrating (TRYAGAIN, MOVED, TTL exhausted)
        self.routing_retries = 0

    def run(self, op: str, fn: Callable[..., _R], *args: Any, **kwargs: Any) -> _R:
        """``RedisCache.run``: ``fn(*args, **kwargs)`` through the breaker(s)."""
        if self.routed:
            return self.run_routed(op, route_keys(fn, args), fn, *args, **kwargs)
        return self.call(op, fn, args, kwargs, count_timeouts=True)

    def run_blocking(self, op: str, fn: Callable[..., _R], *args: Any, **kwargs: Any) -> _R:
        """``RedisCache.run_blocking``: a timeout neither opens nor closes the breaker."""
        if self.routed:  # per-node breakers count as in run()
            return self.run_routed(op, route_keys(fn, args), fn, *args, **kwargs)
        return self.call(op, fn, args, kwargs, count_timeouts=False)

    def call(
        self,
        op: str,
        fn: Callable[..., _R],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        count_timeouts: bool,
    ) -> _R:
        """The single-server path of ``run``: breaker, replay, error wrapping."""
        breaker = self.breaker
        if breaker is not None:
            breaker.allow()
        try:
            if self._pending:
                self._replay()
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
        """``RedisCache.run_routed``: a command on the Redis keys ``route`` (None: no key)."""
        if not self.routed:
            return self.run(op, fn, *args, **kwargs)
        names, breakers = self._node_breakers(route)
        guard = self.guard if op in WRITE_OPS else None
        deadline = 0.0
        while True:
            try:
                if self._pending:
                    self._replay()
                result = guard.write(fn, args, kwargs) if guard is not None else fn(*args, **kwargs)
            except REDIS_ERRORS as exc:
                if is_routing(exc):
                    now = time.monotonic()
                    if not deadline:
                        deadline = now + ROUTING_PATIENCE
                    if now < deadline:
                        self.routing_retries += 1
                        time.sleep(_ROUTING_PAUSE)
                        continue
                    for b in breakers:
                        b.abandon()
                    raise wrap_redis_error(op, exc) from exc
                self._record_node_failure(exc, names, breakers)
                raise wrap_redis_error(op, exc) from exc
            except BaseException:
                for b in breakers:
                    b.abandon()
                raise
            for b in breakers:
                b.record_success()
            return result

    def _node_breakers(self, route: Iterable[Any] | None) -> tuple[list[str], list[CircuitBreaker]]:
        """The nodes serving ``route`` and their breakers, each of which allowed the call."""
        nodes = self.nodes
        router = self.router
        if nodes is None or router is None or route is None:
            return [], []
        route = list(route)
        names = router.nodes_for(route)
        breakers = [nodes.get(n) for n in names]
        try:
            allow_all(breakers)
        except CircuitOpenError:
            # The node may have been replaced (a promoted replica): learn the topology
            # (throttled) and route again before refusing the call.
            router.refresh()
            fresh = router.nodes_for(route)
            if fresh == names:
                raise
            names = fresh
            breakers = [nodes.get(n) for n in names]
            allow_all(breakers)
        return names, breakers

    def _record_node_failure(
        self, exc: BaseException, names: list[str], breakers: list[CircuitBreaker]
    ) -> None:
        """Count a failure against the node it came from (the others: no verdict)."""
        nodes = self.nodes
        if nodes is None:
            return
        where = failed_node(exc)
        if where is not None and (where in names or not names):
            for n, b in zip(names, breakers, strict=True):
                if n != where:
                    b.abandon()
            nodes.get(where).record_failure(exc)
        else:
            for b in breakers:
                b.record_failure(exc)

    def _warn_moved(self) -> None:
        self._warned_moved = True
        log.warning(
            "cache_core: Redis answered MOVED: this is a Redis Cluster node used through a "
            "plain client, and most keys will miss. Use redis.cluster.RedisCluster, or "
            "RedisCache.from_url('redis+cluster://host:port')"
        )

    @property
    def breaker_openings(self) -> int:
        """How many times a breaker opened (summed over nodes on a cluster)."""
        if self.nodes is not None:
            return self.nodes.opened_count
        return self.breaker.opened_count if self.breaker is not None else 0
