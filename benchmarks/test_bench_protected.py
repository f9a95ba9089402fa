"""The penetration guard and the warmer against their baselines, same run, interleaved.

Targets (issue 6): a guarded rejection of an absent key <= 1.5x a bare ``key in bloom`` (no
Redis round trip); warming 100k keys in batches of 500 >= 10x faster than one
``TypedCache.set`` per key (against the ``redis_client`` fixture's server).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from benchmarks.conftest import _RESULTS, Comparison
from cache_core import BloomFilter, CacheWarmer, ProtectedCache, RedisCache, TypedCache

pytestmark = pytest.mark.benchmark(group="protected")


def test_guarded_rejection_vs_bare_bloom(
    benchmark: Any, redis_client: redis.Redis, compare: Callable[..., Comparison]
) -> None:
    bloom = BloomFilter(1_000_000, 0.01)
    bloom.update([f"user:{i}" for i in range(1_000_000)])
    guard: ProtectedCache[Any] = ProtectedCache(
        TypedCache(RedisCache(redis_client, prefix="bp")), bloom
    )
    absent = "user:absent-42"
    assert absent not in bloom
    load = dict  # never called

    def bare() -> object:
        return absent in bloom

    def guarded() -> object:
        return guard.get_or_set(absent, load)

    compare(
        "ProtectedCache.get_or_set rejection vs bare `key in bloom`",
        {"key in bloom": bare, "ProtectedCache.get_or_set (rejected)": guarded},
        baseline="key in bloom",
        inner=5000,
        rounds=40,
        target="<= 1.5x",
    )
    assert guard.stats().loads == 0
    benchmark(guarded)


def test_warm_100k_batches_of_500_vs_set_per_key(benchmark: Any, redis_client: redis.Redis) -> None:
    n = 100_000
    db = {i: {"id": i, "name": f"user {i}", "active": True} for i in range(n)}
    typed: TypedCache[Any] = TypedCache(RedisCache(redis_client, prefix="bw"))

    def key_fn(i: int) -> str:
        return f"user:{i}"

    def loader(ids: list[int]) -> dict[int, Any]:
        return {i: db[i] for i in ids}

    warmer = CacheWarmer(typed, loader, key_fn=key_fn, batch_size=500)

    def per_key() -> float:
        start = time.perf_counter()
        for i in range(n):
            typed.set(key_fn(i), db[i], ttl=3600)
        return time.perf_counter() - start

    def batched() -> float:
        report = warmer.warm(range(n), ttl=3600)
        assert report.loaded == n
        return report.duration

    singles: list[float] = []
    batches: list[float] = []
    for _ in range(2):  # interleaved rounds: noise hits both sides alike
        redis_client.flushdb()
        singles.append(per_key())
        redis_client.flushdb()
        batches.append(batched())
    single, batch = min(singles), min(batches)
    _RESULTS.append(
        Comparison(
            "warming 100k keys: CacheWarmer (batches of 500) vs one TypedCache.set per key",
            "one set per key",
            {"one set per key": single / n * 1e9, "CacheWarmer, batch_size=500": batch / n * 1e9},
            {"one set per key": 1.0, "CacheWarmer, batch_size=500": batch / single},
            target=">= 10x faster (ratio <= 0.1)",
            notes=[f"speed-up: {single / batch:.1f}x (best of 2 rounds each)"],
        )
    )
    benchmark.pedantic(batched, rounds=1, iterations=1)
