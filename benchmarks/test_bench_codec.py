"""Issue 16, the codec on msgspec: the six rows of its Targets table, same run, interleaved.

The baseline serializer is a frozen copy of the JSONSerializer of before the issue
(``tests/_legacy_serializers.py``). Run: ``make bench BENCH_ARGS='-k codec'``.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
import redis
from cachetools import TTLCache, cached

from benchmarks.conftest import _RESULTS, Comparison
from cache_core import (
    CacheWarmer,
    JSONSerializer,
    MemoryCache,
    MsgpackSerializer,
    MultiLevelCache,
    RedisCache,
    TypedCache,
    memoize,
)
from tests._legacy_serializers import JSONSerializer as LegacyJSON

pytestmark = pytest.mark.benchmark(group="codec")

# "a typical 8-field dict with a nested list and dict"
VALUE: dict[str, Any] = {
    "id": 42,
    "name": "Ada Lovelace",
    "email": "ada@example.org",
    "active": True,
    "score": 98.5,
    "roles": ["admin", "dev", "ops"],
    "address": {"city": "London", "zip": "N1 9GU", "country": "UK"},
    "created": "2024-05-01T12:00:00Z",
}


@dataclasses.dataclass
class Address:
    city: str
    zip: str
    country: str


@dataclasses.dataclass
class User:
    id: int
    name: str
    email: str
    active: bool
    score: float
    roles: list[str]
    address: Address
    created: str


def test_codec_encode(benchmark: Any, compare: Callable[..., Comparison]) -> None:
    legacy, ours, packed = LegacyJSON(), JSONSerializer(), MsgpackSerializer()
    raw = msgspec.json.Encoder()
    assert ours.loads(ours.dumps(VALUE)) == VALUE
    compare(
        "encode the 8-field dict: JSONSerializer vs the one before issue 16",
        {
            "JSONSerializer before issue 16": lambda: legacy.dumps(VALUE),
            "JSONSerializer (msgspec)": lambda: ours.dumps(VALUE),
            "MsgpackSerializer": lambda: packed.dumps(VALUE),
            "for scale: bare msgspec.json encode": lambda: raw.encode(VALUE),
        },
        baseline="JSONSerializer before issue 16",
        inner=2000,
        target=">= 5x faster (ratio <= 0.2)",
    )
    benchmark(ours.dumps, VALUE)


def test_codec_decode(benchmark: Any, compare: Callable[..., Comparison]) -> None:
    legacy, ours, packed = LegacyJSON(), JSONSerializer(), MsgpackSerializer()
    data, mp = ours.dumps(VALUE), packed.dumps(VALUE)
    assert legacy.dumps(VALUE) == data
    raw = msgspec.json.Decoder()
    compare(
        "decode the 8-field dict: JSONSerializer vs the one before issue 16",
        {
            "JSONSerializer before issue 16": lambda: legacy.loads(data),
            "JSONSerializer (msgspec)": lambda: ours.loads(data),
            "MsgpackSerializer": lambda: packed.loads(mp),
            "for scale: bare msgspec.json decode": lambda: raw.decode(data),
        },
        baseline="JSONSerializer before issue 16",
        inner=2000,
        target=">= 3x faster (ratio <= 0.33)",
    )
    benchmark(ours.loads, data)


def test_codec_typed_decode(benchmark: Any, compare: Callable[..., Comparison]) -> None:
    ours = JSONSerializer()
    typed = ours.for_type(User)
    data = ours.dumps(VALUE)
    assert typed.loads(data) == User(**{**VALUE, "address": Address(**VALUE["address"])})
    compare(
        "typed decode into a dataclass vs untyped decode of the same bytes",
        {
            "untyped JSONSerializer.loads": lambda: ours.loads(data),
            "typed (type=User) loads": lambda: typed.loads(data),
        },
        baseline="untyped JSONSerializer.loads",
        inner=2000,
        target="<= 1.5x",
    )
    benchmark(typed.loads, data)


def test_codec_l1_hit(
    benchmark: Any, redis_client: redis.Redis, compare: Callable[..., Comparison]
) -> None:
    multi = MultiLevelCache(MemoryCache(), RedisCache(redis_client, prefix="bc"), l1_ttl=300)
    typed: TypedCache[dict[str, Any]] = TypedCache(multi)
    typed_user: TypedCache[User] = TypedCache(multi, type=User)
    typed.set("user:42", VALUE)
    typed_user.set("user:42:t", User(**{**VALUE, "address": Address(**VALUE["address"])}))
    raw = json.dumps(VALUE)

    @cached(cache=TTLCache(maxsize=10_000, ttl=300), lock=threading.Lock())
    def load(key: str) -> str:
        return raw

    load("user:42")
    compare(
        "TypedCache.get, L1 hit over MultiLevelCache vs cachetools.cached hit + json.loads",
        {
            "cachetools.cached + json.loads": lambda: json.loads(load("user:42")),
            "TypedCache.get (L1)": lambda: typed.get("user:42"),
            "TypedCache(type=User).get (L1)": lambda: typed_user.get("user:42:t"),
            "TypedCache.get_or_set (L1)": lambda: typed.get_or_set("user:42", dict),
        },
        baseline="cachetools.cached + json.loads",
        inner=2000,
        target="<= 0.8x",
    )
    benchmark(typed.get, "user:42")


def test_codec_warm_100k(benchmark: Any, redis_client: redis.Redis) -> None:
    n = 100_000
    db = {i: {"id": i, "name": f"user {i}", "active": True} for i in range(n)}
    typed: TypedCache[Any] = TypedCache(RedisCache(redis_client, prefix="bcw"))

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
            "warming 100k keys (codec): CacheWarmer (batches of 500) vs one TypedCache.set per key",
            "one set per key",
            {"one set per key": single / n * 1e9, "CacheWarmer, batch_size=500": batch / n * 1e9},
            {"one set per key": 1.0, "CacheWarmer, batch_size=500": batch / single},
            target=">= 12x faster (ratio <= 0.083)",
            notes=[f"speed-up: {single / batch:.1f}x (best of 2 rounds each)"],
        )
    )
    benchmark.pedantic(batched, rounds=1, iterations=1)


def user(user_id: int, tenant: str) -> dict[str, Any]:
    return {"id": user_id, "tenant": tenant, "name": "Ada"}


def test_codec_memoize_hit(benchmark: Any, compare: Callable[..., Comparison]) -> None:
    ours = memoize(MemoryCache(), ttl=300, namespace="bench:codec:user")(user)
    tools = cached(cache=TTLCache(maxsize=10_000, ttl=300), lock=threading.Lock())(user)
    for fn in (ours, tools):
        fn(42, "acme")
    compare(
        "memoize hit, in-process (MemoryCache) vs cachetools.cached(TTLCache, lock) hit",
        {
            "cachetools.cached(TTLCache, Lock) hit": lambda: tools(42, "acme"),
            "memoize(MemoryCache()) hit": lambda: ours(42, "acme"),
        },
        baseline="cachetools.cached(TTLCache, Lock) hit",
        inner=2000,
        target="<= 2.5x",
    )
    benchmark(ours, 42, "acme")
