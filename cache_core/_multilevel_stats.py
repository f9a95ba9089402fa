"""What a ``MultiLevelCache`` counts: where each read was answered (L1, L2, or a miss)."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from ._metrics import CacheMetrics, StatsView, derive

__all__ = ["MultiLevelStats", "count", "default_name", "multilevel_stats"]


class _MultiLevelFields(NamedTuple):
    l1_hits: int
    l2_hits: int
    misses: int


class MultiLevelStats(_MultiLevelFields, StatsView):
    """Where reads were answered (``get`` and ``mget``, per key; one per request: the re-reads
    of a layer above, ``peek``, are not counted), plus the common ``CacheStats`` fields."""


def multilevel_stats(metrics: CacheMetrics) -> MultiLevelStats:
    """The stats of a ``MultiLevelCache`` from its metrics handle, now."""
    snap = metrics.snapshot()
    return derive(
        snap,
        MultiLevelStats(
            snap.requests[("l1", "hit")],
            snap.requests[("l2", "hit")],
            snap.requests[("l2", "miss")],
        ),
    )


def count(incr: Callable[[], object], n: int) -> None:
    """Call a counter's ``incr`` ``n`` times (a batch read counts per key)."""
    for _ in range(n):
        incr()


def default_name(l2: object) -> str:
    """A cache's default metrics name: the prefix of the Redis cache it stores in, if any."""
    prefix = getattr(l2, "prefix", None)
    return prefix if isinstance(prefix, str) and prefix else "default"
