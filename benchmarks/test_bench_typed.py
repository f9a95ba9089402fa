"""The typed layer against what a user would write by hand, same run, interleaved.

Targets (issue 4): TypedCache.get (L2 hit) <= 1.10x raw GET + json.loads; TypedCache over
MultiLevelCache, L1 hit <= 1.25x a cachetools.cached(TTLCache, lock=Lock()) hit + json.loads;
a stampede of 64 threads on a 50 ms loader: 1 call, wall time <= loader + 10 ms.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from cachetools import TTLCache, cached

from benchmarks.conftest import _RESULTS, Comparison
from cache_core import MemoryCache, MultiLevelCache, RedisCache, TypedCache

pytestmark = pytest.mark.benchmark(group="typed")

VALUE = {"id": 42, "name": "Ada Lovelace", "email": "ada@example.org", "roles": ["admin", "dev"]}


def test_typed_get_l2_hit(
    benchmark: Any, redis_client: redis.Redis, compare: Callable[..., Comparison]
) -> None:
    typed: TypedCache[dict[str, Any]] = TypedCache(RedisCache(redis_client, prefix="b"))
    typed.set("user:42", VALUE)
    redis_client.set("raw:user:42", json.dumps(VALUE))
    compare(
        "TypedCache.get (Redis hit) vs raw GET + json.loads",
        {
            "raw GET + json.loads": lambda: json.loads(redis_client.get("raw:user:42")),  # type: ignore[arg-type]
            "TypedCache.get": lambda: typed.get("user:42"),
            "TypedCache.get_or_set": lambda: typed.get_or_set("user:42", dict),
        },
        baseline="raw GET + json.loads",
        inner=200,
        target="<= 1.10x",
    )
    benchmark(typed.get, "user:42")


def test_typed_multilevel_l1_hit(
    benchmark: Any, redis_client: redis.Redis, compare: Callable[..., Comparison]
) -> None:
    multi = MultiLevelCache(MemoryCache(), RedisCache(redis_client, prefix="b"), l1_ttl=300)
    typed: TypedCache[dict[str, Any]] = TypedCache(multi)
    typed.set("user:42", VALUE)
    raw = json.dumps(VALUE)

    @cached(cache=TTLCache(maxsize=10_000, ttl=300), lock=threading.Lock())
    def load(key: str) -> str:
        return raw

    load("user:42")
    compare(
        "TypedCache over MultiLevelCache, L1 hit vs cachetools.cached hit + json.loads",
        {
            "cachetools.cached + json.loads": lambda: json.loads(load("user:42")),
            "TypedCache.get (L1)": lambda: typed.get("user:42"),
            "TypedCache.get_or_set (L1)": lambda: typed.get_or_set("user:42", dict),
        },
        baseline="cachetools.cached + json.loads",
        inner=2000,
        target="<= 1.25x",
    )
    benchmark(typed.get_or_set, "user:42", dict)


def test_stampede_64_threads(benchmark: Any, redis_client: redis.Redis) -> None:
    loader_s = 0.050
    walls: list[float] = []
    calls_per_round: list[int] = []

    def one_round(round_no: int) -> None:
        typed: TypedCache[dict[str, Any]] = TypedCache(
            RedisCache(redis_client, prefix=f"stampede{round_no}")
        )
        calls: list[int] = []
        starts: list[float] = []
        ends: list[float] = []
        barrier = threading.Barrier(64)

        def loader() -> dict[str, Any]:
            calls.append(1)
            time.sleep(loader_s)  # the database call being protected
            return VALUE

        def caller() -> None:
            barrier.wait()
            starts.append(time.perf_counter())
            typed.get_or_set("cold", loader, ttl=60)
            ends.append(time.perf_counter())

        threads = [threading.Thread(target=caller) for _ in range(64)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        walls.append(max(ends) - min(starts))
        calls_per_round.append(len(calls))

    rounds = iter(range(1000))
    benchmark.pedantic(lambda: one_round(next(rounds)), rounds=10, iterations=1)
    med = statistics.median(walls) * 1e9
    _RESULTS.append(
        Comparison(
            "stampede: 64 threads, one cold key, 50 ms loader",
            "loader alone",
            {"loader alone": loader_s * 1e9, "slowest caller (median of rounds)": med},
            {"loader alone": 1.0, "slowest caller (median of rounds)": med / (loader_s * 1e9)},
            target="1 call; wall <= loader + 10 ms",
            notes=[
                f"loader calls per round: {calls_per_round}",
                f"overhead over the loader, median: {(med / 1e9 - loader_s) * 1000:.1f} ms, "
                f"worst: {(max(walls) - loader_s) * 1000:.1f} ms",
            ],
        )
    )
