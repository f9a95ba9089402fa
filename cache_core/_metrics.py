"""One metrics model for every cache object: named handles in one process-wide registry.

Every cache object (``TypedCache``, ``MultiLevelCache``, ``ProtectedCache``, ``@memoize``)
owns a ``CacheMetrics`` handle under a ``name`` and reports through it; ``REGISTRY`` finds every
live handle (and every ``CircuitBreaker``) for the exporters (``cache_core.contrib.prometheus``,
``cache_core.contrib.otel``), which read it at collection time. Nothing here imports them.

What is counted, per handle (``CacheStats`` is the one snapshot shape)::

    requests[(level, result)]   one per user request, one result: level l1 / l2 / none,
                                result hit / miss / stale / rejected / tombstone
    loads, load_errors          loader calls that returned / raised
    load_seconds                histogram of successful loads (LOAD_BUCKETS, seconds)
    early_refreshes             XFetch decided to refresh a fresh entry
    lock_waits, lock_takeovers  waits for another process's lease; waits that ended with
                                this caller taking the lease (holder gone or lease expired)
    backend_errors[kind]        timeout / connection / circuit_open / other
    decode_errors, stale_errors_served
    invalidations, l1_flushes   keys the L1 invalidation listener dropped from L1, and whole-L1
                                flushes (FLUSHDB heard, listener back after an outage)

Counting costs what ``_stats.Counter`` costs: one C-level ``next()`` on an ``itertools.count``
per event, exact under threads, no lock and no allocation. The request counters are bound once
(``Counter.bound``) so a hit is a single C call. Only the load histogram takes a lock: it is
observed once per loader call (milliseconds of user code), never on a hit.

Layers: a layer that counts the user's requests itself over a layer that would count them
again (``TypedCache`` over ``MultiLevelCache``) calls ``cover()`` on the inner handle: its
counts stay in its ``stats()`` but exporters skip its requests, so nothing is counted twice.
"""

from __future__ import annotations

import bisect
import itertools
import math
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from ._fork import after_fork_in_child
from ._stats import Counter
from .errors import CircuitOpenError

__all__ = [
    "LEVELS",
    "LOAD_BUCKETS",
    "REGISTRY",
    "RESULTS",
    "StatsView",
    "BloomStats",
    "BreakerStats",
    "CacheMetrics",
    "CacheStats",
    "LevelCounters",
    "MetricsRegistry",
    "backend_error_kind",
    "derive",
    "metrics_registry",
]

LEVELS: Final = ("l1", "l2", "none")
RESULTS: Final = ("hit", "miss", "stale", "rejected", "tombstone")
#: Upper bounds (seconds) of the load-duration histogram buckets; +Inf is implied.
LOAD_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BACKEND_ERROR_KINDS: Final = ("timeout", "connection", "circuit_open", "other")


def backend_error_kind(exc: BaseException) -> str:
    """Classify a ``BackendError`` for ``backend_errors[kind]`` by the driver error behind it."""
    if isinstance(exc, CircuitOpenError):
        return "circuit_open"
    cause = exc.__cause__
    name = type(cause).__name__
    if "Timeout" in name:
        return "timeout"
    if "Connection" in name or isinstance(cause, OSError):
        return "connection"
    return "other"


@dataclass(frozen=True, slots=True)
class BreakerStats:
    """A circuit breaker at collection time."""

    name: str
    state: str
    transitions: Mapping[str, int]  # to-state -> how many times it entered that state
    rejected: int


@dataclass(frozen=True, slots=True)
class BloomStats:
    """A bloom filter at collection time (fill ratio and FPR estimated from its bit count)."""

    capacity: int
    num_bits: int
    num_hashes: int
    approx_count: int
    fill_ratio: float
    estimated_fpr: float


def bloom_stats(bloom: Any) -> BloomStats | None:
    """Read a bloom filter's fill; None when it cannot say (not loaded, Redis down)."""
    bf = getattr(bloom, "filter", bloom)  # a BloomSnapshot holds its current local filter
    try:
        m = int(bf.num_bits)
        k = int(bf.num_hashes)
        n = int(bf.approx_count)
        capacity = int(bf.capacity)
    except Exception:  # a snapshot never loaded, a Redis filter whose Redis is down
        return None
    fill = 1.0 - math.exp(-k * n / m) if m else 0.0
    return BloomStats(capacity, m, k, n, fill, fill**k)


@dataclass(frozen=True, kw_only=True)
class CacheStats:
    """One snapshot shape for every cache object (``stats()``); counts since construction."""

    name: str = ""
    kind: str = ""
    requests: Mapping[tuple[str, str], int] = field(default_factory=dict)
    loads_total: int = 0
    load_errors_total: int = 0
    load_seconds_buckets: tuple[tuple[float, int], ...] = ()  # (upper bound, cumulative count)
    load_seconds_sum: float = 0.0
    early_refreshes: int = 0
    lock_waits_total: int = 0
    lock_takeovers: int = 0
    backend_errors_by_kind: Mapping[str, int] = field(default_factory=dict)
    decode_errors_total: int = 0
    stale_errors_served_total: int = 0
    invalidations: int = 0
    l1_flushes: int = 0
    bloom: BloomStats | None = None

    def count_requests(self, *, level: str | None = None, result: str | None = None) -> int:
        """Requests with this level and/or result (None: any)."""
        return sum(
            n
            for (lv, res), n in self.requests.items()
            if (level is None or lv == level) and (result is None or res == result)
        )

    @property
    def requests_total(self) -> int:
        return sum(self.requests.values())

    @property
    def hit_ratio(self) -> float | None:
        """Hits (fresh or stale) over requests that reached the cache (rejected ones excluded)."""
        asked = self.requests_total - self.count_requests(result="rejected")
        if not asked:
            return None
        return (self.count_requests(result="hit") + self.count_requests(result="stale")) / asked


class StatsView:
    """Mixin of the per-class stats NamedTuples (``TypedCacheStats``, ``MultiLevelStats``, ...).

    They stay the tuples they were (same ``_fields``, unpacking, equality) and also answer every
    ``CacheStats`` attribute (``name``, ``requests``, ``count()``, ``hit_ratio``, ...), so every
    ``stats()`` has the one shape; ``.snapshot`` is the ``CacheStats`` itself.
    """

    __slots__ = ()

    @property
    def snapshot(self) -> CacheStats:
        return self.__dict__["_snapshot"]  # type: ignore[no-any-return]

    def __getattr__(self, name: str) -> Any:
        try:
            snap = self.__dict__["_snapshot"]
        except KeyError:
            raise AttributeError(name) from None
        return getattr(snap, name)


_V = TypeVar("_V", bound=StatsView)


def derive(snap: CacheStats, view: _V) -> _V:
    """Attach the common snapshot ``snap`` to a per-class stats tuple."""
    view.__dict__["_snapshot"] = snap
    return view


class LevelCounters:
    """The request counters of one level, each a bound C-level increment (call it: ``hit()``)."""

    __slots__ = ("hit", "miss", "rejected", "stale", "tombstone")

    def __init__(self, counters: Mapping[str, Counter]) -> None:
        self.hit = counters["hit"].bound()
        self.miss = counters["miss"].bound()
        self.stale = counters["stale"].bound()
        self.rejected = counters["rejected"].bound()
        self.tombstone = counters["tombstone"].bound()


class CacheMetrics:
    """The counters of one cache object; see the module docstring for what each one means."""

    def __init__(self, name: str, kind: str) -> None:
        if not isinstance(name, str):
            raise TypeError(f"name must be str, not {type(name).__name__}")
        if not name:
            raise ValueError("name must be a non-empty str, got ''")
        self.name = name
        self.kind = kind
        self.covered = False
        self._requests = {(lv, res): Counter() for lv in LEVELS for res in RESULTS}
        self.levels = {
            lv: LevelCounters({res: self._requests[(lv, res)] for res in RESULTS}) for lv in LEVELS
        }
        self.loads = Counter()
        self.load_errors = Counter()
        self.early_refreshes = Counter()
        self.lock_waits = Counter()
        self.lock_takeovers = Counter()
        self.decode_errors = Counter()
        self.stale_errors_served = Counter()
        self.invalidations = Counter()
        self.l1_flushes = Counter()
        self._backend_errors = {kind: Counter() for kind in BACKEND_ERROR_KINDS}
        self._hist_lock = threading.Lock()
        self._hist = [0] * (len(LOAD_BUCKETS) + 1)
        self._hist_sum = 0.0
        self._blooms: list[Any] = []
        REGISTRY.add(self)
        after_fork_in_child(self._after_fork)

    def _after_fork(self) -> None:
        # In a forked child: a lock another thread of the parent held at the fork (an
        # exporter's sync thread, a loader observing its duration) would never be released.
        self._hist_lock = threading.Lock()
        counters = [*self._requests.values(), *self._backend_errors.values()]
        counters += [v for v in vars(self).values() if isinstance(v, Counter)]
        for counter in counters:
            counter.reset_lock()

    def cover(self) -> None:
        """A layer above counts the user's requests: exporters skip this handle's requests."""
        self.covered = True

    def request_count(self, level: str, result: str) -> int:
        return self._requests[(level, result)].value

    # -- events off the hot path ---------------------------------------------------------------

    def observe_load(self, seconds: float) -> None:
        """A successful loader call of ``seconds``."""
        self.loads.incr()
        i = bisect.bisect_left(LOAD_BUCKETS, seconds)
        with self._hist_lock:
            self._hist[i] += 1
            self._hist_sum += seconds
        for hook in REGISTRY.load_hooks:
            hook(self.name, seconds)

    def backend_error(self, exc: BaseException) -> None:
        self._backend_errors[backend_error_kind(exc)].incr()

    def record_invalidations(self, n: int = 1) -> None:
        """Called by ``MultiLevelCache`` when its listener invalidates ``n`` keys."""
        self.invalidations.add(n)

    def record_l1_flush(self) -> None:
        """Called by ``MultiLevelCache`` when its whole L1 is flushed (FLUSHDB heard, or the
        listener back after an outage: what L1 held may have missed writes)."""
        self.l1_flushes.incr()

    def watch_bloom(self, bloom: Any) -> None:
        """Report this bloom filter's fill and estimated FPR (read at collection time)."""
        self._blooms.append(bloom)

    # -- reading -------------------------------------------------------------------------------

    def snapshot(self, *, bloom: bool = True) -> CacheStats:
        """A ``CacheStats`` of the counts now; ``bloom=False`` skips reading the bloom filter
        (a Redis round trip for a ``RedisBloomFilter``)."""
        with self._hist_lock:
            hist = list(self._hist)
            hist_sum = self._hist_sum
        cumulative = list(itertools.accumulate(hist))
        return CacheStats(
            name=self.name,
            kind=self.kind,
            requests={key: c.value for key, c in self._requests.items()},
            loads_total=self.loads.value,
            load_errors_total=self.load_errors.value,
            load_seconds_buckets=(
                *zip(LOAD_BUCKETS, cumulative, strict=False),
                (math.inf, cumulative[-1]),
            ),
            load_seconds_sum=hist_sum,
            early_refreshes=self.early_refreshes.value,
            lock_waits_total=self.lock_waits.value,
            lock_takeovers=self.lock_takeovers.value,
            backend_errors_by_kind={k: c.value for k, c in self._backend_errors.items()},
            decode_errors_total=self.decode_errors.value,
            stale_errors_served_total=self.stale_errors_served.value,
            invalidations=self.invalidations.value,
            l1_flushes=self.l1_flushes.value,
            bloom=bloom_stats(self._blooms[-1]) if bloom and self._blooms else None,
        )


class MetricsRegistry:
    """Every live ``CacheMetrics`` handle and ``CircuitBreaker`` of this process (weakly held).

    A handle dies with its cache object; counts are per process (see
    ``cache_core.contrib.prometheus`` for adding up the workers of a multi-process server).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._handles: weakref.WeakValueDictionary[int, CacheMetrics] = (
            weakref.WeakValueDictionary()
        )
        self._breakers: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()
        self._ids = itertools.count()
        after_fork_in_child(self._after_fork)
        #: Called as ``hook(cache_name, seconds)`` after every successful load (exporters that
        #: must see each observation, e.g. a multi-process Prometheus histogram).
        self.load_hooks: list[Callable[[str, float], None]] = []

    def _after_fork(self) -> None:
        # In a forked child: another thread of the parent may have held the lock at the fork.
        # Each handle resets its own locks (it registers its own reset).
        self._lock = threading.Lock()

    def add(self, handle: CacheMetrics) -> None:
        with self._lock:
            self._handles[next(self._ids)] = handle

    def add_breaker(self, breaker: Any) -> None:
        with self._lock:
            self._breakers[next(self._ids)] = breaker

    def handles(self) -> list[CacheMetrics]:
        with self._lock:
            return list(self._handles.values())

    def collect(self) -> Iterator[CacheStats]:
        """A snapshot of every live handle."""
        for handle in self.handles():
            yield handle.snapshot()

    def breakers(self) -> list[BreakerStats]:
        with self._lock:
            breakers = list(self._breakers.values())
        return [b.metrics_snapshot() for b in breakers]


REGISTRY: Final = MetricsRegistry()


def metrics_registry() -> MetricsRegistry:
    """The process-wide registry every cache object reports to (what the exporters read)."""
    return REGISTRY
