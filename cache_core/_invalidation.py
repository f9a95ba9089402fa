"""Server-assisted invalidation: one listener per Redis client and key prefix, shared by caches.

Protocol (RESP2, Redis >= 6), on one dedicated connection that is never in a pool::

    CLIENT ID                                     -> n
    CLIENT TRACKING ON REDIRECT n BCAST [PREFIX p]
    SUBSCRIBE __redis__:invalidate
    ... ["message", "__redis__:invalidate", [key, ...]]   a write, expiry or eviction of keys
    ... ["message", "__redis__:invalidate", nil]          FLUSHDB / FLUSHALL: drop everything
    PING every ``health_interval``                 -> ["pong", ""]

The connection redirects its own tracking to itself: the tracking state and the subscription
live and die together, so there is no second connection whose silent loss could stop the
invalidations (BCAST tracking sends an invalidation for every write under the prefix, by any
client, to the redirect target of each client that registered the prefix). NOLOOP would only
mute writes made by this connection, which makes none, so it is not used: writes by this
process's other connections are announced too, which is what keeps the L1s of other caches in
this process, over the same prefix, coherent.

Sinks (``MultiLevelCache``) are told two things, in the listener thread, in order:
``invalidation_state(connected)`` and ``invalidate(keys)`` (``None``: everything). While not
connected (before the first subscription, after any error, a kill, a missed pong, a fork) a
sink must not trust what it cached: invalidations sent meanwhile are lost. "Connected" is
announced only after the subscription is confirmed, so every write after that moment is heard.

Liveness: a PING goes out every ``health_interval`` seconds; if its pong has not come back by
the next one, the connection is declared dead (a paused server or a stalled network looks
like a healthy idle socket otherwise). A refused or broken connection is retried with a
backoff from 50 ms to 1 s, forever, until the last sink leaves or ``close()``.

Fork: the child has no listener thread. Its listeners forget the parent's connection (without
touching the socket, which the parent still uses) and report "not connected"; the first cache
that asks starts a new thread in the child.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from typing import Any, Final

import redis

from ._fork import after_fork_in_child
from ._invalidation_hub import InvalidationSink, SinkHub, log
from ._validate import has_segment

__all__ = [
    "ClusterInvalidationListener",
    "InvalidationListener",
    "InvalidationSink",
    "listener_for",
]

CHANNEL: Final = b"__redis__:invalidate"
_BACKOFF_MIN: Final = 0.05
_BACKOFF_MAX: Final = 1.0


class _Dead(Exception):
    """The listener's connection stopped answering its pings."""


class InvalidationListener(SinkHub):
    """Hears every write under ``prefix`` on one Redis server and tells the subscribed sinks.

    Built by ``listener_for`` (one per client and prefix). Keys handed to sinks have the
    prefix stripped; keys that are not valid UTF-8 cannot be cache keys and are skipped.
    """

    def __init__(
        self, connection_kwargs: dict[str, Any], connection_class: Any, prefix: str,
        *, health_interval: float = 1.0,
    ) -> None:  # fmt: skip
        kwargs = dict(connection_kwargs)
        # Our own connection, speaking RESP2 (subscribe messages, not RESP3 pushes), with no
        # retry of its own: a failure must reach the loop below, which announces it.
        for pool_only in (
            "maint_notifications_pool_handler",
            "oss_cluster_maint_notifications_handler",
            "redis_connect_func",  # a cluster client's hook (READONLY); ours is a plain one
            "retry",
        ):
            kwargs.pop(pool_only, None)
        kwargs["protocol"] = 2
        kwargs["health_check_interval"] = 0
        kwargs["socket_timeout"] = max(health_interval, 0.25)
        if kwargs.get("socket_connect_timeout") is None:
            kwargs["socket_connect_timeout"] = 1.0
        self._kwargs = kwargs
        self._connection_class = connection_class
        self._bprefix = prefix.encode()
        self._conn: Any = None
        self.messages = 0  # invalidation messages received, for tests and metrics
        self.connects = 0  # successful subscriptions
        super().__init__(prefix, health_interval)
        after_fork_in_child(self._after_fork_in_child)

    def remove(self, sink: InvalidationSink) -> None:
        """Unsubscribe; the thread ends (and its connection closes) when no sink is left."""
        with self._lock:
            self._sinks.discard(sink)
            if not self._sinks:
                self._stop.set()
                conn = self._conn
            else:
                conn = None
        if conn is not None:
            self._disconnect(conn)  # wakes the thread out of its read

    def close(self, timeout: float = 2.0) -> None:
        """Stop the thread and close the connection; sinks are told "not connected"."""
        with self._lock:
            self._stop.set()
            thread, conn = self._thread, self._conn
        if conn is not None:
            self._disconnect(conn)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _after_fork_in_child(self) -> None:
        # The thread is gone (SinkHub); the connection's socket is the parent's: drop it, untouched.
        self._conn = None

    # -- the thread --------------------------------------------------------------------------

    def _run(self, stop: threading.Event) -> None:
        backoff = 0.0
        failing = False
        while not stop.is_set():
            conn = None
            try:
                conn = self._connection_class(**self._kwargs)
                with self._lock:
                    if stop.is_set():
                        break
                    self._conn = conn
                self._subscribe(conn)
                self.connects += 1
                self._announce_state(True)
                if failing:
                    # The end of the outage is as much news as its start (issue 17).
                    log.warning("cache_core: invalidation listener for %r back", self.prefix)
                    failing = False
                backoff = 0.0
                self._serve(conn, stop)
            except Exception as exc:
                if not stop.is_set():
                    # Once per outage at WARNING (L1 is bypassed until it is back), then DEBUG.
                    level = logging.DEBUG if failing else logging.WARNING
                    failing = True
                    log.log(
                        level,
                        "cache_core: invalidation listener for %r down, L1 bypassed: %r",
                        self.prefix,
                        exc,
                    )
            finally:
                # Before anything else: from here on writes may go unheard.
                self._announce_state(False)
                with self._lock:
                    if self._conn is conn:
                        self._conn = None
                if conn is not None:
                    self._disconnect(conn)
            if not self._has_sinks():
                break
            stop.wait(backoff)
            backoff = min(max(backoff * 2, _BACKOFF_MIN), _BACKOFF_MAX)

    def _subscribe(self, conn: Any) -> None:
        conn.connect()
        conn.send_command("CLIENT", "ID")
        client_id = int(conn.read_response())
        tracking: list[Any] = ["CLIENT", "TRACKING", "ON", "REDIRECT", client_id, "BCAST"]
        if self.prefix:
            tracking += ["PREFIX", self.prefix]
        conn.send_command(*tracking)
        conn.read_response()
        conn.send_command("SUBSCRIBE", CHANNEL)
        reply = conn.read_response()
        if not (isinstance(reply, list) and reply and reply[0] == b"subscribe"):
            raise _Dead(f"unexpected reply to SUBSCRIBE: {reply!r}")

    def _serve(self, conn: Any, stop: threading.Event) -> None:
        interval = self.health_interval
        ping_due = time.monotonic() + interval
        pong_pending = False
        while not stop.is_set():
            now = time.monotonic()
            if now >= ping_due:
                if pong_pending:
                    raise _Dead(f"no pong within {interval}s")
                if not self._sinks:  # every cache was garbage-collected without close()
                    stop.set()
                    return
                conn.send_command("PING")
                pong_pending = True
                ping_due = now + interval
            if not conn.can_read(timeout=max(0.0, ping_due - time.monotonic())):
                continue
            msg = conn.read_response()
            if not isinstance(msg, list) or not msg:
                continue
            kind = msg[0]
            if kind == b"message" and len(msg) == 3 and msg[1] == CHANNEL:
                self.messages += 1
                self._dispatch(self._keys(msg[2]))
            elif kind == b"pong":
                pong_pending = False

    def _keys(self, payload: Any) -> list[str] | None:
        if payload is None:
            return None  # FLUSHDB / FLUSHALL
        if not isinstance(payload, list):
            payload = [payload]
        n = len(self._bprefix)
        keys = []
        for raw in payload:
            if isinstance(raw, bytes) and raw.startswith(self._bprefix):
                rest = raw[n:]
                if has_segment(rest):
                    continue  # a library key (a fence, a lease lock): never in an L1
                try:
                    keys.append(rest.decode())
                except UnicodeDecodeError:
                    continue
        return keys

    @staticmethod
    def _disconnect(conn: Any) -> None:
        try:
            conn.disconnect()  # redis-py shuts the socket down only in the process that made it
        except Exception:
            log.debug("cache_core: closing the invalidation connection failed", exc_info=True)


class ClusterInvalidationListener(SinkHub):
    """One ``InvalidationListener`` per primary of a Redis Cluster, seen by sinks as one.

    "Connected" means: every primary of the current topology has a subscribed listener. A
    supervisor thread reads ``CLUSTER SLOTS`` every ``health_interval``; when the slot map or
    the set of primaries changed (failover, resharding, a node added), the sinks are told
    "disconnected" (L1 flushed: a new primary's writes were not heard before), the listeners
    follow the new primaries, and "connected" comes back once all of them are subscribed.
    """

    thread_name = "cache_core-cluster-invalidation"

    def __init__(self, client: Any, prefix: str, *, health_interval: float = 1.0) -> None:
        self._client = client
        self._topology: list[Any] | None = None
        self._nodes: dict[tuple[str, int], InvalidationListener] = {}
        self.topology_changes = 0
        super().__init__(prefix, health_interval)
        after_fork_in_child(self._after_fork_in_child)

    @property
    def messages(self) -> int:
        return sum(n.messages for n in list(self._nodes.values()))

    def remove(self, sink: InvalidationSink) -> None:
        with self._lock:
            self._sinks.discard(sink)
            last = not self._sinks
        if last:
            self.close()

    def close(self, timeout: float = 2.0) -> None:
        with self._lock:
            self._stop.set()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _after_fork_in_child(self) -> None:
        self._topology = None
        self._nodes = {}  # each node listener resets itself; these are the parent's

    # -- sink of the node listeners ------------------------------------------------------

    def invalidation_state(self, connected: bool) -> None:
        self._recompute()

    def invalidate(self, keys: list[str] | None) -> None:
        self._dispatch(keys)

    def _recompute(self) -> None:
        with self._lock:
            nodes = list(self._nodes.values())
            ok = self._topology is not None and bool(nodes) and not self._stop.is_set()
        self._announce_state(ok and all(n.connected for n in nodes))

    # -- the supervisor ----------------------------------------------------------------------

    def _read_topology(self) -> list[Any] | None:
        try:
            slots = self._client.execute_command("CLUSTER SLOTS")
        except Exception as exc:
            log.debug("cache_core: CLUSTER SLOTS failed: %r", exc)
            return None
        if isinstance(slots, dict):  # redis-py's parsed form: {(start, end): {"primary": ...}}
            rows = [(tuple(r), v["primary"][:2]) for r, v in slots.items()]
        else:  # the raw reply: [[start, end, [host, port, id], replicas...], ...]
            rows = [((r[0], r[1]), r[2][:2]) for r in slots]
        return sorted(
            (rng, (h.decode() if isinstance(h, bytes) else str(h), int(p))) for rng, (h, p) in rows
        )

    def _node_listener(self, host: str, port: int) -> InvalidationListener:
        node = self._client.get_node(host=host, port=port)
        redis_client = None if node is None else node.redis_connection
        if redis_client is not None:
            pool = redis_client.connection_pool
            kwargs, cls = dict(pool.connection_kwargs), pool.connection_class
        else:  # a node redis-py has not connected to yet: the cluster's settings, its address
            kwargs, cls = dict(self._client.nodes_manager.connection_kwargs), redis.Connection
        kwargs.update(host=host, port=port)
        return InvalidationListener(kwargs, cls, self.prefix, health_interval=self.health_interval)

    def _run(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                topology = self._read_topology()
                if topology is not None and topology != self._topology:
                    self._follow(topology)
                if not self._has_sinks():
                    break
                stop.wait(self.health_interval)
        finally:
            with self._lock:
                nodes, self._nodes = list(self._nodes.values()), {}
                self._topology = None
            self._announce_state(False)
            for node in nodes:
                node.remove(self)
                node.close()

    def _follow(self, topology: list[Any]) -> None:
        if self._topology is not None:
            self.topology_changes += 1
        with self._lock:
            self._topology = None  # not connected while the listeners change
        self._announce_state(False)
        primaries = {addr for _, addr in topology}
        with self._lock:
            old = [self._nodes.pop(a) for a in list(self._nodes) if a not in primaries]
        for node in old:
            node.remove(self)
            node.close()
        for host, port in sorted(primaries):
            if (host, port) not in self._nodes:
                node = self._node_listener(host, port)
                with self._lock:
                    self._nodes[(host, port)] = node
                node.add(self)
        with self._lock:
            self._topology = topology
        self._recompute()


_registry_lock = threading.Lock()
_registry: weakref.WeakKeyDictionary[
    Any, dict[str, InvalidationListener | ClusterInvalidationListener]
] = weakref.WeakKeyDictionary()


def listener_for(
    client: Any, prefix: str, *, cluster: bool = False
) -> InvalidationListener | ClusterInvalidationListener:
    """The shared listener for ``client``'s server and ``prefix`` (built on first request).

    ``client`` is a ``redis.Redis`` (the listener copies its connection settings: host, port,
    database, credentials, TLS) or, with ``cluster=True``, a ``RedisCluster``.
    """
    with _registry_lock:
        by_prefix = _registry.get(client)
        if by_prefix is None:
            by_prefix = _registry[client] = {}
        listener = by_prefix.get(prefix)
        if listener is None:
            if cluster:
                listener = ClusterInvalidationListener(client, prefix)
            else:
                pool = client.connection_pool
                listener = InvalidationListener(
                    pool.connection_kwargs, pool.connection_class, prefix
                )
            by_prefix[prefix] = listener
        return listener


def _reset_registry_lock() -> None:
    global _registry_lock
    _registry_lock = threading.Lock()


class _RegistryFork:
    """Holds the registry's reset: ``after_fork_in_child`` takes bound methods."""

    def reset(self) -> None:
        _reset_registry_lock()


_registry_fork = _RegistryFork()
after_fork_in_child(_registry_fork.reset)
