"""ProtectedCache: a penetration guard (a bloom filter of the keys that may exist + negative cache).

Requests for ids that do not exist (a scan, a bug, an attack) miss the cache every time and would
each reach the database. Two defences, in this order:

1. the bloom filter holds every key that **may exist** (filled from the database's ids, by the
   warmer, by ``set``); a key it does not hold is answered ``None`` at once, without the loader
   and without a cache round trip (the original design did the opposite: it sent exactly those
   keys to the database);
2. a key that passes the filter but whose loader returns ``None`` (a false positive, or a row
   deleted since) is negative-cached for ``null_ttl``: a **tombstone** entry, the typed layer's
   envelope with no payload and the tombstone flag (``CC 01 02 <serializer id>``, 4 bytes),
   written through the TypedCache's byte cache. A cached ``None`` *value* is a normal envelope
   holding ``null``, so the two never mix; ``TypedCache.get`` raises SerializationError on a
   tombstone rather than pretend it is a value.

An exception from the loader is an outage, not an answer: it propagates and nothing is cached.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Generic, NamedTuple, TypeVar

from ._metrics import CacheMetrics, StatsView, derive
from ._protocols import BloomTarget, check_implements
from ._read_absent import Observer
from ._stats import Counter
from ._typed import TypedCache
from ._validate import TTL, check_callable, check_key, ttl_seconds
from .errors import BackendError

__all__ = ["ProtectedCache", "ProtectedCacheStats"]

T = TypeVar("T")
log = logging.getLogger("cache_core")


class _ProtectedFields(NamedTuple):
    """Counters since the guard was built (each exact under threads), plus ``CacheStats``.

    The ``CacheStats`` fields are those of the TypedCache's handle, which the guard shares:
    its ``requests`` hold the guard's rejections and tombstones beside the typed layer's results,
    one per request, and ``bloom`` the filter's fill and estimated false-positive rate.
    """

    rejected: int
    """Requests answered None because the bloom filter does not hold the key."""
    negative_hits: int
    """Requests answered None from a tombstone (no loader call)."""
    hits: int
    """Requests answered with a cached value by the first read."""
    misses: int
    """Requests that passed the filter and found neither value nor tombstone."""
    loads: int
    """Loader calls (including the ones that raised or returned None)."""
    negative_stores: int
    """Loader calls that returned None, each one stored a tombstone."""
    filter_errors: int
    """Requests let through because the bloom filter could not be asked (fail-open)."""


class ProtectedCacheStats(_ProtectedFields, StatsView):
    """The guard's own counters (the tuple), and the shared handle's ``CacheStats``."""


class ProtectedCache(Generic[T]):
    """A TypedCache behind a penetration guard: bloom filter first, then negative caching.

    ``bloom`` holds the keys that may exist: a local ``BloomFilter``, a ``BloomSnapshot``, a
    ``RedisBloomFilter`` or anything with ``add``, ``update``, ``in`` and ``contains_many``.
    ``null_ttl`` (300 s): how long "does not exist" is remembered.

    ``get_or_set`` runs the loader inside the TypedCache's singleflight (with its lease lock,
    TTL jitter and other options), so concurrent callers for one missing key cost one loader
    call, and the tombstone of a ``None`` result is stored by that same flight. Note for
    ``TypedCache.stats()``: a load that found nothing is counted there as a ``load_error``.
    """

    __slots__ = (
        "_bloom",
        "_contains",
        "_filter_errors",
        "_hits",
        "_loads",
        "_misses",
        "_negative_hits",
        "_negative_stores",
        "_none",
        "_null_ttl",
        "_observe",
        "_rejected",
        "_typed",
    )

    def __init__(self, cache: TypedCache[T], bloom: BloomTarget, *, null_ttl: TTL = 300) -> None:
        if not isinstance(cache, TypedCache):
            raise TypeError(f"cache must be a TypedCache, not {type(cache).__name__}")
        check_implements(
            bloom, BloomTarget, "bloom", "a bloom filter (add, update, in, contains_many)"
        )
        seconds = ttl_seconds(null_ttl, None, "null_ttl")
        if seconds is None:
            raise TypeError("null_ttl must be a number of seconds or a timedelta, not None")
        self._typed = cache
        self._bloom = bloom
        self._contains = bloom.__contains__
        self._null_ttl = seconds
        self._rejected = Counter()
        self._negative_hits = Counter()
        self._hits = Counter()
        self._misses = Counter()
        self._loads = Counter()
        self._negative_stores = Counter()
        self._filter_errors = Counter()
        counters = {
            "hit": self._hits.incr,
            "tombstone": self._negative_hits.incr,
            "late_tombstone": self._negative_hits.incr,
            "miss": self._misses.incr,
            "load": self._loads.incr,
            "absent": self._negative_stores.incr,
        }
        self._observe: Observer = lambda event: counters[event]()
        # metrics: the guard reports through its TypedCache's handle (one name, one request
        # count), adding the rejected / tombstone results and the bloom filter's fill.
        cache.metrics.watch_bloom(bloom)
        self._none = cache.metrics.levels["none"]

    @property
    def cache(self) -> TypedCache[T]:
        return self._typed

    @property
    def bloom(self) -> BloomTarget:
        return self._bloom

    @property
    def null_ttl(self) -> float:
        return self._null_ttl

    @property
    def metrics(self) -> CacheMetrics:
        """The metrics handle (the TypedCache's, shared)."""
        return self._typed.metrics

    def stats(self) -> ProtectedCacheStats:
        return derive(
            self._typed.metrics.snapshot(),
            ProtectedCacheStats(
                self._rejected.value,
                self._negative_hits.value,
                self._hits.value,
                self._misses.value,
                self._loads.value,
                self._negative_stores.value,
                self._filter_errors.value,
            ),
        )

    def __repr__(self) -> str:
        return f"ProtectedCache({self._typed!r}, bloom={self._bloom!r}, null_ttl={self._null_ttl})"

    def is_tombstone(self, data: bytes | None) -> bool:
        """True if ``data`` (raw bytes of the byte cache) is a negative-cache entry."""
        return self._typed.codec.is_tombstone(data)

    def get_or_set(self, key: str, fn: Callable[[], T | None], ttl: TTL | None = None) -> T | None:
        """The value of ``key``, loading it with ``fn`` on a miss; None if it does not exist.

        Not in the bloom filter -> None, ``fn`` not called. Tombstone -> None. Cached value ->
        that value. Otherwise ``fn()`` (once per key at a time): a value is stored for ``ttl``;
        None stores a tombstone for ``null_ttl`` and returns None; an exception propagates and
        stores nothing.
        """
        if type(key) is not str or not key:
            check_key(key)
        if not callable(fn):
            check_callable(fn, "fn")
        try:
            present = self._contains(key)
        except (BackendError, RuntimeError) as exc:
            # A filter we cannot ask (Redis down, a snapshot never loaded) must not fail a
            # request the loader can answer: let it through, as if the key may exist.
            self._filter_errors.incr()
            log.debug("cache_core: bloom filter unavailable for %r, not rejecting: %s", key, exc)
            present = True
        if not present:
            self._rejected.incr()
            self._none.rejected()
            return None
        return self._typed.get_or_absent(
            key, fn, ttl, null_ttl=self._null_ttl, observe=self._observe
        )

    def set(self, key: str, value: T, ttl: TTL | None = None) -> None:
        """Store ``value`` and add ``key`` to the bloom filter (first, so no reader is turned
        away between the two), replacing any tombstone."""
        check_key(key)
        self._bloom.add(key)
        self._typed.set(key, value, ttl)

    def delete(self, key: str) -> bool:
        """Remove the cached value or tombstone. The key stays in the bloom filter (a bloom
        filter cannot remove); the next read reloads it and, if gone, negative-caches it."""
        return self._typed.delete(key)
