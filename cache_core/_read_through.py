"""The read-through policy: what ``get_or_set`` does once the request's first read is in.

Where the protection patterns meet (the options are ``ReadThroughOptions``):

* singleflight (always): one loader per key at a time in this process; waiters share the result
  and the value is stored before they are released;
* ``distributed_lock``: one loader per key across processes, through the lease locks the byte
  cache lends (``LeaseLockSource``: injected, never found by class);
* ``early_refresh=β``: XFetch (``_xfetch``) recomputes hot keys shortly before they expire;
* ``stale_ttl``: stale-while-revalidate; ``stale_if_error``: keep serving the last value when a
  refresh fails;
* fences (``_read_store``): a loaded value is stored only if no write reached the key since
  the load began, so a write never loses to a slow load.

Refreshes (early or stale) run in the calling thread of the one reader that wins the
singleflight (and the lease, when enabled); every other reader gets the current value at once,
never waiting. A backend failure never fails the read-through: it answers from the loader, still
inside the singleflight. Values go through the ``EntryCodec``; the counts go to the
``CacheMetrics`` handle, each request once at the level that answered.

A loader may end its flight with ``NoValue`` (``errors``): that is not a load error, and the
entry it carries (``ProtectedCache``'s tombstone) is stored like a value. ``_read_absent`` builds
negative caching on that hook.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable
from typing import Any, Final, NamedTuple, TypeVar

from ._entry_codec import EntryCodec
from ._envelope import Entry
from ._lease_lock import LeaseLock
from ._metrics import CacheMetrics, LevelCounters
from ._options import ReadThroughOptions
from ._protocols import Cache, LeaseLockSource, LevelledCache
from ._read_lease import BUSY, LeaseGate
from ._read_store import FencedStore
from ._singleflight import Singleflight
from ._stats import Counter
from ._validate import TTL, ttl_seconds
from ._xfetch import should_refresh_early
from .errors import BackendError, NoValue, SerializationError

__all__ = ["ReadThrough"]

T = TypeVar("T")
log = logging.getLogger("cache_core")

#: How often a caller that joined an overtaken flight loads again before taking its value.
_OVERTAKEN_RETRIES: Final = 2
_WARNED_MAX: Final = 1000  # distinct encode failures logged per cache, then silence


class _Filled(NamedTuple):
    """What one flight produced: the value, its encoding, who ran it, and whether it counts.

    ``current`` is False when the fenced store was refused: a write reached the key after the
    load began, so the value may predate it. The thread that ran the loader still returns it
    (its call overlapped the write); callers that merely joined the flight load again.
    """

    value: Any
    encoded: bytes | None
    runner: int
    #: ``ReadThrough.mark`` drawn just before the value was read or stored (see ``load``)
    as_of: int
    current: bool = True


class ReadThrough:
    """The read-through of one ``TypedCache``: its singleflight, its reads, its stores.

    ``cache``: the byte cache (its levels read one at a time when it is a ``LevelledCache``).
    ``lock_source``: where lease locks come from (``distributed_lock=True``); None when the
    cache lends none. ``shared``: whether ``cache`` is a shared store (its hits count as L2).
    """

    def __init__(
        self,
        cache: Cache,
        codec: EntryCodec,
        metrics: CacheMetrics,
        *,
        lock_source: LeaseLockSource | None,
        shared: bool,
    ) -> None:
        self.codec = codec
        self.metrics = metrics
        self.flight = Singleflight()
        self.refreshes = Counter()
        self.encode_errors = Counter()
        #: bumped after every store by a flight or a write of this cache; see ``fill``
        self.stores = 0
        self._marks = itertools.count(1)
        self._cache = cache
        self._fences = FencedStore(cache, metrics)
        self._leases = LeaseGate(lock_source, codec, metrics, self.reread)
        self._warned: set[str] = set()
        self.read_l1: Callable[[str], bytes | None] | None
        if isinstance(cache, LevelledCache):
            self.read_l1 = cache.read_l1
            self._first_read: Callable[[str], bytes | None] = cache.read_l2
            self._peek: Callable[[str], bytes | None] = cache.peek
            self.l1 = metrics.levels["l1"]
            self.l2 = metrics.levels["l2"]
        else:
            self.read_l1 = None
            get: Callable[[str, None], bytes | None] = cache.get
            self._first_read = self._peek = lambda key: get(key, None)
            self.l1 = self.l2 = metrics.levels["l2" if shared else "l1"]

    def mark(self) -> int:
        """A number from one increasing sequence: which of two moments came first."""
        return next(self._marks)

    # -- configuration -----------------------------------------------------------------------

    def check(self, opts: ReadThroughOptions) -> ReadThroughOptions:
        """``opts`` if this cache can honour them (a lease lock needs a lock source)."""
        if opts.distributed_lock and not self._leases.available():
            raise ValueError(
                "distributed_lock=True needs a byte cache that lends lease locks (a RedisCache, "
                f"directly or as the L2 of a MultiLevelCache); {type(self._cache).__name__} "
                "lends none"
            )
        return opts

    def base_ttl(self, ttl: TTL | None) -> float | None:
        """``ttl`` in seconds, None selecting the byte cache's ``default_ttl``."""
        default = getattr(self._cache, "default_ttl", None)
        if not isinstance(default, float | int) or isinstance(default, bool):
            default = None
        return ttl_seconds(ttl, default)

    # -- reads -------------------------------------------------------------------------------

    def lookup(self, key: str, *, catch: bool = True) -> tuple[bytes | None, LevelCounters]:
        """A request's read: the bytes (None: miss) and the counters of the level that answered.

        ``catch``: a backend failure reads as a miss (read-through), else it propagates.
        """
        read_l1 = self.read_l1
        if read_l1 is not None:
            data = read_l1(key)
            if data is not None:
                return data, self.l1
        if catch:
            return self.read(key), self.l2
        return self._first_read(key), self.l2

    def read(self, key: str) -> bytes | None:
        """A request's read below L1 (of the whole cache if it has no levels): a backend failure
        is a miss, never the caller's error."""
        try:
            return self._first_read(key)
        except BackendError as exc:
            self.metrics.backend_error(exc)
            log.debug("cache_core: read of %r failed, loading instead: %s", key, exc)
            return None

    def reread(self, key: str) -> bytes | None:
        """A re-read inside a request already counted (double-checks): not a request itself."""
        try:
            return self._peek(key)
        except BackendError as exc:
            self.metrics.backend_error(exc)
            log.debug("cache_core: re-read of %r failed, loading instead: %s", key, exc)
            return None

    def undecodable(self, key: str, exc: Exception) -> None:
        self.metrics.decode_errors.incr()
        log.warning("cache_core: undecodable entry %r will be reloaded: %s", key, exc)

    # -- the read-through --------------------------------------------------------------------

    def after_read(
        self,
        key: str,
        fn: Callable[[], T],
        ttl: TTL | None,
        opts: ReadThroughOptions,
        seen: int | None,
        data: bytes | None,
        rq: LevelCounters,
    ) -> T:
        """The rest of a read-through once the request's read returned ``data`` (counted by
        ``rq``, the level that answered). ``seen``: ``stores`` read before that read (None:
        unknown). Plain entries are decoded here too, though the front's hit path usually
        answers them first."""
        codec = self.codec
        if data is not None:
            try:
                if data[:4] == codec.prefix:
                    value: T = codec.loads(data[4:])
                    rq.hit()
                    return value
                entry = codec.entry(data)
                value = codec.loads(entry.payload)
            except SerializationError as exc:
                self.undecodable(key, exc)
            else:
                return self._hit_with_meta(key, fn, ttl, opts, entry, value, rq)
        rq.miss()
        return self.load(key, fn, ttl, opts, seen)

    def load(
        self,
        key: str,
        fn: Callable[[], T],
        ttl: TTL | None,
        opts: ReadThroughOptions,
        seen: int | None = None,
    ) -> T:
        """The blocking miss path: one loader per key, everyone gets (a copy of) its value.

        ``seen``: ``stores`` read before the caller's miss; None if unknown.

        A caller that joins a flight takes its value only if the flight read or stored it after
        the caller's miss: a value stored *before* the miss and gone at the miss was removed by a
        write in between, which the caller may already have seen return (it loads again).
        """
        me = threading.get_ident()
        start = self.mark()  # after the caller's miss
        overtaken = 0
        while True:

            def fill(seen: int | None = seen) -> _Filled:
                return self._fill(key, fn, ttl, opts, blocking=True, seen=seen)

            filled, _ = self.flight.do(key, fill)
            seen = None  # a retry cannot vouch for its earlier read
            if filled.value is BUSY:
                # We joined a non-blocking refresh that gave way to another process's lease:
                # it has no value for us. Its flight is over; the next do() is our own fill.
                continue
            if filled.runner == me or overtaken >= _OVERTAKEN_RETRIES:
                break
            if filled.current and filled.as_of > start:
                break
            # We joined a flight whose store a write refused, or whose value was there before
            # our miss: its value may predate a write that returned before we called. Load
            # again (bounded); the next flight re-reads first.
            overtaken += 1
        if filled.runner != me and filled.encoded is not None:
            # Waiters get their own decoded copy: no mutable object is shared between requests.
            decoded: T = self.codec.decode(filled.encoded)
            return decoded
        loaded: T = filled.value
        return loaded

    def _hit_with_meta(
        self,
        key: str,
        fn: Callable[[], T],
        ttl: TTL | None,
        opts: ReadThroughOptions,
        entry: Entry,
        value: T,
        rq: LevelCounters,
    ) -> T:
        expires_at = entry.expires_at
        if expires_at is not None:
            now = self.codec.clock()
            if now >= expires_at:
                if opts.stale_ttl is not None:
                    rq.stale()
                    return self._revalidate(key, fn, ttl, opts, value, stale=True)
                rq.miss()
                return self.load(key, fn, ttl, opts)
            beta = opts.early_refresh
            if beta is not None and should_refresh_early(
                now, expires_at, entry.delta or 0.0, beta, self.codec.random
            ):
                rq.hit()
                self.metrics.early_refreshes.incr()
                return self._revalidate(key, fn, ttl, opts, value, stale=False)
        rq.hit()
        return value

    def _revalidate(
        self,
        key: str,
        fn: Callable[[], T],
        ttl: TTL | None,
        opts: ReadThroughOptions,
        current: T,
        *,
        stale: bool,
    ) -> T:
        """Refresh without making anyone wait: whoever cannot refresh gets ``current``."""
        try:
            result = self.flight.try_do(
                key, lambda: self._fill(key, fn, ttl, opts, blocking=False, stale=stale)
            )
        except NoValue:
            raise  # the loader says the key does not exist (ProtectedCache): not a failure
        except Exception as exc:
            if not stale:
                # An early refresh failed while the current value is still fresh: serve it.
                log.warning("cache_core: early refresh of %r failed: %s", key, exc)
                return current
            if opts.stale_if_error:
                self.metrics.stale_errors_served.incr()
                log.warning("cache_core: refresh of %r failed, serving stale value: %s", key, exc)
                return current
            raise
        if result is None or result[0].value is BUSY:
            return current
        self.refreshes.incr()
        refreshed: T = result[0].value
        return refreshed

    def _fill(
        self,
        key: str,
        fn: Callable[[], T],
        ttl: TTL | None,
        opts: ReadThroughOptions,
        *,
        blocking: bool,
        stale: bool = False,
        seen: int | None = None,
    ) -> _Filled:
        """Load and store ``key`` (the body of a singleflight call).

        ``blocking``: a miss; wait for another process's load if it holds the lease.
        Otherwise a refresh: give up (``BUSY``) when the lease is taken. ``stale``: the entry
        we saw was past its TTL, so a fresh one found after taking the lease is someone
        else's refresh and is returned instead of loading again.
        """
        me = threading.get_ident()
        if blocking and seen != self.stores:
            # A caller that missed just before the previous flight stored its value finds it
            # here instead of running the loader a second time. If no flight of this cache
            # has stored anything since our miss was read, that read is still good: skip the
            # second round trip (it delays the load in a stampede).
            as_of = self.mark()
            found = self.codec.fresh(self.reread(key))
            if found is not None:
                return _Filled(found[0], found[1], me, as_of)
        lock: LeaseLock | None = None
        if opts.distributed_lock:
            as_of = self.mark()
            lock, found = self._leases.take(key, opts, blocking=blocking, stale=stale)
            if lock is BUSY:
                return _Filled(BUSY, None, me, as_of)
            if found is not None:
                return _Filled(found[0], found[1], me, as_of)
        try:
            return self._run_loader(key, fn, ttl, opts, me, self._fences.take(key))
        finally:
            if lock is not None:
                self._leases.release(key, lock)

    # -- loading and storing -----------------------------------------------------------------

    def _run_loader(
        self,
        key: str,
        fn: Callable[[], T],
        ttl: TTL | None,
        opts: ReadThroughOptions,
        me: int,
        token: Any,
    ) -> _Filled:
        codec = self.codec
        start = codec.clock()
        try:
            value = fn()
        except NoValue as exc:
            # A loader that found nothing (ProtectedCache): not an error. It may hand us an
            # entry (a tombstone) to store, fenced like a value.
            if exc.entry is not None:
                self._store(key, exc.entry[0], exc.entry[1], token)
            raise
        except BaseException:
            self.metrics.load_errors.incr()
            raise
        as_of = self.mark()  # before the store: see load
        delta = max(codec.clock() - start, 0.0)  # XFetch's Δ, on the injectable clock
        self.metrics.observe_load(delta)
        logical, physical = codec.ttls(self.base_ttl(ttl), opts)
        try:
            encoded = codec.encode(key, value, opts, logical, delta)
        except SerializationError as exc:
            # Nothing unreadable is stored: the caller (and every waiter) gets the loaded value,
            # the failure is counted and logged once per distinct cause.
            self.encode_errors.incr()
            self._warn_unstorable(exc)
            self.stores += 1
            return _Filled(value, None, me, as_of)
        return _Filled(value, encoded, me, as_of, self._store(key, encoded, physical, token))

    def _store(self, key: str, data: bytes, ttl: float | None, token: Any) -> bool:
        """``FencedStore.store``, then ``stores`` moves on: callers compare it with what they
        read before their miss (any change will do)."""
        try:
            return self._fences.store(key, data, ttl, token)
        finally:
            self.stores += 1

    def _warn_unstorable(self, exc: SerializationError) -> None:
        cause = str(exc.__cause__ or exc)
        if cause in self._warned or len(self._warned) >= _WARNED_MAX:
            log.debug("cache_core: value not cached: %s", exc)
            return
        self._warned.add(cause)
        log.warning("cache_core: value served but not cached (it cannot be stored): %s", exc)
