"""Logs during a Redis outage (issue 17): one WARNING when it starts, one when it ends, per
component (circuit breaker, L1 invalidation listener)."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from typing import Any

import pytest

from cache_core import (
    BackendError,
    CircuitBreaker,
    MemoryCache,
    MultiLevelCache,
    RedisCache,
    TypedCache,
)
from tests.conftest import wait_for
from tests.redis_harness import RedisServer

OUTAGE_SECONDS = 10.0  # the figure
RESET_TIMEOUT = 0.5  # a probe every half second: ~20 failed probes during the outage
THREADS = 32


class _Tally(logging.Handler):
    """Counts records by level and by logger (storing 100k debug records would be the test)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.levels: Counter[int] = Counter()
        self.warnings: list[str] = []
        self.probe_failures = 0
        self.lock_ = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self.lock_:
            self.levels[record.levelno] += 1
            if record.levelno >= logging.WARNING:
                self.warnings.append(f"{record.name}: {record.getMessage()}")
            elif "probe failed" in record.getMessage():
                self.probe_failures += 1


@pytest.fixture
def tally() -> Any:
    handler = _Tally()
    root = logging.getLogger("cache_core")
    breaker_log = logging.getLogger("cache_core.breaker")
    levels = root.level, breaker_log.level
    root.addHandler(handler)
    root.setLevel(logging.WARNING)  # the typed layer's per-call debug lines stay off
    breaker_log.setLevel(logging.DEBUG)  # the breaker's probes are counted
    yield handler
    root.removeHandler(handler)
    root.setLevel(levels[0])
    breaker_log.setLevel(levels[1])


@pytest.mark.slow
def test_redis_stopped_for_10s_under_32_threads_logs_one_warning_per_start_and_end(
    fault_server: RedisServer, tally: _Tally
) -> None:
    breaker = CircuitBreaker(failure_threshold=5, reset_timeout=RESET_TIMEOUT, name="outage")
    l2 = RedisCache.from_url(fault_server.url, prefix="out", breaker=breaker)
    typed: TypedCache[Any] = TypedCache(MultiLevelCache(MemoryCache(), l2, l1_ttl=0.2))
    stop = threading.Event()
    calls = [0] * THREADS

    def worker(n: int) -> None:
        rng = random.Random(n)
        while not stop.is_set():
            key = f"k{rng.randrange(200)}"
            try:
                if rng.random() < 0.9:
                    typed.get_or_set(key, lambda key=key: {"k": key}, ttl=30)
                else:
                    typed.set(key, {"k": key}, ttl=30)
            except BackendError:
                pass  # direct writes report the outage to their caller, by contract
            calls[n] += 1
            time.sleep(0.001)  # the rest of a request

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for t in pool:
        t.start()
    try:
        assert wait_for(lambda: sum(calls) > 500, 10)
        fault_server.stop()
        assert wait_for(lambda: breaker.state != "closed", 10)
        outage_start = time.monotonic()
        stop_at = outage_start + OUTAGE_SECONDS
        while time.monotonic() < stop_at:  # the outage itself: a duration, not a sync point
            time.sleep(0.1)
        fault_server.start()
        assert wait_for(lambda: breaker.state == "closed", 10)
        served_after = sum(calls)
        assert wait_for(lambda: sum(calls) > served_after + 500, 10)
    finally:
        stop.set()
        for t in pool:
            t.join(30)
        l2.close()
    warnings = tally.warnings
    assert len(warnings) <= 4, "\n".join(warnings)
    assert any("open after" in w and "ConnectionError" in w for w in warnings), warnings
    assert any("closed, backend is back" in w for w in warnings), warnings
    assert all(w.startswith("cache_core") for w in warnings)
    # Per component, one line when the outage starts and one when it ends: the breaker, and the
    # L1 invalidation listener of the MultiLevelCache (down: L1 bypassed; back).
    breaker_lines = [w for w in warnings if w.startswith("cache_core.breaker:")]
    listener_lines = [w for w in warnings if w.startswith("cache_core.invalidation:")]
    assert len(breaker_lines) == 2, warnings
    assert len(listener_lines) <= 2 and len(breaker_lines) + len(listener_lines) == len(warnings)
    # The count does not grow with the outage: every probe during it failed at DEBUG.
    assert tally.probe_failures >= OUTAGE_SECONDS / RESET_TIMEOUT / 2
    outages = sum("open after" in w for w in warnings)
    assert breaker.metrics_snapshot().transitions["open"] == tally.probe_failures + outages
