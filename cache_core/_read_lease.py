"""The cross-process half of a read-through miss: a key's lease lock, taken or followed.

With ``distributed_lock=True`` one process loads a missing key while the others wait for its
value (``_lease_lock``: woken by BLPOP, bounded by the lease). The locks come from the byte
cache (``LeaseLockSource``); a cache that lends none cannot take ``distributed_lock=True``.
A backend failure here never fails the request: the load goes ahead without the lease.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Final

from ._entry_codec import EntryCodec
from ._lease_lock import LeaseLock, LeaseLockFactory
from ._metrics import CacheMetrics
from ._options import ReadThroughOptions
from ._protocols import LeaseLockSource
from .errors import BackendError

__all__ = ["BUSY", "LeaseGate"]

log = logging.getLogger("cache_core")

#: "Another process holds the lease" (a refresh gives way and keeps the current value).
BUSY: Final[Any] = object()


class LeaseGate:
    """The lease locks of one read-through (built on first use: a cache whose reads never
    take a lease registers no lock scripts)."""

    def __init__(
        self,
        source: LeaseLockSource | None,
        codec: EntryCodec,
        metrics: CacheMetrics,
        reread: Callable[[str], bytes | None],
    ) -> None:
        self._source = source
        self._locks: LeaseLockFactory | None = None
        self._codec = codec
        self._metrics = metrics
        self._reread = reread

    def available(self) -> bool:
        """Whether leases can be taken at all (the byte cache lends them)."""
        return self._lease_locks() is not None

    def _lease_locks(self) -> LeaseLockFactory | None:
        locks = self._locks
        if locks is None and self._source is not None:
            locks = self._locks = self._source.lease_locks()
        return locks

    def _fresh(self, key: str) -> tuple[Any, bytes] | None:
        return self._codec.fresh(self._reread(key))

    def take(
        self, key: str, opts: ReadThroughOptions, *, blocking: bool, stale: bool
    ) -> tuple[Any, tuple[Any, bytes] | None]:
        """Take the key's lease before loading: (the lock we hold or None, a value found).

        The lock is ``BUSY`` for a refresh that finds the lease taken (it gives way). A miss
        follows the holder instead (``_follow``). Without the lease (none could be had, or the
        backend failed) the load goes ahead unlocked.
        """
        try:
            locks = self._lease_locks()
            if locks is None:
                return None, None
            lock = locks.lock(key, opts.lock_timeout)
            if lock.try_acquire():
                holding = True
            elif not blocking:
                return BUSY, None
            else:
                found, holding = self._follow(key, lock, opts)
                if found is not None:
                    return None, found
            if holding and (blocking or stale):
                # Double-check under the lock: the previous holder may have stored the
                # value between our read and our acquire.
                found = self._fresh(key)
                if found is not None:
                    self.release(key, lock)
                    return None, found
            return (lock if holding else None), None
        except BackendError as exc:
            self._metrics.backend_error(exc)
            log.debug("cache_core: lease lock for %r unavailable, loading: %s", key, exc)
            return None, None

    def _follow(
        self, key: str, lock: LeaseLock, opts: ReadThroughOptions
    ) -> tuple[tuple[Any, bytes] | None, bool]:
        """Wait for another process's load: (value found, or None + whether we now hold the lock).

        Woken by the holder's release; bounded by the lease, after which the lock has expired
        (the holder died or overran) and this caller takes it over, or loads without it.
        """
        self._metrics.lock_waits.incr()
        deadline = time.monotonic() + opts.lock_timeout
        while True:
            found = self._fresh(key)
            if found is not None:
                return found, False
            if lock.try_acquire():
                self._metrics.lock_takeovers.incr()
                return None, True
            left = deadline - time.monotonic()
            if left <= 0:
                log.warning(
                    "cache_core: waited %.1fs for %r, loading it here", opts.lock_timeout, key
                )
                return None, False
            lock.wait(left)

    def release(self, key: str, lock: LeaseLock) -> None:
        """Release the lease; a failure only costs followers the wait until it expires."""
        try:
            lock.release()
        except BackendError as exc:
            self._metrics.backend_error(exc)
            log.debug("cache_core: lease release for %r failed: %s", key, exc)
