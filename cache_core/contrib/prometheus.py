"""Prometheus exporter for the cache_core metrics registry (``pip install cache_core[prometheus]``).

One call at startup, in every process that serves traffic (under gunicorn: in the app factory,
which runs in each worker)::

    from cache_core.contrib import prometheus
    prometheus.install()                     # then serve prometheus.render() at /metrics

Two modes, chosen by the environment as ``prometheus_client`` itself does:

* **one process** (no ``PROMETHEUS_MULTIPROC_DIR``): a collector registered with
  ``prometheus_client.REGISTRY`` reads ``cache_core``'s counters at scrape time. Nothing is
  done per cache call.
* **multi-process** (``PROMETHEUS_MULTIPROC_DIR`` set, e.g. gunicorn with several workers): a
  collector reading in-process counters would only see the worker that answers the scrape. So
  each process mirrors its counters into ``prometheus_client``'s own Counter / Gauge /
  Histogram types, whose values live in per-process files in that directory; a daemon thread
  adds the deltas every ``interval`` seconds (and ``render()`` syncs its own process first),
  and ``render()`` aggregates every worker's files with ``MultiProcessCollector``. The load
  histogram is observed directly (a hook called once per loader run). Workers that exit keep
  their counts (Prometheus counters); call ``mark_process_dead(pid)`` from gunicorn's
  ``child_exit`` hook for the live gauges (see ``examples/gunicorn.conf.py``).

Metric names follow the Prometheus conventions (``_total`` counters, ``_seconds`` units, no
per-key labels)::

    cache_core_requests_total{cache,level,result}     level l1|l2|none, result hit|miss|stale|
                                                      rejected|tombstone
    cache_core_loads_total{cache}  cache_core_load_errors_total{cache}
    cache_core_load_duration_seconds{cache}           histogram
    cache_core_early_refreshes_total{cache}
    cache_core_lock_waits_total{cache}  cache_core_lock_takeovers_total{cache}
    cache_core_backend_errors_total{cache,kind}       kind timeout|connection|circuit_open|other
    cache_core_decode_errors_total{cache}  cache_core_stale_errors_served_total{cache}
    cache_core_invalidations_total{cache}  cache_core_l1_flushes_total{cache}
    cache_core_breaker_state{breaker,state}           1 for the current state, else 0
    cache_core_breaker_transitions_total{breaker,to}
    cache_core_bloom_capacity{cache}  cache_core_bloom_fill_ratio{cache}
    cache_core_bloom_estimated_fpr{cache}

Several cache objects with one name add up under that name.
"""

from __future__ import annotations

import atexit
import os
import threading
import weakref
from collections.abc import Iterable, Iterator
from typing import Any, Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import REGISTRY as PROMETHEUS_REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from .._metrics import LOAD_BUCKETS, REGISTRY, CacheMetrics, CacheStats, MetricsRegistry

__all__ = ["CacheCoreCollector", "install", "render", "sync"]

PREFIX: Final = "cache_core"
# (metric name without _total, help, CacheStats attribute) of the per-cache counters.
_SIMPLE_COUNTERS: Final = (
    ("loads", "Loader calls that returned a value.", "loads_total"),
    ("load_errors", "Loader calls that raised.", "load_errors_total"),
    ("early_refreshes", "Entries refreshed early (XFetch).", "early_refreshes"),
    ("lock_waits", "Waits for another process's lease.", "lock_waits_total"),
    ("lock_takeovers", "Waits that ended with this caller taking the lease.", "lock_takeovers"),
    ("decode_errors", "Stored values that could not be decoded.", "decode_errors_total"),
    ("stale_errors_served", "Stale values served after a failed refresh.",
     "stale_errors_served_total"),
    ("invalidations", "Keys the L1 invalidation listener dropped from L1.", "invalidations"),
    ("l1_flushes", "Whole-L1 flushes (FLUSHDB heard, listener back after an outage).",
     "l1_flushes"),
)  # fmt: skip
_REQUESTS_HELP: Final = "Cache requests by the level that answered and the result."
_BACKEND_HELP: Final = "Backend (Redis) errors by kind."
_LOAD_HELP: Final = "Duration of successful loader calls."
_STATES: Final = ("closed", "open", "half_open")


def _multiprocess() -> bool:
    env = os.environ
    return bool(env.get("PROMETHEUS_MULTIPROC_DIR") or env.get("prometheus_multiproc_dir"))


def _counter_rows(snap: CacheStats) -> Iterator[tuple[str, tuple[str, ...], float]]:
    """(metric name, label values, value) of every counter of one snapshot."""
    for name, _, attr in _SIMPLE_COUNTERS:
        yield name, (snap.name,), getattr(snap, attr)
    for kind, n in snap.backend_errors_by_kind.items():
        yield "backend_errors", (snap.name, kind), n


class CacheCoreCollector(Collector):
    """A ``prometheus_client`` collector over ``cache_core``'s registry (read at scrape time)."""

    def __init__(self, registry: MetricsRegistry = REGISTRY) -> None:
        self._registry = registry

    def describe(self) -> Iterable[Any]:
        return []  # unchecked collector: registering it does not run a collection

    def collect(self) -> Iterator[Any]:
        handles = self._registry.handles()
        snaps = [(h, h.snapshot()) for h in handles]
        requests = CounterMetricFamily(
            f"{PREFIX}_requests", _REQUESTS_HELP, labels=("cache", "level", "result")
        )
        totals: dict[tuple[str, ...], float] = {}
        for handle, snap in snaps:
            if handle.covered:
                continue
            for (level, result), count in snap.requests.items():
                key = (snap.name, level, result)
                totals[key] = totals.get(key, 0) + count
        for labels, n in sorted(totals.items()):
            requests.add_metric(labels, n)
        yield requests
        families: dict[str, CounterMetricFamily] = {}
        sums: dict[tuple[str, tuple[str, ...]], float] = {}
        for _, snap in snaps:
            for name, labels, n in _counter_rows(snap):
                sums[(name, labels)] = sums.get((name, labels), 0) + n
        for name, help_text, _ in _SIMPLE_COUNTERS:
            families[name] = CounterMetricFamily(f"{PREFIX}_{name}", help_text, labels=("cache",))
        families["backend_errors"] = CounterMetricFamily(
            f"{PREFIX}_backend_errors", _BACKEND_HELP, labels=("cache", "kind")
        )
        for (name, labels), n in sorted(sums.items()):
            families[name].add_metric(labels, n)
        yield from families.values()
        yield self._histogram(snaps)
        yield from self._breakers()
        yield from self._blooms(snaps)

    @staticmethod
    def _histogram(snaps: list[tuple[CacheMetrics, CacheStats]]) -> HistogramMetricFamily:
        hist = HistogramMetricFamily(
            f"{PREFIX}_load_duration_seconds", _LOAD_HELP, labels=("cache",)
        )
        merged: dict[str, tuple[list[float], float]] = {}
        for _, snap in snaps:
            counts, total = merged.get(snap.name, ([0.0] * len(snap.load_seconds_buckets), 0.0))
            for i, (_, n) in enumerate(snap.load_seconds_buckets):
                counts[i] += n
            merged[snap.name] = (counts, total + snap.load_seconds_sum)
        for name, (counts, total) in sorted(merged.items()):
            bounds = [*(str(b) for b in LOAD_BUCKETS), "+Inf"]
            hist.add_metric([name], list(zip(bounds, counts, strict=True)), total)
        return hist

    def _breakers(self) -> Iterator[Any]:
        state = GaugeMetricFamily(
            f"{PREFIX}_breaker_state",
            "1 for the circuit breaker's current state, 0 for the others.",
            labels=("breaker", "state"),
        )
        moves = CounterMetricFamily(
            f"{PREFIX}_breaker_transitions",
            "Circuit breaker state changes, by the state entered.",
            labels=("breaker", "to"),
        )
        for b in self._registry.breakers():
            for s in _STATES:
                state.add_metric([b.name, s], 1.0 if b.state == s else 0.0)
            for to, n in b.transitions.items():
                moves.add_metric([b.name, to], n)
        yield state
        yield moves

    @staticmethod
    def _blooms(snaps: list[tuple[CacheMetrics, CacheStats]]) -> Iterator[Any]:
        fams = {
            "capacity": GaugeMetricFamily(
                f"{PREFIX}_bloom_capacity", "Bloom filter capacity (keys).", labels=("cache",)
            ),
            "fill_ratio": GaugeMetricFamily(
                f"{PREFIX}_bloom_fill_ratio",
                "Fraction of bloom filter bits set.",
                labels=("cache",),
            ),
            "estimated_fpr": GaugeMetricFamily(
                f"{PREFIX}_bloom_estimated_fpr",
                "Estimated bloom filter false-positive rate (fill ** k).",
                labels=("cache",),
            ),
        }
        for _, snap in snaps:
            if snap.bloom is not None:
                for attr, fam in fams.items():
                    fam.add_metric([snap.name], float(getattr(snap.bloom, attr)))
        yield from fams.values()


# -- multi-process mode ------------------------------------------------------------------------


class _Mirror:
    """Copies this process's counters into prometheus_client's multi-process value files."""

    def __init__(self, registry: MetricsRegistry, interval: float) -> None:
        self._registry = registry
        self._interval = interval
        self._lock = threading.Lock()
        # what has been added to the files so far, per live handle (a dead one adds no more)
        self._synced: weakref.WeakKeyDictionary[CacheMetrics, dict[Any, float]] = (
            weakref.WeakKeyDictionary()
        )
        self._breakers_synced: dict[tuple[str, str], float] = {}
        self.requests = Counter(
            f"{PREFIX}_requests", _REQUESTS_HELP, ("cache", "level", "result"), registry=None
        )
        self.counters = {
            name: Counter(f"{PREFIX}_{name}", help_text, ("cache",), registry=None)
            for name, help_text, _ in _SIMPLE_COUNTERS
        }
        self.counters["backend_errors"] = Counter(
            f"{PREFIX}_backend_errors", _BACKEND_HELP, ("cache", "kind"), registry=None
        )
        self.load_seconds = Histogram(
            f"{PREFIX}_load_duration_seconds",
            _LOAD_HELP,
            ("cache",),
            buckets=LOAD_BUCKETS,
            registry=None,
        )
        self.transitions = Counter(
            f"{PREFIX}_breaker_transitions",
            "Circuit breaker state changes, by the state entered.",
            ("breaker", "to"),
            registry=None,
        )
        self.breaker_state = Gauge(
            f"{PREFIX}_breaker_state",
            "1 if any live worker's circuit breaker is in this state.",
            ("breaker", "state"),
            registry=None,
            multiprocess_mode="livemax",
        )
        self.bloom = {
            attr: Gauge(
                f"{PREFIX}_bloom_{attr}",
                f"Bloom filter {attr.replace('_', ' ')} (largest over live workers).",
                ("cache",),
                registry=None,
                multiprocess_mode="livemax",
            )
            for attr in ("capacity", "fill_ratio", "estimated_fpr")
        }
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()

    def observe_load(self, cache: str, seconds: float) -> None:
        self.load_seconds.labels(cache).observe(seconds)

    def sync(self) -> None:
        with self._lock:
            for handle in self._registry.handles():
                snap = handle.snapshot()
                done = self._synced.setdefault(handle, {})
                if not handle.covered:
                    for (level, result), count in snap.requests.items():
                        self._add(done, ("requests", level, result), count,
                                  self.requests.labels(snap.name, level, result))  # fmt: skip
                for name, labels, n in _counter_rows(snap):
                    self._add(done, (name, *labels), n, self.counters[name].labels(*labels))
                if snap.bloom is not None:
                    for attr, gauge in self.bloom.items():
                        gauge.labels(snap.name).set(float(getattr(snap.bloom, attr)))
            for b in self._registry.breakers():
                for s in _STATES:
                    self.breaker_state.labels(b.name, s).set(1.0 if b.state == s else 0.0)
                for to, n in b.transitions.items():
                    key = (b.name, to)
                    delta = n - self._breakers_synced.get(key, 0)
                    if delta > 0:
                        self.transitions.labels(b.name, to).inc(delta)
                        self._breakers_synced[key] = n

    @staticmethod
    def _add(done: dict[Any, float], key: Any, value: float, child: Any) -> None:
        delta = value - done.get(key, 0)
        if delta > 0:
            child.inc(delta)
            done[key] = value

    def start(self) -> None:
        self._stopped.clear()
        self._thread = threading.Thread(target=self._run, name="cache_core-prometheus", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopped.wait(self._interval):
            self.sync()

    def after_fork(self) -> None:
        """In a forked child: a fresh lock, and the sync thread again (threads do not fork)."""
        self._lock = threading.Lock()
        self.start()


_mirror: _Mirror | None = None
_collector: CacheCoreCollector | None = None
_install_lock = threading.Lock()


def install(
    registry: CollectorRegistry = PROMETHEUS_REGISTRY,
    *,
    multiprocess: bool | None = None,
    interval: float = 1.0,
) -> None:
    """Export ``cache_core``'s metrics (idempotent); see the module docstring for the modes.

    ``multiprocess``: None follows ``PROMETHEUS_MULTIPROC_DIR``. ``interval``: seconds between
    two syncs of this process's counters into the multi-process files.
    """
    global _mirror, _collector
    with _install_lock:
        if multiprocess is None:
            multiprocess = _multiprocess()
        if multiprocess:
            if _mirror is None:
                _mirror = _Mirror(REGISTRY, interval)
                REGISTRY.load_hooks.append(_mirror.observe_load)
                _mirror.start()
                os.register_at_fork(after_in_child=_mirror.after_fork)
                atexit.register(_mirror.sync)  # a worker that exits cleanly loses nothing
        elif _collector is None:
            _collector = CacheCoreCollector(REGISTRY)
            registry.register(_collector)


def sync() -> None:
    """Write this process's counts to the multi-process files now (no-op in one process)."""
    if _mirror is not None:
        _mirror.sync()


def render(registry: CollectorRegistry | None = None) -> tuple[bytes, str]:
    """``(body, content type)`` for a ``/metrics`` response.

    Multi-process mode: syncs this process, then aggregates every worker's files. One process:
    ``registry`` (default ``prometheus_client.REGISTRY``, where ``install`` put the collector).
    """
    if _mirror is not None:
        _mirror.sync()
        aggregate = CollectorRegistry()
        MultiProcessCollector(aggregate)  # type: ignore[no-untyped-call]
        return generate_latest(aggregate), CONTENT_TYPE_LATEST
    return generate_latest(registry or PROMETHEUS_REGISTRY), CONTENT_TYPE_LATEST
