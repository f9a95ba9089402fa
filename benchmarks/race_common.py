"""The read-through configurations that benchmarks/test_bench_consistency.py races updates
against; shared by the benchmark and its worker process, so both sides build the same keys."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis

from cache_core import RedisCache, TypedCache, memoize

CONFIGS = ("plain", "distributed_lock", "stale_ttl", "memoize")

Reader = Callable[[str, Callable[[], str]], str]
Writer = Callable[[str, str], None]


def build(client: redis.Redis, prefix: str, config: str) -> Reader:
    """``read(key, load)`` for one configuration, over a RedisCache on ``client``."""
    cache = RedisCache(client, prefix=prefix)
    options: dict[str, Any] = {"ttl_jitter": 0.0}
    if config == "distributed_lock":
        options["distributed_lock"] = True
    if config == "stale_ttl":
        options["stale_ttl"] = 60
    typed: TypedCache[str] = TypedCache(cache, **options)
    if config != "memoize":
        return lambda key, load: typed.get_or_set(key, load, ttl=60)
    loaders: dict[str, Callable[[], str]] = {}

    @memoize(cache, ttl=60, namespace="race")
    def fetch(key: str) -> str:
        return loaders[key]()

    def read(key: str, load: Callable[[], str]) -> str:
        loaders[key] = load
        return fetch(key)

    return read


def writer(client: redis.Redis, prefix: str, config: str) -> Writer:
    """``write(key, how)``: the update's cache step, ``how`` = "delete" or "set"."""
    cache = RedisCache(client, prefix=prefix)
    typed: TypedCache[str] = TypedCache(cache, ttl_jitter=0.0)
    if config != "memoize":

        def write(key: str, how: str) -> None:
            if how == "delete":
                typed.delete(key)
            else:
                typed.set(key, "new", ttl=60)

        return write

    @memoize(cache, ttl=60, namespace="race")
    def fetch(key: str) -> str:
        return "new"

    def write_memoized(key: str, how: str) -> None:
        if how == "delete":
            fetch.invalidate(key)
        else:
            fetch.refresh(key)  # memoize's way to write a new value

    return write_memoized


def stored(client: redis.Redis, prefix: str, config: str, key: str) -> str | None:
    """What the cache holds for ``key`` now (None: nothing)."""
    cache = RedisCache(client, prefix=prefix)
    if config == "memoize":

        @memoize(cache, ttl=60, namespace="race")
        def fetch(key: str) -> str:
            raise LookupError(key)

        data = cache.get(fetch.cache_key(key), None)
    else:
        data = cache.get(key, None)
    if data is None:
        return None
    return "old" if b"old" in data else "new" if b"new" in data else data.decode("latin-1")
