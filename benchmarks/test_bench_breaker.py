"""Circuit breaker costs and the fault-injection latency (issue 8).

Targets: a call on an open breaker <= 5 us (no network); a closed breaker adds <= 2 % to a Redis
GET; once the breaker is open, p99 of get_or_set <= loader time + 1 ms under the fault scenario.
"""

from __future__ import annotations

import contextlib
import statistics
from collections.abc import Callable
from typing import Any

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError

from benchmarks.conftest import _RESULTS, Comparison
from cache_core import CircuitOpenError, RedisCache
from cache_core._breaker import CircuitBreaker
from tests import fault_scenario
from tests.redis_harness import RedisServer

pytestmark = pytest.mark.benchmark(group="breaker")


def test_open_breaker_call_cost(
    benchmark: Any, redis_client: redis.Redis, compare: Callable[..., Comparison]
) -> None:
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=3600)
    cache = RedisCache(redis_client, prefix="b", breaker=breaker)
    breaker.record_failure(RedisConnectionError("simulated outage"))
    assert breaker.state == "open"

    def open_get() -> None:
        with contextlib.suppress(CircuitOpenError):
            cache.get("k")

    def raise_and_catch() -> None:
        try:
            raise KeyError("k")
        except KeyError:
            pass

    compare(
        "RedisCache.get on an open breaker (target <= 5 us absolute)",
        {
            "raise + catch a KeyError": raise_and_catch,
            "open breaker: get -> CircuitOpenError": open_get,
        },
        baseline="raise + catch a KeyError",
        inner=2000,
        target="<= 5 us per call",
    )
    benchmark(open_get)


def test_closed_breaker_overhead_on_get(
    benchmark: Any, redis_client: redis.Redis, compare: Callable[..., Comparison]
) -> None:
    plain = RedisCache(redis_client, prefix="b")
    guarded = RedisCache(redis_client, prefix="b", breaker=CircuitBreaker())
    plain.set("k", b"x" * 100)
    compare(
        "RedisCache.get with a closed breaker vs without",
        {"no breaker": lambda: plain.get("k"), "closed breaker": lambda: guarded.get("k")},
        baseline="no breaker",
        inner=200,
        rounds=40,
        target="<= 1.02x",
    )
    benchmark(guarded.get, "k")


@pytest.mark.parametrize("think_ms", [0.0, 0.5])
def test_fault_scenario_latency_while_open(
    benchmark: Any, fault_server: RedisServer, think_ms: float
) -> None:
    """p99 of get_or_set while the breaker is open. think_ms=0: 32 CPU-bound loops (a thread
    waking from the loader's sleep may wait a full 5 ms GIL switch interval); 0.5: each worker
    spends 0.5 ms elsewhere between calls, as a request handler doing I/O would."""
    reports = []

    def once() -> None:
        reports.append(fault_scenario.run(fault_server, think=think_ms / 1000))

    benchmark.pedantic(once, rounds=1, iterations=1)
    report = reports[0]
    lat = report.open_latencies()
    loader_ns = fault_scenario.LOADER_SECONDS * 1e9
    p50 = statistics.median(lat) * 1e9
    p99 = report.p99_open() * 1e9
    misses = sorted(
        c.latency
        for c in report.calls
        if c.breaker == "open" and c.error is None and c.latency >= fault_scenario.LOADER_SECONDS
    )
    _RESULTS.append(
        Comparison(
            f"fault scenario: get_or_set while the breaker is open, 32 threads, "
            f"think {think_ms} ms",
            "loader alone",
            {"loader alone": loader_ns, "p50 while open": p50, "p99 while open": p99},
            {
                "loader alone": 1.0,
                "p50 while open": p50 / loader_ns,
                "p99 while open": p99 / loader_ns,
            },
            target="p99 <= loader + 1 ms",
            notes=[
                f"calls: {len(report.calls)}, while open: {len(lat)} "
                f"({len(misses)} of them waited for the loader), errors: "
                f"{sum(1 for c in report.calls if c.error)}, loader calls: {report.loader_calls}",
                "recovery after restart/resume (s): "
                f"{[round(s, 3) for s in report.recovery_seconds]}",
            ],
        )
    )
