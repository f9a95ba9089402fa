"""The OpenTelemetry exporter against the real SDK's in-memory reader (issue 17)."""

from __future__ import annotations

from typing import Any

import pytest

from cache_core import (
    BloomFilter,
    CircuitBreaker,
    MemoryCache,
    MultiLevelCache,
    ProtectedCache,
    TypedCache,
)

pytest.importorskip("opentelemetry.sdk")
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from cache_core.contrib import otel


def _points(reader: InMemoryMetricReader) -> dict[str, dict[tuple[tuple[str, Any], ...], Any]]:
    """metric name -> {sorted attributes: value} of one collection."""
    out: dict[str, dict[tuple[tuple[str, Any], ...], Any]] = {}
    data = reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    key = tuple(sorted(point.attributes.items()))
                    out.setdefault(metric.name, {})[key] = point.value
    return out


def test_in_memory_reader_points_equal_the_counts_the_test_produced() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    otel.instrument(provider)
    users: TypedCache[int] = TypedCache(
        MultiLevelCache(MemoryCache(), MemoryCache(), l1_ttl=60), name="otel-users"
    )
    bloom = BloomFilter(100, 0.01)
    guard = ProtectedCache(TypedCache(MemoryCache(), name="otel-guard"), bloom)
    breaker = CircuitBreaker(failure_threshold=1, name="otel-breaker")
    for i in range(7):
        users.get_or_set(f"k{i}", lambda i=i: i)
    for _ in range(5):
        users.get_or_set("k0", lambda: -1)
    with pytest.raises(KeyError):
        users.get_or_set("boom", lambda: {}["x"])
    guard.get_or_set("nobody", lambda: 1)
    breaker.record_failure(ConnectionError("down"))  # opens

    p = _points(reader)
    req = p["cache_core.requests"]
    assert req[(("cache", "otel-users"), ("level", "l1"), ("result", "hit"))] == 5
    assert req[(("cache", "otel-users"), ("level", "l2"), ("result", "miss"))] == 8
    assert req[(("cache", "otel-guard"), ("level", "none"), ("result", "rejected"))] == 1
    assert sum(v for k, v in req.items() if ("cache", "otel-users") in k) == 13
    assert p["cache_core.loads"][(("cache", "otel-users"),)] == 7
    assert p["cache_core.load_errors"][(("cache", "otel-users"),)] == 1
    assert p["cache_core.breaker.state"][(("breaker", "otel-breaker"), ("state", "open"))] == 1
    assert p["cache_core.breaker.transitions"][(("breaker", "otel-breaker"), ("to", "open"))] == 1
    assert p["cache_core.bloom.capacity"][(("cache", "otel-guard"),)] == 100.0
    # Observable: the next collection reads the counters again, nothing was recorded per call.
    users.get_or_set("k0", lambda: -1)
    again = _points(reader)["cache_core.requests"]
    assert again[(("cache", "otel-users"), ("level", "l1"), ("result", "hit"))] == 6
    provider.shutdown()
