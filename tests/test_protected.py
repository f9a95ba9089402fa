"""ProtectedCache: each branch of the guard, tombstones, errors, concurrency, argument checks."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest
import redis

from cache_core import (
    BackendError,
    BloomFilter,
    MemoryCache,
    ProtectedCache,
    RedisBloomFilter,
    RedisCache,
    SerializationError,
    TypedCache,
)
from tests._loaders import CountingLoader
from tests.conftest import ByteCache, ByteCacheFactory, FakeClock
from tests.redis_harness import RedisServer

EXISTING = [f"user:{i}" for i in range(100)]


def bloom_of(keys: list[str]) -> BloomFilter:
    bf = BloomFilter(1000, 0.001)
    bf.update(keys)
    return bf


@pytest.fixture
def typed(byte_cache: ByteCache) -> TypedCache[Any]:
    """A TypedCache over each kind of byte cache (memory, redis, cluster, multilevel)."""
    return TypedCache(byte_cache)


@pytest.fixture
def guard(typed: TypedCache[Any]) -> ProtectedCache[Any]:
    return ProtectedCache(typed, bloom_of(EXISTING), null_ttl=60)


def test_key_not_in_bloom_is_rejected_without_loader_or_cache(guard: ProtectedCache[Any]) -> None:
    db = CountingLoader()
    for _ in range(10):
        assert guard.get_or_set("user:999999", lambda: db({"id": 1})) is None
    assert db.calls == 0
    assert guard.stats().rejected == 10
    assert guard.cache.stats().misses == 0  # not even a cache read
    assert not guard.cache.exists("user:999999")


def test_cached_value_is_returned_without_loader(guard: ProtectedCache[Any]) -> None:
    guard.cache.set("user:1", {"id": 1})
    db = CountingLoader()
    assert guard.get_or_set("user:1", lambda: db({"id": "other"})) == {"id": 1}
    assert db.calls == 0
    assert guard.stats().hits == 1


def test_miss_loads_once_then_hits(guard: ProtectedCache[Any]) -> None:
    db = CountingLoader()
    assert guard.get_or_set("user:2", lambda: db({"id": 2}), ttl=30) == {"id": 2}
    assert guard.get_or_set("user:2", lambda: db({"id": 2}), ttl=30) == {"id": 2}
    assert db.calls == 1
    s = guard.stats()
    assert (s.misses, s.loads, s.hits, s.negative_stores) == (1, 1, 1, 0)
    assert guard.cache.get("user:2") == {"id": 2}


def test_loader_none_is_negative_cached(guard: ProtectedCache[Any]) -> None:
    db = CountingLoader()
    for _ in range(5):
        assert guard.get_or_set("user:3", lambda: db(None)) is None
    assert db.calls == 1
    s = guard.stats()
    assert (s.loads, s.negative_stores, s.negative_hits) == (1, 1, 4)
    raw = guard.cache.cache.get("user:3")
    assert guard.is_tombstone(raw)
    assert raw[0] == 0xCC and raw[2] & 0x02  # the envelope's tombstone flag
    with pytest.raises(SerializationError, match="tombstone"):
        guard.cache.get("user:3")  # a tombstone never passes for a value
    assert guard.cache.stats().load_errors == 0  # "does not exist" is not a failed load


def test_cached_none_value_is_a_hit_not_a_tombstone(guard: ProtectedCache[Any]) -> None:
    guard.cache.set("user:4", None)
    db = CountingLoader()
    assert guard.get_or_set("user:4", lambda: db("loaded")) is None
    assert db.calls == 0
    s = guard.stats()
    assert (s.hits, s.negative_hits) == (1, 0)
    assert not guard.is_tombstone(guard.cache.cache.get("user:4"))
    assert guard.cache.get("user:4") is None


def test_exceptions_propagate_and_are_not_cached(guard: ProtectedCache[Any]) -> None:
    calls = []

    def failing() -> Any:
        calls.append(1)
        raise ConnectionError("database down")

    for _ in range(3):
        with pytest.raises(ConnectionError, match="database down"):
            guard.get_or_set("user:5", failing)
    assert len(calls) == 3  # every call tried again: nothing remembered the outage
    assert not guard.cache.exists("user:5")
    assert guard.stats().negative_stores == 0
    assert guard.get_or_set("user:5", lambda: {"id": 5}) == {"id": 5}


def test_set_adds_the_key_to_the_bloom(guard: ProtectedCache[Any]) -> None:
    db = CountingLoader()
    assert guard.get_or_set("new:1", lambda: db("x")) is None
    assert db.calls == 0
    guard.set("new:1", {"id": "new"}, ttl=30)
    assert "new:1" in guard.bloom
    assert guard.get_or_set("new:1", lambda: db("x")) == {"id": "new"}
    assert db.calls == 0


def test_set_replaces_a_tombstone(guard: ProtectedCache[Any]) -> None:
    assert guard.get_or_set("user:6", lambda: None) is None
    guard.set("user:6", 6)
    assert guard.get_or_set("user:6", lambda: None) == 6


def test_delete_removes_a_tombstone(guard: ProtectedCache[Any]) -> None:
    db = CountingLoader()
    guard.get_or_set("user:7", lambda: db(None))
    assert guard.delete("user:7")
    assert guard.get_or_set("user:7", lambda: db(7)) == 7
    assert db.calls == 2


def test_tombstone_expires_after_null_ttl(clock: FakeClock) -> None:
    guard = ProtectedCache(
        TypedCache(MemoryCache(timer=clock)), bloom_of(EXISTING), null_ttl=timedelta(seconds=30)
    )
    db = CountingLoader()
    assert guard.get_or_set("user:8", lambda: db(None)) is None
    clock.advance(29.9)
    assert guard.get_or_set("user:8", lambda: db(None)) is None
    assert db.calls == 1
    clock.advance(0.2)
    assert guard.get_or_set("user:8", lambda: db({"id": 8})) == {"id": 8}
    assert db.calls == 2


def test_a_stale_refresh_that_finds_nothing_is_not_a_failed_refresh(clock: FakeClock) -> None:
    typed: TypedCache[Any] = TypedCache(
        MemoryCache(timer=clock), stale_ttl=60, ttl_jitter=0.0, clock=clock
    )
    guard = ProtectedCache(typed, bloom_of(EXISTING))
    assert guard.get_or_set("user:8", lambda: {"id": 8}, ttl=10) == {"id": 8}
    clock.advance(11)  # stale: this read refreshes, and the row is gone from the database
    assert guard.get_or_set("user:8", lambda: None, ttl=10) is None
    assert typed.stats().stale_errors_served == 0
    assert guard.get_or_set("user:8", lambda: {"id": 8}, ttl=10) is None  # tombstone now
    assert guard.stats().negative_hits == 1


def test_tombstone_pttl_on_redis(
    redis_client: redis.Redis, make_byte_cache: ByteCacheFactory
) -> None:
    cache = make_byte_cache("redis")
    assert isinstance(cache, RedisCache)
    guard = ProtectedCache(TypedCache(cache), bloom_of(EXISTING), null_ttl=45)
    guard.get_or_set("user:9", lambda: None, ttl=3600)
    pttl = redis_client.pttl(cache.redis_key("user:9"))
    assert 44_000 < pttl <= 45_000  # null_ttl, not the value ttl, and no jitter added above it


def test_value_ttl_is_used_for_values(
    redis_client: redis.Redis, make_byte_cache: ByteCacheFactory
) -> None:
    cache = make_byte_cache("redis")
    assert isinstance(cache, RedisCache)
    guard = ProtectedCache(TypedCache(cache, ttl_jitter=0.0), bloom_of(EXISTING), null_ttl=45)
    guard.get_or_set("user:10", lambda: 10, ttl=3600)
    assert 3_599_000 < redis_client.pttl(cache.redis_key("user:10")) <= 3_600_000


@pytest.mark.parametrize("result", [None, {"id": 11}], ids=["absent", "value"])
def test_32_threads_one_missing_key_one_loader_call(typed: TypedCache[Any], result: Any) -> None:
    guard = ProtectedCache(typed, bloom_of(EXISTING))
    db = CountingLoader(delay=0.05)  # a slow database widens the window; not a synchronization
    barrier = threading.Barrier(32)
    answers: list[Any] = []
    errors: list[BaseException] = []

    def request() -> None:
        barrier.wait()
        try:
            answers.append(guard.get_or_set("user:11", lambda: db(result)))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=request) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert db.calls <= 1
    assert answers == [result] * 32


def test_tombstone_written_before_a_late_caller_starts_is_seen_inside_the_flight() -> None:
    """A caller that missed just before another flight stored a tombstone does not reload."""
    typed: TypedCache[Any] = TypedCache(MemoryCache())
    guard = ProtectedCache(typed, bloom_of(EXISTING))
    db = CountingLoader()
    real_read = typed._read
    reads = [0]

    def read_then_tombstone(key: str) -> Any:
        data = real_read(key)
        reads[0] += 1
        if reads[0] == 1:  # after our first read missed, "another flight" stores a tombstone
            typed.cache.set(key, typed.codec.tombstone, 60)
        return data

    typed._read = read_then_tombstone  # type: ignore[method-assign]
    assert guard.get_or_set("user:12", lambda: db(12)) is None
    assert db.calls == 0
    assert guard.stats().negative_hits == 1


def test_backend_outage_answers_from_the_loader(fault_server: RedisServer) -> None:
    cache = RedisCache.from_url(fault_server.url, prefix="p")  # short timeouts, one retry
    guard = ProtectedCache(TypedCache(cache), bloom_of(EXISTING))
    fault_server.stop()
    db = CountingLoader()
    assert guard.get_or_set("user:13", lambda: db(13)) == 13
    assert guard.get_or_set("user:14", lambda: db(None)) is None  # tombstone lost, answer kept
    assert db.calls == 2
    assert guard.get_or_set("nope", lambda: db(1)) is None
    assert db.calls == 2
    with pytest.raises(BackendError):
        guard.set("user:15", 15)
    cache.close()


def test_a_redis_bloom_that_cannot_be_asked_lets_requests_through(
    fault_server: RedisServer,
) -> None:
    from cache_core import RedisBloomFilter
    from cache_core._breaker import CircuitBreaker

    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=60)
    cache = RedisCache.from_url(fault_server.url, prefix="p", breaker=breaker)
    bloom = RedisBloomFilter(cache, "users", 1000)
    bloom.add("user:1")
    guard = ProtectedCache(TypedCache(cache), bloom)
    fault_server.pause()  # connections hang: only the breaker keeps calls fast
    try:
        db = CountingLoader()
        assert guard.get_or_set("user:1", lambda: db({"id": 1})) == {"id": 1}
        assert breaker.state == "open"
        start = time.monotonic()
        for i in range(50):
            assert guard.get_or_set(f"user:{i}", lambda: db("loaded")) is not None
        assert time.monotonic() - start < 1.0  # no call waited for a socket timeout
        assert guard.stats().filter_errors == 51
    finally:
        fault_server.resume()
    cache.close()


def test_a_snapshot_that_never_loaded_lets_requests_through() -> None:
    from cache_core import BloomSnapshot

    class Unloaded(BloomSnapshot):
        def __init__(self) -> None:  # no Redis at all: the filter was never loaded
            self._state = (None, None)
            self._name = "never"

    guard = ProtectedCache(TypedCache(MemoryCache()), Unloaded())
    assert guard.get_or_set("user:1", lambda: 1) == 1
    assert guard.stats().filter_errors == 1


def test_redis_resident_bloom_as_the_guard(make_byte_cache: ByteCacheFactory) -> None:
    cache = make_byte_cache("redis")
    assert isinstance(cache, RedisCache)
    rbf = RedisBloomFilter(cache, "ids", 1000, 0.001)
    rbf.update(EXISTING)
    guard = ProtectedCache(TypedCache(cache), rbf)
    db = CountingLoader()
    assert guard.get_or_set("user:999999", lambda: db(1)) is None
    assert guard.get_or_set("user:1", lambda: db(1)) == 1
    guard.set("added", 2)
    other = RedisBloomFilter.open(make_byte_cache("redis", prefix=cache.prefix), "ids")
    assert "added" in other  # another process's guard sees the key at once
    assert db.calls == 1


def test_stats_are_a_namedtuple(guard: ProtectedCache[Any]) -> None:
    s = guard.stats()
    assert s._fields == (
        "rejected", "negative_hits", "hits", "misses", "loads", "negative_stores", "filter_errors"
    )  # fmt: skip
    assert tuple(s) == (0, 0, 0, 0, 0, 0, 0)


# -- argument checks ----------------------------------------------------------------------


def test_cache_must_be_a_typed_cache() -> None:
    with pytest.raises(TypeError, match="cache must be a TypedCache"):
        ProtectedCache(MemoryCache(), bloom_of([]))  # type: ignore[arg-type]


def test_bloom_must_look_like_a_bloom_filter() -> None:
    with pytest.raises(TypeError, match=r"bloom .* lacks"):
        ProtectedCache(TypedCache(MemoryCache()), {"a"})


@pytest.mark.parametrize(
    ("null_ttl", "exc"),
    [(0, ValueError), (-1, ValueError), (float("nan"), ValueError), (None, TypeError),
     ("5", TypeError), (True, TypeError)],
)  # fmt: skip
def test_null_ttl_is_checked(null_ttl: Any, exc: type[Exception]) -> None:
    with pytest.raises(exc, match="null_ttl"):
        ProtectedCache(TypedCache(MemoryCache()), bloom_of([]), null_ttl=null_ttl)


def test_key_fn_and_ttl_are_checked() -> None:
    guard: ProtectedCache[Any] = ProtectedCache(TypedCache(MemoryCache()), bloom_of(EXISTING))
    with pytest.raises(TypeError, match="key must be str"):
        guard.get_or_set(b"user:1", lambda: 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-empty"):
        guard.get_or_set("", lambda: 1)
    with pytest.raises(TypeError, match="fn must be callable"):
        guard.get_or_set("user:1", 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ttl"):
        guard.get_or_set("user:1", lambda: 1, ttl=-5)
    with pytest.raises(TypeError, match="key must be str"):
        guard.set(1, 1)  # type: ignore[arg-type]


def test_rejection_does_not_time_out_on_a_dead_cache(fault_server: RedisServer) -> None:
    """The rejection path never touches the cache: a paused Redis costs nothing."""
    client = fault_server.client(socket_timeout=0.5)
    guard = ProtectedCache(TypedCache(RedisCache(client, prefix="p")), bloom_of(EXISTING))
    fault_server.pause()
    try:
        start = time.perf_counter()
        for _ in range(100):
            assert guard.get_or_set("absent", lambda: 1) is None
        assert time.perf_counter() - start < 0.5
    finally:
        fault_server.resume()
        client.close()


def test_demo_penetration_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    from cache_core._demo import DemoContext, penetration

    penetration(DemoContext(None))
    out = capsys.readouterr().out
    calls = [int(line.split("database calls:")[1].split()[0]) for line in out.splitlines()[2:]]
    assert calls[0] == 10_000  # no guard: every request reaches the database
    assert 1_900 < calls[1] <= 2_000  # negative caching: once per distinct id
    assert calls[2] < 100  # bloom guard: only the filter's false positives
