"""Writes behind Sentinel that a failover cannot undo.

During a planned ``SENTINEL FAILOVER`` the replica is promoted (~0.2 s), Sentinel announces
``+switch-master`` (~1 s) and only then, ~10 s later, makes the old primary a replica; until
then the old primary accepts writes, and loses them when it resyncs. A write is therefore
acknowledged only once the replicas it had have confirmed it: every write of a ``RedisCache``
built from a ``redis+sentinel://`` URL is followed by ``WAIT <replicas> <timeout>`` on the
connection it used (pipelined with it when the write is one command; otherwise the connection
is pinned to the thread for the whole write, ``PinningSentinelPool``). A write that fewer
replicas confirmed, or that reached a server Sentinel does not name as the primary, raises
``ReplicaAckError`` (a redis-py ``ConnectionError``, so a failed delete is remembered and
replayed, and the breaker counts it).

How many replicas must confirm (``required``): the replicas the primary reports connected
(``ROLE``). The count rises as soon as a replica connects; it falls only when Sentinel reports
that replica down (``+sdown``) or the primary changes. A replica that silently stops
replicating, which is what a promotion looks like from the old primary, keeps the count up, so
writes there fail until the switch is seen.

A daemon thread subscribes to the sentinels' ``+switch-master``, ``+sdown`` and ``-sdown``
and, on a switch of our service, points the connection pool at the new primary at once (idle
connections to the old one are closed; busy ones are closed when released). A call that the
primary's open breaker would refuse re-asks Sentinel first (``refresh``, throttled). Questions
to Sentinel are serialized, so an old answer cannot point the cache back at the old primary.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any, Final

import redis
from redis.commands.core import Script
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.sentinel import Sentinel, SentinelConnectionPool

from ._fork import after_fork_in_child

__all__ = ["PinningSentinelPool", "ReplicaAckError", "SentinelGuard"]

log = logging.getLogger("cache_core")

_REFRESH_INTERVAL: Final = 0.2
_ROLE_INTERVAL: Final = 1.0


class ReplicaAckError(RedisConnectionError):
    """Fewer replicas confirmed a write than the primary had: it may be undone by a failover."""


class PinningSentinelPool(SentinelConnectionPool):
    """Sentinel's pool that can pin one connection to the calling thread for a while.

    Inside ``with pool.pinned():`` every command of this thread (scripts and pipelines too)
    uses the same connection, so a ``WAIT`` sent on it afterwards confirms all of them. Other
    threads are not affected.
    """

    def __init__(self, service_name: str, sentinel_manager: Any, **kwargs: Any) -> None:
        super().__init__(service_name, sentinel_manager, **kwargs)  # type: ignore[no-untyped-call]
        self._pins = threading.local()
        after_fork_in_child(self._after_fork_in_child)

    def _after_fork_in_child(self) -> None:
        self._pins = threading.local()  # a pin of the forking thread is the parent's connection

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        pinned = getattr(self._pins, "conn", None)
        if pinned is not None:
            return pinned
        return super().get_connection(*args, **kwargs)

    def release(self, connection: Any) -> None:
        if connection is getattr(self._pins, "conn", None):
            return  # given back when the pin ends
        super().release(connection)

    @contextlib.contextmanager
    def pinned(self) -> Iterator[Any]:
        """Pin a connection to this thread for the ``with`` block (re-entrant: reuses it)."""
        if getattr(self._pins, "conn", None) is not None:
            yield self._pins.conn
            return
        conn = super().get_connection()
        self._pins.conn = conn
        try:
            yield conn
        finally:
            self._pins.conn = None
            super().release(conn)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class SentinelGuard:
    """The primary Sentinel names for ``service``, and writes confirmed by its replicas."""

    def __init__(
        self,
        sentinel: Sentinel,
        service: str,
        client: redis.Redis,
        *,
        ack_timeout: float = 0.15,
        watch: bool = True,
    ) -> None:
        self.sentinel = sentinel
        self.service = service
        self.client = client
        self.ack_ms = max(1, round(ack_timeout * 1000))
        self._lock = threading.Lock()
        # One question to Sentinel at a time: two overlapping answers could land out of order
        # and point the cache back at the old primary.
        self._refresh_lock = threading.Lock()
        self._master = ""
        self._required = 0
        self._last_refresh = 0.0
        self._last_role = 0.0
        self.switches = 0
        self.unconfirmed = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        try:
            self._refresh(force=True)
        except RedisError as exc:
            log.warning(
                "cache_core: Sentinel cannot name a primary for %r yet (%s); calls fail "
                "until it can",
                service,
                exc,
            )
        self._watching = watch
        if watch:
            self._start_watcher()
        after_fork_in_child(self._after_fork_in_child)

    def _start_watcher(self) -> None:
        self._thread = threading.Thread(
            target=self._watch, name=f"cache_core sentinel {self.service}", daemon=True
        )
        self._thread.start()

    def _after_fork_in_child(self) -> None:
        # The watcher thread did not survive the fork and a lock may have been held: drop
        # both; the child's first routed call starts a watcher of its own (nodes_for).
        self._lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._thread = None
        stopped = self._stop.is_set()
        self._stop = threading.Event()
        if stopped:
            self._stop.set()

    # -- topology ----------------------------------------------------------------------------

    @property
    def master(self) -> str:
        """``"host:port"`` of the primary as last seen (empty before the first answer)."""
        return self._master

    @property
    def required(self) -> int:
        """How many replicas must confirm a write."""
        return self._required

    def nodes_for(self, keys: object) -> list[str]:
        """Every key lives on the current primary (the ``Router`` protocol)."""
        if self._thread is None and self._watching and not self._stop.is_set():
            with self._lock:
                if self._thread is None:  # a forked child: start its own watcher
                    self._start_watcher()
        return [self._master] if self._master else []

    def refresh(self) -> None:
        """Re-ask Sentinel now and then (throttled); never raises (the ``Router`` protocol)."""
        if time.monotonic() - self._last_refresh < _REFRESH_INTERVAL:
            return
        if not self._refresh_lock.acquire(blocking=False):
            return  # another thread is asking right now
        try:
            self._refresh_locked()
        except RedisError as exc:
            log.debug("cache_core: asking Sentinel for %r failed: %s", self.service, exc)
        finally:
            self._refresh_lock.release()

    def _refresh(self, *, force: bool = False) -> None:
        """Ask Sentinel for the primary; on a change, re-point the pool and recount replicas."""
        if not force and time.monotonic() - self._last_refresh < _REFRESH_INTERVAL:
            return
        with self._refresh_lock:
            self._refresh_locked()

    def _refresh_locked(self) -> None:
        self._last_refresh = time.monotonic()
        pool: Any = self.client.connection_pool
        host, port = pool.get_master_address()  # closes idle connections to an old primary
        name = f"{host}:{port}"
        if name == self._master:
            return
        # Count the new primary's replicas before any write is sent there unconfirmed.
        connected = self._connected_replicas(name)
        with self._lock:
            old, self._master = self._master, name
            if connected is not None:
                self._required = connected
        if old:
            self.switches += 1
            log.warning("cache_core: Sentinel switched %r from %s to %s", self.service, old, name)

    def _connected_replicas(self, name: str) -> int | None:
        """``ROLE`` of the server ``name``: its connected replicas (None: not that server)."""
        pool: Any = self.client.connection_pool
        conn = pool.get_connection()
        try:
            conn.send_command("ROLE")
            role = conn.read_response()
            if f"{conn.host}:{conn.port}" != name:
                return None  # the pool reached another server (a stale Sentinel answer)
        finally:
            pool.release(conn)
        return len(role[2]) if role and _text(role[0]) == "master" else 0

    def _recount(self) -> None:
        """Re-read the primary's connected replicas; lower ``required`` only on evidence."""
        master = self._master
        connected = self._connected_replicas(master)
        if connected is None:
            return
        with self._lock:
            if master != self._master:
                return
            if connected >= self._required:
                self._required = connected
                return
        # Sentinel's replica list describes the primary *it* names now: after a switch it is
        # the new primary's, and "a replica is down" says nothing about ``master``'s. Lower the
        # count only while Sentinel still names ``master`` (a write that reached a demoted
        # primary must never pass as confirmed).
        sentinel: Any = self.sentinel  # redis-py's Sentinel is untyped here
        host, port = sentinel.discover_master(self.service)
        if f"{host}:{port}" != master:
            return
        down = 0
        for replica in self.sentinel.sentinels[0].sentinel_slaves(self.service):
            if replica.get("is_sdown") or replica.get("is_odown"):
                down += 1
        with self._lock:
            if master == self._master and self._required - connected <= down:
                self._required = connected
        self._last_role = time.monotonic()

    # -- confirmed writes --------------------------------------------------------------------

    def write(self, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run the write ``fn``, then ``WAIT`` for the replicas on the connection it used.

        A single client method or script is pipelined with its ``WAIT`` (one round trip).
        Anything else may send any number of commands (a pipeline, several scripts): the pool
        hands this thread one pinned connection for the whole call (``PinningSentinelPool``),
        so the ``WAIT`` after it covers every write it made.
        """
        pool = self.client.connection_pool
        if not isinstance(pool, PinningSentinelPool):
            return fn(*args, **kwargs)
        with self._lock:
            master, need = self._master, self._required
        if isinstance(fn, Script) or getattr(fn, "__self__", None) is self.client:
            # One command (the usual set/delete): pipelined with its WAIT, one round trip.
            pipe: Any = self.client.pipeline(transaction=False)
            if isinstance(fn, Script):
                script: Any = fn
                script(*args, client=pipe, **kwargs)
            else:
                getattr(pipe, fn.__name__)(*args, **kwargs)
            if need:
                pipe.execute_command("WAIT", need, self.ack_ms)
            conn = pipe.connection = pool.get_connection()
            replies = pipe.execute()  # releases conn
            self._confirm(master, f"{conn.host}:{conn.port}", need, replies[-1] if need else 0)
            return replies[0]
        with pool.pinned() as conn:
            result = fn(*args, **kwargs)
            acked = 0
            if need:
                conn.send_command("WAIT", need, self.ack_ms)
                acked = conn.read_response()
            self._confirm(master, f"{conn.host}:{conn.port}", need, acked)
        return result

    def _confirm(self, master: str, where: str, need: int, acked: Any) -> None:
        """Raise ``ReplicaAckError`` unless the write reached ``master`` and ``need`` replicas."""
        if where != master:
            # The pool reached a server Sentinel no longer (or not yet) names: its replica
            # count is not ``need``, so nothing confirms this write.
            self.unconfirmed += 1
            raise ReplicaAckError(
                f"the write went to {where} while Sentinel names {master} as the primary"
            )
        if need and int(acked) < need:
            self._recount()
            if int(acked) < self._required:
                self.unconfirmed += 1
                raise ReplicaAckError(
                    f"{int(acked)} of {need} replicas confirmed the write on {master} within "
                    f"{self.ack_ms} ms; a failover may be under way"
                )

    # -- the watcher -------------------------------------------------------------------------

    def _watch(self) -> None:
        pubsub: Any = None
        while not self._stop.is_set():
            message: Any = None
            if pubsub is None:
                pubsub = self._subscribe()
            if pubsub is None:
                self._stop.wait(0.5)
            else:
                try:
                    message = pubsub.get_message(timeout=0.5)
                except Exception as exc:  # the sentinel went away: subscribe to another
                    log.debug("cache_core: sentinel subscription lost: %s", exc)
                    with contextlib.suppress(Exception):
                        pubsub.close()
                    pubsub = None
            try:
                if message and message.get("type") == "message":
                    self._on_event(_text(message["channel"]), _text(message["data"]))
                if time.monotonic() - self._last_role >= _ROLE_INTERVAL:
                    self._last_role = time.monotonic()
                    self._refresh(force=True)
                    self._recount()
            except Exception as exc:  # the primary is down: Sentinel will tell us
                log.debug("cache_core: sentinel watcher: %s", exc)
        if pubsub is not None:
            with contextlib.suppress(Exception):
                pubsub.close()

    def _subscribe(self) -> Any:
        for node in self.sentinel.sentinels:
            try:
                pubsub = node.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
                pubsub.subscribe("+switch-master", "+sdown", "-sdown")
                return pubsub
            except RedisError:
                continue
        return None

    def _on_event(self, channel: str, data: str) -> None:
        if channel == "+switch-master":
            if data.split(" ", 1)[0] == self.service:
                self._refresh(force=True)
        elif data.startswith("slave ") and f"@ {self.service} " in data:
            self._recount()

    def close(self) -> None:
        """Stop the watcher and close the connections to the sentinels."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        for node in self.sentinel.sentinels:
            with contextlib.suppress(Exception):
                node.close()
