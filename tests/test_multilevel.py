"""MultiLevelCache: promotion, TTL bounds, write order, and the delete-vs-promotion race.

These tests write to L2 directly and then look inside L1, so they turn invalidation off: with
it, the invalidation of that direct write (foreign to the MultiLevelCache) can drop the
promoted entry a moment later (test_invalidation covers the cache with invalidation on).
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
import redis

from cache_core import BackendError, MemoryCache, MultiLevelCache, RedisCache
from tests.conftest import FakeClock
from tests.redis_harness import RedisServer


class CountingL2:
    """Wraps a real byte cache to count reads and, optionally, hold a reader mid-promotion."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.reads = 0
        self.hold: threading.Event | None = None
        self.reading = threading.Event()

    def get_with_ttl(self, key: str) -> Any:
        self.reads += 1
        hit = self.inner.get_with_ttl(key)
        self.reading.set()
        if self.hold is not None:
            assert self.hold.wait(5), "test never released the reader"
        return hit

    def mget_with_ttl(self, keys: Any) -> Any:
        self.reads += 1
        return self.inner.mget_with_ttl(keys)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture
def l2(redis_client: redis.Redis) -> RedisCache:
    return RedisCache(redis_client, prefix="ml")


def test_l2_hit_is_promoted_and_then_served_from_l1(l2: RedisCache) -> None:
    counting = CountingL2(l2)
    l1 = MemoryCache()
    cache = MultiLevelCache(l1, counting, l1_ttl=60, invalidation=False)
    l2.set("k", b"v", ttl=60)
    assert cache.get("k") == b"v"
    assert l1.get("k") == b"v"
    for _ in range(10):
        assert cache.get("k") == b"v"
    assert counting.reads == 1


def test_promotion_never_outlives_l2(l2: RedisCache, redis_client: redis.Redis) -> None:
    clock = FakeClock()
    l1 = MemoryCache(timer=clock)
    cache = MultiLevelCache(l1, l2, l1_ttl=60, invalidation=False)
    l2.set("short", b"v", ttl=5)
    l2.set("forever", b"v")
    assert cache.mget(["short", "forever"]) == {"short": b"v", "forever": b"v"}
    got = l1.get_with_ttl("short")
    assert got is not None and got[1] is not None and got[1] <= 5.0
    got = l1.get_with_ttl("forever")
    assert got is not None and got[1] == 60.0
    clock.advance(5)
    assert l1.get("short", None) is None


def test_writes_bound_l1_by_the_write_ttl(l2: RedisCache) -> None:
    clock = FakeClock()
    l1 = MemoryCache(timer=clock)
    # The TTL arithmetic alone, as in the tests around it.
    cache = MultiLevelCache(l1, l2, l1_ttl=60, invalidation=False)
    cache.set("a", b"1", ttl=2)
    cache.mset({"b": b"2"}, ttl=3)
    cache.set("c", b"3", ttl=600)
    assert [l1.get_with_ttl(k)[1] for k in "abc"] == [2.0, 3.0, 60.0]  # type: ignore[index]


def test_l2_ttl_and_l2_default_apply(redis_client: redis.Redis) -> None:
    l2 = RedisCache(redis_client, prefix="ml", default_ttl=100)
    MultiLevelCache(MemoryCache(), l2, l1_ttl=5).set("d", b"v")
    assert 99_000 < redis_client.pttl("ml:d") <= 100_000
    MultiLevelCache(MemoryCache(), l2, l1_ttl=5, l2_ttl=50).set("e", b"v")
    assert 49_000 < redis_client.pttl("ml:e") <= 50_000


def test_delete_removes_from_both_levels(l2: RedisCache) -> None:
    l1 = MemoryCache()
    cache = MultiLevelCache(l1, l2, l1_ttl=60, invalidation=False)
    cache.set("k", b"v")
    assert cache.delete("k") is True
    assert l1.exists("k") is False
    assert l2.exists("k") is False
    assert cache.delete("k") is False


def test_delete_racing_a_promotion_never_resurrects(l2: RedisCache) -> None:
    """A reader has fetched the old value from L2; a delete lands; the reader must not promote."""
    counting = CountingL2(l2)
    l1 = MemoryCache()
    cache = MultiLevelCache(l1, counting, l1_ttl=60, invalidation=False)
    l2.set("k", b"old")
    counting.hold = threading.Event()
    result: list[Any] = []
    reader = threading.Thread(target=lambda: result.append(cache.get("k", None)))
    reader.start()
    assert counting.reading.wait(5)  # the reader holds b"old" from L2, not yet promoted
    assert cache.delete("k") is True
    counting.hold.set()
    reader.join(5)
    assert result == [b"old"]  # it read before the delete: returning it is linearizable
    assert l1.get("k", None) is None  # ... but it must not live on in L1
    counting.hold = None
    assert cache.get("k", None) is None


def test_set_racing_a_promotion_keeps_the_new_value(l2: RedisCache) -> None:
    counting = CountingL2(l2)
    l1 = MemoryCache()
    # The epochs alone (an invalidation would drop the new value from L1 too, hiding the race).
    cache = MultiLevelCache(l1, counting, l1_ttl=60, invalidation=False)
    l2.set("k", b"old")
    counting.hold = threading.Event()
    reader = threading.Thread(target=lambda: cache.get("k", None))
    reader.start()
    assert counting.reading.wait(5)
    cache.set("k", b"new")
    counting.hold.set()
    reader.join(5)
    assert l1.get("k") == b"new"
    assert cache.get("k") == b"new"


def test_delete_landing_between_a_writes_two_steps_wins(l2: RedisCache) -> None:
    """set: L2 written ... a delete (L2 + L1) ... set: L1 step. L1 must not keep the value."""
    written = threading.Event()
    proceed = threading.Event()

    class GatedL2:
        def set(self, key: str, value: bytes, ttl: Any = None) -> None:
            l2.set(key, value, ttl=ttl)
            written.set()
            assert proceed.wait(5)

        def __getattr__(self, name: str) -> Any:
            return getattr(l2, name)

    l1 = MemoryCache()
    cache = MultiLevelCache(l1, GatedL2(), l1_ttl=60, invalidation=False)
    writer = threading.Thread(target=lambda: cache.set("k", b"v"))
    writer.start()
    assert written.wait(5)
    assert cache.delete("k") is True
    proceed.set()
    writer.join(5)
    assert l1.get("k", None) is None
    assert cache.get("k", None) is None  # both levels agree: deleted


def test_two_writes_racing_leave_l1_agreeing_with_l2(l2: RedisCache) -> None:
    first_written = threading.Event()
    proceed = threading.Event()
    calls: list[bytes] = []

    class GatedL2:
        def set(self, key: str, value: bytes, ttl: Any = None) -> None:
            l2.set(key, value, ttl=ttl)
            calls.append(value)
            if value == b"A":
                first_written.set()
                assert proceed.wait(5)

        def __getattr__(self, name: str) -> Any:
            return getattr(l2, name)

    l1 = MemoryCache()
    cache = MultiLevelCache(l1, GatedL2(), l1_ttl=60, invalidation=False)
    a = threading.Thread(target=lambda: cache.set("k", b"A"))
    a.start()
    assert first_written.wait(5)
    cache.set("k", b"B")  # L2 = B, L1 = B, while A still has its L1 step to do
    proceed.set()
    a.join(5)
    assert l2.get("k") == b"B"
    assert l1.get("k", None) in (None, b"B")  # never A
    assert cache.get("k") == b"B"


def test_threaded_get_delete_storm_ends_consistent(l2: RedisCache) -> None:
    l1 = MemoryCache()
    cache = MultiLevelCache(l1, l2, l1_ttl=60, invalidation=False)
    keys = [f"k{i}" for i in range(8)]
    stop = threading.Event()
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            while not stop.is_set():
                for key in keys:
                    cache.get(key, None)
        except BaseException as exc:
            errors.append(exc)

    readers = [threading.Thread(target=reader) for _ in range(6)]
    for t in readers:
        t.start()
    for round_ in range(150):
        for key in keys:
            cache.set(key, str(round_).encode())
        cache.mdelete(keys[:4])
        for key in keys[4:]:
            cache.delete(key)
    stop.set()
    for t in readers:
        t.join(10)
    assert errors == []
    # Every key was deleted last; no reader may have left a promoted copy behind.
    assert l1.mget(keys) == {}
    assert cache.mget(keys) == {}


def test_l2_outage_on_write_reports_it_and_keeps_the_value_in_l1(
    fault_server: RedisServer,
) -> None:
    clock = FakeClock()
    l1 = MemoryCache(timer=clock)
    l2 = RedisCache.from_url(fault_server.url, prefix="f")
    # The TTL-bound mode: with invalidation, an unreachable Redis is an unheard one (L1 bypassed).
    cache = MultiLevelCache(l1, l2, l1_ttl=60, invalidation=False)
    cache.set("k", b"v1")
    fault_server.stop()
    assert cache.get("k") == b"v1"  # L1 keeps serving while L2 is down
    with pytest.raises(BackendError):
        cache.set("k", b"v2", ttl=5)
    assert cache.get("k") == b"v2"  # this process sees its own (reported) write ...
    clock.advance(5)
    assert l1.get("k", None) is None  # ... for no longer than its TTL
    with pytest.raises(BackendError):
        cache.mset({"a": b"1"}, ttl=30)
    assert l1.get("a") == b"1"
    with pytest.raises(BackendError):
        cache.delete("a")
    assert l1.get("a", None) is None  # a delete always drops the L1 copy
    l2.close()


def test_non_backend_failure_on_write_leaves_l1_without_the_key() -> None:
    class Refusing(MemoryCache):
        def set(self, key: str, value: bytes, ttl: Any = None) -> None:
            raise RuntimeError("a bug in a custom L2")

    l1 = MemoryCache()
    cache = MultiLevelCache(l1, Refusing(), l1_ttl=60)
    l1.set("k", b"old")
    with pytest.raises(RuntimeError):
        cache.set("k", b"new")
    assert l1.get("k", None) is None


def test_constructor_validation(l2: RedisCache) -> None:
    with pytest.raises(TypeError, match="l1"):
        MultiLevelCache(object(), l2, l1_ttl=5)
    with pytest.raises(TypeError, match="l2"):
        MultiLevelCache(MemoryCache(), "redis", l1_ttl=5)
    with pytest.raises(ValueError, match="l1_ttl"):
        MultiLevelCache(MemoryCache(), l2, l1_ttl=0)
    with pytest.raises(TypeError, match="l1_ttl"):
        MultiLevelCache(MemoryCache(), l2, l1_ttl=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="l2_ttl"):
        MultiLevelCache(MemoryCache(), l2, l1_ttl=5, l2_ttl=-1)
    mem = MemoryCache()
    with pytest.raises(ValueError, match="different"):
        MultiLevelCache(mem, mem, l1_ttl=5)


def test_works_over_an_l2_without_ttl_introspection(clock: FakeClock) -> None:
    class Plain:
        def __init__(self) -> None:
            self.inner = MemoryCache(timer=clock)

        def __getattr__(self, name: str) -> Any:
            if name in ("get_with_ttl", "mget_with_ttl"):
                raise AttributeError(name)
            return getattr(self.inner, name)

    l1 = MemoryCache(timer=clock)
    plain = Plain()
    plain.inner.set("k", b"v")
    cache = MultiLevelCache(l1, plain, l1_ttl=7)
    assert cache.get("k") == b"v"
    assert l1.get_with_ttl("k") == (b"v", 7.0)
