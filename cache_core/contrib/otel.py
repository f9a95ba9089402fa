"""OpenTelemetry metrics for cache_core (``pip install cache_core[otel]``).

::

    from cache_core.contrib import otel
    otel.instrument()          # or otel.instrument(meter_provider=my_provider)

Every instrument is *observable*: its callback reads ``cache_core``'s registry when the SDK
collects (each export of a periodic reader, each ``collect()`` of a pull reader), and nothing
is done per cache call. Meter ``cache_core``; instruments (attributes in brackets)::

    cache_core.requests            counter  {request}  [cache, level, result]
    cache_core.loads               counter  {load}     [cache]
    cache_core.load_errors         counter  {load}     [cache]
    cache_core.load.time           counter  s          [cache]   total seconds of successful
                                                                 loads (OpenTelemetry has no
                                                                 observable histogram)
    cache_core.early_refreshes, cache_core.lock_waits, cache_core.lock_takeovers,
    cache_core.decode_errors, cache_core.stale_errors_served,
    cache_core.invalidations, cache_core.l1_flushes      counters  [cache]
    cache_core.backend_errors      counter  {error}    [cache, kind]
    cache_core.breaker.transitions counter  {transition} [breaker, to]
    cache_core.breaker.state       gauge    1 for the current state [breaker, state]
    cache_core.bloom.capacity, cache_core.bloom.fill_ratio,
    cache_core.bloom.estimated_fpr gauges   [cache]

Counts are per process, like every OpenTelemetry SDK's: each worker of a multi-process server
exports its own, and the backend adds them up (give each process its own resource attributes,
e.g. ``service.instance.id``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from operator import attrgetter
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from .. import __version__
from .._metrics import REGISTRY, CacheStats, MetricsRegistry

__all__ = ["instrument"]

_STATES = ("closed", "open", "half_open")
_SIMPLE = (
    ("early_refreshes", "early_refreshes", "{refresh}", "Entries refreshed early (XFetch)."),
    ("lock_waits", "lock_waits_total", "{wait}", "Waits for another process's lease."),
    ("lock_takeovers", "lock_takeovers", "{wait}", "Waits that ended taking the lease."),
    ("decode_errors", "decode_errors_total", "{error}", "Stored values not decodable."),
    ("stale_errors_served", "stale_errors_served_total", "{request}",
     "Stale values served after a failed refresh."),
    ("invalidations", "invalidations", "{key}", "Keys the L1 invalidation listener dropped."),
    ("l1_flushes", "l1_flushes", "{flush}", "Whole-L1 flushes."),
)  # fmt: skip


_Callback = Callable[[CallbackOptions], Iterable[Observation]]


class _Callbacks:
    """The observable instruments' callbacks: each reads ``registry`` when the SDK collects."""

    def __init__(self, registry: MetricsRegistry) -> None:
        self._registry = registry

    def _snapshots(self) -> list[tuple[bool, CacheStats]]:
        return [(h.covered, h.snapshot()) for h in self._registry.handles()]

    def per_cache(self, value: Callable[[CacheStats], float]) -> _Callback:
        """``value`` of every handle, summed by cache name (handles may share a name)."""

        def callback(options: CallbackOptions) -> Iterable[Observation]:
            totals: dict[str, float] = {}
            for _, snap in self._snapshots():
                totals[snap.name] = totals.get(snap.name, 0) + value(snap)
            return [Observation(v, {"cache": name}) for name, v in sorted(totals.items())]

        return callback

    def requests(self, options: CallbackOptions) -> Iterable[Observation]:
        totals: dict[tuple[str, str, str], int] = {}
        for covered, snap in self._snapshots():
            if covered:
                continue  # a layer above counts these requests
            for (level, result), n in snap.requests.items():
                key = (snap.name, level, result)
                totals[key] = totals.get(key, 0) + n
        return [
            Observation(n, {"cache": c, "level": lv, "result": r})
            for (c, lv, r), n in sorted(totals.items())
        ]

    def backend_errors(self, options: CallbackOptions) -> Iterable[Observation]:
        totals: dict[tuple[str, str], int] = {}
        for _, snap in self._snapshots():
            for kind, n in snap.backend_errors_by_kind.items():
                totals[(snap.name, kind)] = totals.get((snap.name, kind), 0) + n
        return [Observation(n, {"cache": c, "kind": k}) for (c, k), n in sorted(totals.items())]

    def breaker_state(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(1 if b.state == s else 0, {"breaker": b.name, "state": s})
            for b in self._registry.breakers()
            for s in _STATES
        ]

    def transitions(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(n, {"breaker": b.name, "to": to})
            for b in self._registry.breakers()
            for to, n in b.transitions.items()
        ]

    def bloom(self, attr: str) -> _Callback:
        """The gauge ``attr`` of every cache that watches a bloom filter."""

        def callback(options: CallbackOptions) -> Iterable[Observation]:
            return [
                Observation(float(getattr(snap.bloom, attr)), {"cache": snap.name})
                for _, snap in self._snapshots()
                if snap.bloom is not None
            ]

        return callback


def instrument(meter_provider: Any = None, *, registry: MetricsRegistry = REGISTRY) -> list[Any]:
    """Create the observable instruments on ``meter_provider`` (default: the global one)."""
    meter = metrics.get_meter("cache_core", __version__, meter_provider=meter_provider)
    on = _Callbacks(registry)
    counter = meter.create_observable_counter
    gauge = meter.create_observable_gauge
    made = [
        counter("cache_core.requests", [on.requests], "{request}",
                "Cache requests by the level that answered and the result."),
        counter("cache_core.loads", [on.per_cache(lambda s: s.loads_total)], "{load}",
                "Loader calls that returned a value."),
        counter("cache_core.load_errors", [on.per_cache(lambda s: s.load_errors_total)],
                "{load}", "Loader calls that raised."),
        counter("cache_core.load.time", [on.per_cache(lambda s: s.load_seconds_sum)], "s",
                "Total duration of successful loader calls."),
        counter("cache_core.backend_errors", [on.backend_errors], "{error}",
                "Backend (Redis) errors by kind."),
        counter("cache_core.breaker.transitions", [on.transitions], "{transition}",
                "Circuit breaker state changes, by the state entered."),
        gauge("cache_core.breaker.state", [on.breaker_state], "1",
              "1 for the circuit breaker's current state, 0 for the others."),
        gauge("cache_core.bloom.capacity", [on.bloom("capacity")], "{key}",
              "Bloom filter capacity."),
        gauge("cache_core.bloom.fill_ratio", [on.bloom("fill_ratio")], "1",
              "Fraction of bloom filter bits set."),
        gauge("cache_core.bloom.estimated_fpr", [on.bloom("estimated_fpr")], "1",
              "Estimated bloom filter false-positive rate."),
    ]  # fmt: skip
    for name, attr, unit, description in _SIMPLE:
        made.append(
            counter(f"cache_core.{name}", [on.per_cache(attrgetter(attr))], unit, description)
        )
    return made
