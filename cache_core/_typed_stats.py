"""TypedCache's metrics: its handle (named, covering the byte cache's own) and its stats."""

from __future__ import annotations

from typing import NamedTuple

from ._metrics import CacheMetrics, CacheStats, StatsView, derive
from ._protocols import Cache

__all__ = ["TypedCacheStats", "cover", "metrics_for", "typed_stats"]


class _TypedCacheFields(NamedTuple):
    hits: int
    misses: int
    loads: int
    load_errors: int
    backend_errors: int
    decode_errors: int
    refreshes: int
    stale_hits: int
    stale_errors_served: int
    lock_waits: int
    encode_errors: int = 0


class TypedCacheStats(_TypedCacheFields, StatsView):
    """Counters since the cache was built (each exact under threads), plus ``CacheStats``.

    One request counts once: ``hits + misses + stale_hits`` is the number of ``get`` and
    ``get_or_set`` calls (re-reads inside a load are not requests).
    """


def metrics_for(cache: Cache, name: str | None) -> CacheMetrics:
    """The typed layer's metrics handle, named ``name``, else after the byte cache's handle or
    its prefix."""
    inner = getattr(cache, "metrics", None)
    if name is None and isinstance(inner, CacheMetrics):
        name = inner.name
    if name is None:
        prefix = getattr(cache, "prefix", None)
        name = prefix if isinstance(prefix, str) and prefix else None
    return CacheMetrics(name or "default", "typed")


def cover(cache: Cache) -> None:
    """A byte cache that counts its own requests (a MultiLevelCache) is *covered* by the typed
    layer over it: each request is counted once, by the typed layer, at the level that
    answered it. Called once the typed layer is built (a failed build leaves it uncovered)."""
    inner = getattr(cache, "metrics", None)
    if isinstance(inner, CacheMetrics):
        inner.cover()


def typed_stats(metrics: CacheMetrics, refreshes: int, encode_errors: int) -> TypedCacheStats:
    """A TypedCache's stats: its handle's snapshot, read as the typed layer's counters."""
    snap: CacheStats = metrics.snapshot(bloom=False)  # a guard's stats() reports its filter
    return derive(
        snap,
        TypedCacheStats(
            hits=snap.count_requests(result="hit"),
            misses=snap.count_requests(result="miss"),
            loads=snap.loads_total,
            load_errors=snap.load_errors_total,
            backend_errors=sum(snap.backend_errors_by_kind.values()),
            decode_errors=snap.decode_errors_total,
            refreshes=refreshes,
            stale_hits=snap.count_requests(result="stale"),
            stale_errors_served=snap.stale_errors_served_total,
            lock_waits=snap.lock_waits_total,
            encode_errors=encode_errors,
        ),
    )
