"""The typed layers' behaviour on every kind of byte cache: memory, Redis, Cluster, multi-level.

``TypedCache``, ``ProtectedCache`` and ``@memoize`` over the shared ``byte_cache`` fixture
(tests/conftest.py). Only the public API is used (``cache_core.__all__``, documented methods,
``stats()`` and ``cache_info()``), so the suite holds whatever the layers look like inside.
Every assertion is a count or a value. Threads are lined up with events and the public
counters (a caller that found nothing has counted its miss before it waits), never by sleeping.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
from collections.abc import Callable
from typing import Any

import pytest

from cache_core import (
    BloomFilter,
    CacheInfo,
    CacheMiss,
    ProtectedCache,
    SerializationError,
    TypedCache,
    memoize,
)
from tests._loaders import CountingLoader, GatedLoader
from tests.conftest import ByteCache, ByteCacheFactory, wait_for

THREADS = 16
EXISTING = [f"user:{i}" for i in range(100)]


class Callers:
    """``n`` threads calling ``target`` at once; ``join()`` waits for all of them."""

    def __init__(self, n: int, target: Callable[[], Any]) -> None:
        self.results: list[Any] = []
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._target = target
        self._threads = [threading.Thread(target=self._run) for _ in range(n)]
        for t in self._threads:
            t.start()

    def _run(self) -> None:
        try:
            value = self._target()
        except BaseException as exc:
            with self._lock:
                self.errors.append(exc)
        else:
            with self._lock:
                self.results.append(value)

    def join(self) -> None:
        for t in self._threads:
            t.join(15)
            assert not t.is_alive(), "a caller never returned"


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: int


@pytest.fixture
def typed(byte_cache: ByteCache) -> TypedCache[Any]:
    return TypedCache(byte_cache)


# -- TypedCache: the plain API ------------------------------------------------------------------


def test_get_set_and_miss(typed: TypedCache[Any]) -> None:
    value = {"id": 7, "tags": ["a", "b"], "score": 1.5, "ok": True, "none": None}
    typed.set("user:7", value, ttl=60)
    typed.set("forever", [1, 2, 3])
    assert typed.get("user:7") == value
    assert typed.get("forever") == [1, 2, 3]
    with pytest.raises(CacheMiss):
        typed.get("absent")
    assert typed.get("absent", "dflt") == "dflt"
    typed.set("none", None)
    assert typed.get("none", "dflt") is None  # a cached None is a value, not a miss
    assert typed.exists("user:7") and not typed.exists("absent")


def test_set_overwrites(typed: TypedCache[Any]) -> None:
    typed.set("k", 1)
    typed.set("k", {"v": 2})
    assert typed.get("k") == {"v": 2}


def test_delete_and_clear_count_exactly(typed: TypedCache[Any]) -> None:
    typed.mset({f"k{i}": i for i in range(5)})
    assert typed.delete("k0") is True
    assert typed.delete("k0") is False
    assert typed.delete("never") is False
    assert typed.clear() == 4
    assert typed.mget([f"k{i}" for i in range(5)]) == {}
    assert typed.clear() == 0


def test_mget_and_mset(typed: TypedCache[Any]) -> None:
    typed.mset({"a": 1, "b": [2], "c": None, "d": {"x": "y"}}, ttl=60)
    got = typed.mget(["a", "b", "c", "d", "missing"])
    assert got == {"a": 1, "b": [2], "c": None, "d": {"x": "y"}}  # hits only, None included
    assert typed.mget([]) == {}
    assert typed.get("d") == {"x": "y"}  # mset entries are ordinary entries


def test_clear_leaves_other_namespaces_alone(
    byte_cache_kind: str, make_byte_cache: ByteCacheFactory
) -> None:
    mine: TypedCache[int] = TypedCache(make_byte_cache(byte_cache_kind))
    other: TypedCache[int] = TypedCache(make_byte_cache(byte_cache_kind))
    mine.set("k", 1)
    other.set("k", 2)
    assert mine.clear() == 1
    assert other.get("k") == 2


def test_typed_values_decode_into_the_type(byte_cache: ByteCache) -> None:
    points: TypedCache[Point] = TypedCache(byte_cache, type=Point)
    points.set("p", Point(1, 2))
    got = points.get("p")
    assert got == Point(1, 2) and type(got) is Point
    assert points.get_or_set("q", lambda: Point(3, 4)) == Point(3, 4)
    again = points.get_or_set("q", lambda: Point(0, 0))
    assert again == Point(3, 4) and type(again) is Point


# -- TypedCache: read-through ---------------------------------------------------------------------


def test_get_or_set_loads_once_then_hits(typed: TypedCache[Any]) -> None:
    db = CountingLoader()
    for _ in range(3):
        assert typed.get_or_set("k", lambda: db({"v": 1}), ttl=60) == {"v": 1}
    assert db.calls == 1
    s = typed.stats()
    assert (s.hits, s.misses, s.loads, s.load_errors) == (2, 1, 1, 0)
    assert typed.get("k") == {"v": 1}


def test_get_or_set_of_none_caches_the_none(typed: TypedCache[Any]) -> None:
    db = CountingLoader()
    assert typed.get_or_set("k", db) is None
    assert typed.get_or_set("k", db) is None
    assert db.calls == 1


def test_concurrent_misses_share_one_load(typed: TypedCache[Any]) -> None:
    loader = GatedLoader({"items": [1, 2, 3]})
    callers = Callers(THREADS, lambda: typed.get_or_set("hot", loader, ttl=60))
    assert loader.started.wait(5)
    assert wait_for(lambda: typed.stats().misses == THREADS)  # every caller missed, then waits
    loader.release.set()
    callers.join()
    assert callers.errors == []
    assert callers.results == [{"items": [1, 2, 3]}] * THREADS
    assert loader.calls == 1
    s = typed.stats()
    assert (s.misses, s.loads, s.load_errors) == (THREADS, 1, 0)
    assert typed.get("hot") == {"items": [1, 2, 3]}  # stored by the one load


def test_a_failed_load_is_shared_and_not_cached(typed: TypedCache[Any]) -> None:
    loader = GatedLoader(error=LookupError("db says no"))
    callers = Callers(THREADS, lambda: typed.get_or_set("k", loader))
    assert loader.started.wait(5)
    assert wait_for(lambda: typed.stats().misses == THREADS)
    loader.release.set()
    callers.join()
    assert loader.calls == 1
    assert len(callers.errors) == THREADS
    assert all(isinstance(e, LookupError) for e in callers.errors)
    assert typed.stats().load_errors == 1
    assert not typed.exists("k")
    assert typed.get_or_set("k", lambda: 42) == 42  # a later call loads again


def test_keys_load_independently(typed: TypedCache[Any]) -> None:
    db = CountingLoader()
    for key in ("a", "b", "c"):
        assert typed.get_or_set(key, functools.partial(db, key)) == key
    assert db.calls == 3
    assert typed.mget(["a", "b", "c"]) == {"a": "a", "b": "b", "c": "c"}


# -- TypedCache: distributed_lock ------------------------------------------------------------------


def test_distributed_lock_needs_a_cache_that_lends_locks(
    byte_cache_kind: str, byte_cache: ByteCache
) -> None:
    if byte_cache_kind == "memory":
        with pytest.raises(ValueError, match="distributed_lock"):
            TypedCache(byte_cache, distributed_lock=True)
        return
    typed: TypedCache[str] = TypedCache(byte_cache, distributed_lock=True, lock_timeout=5)
    db = CountingLoader()
    assert typed.get_or_set("k", lambda: db("v"), ttl=60) == "v"
    assert typed.get_or_set("k", lambda: db("w"), ttl=60) == "v"
    assert db.calls == 1
    assert typed.stats().lock_waits == 0  # nobody else held the lease


def test_distributed_lock_makes_one_load_among_caches(
    lock_cache_kind: str, make_byte_cache: ByteCacheFactory, unique_prefix: str
) -> None:
    """Three TypedCaches on one namespace (three singleflights, as in three processes)."""
    caches: list[TypedCache[str]] = [
        TypedCache(
            make_byte_cache(lock_cache_kind, prefix=unique_prefix),
            distributed_lock=True,
            lock_timeout=5,
        )
        for _ in range(3)
    ]
    loader = GatedLoader("value")
    leader = Callers(1, lambda: caches[0].get_or_set("cold", loader, ttl=60))
    assert loader.started.wait(5)  # the first cache holds the lease and is loading
    followers = [Callers(2, lambda c=c: c.get_or_set("cold", loader, ttl=60)) for c in caches[1:]]
    assert wait_for(lambda: sum(c.stats().lock_waits for c in caches[1:]) == 2)
    loader.release.set()
    for group in (leader, *followers):
        group.join()
        assert group.errors == []
        assert set(group.results) == {"value"}
    assert loader.calls == 1
    assert caches[0].stats().lock_waits == 0
    assert [c.stats().loads for c in caches] == [1, 0, 0]


# -- ProtectedCache -------------------------------------------------------------------------------


@pytest.fixture
def guard(typed: TypedCache[Any]) -> ProtectedCache[Any]:
    bloom = BloomFilter(1000, 0.001)
    bloom.update(EXISTING)
    return ProtectedCache(typed, bloom, null_ttl=60)


def test_bloom_rejects_without_loader_or_cache_read(guard: ProtectedCache[Any]) -> None:
    db = CountingLoader()
    for _ in range(10):
        assert guard.get_or_set("user:999999", lambda: db({"id": 1})) is None
    assert db.calls == 0
    s = guard.stats()
    assert (s.rejected, s.hits, s.misses, s.loads) == (10, 0, 0, 0)
    t = guard.cache.stats()
    assert (t.hits, t.misses) == (0, 0)  # not even a cache read
    assert not guard.cache.exists("user:999999")


def test_value_is_loaded_once_then_served(guard: ProtectedCache[Any]) -> None:
    db = CountingLoader()
    for _ in range(3):
        assert guard.get_or_set("user:2", lambda: db({"id": 2}), ttl=30) == {"id": 2}
    assert db.calls == 1
    s = guard.stats()
    assert (s.misses, s.loads, s.hits, s.negative_stores, s.negative_hits) == (1, 1, 2, 0, 0)
    assert guard.cache.get("user:2") == {"id": 2}


def test_none_is_negative_cached_as_a_tombstone(
    guard: ProtectedCache[Any], byte_cache: ByteCache
) -> None:
    db = CountingLoader()
    for _ in range(5):
        assert guard.get_or_set("user:3", lambda: db(None)) is None
    assert db.calls == 1
    s = guard.stats()
    assert (s.misses, s.loads, s.negative_stores, s.negative_hits) == (1, 1, 1, 4)
    assert guard.is_tombstone(byte_cache.get("user:3"))
    with pytest.raises(SerializationError, match="tombstone"):
        guard.cache.get("user:3")  # a tombstone never passes for a value
    assert guard.cache.stats().load_errors == 0  # "does not exist" is not a failed load


def test_a_cached_none_is_a_value_not_a_tombstone(
    guard: ProtectedCache[Any], byte_cache: ByteCache
) -> None:
    guard.cache.set("user:4", None)
    db = CountingLoader()
    assert guard.get_or_set("user:4", lambda: db("loaded")) is None
    assert db.calls == 0
    s = guard.stats()
    assert (s.hits, s.negative_hits) == (1, 0)
    assert not guard.is_tombstone(byte_cache.get("user:4"))


def test_set_adds_to_the_bloom_and_replaces_a_tombstone(guard: ProtectedCache[Any]) -> None:
    db = CountingLoader()
    assert guard.get_or_set("new:1", lambda: db("x")) is None  # rejected: not in the bloom
    guard.set("new:1", {"id": "new"}, ttl=30)
    assert "new:1" in guard.bloom
    assert guard.get_or_set("new:1", lambda: db("x")) == {"id": "new"}
    assert guard.get_or_set("user:6", lambda: db(None)) is None  # a tombstone
    guard.set("user:6", 6)
    assert guard.get_or_set("user:6", lambda: db(None)) == 6
    assert db.calls == 1
    assert guard.stats().rejected == 1


def test_delete_removes_a_tombstone(guard: ProtectedCache[Any]) -> None:
    db = CountingLoader()
    assert guard.get_or_set("user:7", lambda: db(None)) is None
    assert guard.delete("user:7") is True
    assert guard.get_or_set("user:7", lambda: db(7)) == 7
    assert db.calls == 2


def test_exceptions_propagate_and_are_never_negative_cached(guard: ProtectedCache[Any]) -> None:
    calls = CountingLoader()

    def failing() -> Any:
        calls()
        raise ConnectionError("database down")

    for _ in range(3):
        with pytest.raises(ConnectionError):
            guard.get_or_set("user:5", failing)
    assert calls.calls == 3
    assert guard.stats().negative_stores == 0
    assert not guard.cache.exists("user:5")


@pytest.mark.parametrize("result", [None, {"id": 11}], ids=["absent", "value"])
def test_concurrent_misses_of_one_key_cost_one_load(
    guard: ProtectedCache[Any], result: Any
) -> None:
    loader = GatedLoader(result)
    callers = Callers(THREADS, lambda: guard.get_or_set("user:11", loader))
    assert loader.started.wait(5)
    # The TypedCache below counts each request's miss before it waits for the one load.
    assert wait_for(lambda: guard.cache.stats().misses == THREADS)
    loader.release.set()
    callers.join()
    assert callers.errors == []
    assert callers.results == [result] * THREADS
    assert loader.calls == 1
    assert (guard.stats().misses, guard.stats().loads) == (THREADS, 1)
    assert guard.stats().negative_stores == (1 if result is None else 0)
    assert guard.get_or_set("user:11", lambda: "reloaded") == result  # served from the cache


# -- memoize ---------------------------------------------------------------------------------------


def test_memoize_counts_hits_and_misses(byte_cache: ByteCache) -> None:
    db = CountingLoader()

    @memoize(byte_cache, ttl=60, namespace="all.square")
    def square(x: int) -> int:
        return int(db(x * x))

    assert [square(2), square(2), square(3), square(x=2)] == [4, 4, 9, 4]
    assert db.calls == 2
    assert square.cache_info() == CacheInfo(hits=2, misses=2, errors=0)


def test_memoize_cache_clear_and_invalidate(byte_cache: ByteCache) -> None:
    db = CountingLoader()

    @memoize(byte_cache, ttl=60, namespace="all.double")
    def double(x: int) -> int:
        return int(db(2 * x))

    double(1), double(2)
    assert double.invalidate(1) is True
    assert double.invalidate(1) is False
    assert (double(1), double(2)) == (2, 4)  # 1 reloads, 2 is still cached
    assert db.calls == 3
    double.cache_clear()
    assert (double(1), double(2)) == (2, 4)  # every entry reloads
    assert db.calls == 5
    assert double.cache_info() == CacheInfo(hits=1, misses=5, errors=0)


def test_memoize_refresh_stores_a_new_value(byte_cache: ByteCache) -> None:
    version = CountingLoader()

    @memoize(byte_cache, ttl=60, namespace="all.version")
    def current(name: str) -> str:
        version()
        return f"{name}-{version.calls}"

    assert current("a") == "a-1"
    assert current.refresh("a") == "a-2"
    assert current("a") == "a-2"  # the refreshed value is served from the cache
    assert version.calls == 2


def test_memoize_returns_the_annotated_type(byte_cache: ByteCache) -> None:
    db = CountingLoader()

    @memoize(byte_cache, ttl=60, namespace="all.point")
    def point(x: int) -> Point:
        return Point(x, int(db(-x)))

    first, second = point(1), point(1)
    assert first == second == Point(1, -1)
    assert type(second) is Point  # decoded from the cache into the annotated type
    assert db.calls == 1


def test_memoize_exceptions_are_counted_and_not_cached(byte_cache: ByteCache) -> None:
    db = CountingLoader()

    @memoize(byte_cache, ttl=60, namespace="all.boom")
    def boom(x: int) -> int:
        db()
        raise ValueError(x)

    for _ in range(2):
        with pytest.raises(ValueError):
            boom(1)
    assert db.calls == 2
    assert boom.cache_info() == CacheInfo(hits=0, misses=2, errors=2)


def test_memoize_concurrent_calls_run_the_function_once(byte_cache: ByteCache) -> None:
    loader = GatedLoader({"id": 7})

    @memoize(byte_cache, ttl=60, namespace="all.user")
    def user(user_id: int) -> dict[str, int]:
        value: dict[str, int] = loader()
        return value

    callers = Callers(THREADS, lambda: user(7))
    assert loader.started.wait(5)
    assert wait_for(lambda: user.stats().misses == THREADS)
    loader.release.set()
    callers.join()
    assert callers.errors == []
    assert callers.results == [{"id": 7}] * THREADS
    assert loader.calls == 1
    assert user.cache_info() == CacheInfo(hits=THREADS - 1, misses=1, errors=0)


def test_memoize_distributed_lock(byte_cache_kind: str, byte_cache: ByteCache) -> None:
    db = CountingLoader()
    if byte_cache_kind == "memory":
        with pytest.raises(ValueError, match="distributed_lock"):
            memoize(byte_cache, namespace="all.locked", distributed_lock=True)(lambda x: x)
        return

    @memoize(byte_cache, ttl=60, namespace="all.locked", distributed_lock=True)
    def locked(x: int) -> int:
        return int(db(x + 1))

    assert (locked(1), locked(1)) == (2, 2)
    assert db.calls == 1
    assert locked.cache_info() == CacheInfo(hits=1, misses=1, errors=0)
