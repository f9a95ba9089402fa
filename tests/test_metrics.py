"""The metrics model (issue 17): one request, one result; exact under threads; one shape."""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

import pytest
import redis

from cache_core import (
    BloomFilter,
    CircuitBreaker,
    MemoryCache,
    MultiLevelCache,
    MultiLevelStats,
    ProtectedCache,
    RedisCache,
    TypedCache,
    TypedCacheStats,
    memoize,
)
from cache_core._metrics import REGISTRY, CacheStats


def _multi(client: redis.Redis, prefix: str, **kwargs: Any) -> MultiLevelCache:
    return MultiLevelCache(MemoryCache(), RedisCache(client, prefix=prefix), l1_ttl=60, **kwargs)


def test_hit_ratio_from_the_counters_equals_the_one_measured_outside(
    redis_client: redis.Redis, unique_prefix: str
) -> None:
    """The bug of the issue: internal re-reads (the lease double-check) were counted as misses.

    Every request records outside the library whether it ran the loader and at which level it
    was answered (keys written by "another process" are in L2 only until first read). The
    counters of both layers must agree with that record exactly.
    """
    multi = _multi(redis_client, unique_prefix)
    typed: TypedCache[int] = TypedCache(multi, distributed_lock=True, name="users")
    other: TypedCache[int] = TypedCache(RedisCache(redis_client, prefix=unique_prefix))
    shared = [f"shared:{i}" for i in range(40)]
    for i, key in enumerate(shared):
        other.set(key, i)  # only in Redis: the first read of each is an L2 hit
    outside = {("l1", "hit"): 0, ("l2", "hit"): 0, ("l2", "miss"): 0}
    lock = threading.Lock()

    def worker(t: int) -> None:
        seen: set[str] = set()
        mine = [f"own:{t}:{i}" for i in range(30)]  # never shared: a miss runs the loader once
        keys = [*shared[t * 5 : t * 5 + 5], *mine] * 3
        for key in keys:
            ran = False

            def load(key: str = key) -> int:
                nonlocal ran
                ran = True
                return len(key)

            typed.get_or_set(key, load)
            if ran:
                result = ("l2", "miss")
            elif key in seen or key.startswith("own:"):
                result = ("l1", "hit")
            else:
                result = ("l2", "hit")
            seen.add(key)
            with lock:
                outside[result] += 1

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = typed.stats()
    assert {k: v for k, v in stats.requests.items() if v} == outside
    measured = (outside[("l1", "hit")] + outside[("l2", "hit")]) / sum(outside.values())
    assert stats.hit_ratio == measured
    assert stats.loads == outside[("l2", "miss")] == 8 * 30
    ml = multi.stats()  # the byte layer agrees: one read per request, re-reads not counted
    assert (ml.l1_hits, ml.l2_hits, ml.misses) == tuple(outside.values())
    assert ml.hit_ratio == measured


def test_counters_are_exact_under_threads() -> None:
    typed: TypedCache[int] = TypedCache(
        MultiLevelCache(MemoryCache(), MemoryCache(), l1_ttl=60), name="hot"
    )
    typed.set("k", 1)
    start = threading.Barrier(16)

    def hammer() -> None:
        start.wait()
        for _ in range(5000):
            typed.get_or_set("k", lambda: 2)

    threads = [threading.Thread(target=hammer) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = typed.stats()
    assert stats.requests[("l1", "hit")] == 16 * 5000
    assert stats.requests_total == 16 * 5000


def test_every_stats_has_the_one_shape_and_the_old_fields(
    redis_client: redis.Redis, unique_prefix: str
) -> None:
    multi = _multi(redis_client, unique_prefix)
    typed: TypedCache[int] = TypedCache(multi)
    guard = ProtectedCache(typed, BloomFilter(1000, 0.01))
    assert typed.name == unique_prefix  # default name: the Redis prefix below

    @memoize(MemoryCache(), namespace="fib")
    def fib(n: int) -> int:
        return n if n < 2 else fib(n - 1) + fib(n - 2)

    fib(10)
    for stats in (typed.stats(), multi.stats(), guard.stats(), fib.stats()):
        assert isinstance(stats.snapshot, CacheStats)
        assert stats.name and stats.kind in {"typed", "multilevel"}
        assert set(stats.requests) >= {("l1", "hit"), ("l2", "miss"), ("none", "rejected")}
        assert stats.count_requests(result="hit") >= 0
    assert isinstance(typed.stats(), TypedCacheStats) and isinstance(multi.stats(), tuple)
    assert isinstance(multi.stats(), MultiLevelStats) and multi.stats()._fields == (
        "l1_hits",
        "l2_hits",
        "misses",
    )
    assert fib.stats().name == "fib"
    assert fib.stats().misses == 11 and fib.stats().hits == 8  # fib(0..10) loaded once each
    assert fib.stats().loads == 11


def test_protected_requests_rejected_tombstone_and_bloom_fill() -> None:
    bloom = BloomFilter(1000, 0.01)
    bloom.update([f"user:{i}" for i in range(500)])
    guard = ProtectedCache(TypedCache(MemoryCache(), name="guarded"), bloom)
    for _ in range(3):
        assert guard.get_or_set("nobody", lambda: 1) is None  # rejected by the filter
    assert guard.get_or_set("user:1", lambda: None) is None  # loader: no such row
    assert guard.get_or_set("user:1", lambda: 1) is None  # tombstone
    assert guard.get_or_set("user:2", lambda: 2) == 2
    assert guard.get_or_set("user:2", lambda: 3) == 2
    stats = guard.stats()
    assert {k: v for k, v in stats.requests.items() if v} == {
        ("none", "rejected"): 3,
        ("l1", "miss"): 2,
        ("l1", "tombstone"): 1,
        ("l1", "hit"): 1,
    }
    assert stats.bloom is not None
    assert stats.bloom.capacity == 1000
    assert 0.28 < stats.bloom.fill_ratio < 0.33  # 500 keys, k=7, m=9585: 1 - e^(-7*500/m)
    assert 0 < stats.bloom.estimated_fpr < 0.01


def test_registry_finds_live_handles_and_breakers() -> None:
    multi = MultiLevelCache(MemoryCache(), MemoryCache(), l1_ttl=60, name="reg-ml")
    typed: TypedCache[int] = TypedCache(multi, name="reg-typed")
    breaker = CircuitBreaker(name="reg-breaker")
    typed.set("a", 1)
    typed.get("a")
    names = {(h.name, h.kind, h.covered) for h in REGISTRY.handles()}
    assert ("reg-ml", "multilevel", True) in names  # counted by the typed layer above it
    assert ("reg-typed", "typed", False) in names
    assert any(b.name == "reg-breaker" and b.state == "closed" for b in REGISTRY.breakers())
    del typed, multi, breaker
    import gc

    gc.collect()
    assert not any(h.name.startswith("reg-") for h in REGISTRY.handles())


def test_load_histogram_and_backend_errors(fault_server: Any) -> None:
    from tests.conftest import FakeClock

    clock = FakeClock()
    l2 = RedisCache.from_url(fault_server.url, prefix="h", breaker=None)
    typed: TypedCache[int] = TypedCache(l2, clock=clock, name="hist")

    def slow(seconds: float) -> Any:
        def load() -> int:
            clock.advance(seconds)
            return 1

        return load

    typed.get_or_set("a", slow(0.003))
    typed.get_or_set("b", slow(0.3))
    with pytest.raises(ZeroDivisionError):
        typed.get_or_set("c", lambda: 1 // 0)
    fault_server.stop()
    typed.get_or_set("d", slow(0.0))  # Redis down: read and store fail, value served
    l2.close()
    stats = typed.stats()
    buckets = dict(stats.load_seconds_buckets)
    assert (buckets[0.001], buckets[0.0025], buckets[0.005], buckets[0.25]) == (1, 1, 2, 2)
    assert buckets[0.5] == 3 and buckets[float("inf")] == 3
    assert stats.load_seconds_sum == pytest.approx(0.303)
    assert (stats.loads_total, stats.load_errors_total) == (3, 1)
    assert stats.backend_errors_by_kind["connection"] == 2


def test_guard_over_entries_with_metadata_reads_once_per_request(
    redis_client: redis.Redis, unique_prefix: str
) -> None:
    """ProtectedCache continues TypedCache's read-through from its own read: the multi-level
    cache below sees one read per request even for entries with metadata (stale_ttl)."""
    multi = _multi(redis_client, unique_prefix)
    bloom = BloomFilter(100, 0.01)
    bloom.update(["a", "b"])
    guard = ProtectedCache(TypedCache(multi, stale_ttl=30, name="meta-guard"), bloom)
    for _ in range(5):
        assert guard.get_or_set("a", lambda: 1) == 1
    ml = multi.stats()
    assert (ml.l1_hits, ml.l2_hits, ml.misses) == (4, 0, 1)
    stats = guard.stats()
    assert {k: v for k, v in stats.requests.items() if v} == {("l1", "hit"): 4, ("l2", "miss"): 1}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_fork_while_another_thread_holds_the_metrics_locks_does_not_deadlock_the_child() -> None:
    typed: TypedCache[int] = TypedCache(MemoryCache(), name="fork")
    typed.get_or_set("k", lambda: 1)
    holding = threading.Event()
    release = threading.Event()
    handle = typed.metrics

    def hold() -> None:
        with REGISTRY._lock, handle._hist_lock, handle.loads._read_lock:
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(10)
    pid = os.fork()
    if pid == 0:  # the child: everything below would hang on an inherited, held lock
        signal.alarm(5)
        try:
            child: TypedCache[int] = TypedCache(MemoryCache(), name="child")
            child.get_or_set("k", lambda: 2)
            assert typed.stats().loads == 1
            assert any(h.name == "child" for h in REGISTRY.handles())
        except BaseException:
            import traceback

            traceback.print_exc()
            os._exit(1)
        os._exit(0)
    release.set()
    holder.join()
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
