"""Fork safety: what a child process must not inherit from the parent that forked it.

``os.fork()`` copies memory but keeps only the forking thread. Whatever another thread was in
the middle of is frozen in the child: a lock it held stays held forever, a singleflight call it
led never finishes, a listener thread is gone while its state still says "connected", and an
L1 keeps values whose invalidations the child will never receive. Objects that hold such state
register a reset here; one ``os.register_at_fork(after_in_child=...)`` hook runs the resets in
the child, in registration order (a cache registers after the caches it wraps, so an L1 has a
working lock again by the time its MultiLevelCache clears it), before the child runs any code.

Resets must only drop state, never talk to a server or close a socket the parent still uses:
``socket.shutdown`` in the child would cut the parent's connection too. redis-py connection
pools check the pid themselves and open new connections in the child.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["after_fork_in_child"]

log = logging.getLogger("cache_core")

_lock = threading.Lock()
_resets: list[weakref.WeakMethod[Callable[[], None]]] = []
_added_since_prune = 0


def after_fork_in_child(reset: Callable[[], Any]) -> None:
    """Run the bound method ``reset`` in every child forked from now on, while its object lives.

    Held weakly: registering does not keep the object alive.
    """
    global _added_since_prune
    ref: weakref.WeakMethod[Callable[[], None]] = weakref.WeakMethod(reset)
    with _lock:
        _resets.append(ref)
        _added_since_prune += 1
        if _added_since_prune >= 256:
            _resets[:] = [r for r in _resets if r() is not None]
            _added_since_prune = 0


def _run_resets() -> None:
    global _lock
    _lock = threading.Lock()  # another thread may have held it at the fork
    for ref in list(_resets):
        reset = ref()
        if reset is None:
            continue
        try:
            reset()
        except Exception:  # one broken reset must not leave the others undone
            log.exception("cache_core: reset after fork failed in %r", reset)
    _resets[:] = [r for r in _resets if r() is not None]


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_run_resets)
