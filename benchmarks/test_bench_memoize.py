"""@memoize against the decorators a user would otherwise reach for, same run, interleaved.

Targets (issue 7), a two-argument function: a hit served in-process (``@memoize(MemoryCache())``)
<= 1.5x a ``cachetools.cached(TTLCache, lock=Lock())`` hit (``functools.lru_cache`` shown as the
floor); a hit served from Redis <= 1.10x a raw redis-py GET + ``json.loads``; dogpile.cache's
``cache_on_arguments`` shown beside ours. Key building alone: ns per call by call shape.

Extra rows show where the time goes: ``TypedCache.get_or_set`` alone (the read-through every
memoized call is built on) and ``generation_interval=0`` (the ``cache_clear`` token read on
every call instead of once a second).
"""

from __future__ import annotations

import functools
import inspect
import json
import threading
from collections.abc import Callable
from typing import Any

import pytest
import redis
from cachetools import TTLCache, cached
from cachetools.keys import hashkey
from dogpile.cache import make_region

from benchmarks.conftest import Comparison
from cache_core import MemoryCache, RedisCache, memoize
from cache_core._keys import KeyBuilder

pytestmark = pytest.mark.benchmark(group="memoize")


def user(user_id: int, tenant: str) -> dict[str, Any]:
    """The two-argument function every contender caches."""
    return {"id": user_id, "tenant": tenant, "name": "Ada"}


def test_memoize_in_process_hit(benchmark: Any, compare: Callable[..., Comparison]) -> None:
    ours = memoize(MemoryCache(), ttl=300, namespace="bench:user")(user)
    every_call = memoize(MemoryCache(), ttl=300, namespace="bench:u0", generation_interval=0)(user)
    tools = cached(cache=TTLCache(maxsize=10_000, ttl=300), lock=threading.Lock())(user)
    floor = functools.lru_cache(maxsize=10_000)(user)
    region = make_region().configure("dogpile.cache.memory", expiration_time=300)
    dogpile = region.cache_on_arguments()(user)
    for fn in (ours, every_call, tools, floor, dogpile):
        fn(42, "acme")
    typed = ours.cache
    key = ours.cache_key(42, "acme")
    compare(
        "memoize hit, in-process (MemoryCache) vs cachetools.cached(TTLCache, lock) hit",
        {
            "cachetools.cached(TTLCache, Lock) hit": lambda: tools(42, "acme"),
            "functools.lru_cache hit (floor)": lambda: floor(42, "acme"),
            "memoize(MemoryCache()) hit": lambda: ours(42, "acme"),
            "memoize, generation_interval=0": lambda: every_call(42, "acme"),
            "TypedCache.get_or_set hit alone": lambda: typed.get_or_set(key, dict, 300),
            "dogpile cache_on_arguments (memory) hit": lambda: dogpile(42, "acme"),
        },
        baseline="cachetools.cached(TTLCache, Lock) hit",
        inner=2000,
        target="memoize <= 1.5x",
    )
    benchmark(ours, 42, "acme")


def test_memoize_redis_hit(
    benchmark: Any, redis_client: redis.Redis, compare: Callable[..., Comparison]
) -> None:
    port = redis_client.connection_pool.connection_kwargs["port"]
    ours = memoize(RedisCache(redis_client, prefix="bm"), ttl=300, namespace="bench:user")(user)
    every_call = memoize(
        RedisCache(redis_client, prefix="bm"), ttl=300, namespace="bench:u0", generation_interval=0
    )(user)
    region = make_region().configure(
        "dogpile.cache.redis",
        expiration_time=300,
        arguments={"host": "127.0.0.1", "port": port, "db": 0},
    )
    dogpile = region.cache_on_arguments()(user)
    for fn in (ours, every_call, dogpile):
        fn(42, "acme")
    redis_client.set("raw:user:42:acme", json.dumps(user(42, "acme")))
    typed = ours.cache
    key = ours.cache_key(42, "acme")
    compare(
        "memoize hit from Redis vs raw redis-py GET + json.loads",
        {
            "raw GET + json.loads": lambda: json.loads(redis_client.get("raw:user:42:acme")),  # type: ignore[arg-type]
            "memoize(RedisCache) hit": lambda: ours(42, "acme"),
            "memoize, generation_interval=0": lambda: every_call(42, "acme"),
            "TypedCache.get_or_set hit alone": lambda: typed.get_or_set(key, dict, 300),
            "dogpile cache_on_arguments (redis) hit": lambda: dogpile(42, "acme"),
        },
        baseline="raw GET + json.loads",
        inner=200,
        target="memoize <= 1.10x",
    )
    benchmark(ours, 42, "acme")


def test_key_building(benchmark: Any, compare: Callable[..., Comparison]) -> None:
    def report(user_id: int, tenant: str, filters: Any = None, limit: int = 10) -> None: ...

    keys = KeyBuilder(report)
    signature = inspect.signature(report)
    filters = {"status": ["open", "paid"], "tags": {"vip", "eu"}, "since": 2024}

    def bind_only() -> object:
        bound = signature.bind(42, "acme", limit=5)
        bound.apply_defaults()
        return bound

    compare(
        "key building alone (4-parameter function, 2 defaults)",
        {
            "positional: (42, 'acme')": lambda: keys.text((42, "acme"), {}),
            "keyword: (42, 'acme', limit=5)": lambda: keys.text((42, "acme"), {"limit": 5}),
            "unhashable: (42, 'acme', {...lists, set})": lambda: keys.text(
                (42, "acme", filters), {}
            ),
            "for scale: Signature.bind + apply_defaults": bind_only,
            "for scale: cachetools.keys.hashkey(42, 'acme')": lambda: hashkey(42, "acme"),
        },
        baseline="positional: (42, 'acme')",
        inner=2000,
        target="report ns per call",
    )
    benchmark(keys.text, (42, "acme"), {})
