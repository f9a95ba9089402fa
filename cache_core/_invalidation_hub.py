"""What both invalidation listeners share: their sinks, their thread, and how they announce.

A listener (``InvalidationListener`` for one server, ``ClusterInvalidationListener`` for a
cluster) holds its sinks weakly, runs one daemon thread while it has any, and tells them two
things, in the listener thread, in order: ``invalidation_state(connected)`` and
``invalidate(keys)`` (``None``: everything). A new sink learns the state at once; a state
change is announced to every sink under one lock, so no sink hears "connected" and then, late,
the "disconnected" that preceded it.
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Any, Protocol

from ._fork import after_fork_in_child

__all__ = ["InvalidationSink", "SinkHub", "log"]

log = logging.getLogger("cache_core.invalidation")


class InvalidationSink(Protocol):
    def invalidation_state(self, connected: bool) -> None: ...

    def invalidate(self, keys: list[str] | None) -> None: ...


class SinkHub:
    """The sinks, the thread and the announced state of one listener.

    A subclass names its thread (``thread_name``) and runs in ``_run(stop)`` until ``stop`` is
    set or no sink is left.
    """

    thread_name = "cache_core-invalidation"

    def __init__(self, prefix: str, health_interval: float) -> None:
        self.prefix = prefix
        self.health_interval = float(health_interval)
        self._sinks: weakref.WeakSet[Any] = weakref.WeakSet()
        self._lock = threading.Lock()
        # Held while a state change is announced, and while a new sink learns the state.
        self._announcing = threading.Lock()
        self._up = threading.Event()  # set once the sinks were told "connected"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._connected = False
        after_fork_in_child(self._reset_after_fork)  # a subclass registers its own reset too

    def __repr__(self) -> str:
        state = "connected" if self._connected else "disconnected"
        return f"<{type(self).__name__} prefix={self.prefix!r} {state}>"

    @property
    def connected(self) -> bool:
        """True while every write under the prefix is heard."""
        return self._connected

    def _reset_after_fork(self) -> None:
        # The thread is gone; whatever it held belongs to the parent.
        self._lock = threading.Lock()
        self._announcing = threading.Lock()
        self._up = threading.Event()
        self._stop = threading.Event()
        self._thread = None
        self._connected = False

    def add(self, sink: InvalidationSink) -> None:
        """Subscribe ``sink`` (held weakly) and start the listener thread if it is not running."""
        with self._announcing:
            with self._lock:
                self._sinks.add(sink)
                connected = self._connected
            sink.invalidation_state(connected)
        self.ensure_running()

    def wait_connected(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds until the sinks were told "connected"."""
        return self._up.wait(timeout)

    def ensure_running(self) -> None:
        """Start the thread if there are sinks and none runs (first use, or after a fork)."""
        with self._lock:
            if (self._thread is not None and self._thread.is_alive()) or not self._sinks:
                return
            self._stop = threading.Event()
            self._thread = threading.Thread(
                target=self._run, args=(self._stop,), name=f"{self.thread_name}-{self.prefix}",
                daemon=True,
            )  # fmt: skip
            self._thread.start()

    def _run(self, stop: threading.Event) -> None:
        raise NotImplementedError

    def _has_sinks(self) -> bool:
        with self._lock:
            return bool(self._sinks)

    def _announce_state(self, connected: bool) -> None:
        with self._announcing:
            with self._lock:
                if self._connected == connected:
                    return
                self._connected = connected
                sinks = list(self._sinks)
            if not connected:
                self._up.clear()
            for sink in sinks:
                try:
                    sink.invalidation_state(connected)
                except Exception:
                    log.exception("cache_core: invalidation sink %r failed", sink)
            if connected:
                self._up.set()

    def _dispatch(self, keys: list[str] | None) -> None:
        with self._lock:
            sinks = list(self._sinks)
        for sink in sinks:
            try:
                sink.invalidate(keys)
            except Exception:
                log.exception("cache_core: invalidation sink %r failed", sink)
