"""The fault-injection scenario shared by tests/test_faults.py and the benchmark.

32 threads run a mixed workload through ``TypedCache(MultiLevelCache(MemoryCache, RedisCache))``
while the real redis-server below is stopped, restarted, paused (SIGSTOP) and resumed. Every
get_or_set call is recorded (start time, latency, breaker state, outcome); the loader records
how many of its calls overlap per key.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from cache_core import BackendError, MemoryCache, MultiLevelCache, RedisCache, TypedCache
from cache_core._breaker import CircuitBreaker
from tests.redis_harness import RedisServer

LOADER_SECONDS = 0.002
RESET_TIMEOUT = 1.0
KEYS = [f"item:{i}" for i in range(64)]


@dataclass
class Call:
    start: float
    latency: float
    breaker: str
    key: str
    value: Any = None
    error: BaseException | None = None


@dataclass
class Report:
    calls: list[Call] = field(default_factory=list)
    loader_calls: int = 0
    max_concurrent_loads_per_key: int = 0
    other_errors: int = 0
    recovery_seconds: list[float] = field(default_factory=list)
    delete_at: float = 0.0
    victim_old_values_after_delete: int = 0
    victim_reads_after_delete: int = 0
    phases: dict[str, float] = field(default_factory=dict)

    def open_latencies(self) -> list[float]:
        return sorted(c.latency for c in self.calls if c.breaker == "open" and c.error is None)

    def p99_open(self) -> float:
        lat = self.open_latencies()
        return lat[int(len(lat) * 0.99) - 1] if lat else float("nan")


def _wait(predicate: Any, timeout: float) -> float:
    """Seconds until ``predicate()`` held (polling; the breaker has no event to wait on)."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"condition not reached within {timeout}s")
        time.sleep(0.005)
    return time.monotonic() - start


def run(
    server: RedisServer, *, threads: int = 32, phase_seconds: float = 0.6, think: float = 0.0
) -> Report:
    """Run the scenario; ``think`` seconds of sleep between a worker's calls model the rest of
    a request (I/O that releases the GIL). With 0, the 32 workers are CPU-bound loops, and a
    thread waking from the loader's sleep can wait a whole GIL switch interval (5 ms)."""
    report = Report()
    breaker = CircuitBreaker(failure_threshold=5, reset_timeout=RESET_TIMEOUT)
    l2 = RedisCache.from_url(server.url, prefix="fi", socket_timeout=0.2, breaker=breaker)
    typed: TypedCache[Any] = TypedCache(MultiLevelCache(MemoryCache(), l2, l1_ttl=0.5))
    lock = threading.Lock()
    in_flight: dict[str, int] = {}
    stop = threading.Event()
    deleted = threading.Event()

    def loader_for(key: str) -> Any:
        def load() -> Any:
            with lock:
                report.loader_calls += 1
                in_flight[key] = in_flight.get(key, 0) + 1
                report.max_concurrent_loads_per_key = max(
                    report.max_concurrent_loads_per_key, in_flight[key]
                )
            try:
                time.sleep(LOADER_SECONDS)  # the database call
                return "fresh" if key == "victim" else {"key": key}
            finally:
                with lock:
                    in_flight[key] -= 1

        return load

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            if think:
                time.sleep(think)
            roll = rng.random()
            key = "victim" if roll < 0.05 else rng.choice(KEYS)
            if roll < 0.9 or key == "victim":
                state = breaker.state
                t0 = time.perf_counter()
                call = Call(time.monotonic(), 0.0, state, key)
                try:
                    call.value = typed.get_or_set(key, loader_for(key), ttl=30)
                except BaseException as exc:  # counted: none may reach a caller
                    call.error = exc
                call.latency = time.perf_counter() - t0
                with lock:
                    report.calls.append(call)
                    if key == "victim" and deleted.is_set() and call.start > report.delete_at:
                        report.victim_reads_after_delete += 1
                        if call.value == "old":
                            report.victim_old_values_after_delete += 1
            else:
                try:
                    if roll < 0.95:
                        typed.set(key, {"key": key}, ttl=30)
                    else:
                        typed.delete(key)
                except BackendError:
                    with lock:
                        report.other_errors += 1  # direct writes report the outage, by contract

    typed.set("victim", "old", ttl=300)
    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    try:
        time.sleep(phase_seconds)  # healthy traffic (duration, not synchronization)
        # 1. stopped server: connection refused
        server.stop()
        report.phases["stop->open"] = _wait(lambda: breaker.state == "open", 10)
        time.sleep(phase_seconds)
        server.start()
        report.recovery_seconds.append(_wait(lambda: breaker.state == "closed", 10))
        typed.set("victim", "old", ttl=300)  # the restarted server is empty: write it again
        time.sleep(phase_seconds)
        # 2. paused server: connections hang until the socket timeout; the data survives
        server.pause()
        report.phases["pause->open"] = _wait(lambda: breaker.state == "open", 10)
        report.delete_at = time.monotonic()
        with contextlib.suppress(BackendError):  # reported to the caller, remembered by the cache
            typed.delete("victim")
        deleted.set()
        time.sleep(phase_seconds)
        server.resume()
        report.recovery_seconds.append(_wait(lambda: breaker.state == "closed", 10))
        time.sleep(phase_seconds)
    finally:
        stop.set()
        for t in pool:
            t.join(30)
        if server.paused:
            server.resume()
        l2.close()
    return report
