"""CacheWarmer: keys readers find, batches, failures reported, refresh by pattern, jitter."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
import redis

from cache_core import (
    BackendError,
    BloomFilter,
    CacheWarmer,
    MemoryCache,
    ProtectedCache,
    RedisCache,
    TypedCache,
    WarmReport,
)
from tests.conftest import ByteCacheFactory
from tests.redis_harness import RedisServer

DB = {i: {"id": i, "name": f"user {i}"} for i in range(1000)}


def key_fn(user_id: int) -> str:
    return f"user:{user_id}"


def parse_key(key: str) -> int | None:
    head, _, tail = key.partition(":")
    return int(tail) if head == "user" and tail.isdigit() else None


class BatchDB:
    """A batch loader over DB that records its calls and can fail chosen batches."""

    def __init__(self, fail_batches: tuple[int, ...] = ()) -> None:
        self.calls: list[list[int]] = []
        self.fail_batches = fail_batches

    def __call__(self, ids: list[int]) -> Mapping[int, Any]:
        self.calls.append(list(ids))
        if len(self.calls) - 1 in self.fail_batches:
            raise ConnectionError("database hiccup")
        return {i: DB[i] for i in ids if i in DB}


class CountingCache(MemoryCache):
    """A MemoryCache that counts writes and can fail chosen mset calls."""

    def __init__(self, fail_msets: tuple[int, ...] = (), **kw: Any) -> None:
        super().__init__(**kw)
        self.msets = 0
        self.sets = 0
        self.fail_msets = fail_msets

    def mset_with_ttls(self, entries: Any) -> None:
        self.msets += 1
        if self.msets - 1 in self.fail_msets:
            raise BackendError("redis MSET failed: simulated")
        super().mset_with_ttls(entries)

    def mset_fenced(self, entries: Any, tokens: Any) -> frozenset[str]:
        # The warmer stores through fences (a write during the batch's load wins).
        self.msets += 1
        if self.msets - 1 in self.fail_msets:
            raise BackendError("redis MSET failed: simulated")
        return super().mset_fenced(entries, tokens)

    def set(self, key: str, value: bytes, ttl: Any = None) -> None:
        self.sets += 1
        super().set(key, value, ttl)


@pytest.fixture
def typed(byte_cache_kind: str, make_byte_cache: ByteCacheFactory) -> TypedCache[Any]:
    """A TypedCache over each kind of byte cache (memory, redis, cluster, multilevel)."""
    maxsize = 5000 if byte_cache_kind == "memory" else None
    return TypedCache(make_byte_cache(byte_cache_kind, maxsize=maxsize))


def test_warmed_keys_are_read_under_key_fn(typed: TypedCache[Any]) -> None:
    db = BatchDB()
    warmer = CacheWarmer(typed, db, key_fn=key_fn, batch_size=100)
    report = warmer.warm(range(250), ttl=300)
    assert (report.loaded, report.missing, report.failed, report.batches) == (250, 0, 0, 3)
    assert report.ok and report.duration >= 0
    assert [len(c) for c in db.calls] == [100, 100, 50]
    for i in (0, 99, 100, 249):
        assert typed.get(key_fn(i)) == DB[i]  # exactly as a reader looks it up
    assert typed.get(str(7), None) is None  # nothing under any other spelling
    calls_before = len(db.calls)
    assert typed.get_or_set(key_fn(5), lambda: "reloaded") == DB[5]
    assert len(db.calls) == calls_before


def test_one_mset_per_batch() -> None:
    byte_cache = CountingCache(maxsize=5000)
    report = CacheWarmer(TypedCache(byte_cache), BatchDB(), batch_size=64).warm(range(200))
    assert report.loaded == 200
    assert (byte_cache.msets, byte_cache.sets) == (4, 0)


def test_a_failing_batch_in_the_middle_is_reported_and_the_others_land(
    typed: TypedCache[Any],
) -> None:
    db = BatchDB(fail_batches=(1,))
    report = CacheWarmer(typed, db, key_fn=key_fn, batch_size=10).warm(range(30))
    assert (report.loaded, report.missing, report.failed) == (20, 0, 10)
    assert report.failed_keys == tuple(range(10, 20))
    assert len(report.errors) == 1 and isinstance(report.errors[0], ConnectionError)
    assert not report.ok
    assert typed.get(key_fn(9)) == DB[9]
    assert typed.get(key_fn(10), None) is None
    assert typed.get(key_fn(29)) == DB[29]


def test_a_backend_failure_fails_only_its_batch() -> None:
    byte_cache = CountingCache(fail_msets=(0,))
    typed: TypedCache[Any] = TypedCache(byte_cache)
    report = CacheWarmer(typed, BatchDB(), key_fn=key_fn, batch_size=5).warm(range(15))
    assert (report.loaded, report.failed) == (10, 5)
    assert isinstance(report.errors[0], BackendError)
    assert typed.get(key_fn(0), None) is None
    assert typed.get(key_fn(5)) == DB[5]


def test_bad_loader_results_and_key_fn_fail_their_batch() -> None:
    typed: TypedCache[Any] = TypedCache(MemoryCache())
    calls = [0]

    def loader(ids: list[int]) -> Any:
        calls[0] += 1
        return [DB[i] for i in ids] if calls[0] == 1 else {i: DB[i] for i in ids}

    report = CacheWarmer(typed, loader, key_fn=key_fn, batch_size=2).warm(range(4))
    assert (report.loaded, report.failed) == (2, 2)
    assert isinstance(report.errors[0], TypeError)
    report = CacheWarmer(typed, BatchDB(), key_fn=lambda i: i, batch_size=2).warm(range(2))  # type: ignore[arg-type, return-value]
    assert report.failed == 2
    assert "key_fn must return str" in str(report.errors[0])


def test_missing_keys_are_reported_not_stored(typed: TypedCache[Any]) -> None:
    report = CacheWarmer(typed, BatchDB(), key_fn=key_fn, batch_size=4).warm([1, 5000, 2, 6000])
    assert (report.loaded, report.missing, report.failed) == (2, 2, 0)
    assert report.missing_keys == (5000, 6000)
    assert not typed.exists(key_fn(5000))


def test_progress_is_called_after_each_batch() -> None:
    seen: list[tuple[int, int, int, int]] = []
    warmer = CacheWarmer(
        TypedCache(MemoryCache()), BatchDB(fail_batches=(1,)), key_fn=key_fn, batch_size=3
    )
    warmer.warm([0, 1, 2, 3, 4, 5, 7000], progress=lambda *a: seen.append(a))
    assert seen == [(3, 3, 0, 0), (6, 3, 0, 3), (7, 3, 1, 3)]


def test_progress_exception_stops_the_run() -> None:
    db = BatchDB()

    def stop(*_: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        CacheWarmer(TypedCache(MemoryCache()), db, batch_size=2).warm(range(10), progress=stop)
    assert len(db.calls) == 1


def test_warmed_keys_go_into_the_bloom_for_a_guard() -> None:
    typed: TypedCache[Any] = TypedCache(MemoryCache())
    bloom = BloomFilter(1000, 0.001)
    report = CacheWarmer(typed, BatchDB(), key_fn=key_fn).warm([1, 2, 9999], bloom=bloom)
    assert report.loaded == 2
    assert bloom.contains_many([key_fn(1), key_fn(2), key_fn(9999)]) == [True, True, False]
    guard = ProtectedCache(typed, bloom)
    assert guard.get_or_set(key_fn(1), lambda: None) == DB[1]
    assert guard.get_or_set(key_fn(9999), lambda: {"x": 1}) is None
    assert guard.stats().rejected == 1


def test_ttl_jitter_is_visible_in_pttls(redis_client: redis.Redis) -> None:
    cache = RedisCache(redis_client, prefix="jit")
    warmer = CacheWarmer(TypedCache(cache, ttl_jitter=0.1), BatchDB(), key_fn=key_fn)
    warmer.warm(range(200), ttl=100)
    pttls = [redis_client.pttl(cache.redis_key(key_fn(i))) for i in range(200)]
    assert all(89_000 < p <= 100_000 for p in pttls)
    assert len(set(pttls)) > 150  # not one expiry moment for the whole batch
    assert max(pttls) - min(pttls) > 5_000


def test_refresh_reloads_the_keys_under_a_pattern(typed: TypedCache[Any]) -> None:
    for i in (1, 2, 3):
        typed.set(key_fn(i), {"stale": True})
    typed.set("other:1", "untouched")
    typed.set("user:x", "not an id")
    db = BatchDB()
    warmer = CacheWarmer(typed, db, key_fn=key_fn, parse_key=parse_key, batch_size=2)
    report = warmer.refresh("user:*", ttl=60)
    assert (report.loaded, report.missing, report.failed) == (3, 0, 0)
    assert sorted(i for call in db.calls for i in call) == [1, 2, 3]
    assert all(typed.get(key_fn(i)) == DB[i] for i in (1, 2, 3))
    assert typed.get("other:1") == "untouched"


def test_refresh_on_redis_uses_scan_within_the_prefix(redis_client: redis.Redis) -> None:
    mine = TypedCache(RedisCache(redis_client, prefix="a*"))  # a glob character in the prefix
    theirs = TypedCache(RedisCache(redis_client, prefix="ab"))
    for i in range(1500):  # more than one SCAN page
        mine.set(key_fn(i % 1000 + (0 if i < 1000 else 5000)), {"stale": True})
    theirs.set(key_fn(1), "theirs")
    redis_client.config_resetstat()
    db = BatchDB()
    report = CacheWarmer(mine, db, key_fn=key_fn, parse_key=parse_key, batch_size=500).refresh()
    assert (report.loaded, report.missing) == (1000, 500)  # ids 5000+ are gone from the db
    stats = redis_client.info("commandstats")
    assert "cmdstat_keys" not in stats and stats["cmdstat_scan"]["calls"] >= 2
    assert theirs.get(key_fn(1)) == "theirs"


def test_refresh_on_a_cluster(cluster_client: Any) -> None:
    typed: TypedCache[Any] = TypedCache(RedisCache(cluster_client, prefix="w"))
    for i in range(50):
        typed.set(key_fn(i), "stale")
    report = CacheWarmer(typed, BatchDB(), key_fn=key_fn, parse_key=parse_key).refresh("user:*")
    assert report.loaded == 50
    assert typed.get(key_fn(49)) == DB[49]


def test_refresh_listing_failure_is_a_backend_error(fault_server: RedisServer) -> None:
    cache = RedisCache.from_url(fault_server.url, prefix="f")
    warmer = CacheWarmer(TypedCache(cache), BatchDB())
    fault_server.stop()
    try:
        with pytest.raises(BackendError):
            warmer.refresh()
    finally:
        fault_server.start()
        cache.close()


def test_report_is_a_dataclass() -> None:
    report = WarmReport(1, 2, 3, 0.5)
    assert (report.loaded, report.missing, report.failed, report.duration) == (1, 2, 3, 0.5)
    with pytest.raises(AttributeError):
        report.loaded = 5  # type: ignore[misc]


# -- argument checks ----------------------------------------------------------------------


def test_constructor_arguments_are_checked() -> None:
    typed: TypedCache[Any] = TypedCache(MemoryCache())
    with pytest.raises(TypeError, match="cache must be a TypedCache"):
        CacheWarmer(MemoryCache(), BatchDB())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="loader"):
        CacheWarmer(typed, {})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="key_fn"):
        CacheWarmer(typed, BatchDB(), key_fn="user:")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="parse_key"):
        CacheWarmer(typed, BatchDB(), parse_key=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="batch_size"):
        CacheWarmer(typed, BatchDB(), batch_size=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size"):
        CacheWarmer(typed, BatchDB(), batch_size=0)


def test_warm_and_refresh_arguments_are_checked() -> None:
    warmer = CacheWarmer(TypedCache(MemoryCache()), BatchDB())
    with pytest.raises(TypeError, match="keys"):
        warmer.warm("123")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="keys"):
        warmer.warm(5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ttl"):
        warmer.warm([1], ttl=0)
    with pytest.raises(TypeError, match="progress"):
        warmer.warm([1], progress=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="bloom"):
        warmer.warm([1], bloom=object())
    with pytest.raises(TypeError, match="pattern"):
        warmer.refresh(5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pattern"):
        warmer.refresh("")
