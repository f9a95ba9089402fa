"""TypedCache: typed get/set, the singleflight read-through, self-healing, outages."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import redis

from cache_core import (
    BackendError,
    CacheMiss,
    JSONSerializer,
    MemoryCache,
    PickleSerializer,
    RedisCache,
    SerializationError,
    TypedCache,
)
from tests.conftest import ByteCache, wait_for
from tests.redis_harness import RedisServer


@pytest.fixture
def typed(byte_cache: ByteCache) -> TypedCache[Any]:
    """A TypedCache over each kind of byte cache (memory, redis, cluster, multilevel)."""
    return TypedCache(byte_cache)


def test_roundtrip_of_json_values(typed: TypedCache[Any]) -> None:
    value = {"id": 7, "name": "Ada", "tags": ["a", "b"], "score": 1.5, "ok": True, "none": None}
    typed.set("user:7", value)
    assert typed.get("user:7") == value
    typed.set("list", [1, 2, 3], ttl=30)
    assert typed.get("list") == [1, 2, 3]


def test_miss_and_default(typed: TypedCache[Any]) -> None:
    with pytest.raises(CacheMiss):
        typed.get("absent")
    assert typed.get("absent", "dflt") == "dflt"


def test_cached_none_is_a_hit(typed: TypedCache[Any]) -> None:
    calls = []

    def loader() -> None:
        calls.append(1)

    assert typed.get_or_set("k", loader) is None
    assert typed.get_or_set("k", loader) is None
    assert len(calls) == 1
    assert typed.get("k", "dflt") is None


def test_get_or_set_stores_and_then_hits(typed: TypedCache[Any]) -> None:
    calls = []

    def loader() -> dict[str, int]:
        calls.append(1)
        return {"v": len(calls)}

    assert typed.get_or_set("k", loader, ttl=60) == {"v": 1}
    assert typed.get_or_set("k", loader, ttl=60) == {"v": 1}
    assert typed.get("k") == {"v": 1}
    assert len(calls) == 1
    stats = typed.stats()
    assert (stats.hits, stats.misses, stats.loads) == (2, 1, 1)


def test_stampede_of_64_threads_runs_the_loader_once(typed: TypedCache[Any]) -> None:
    calls = []
    release = threading.Event()
    results: list[Any] = []
    stored_when_released: list[bool] = []
    barrier = threading.Barrier(64)

    def loader() -> dict[str, list[int]]:
        calls.append(1)
        assert release.wait(5)
        return {"items": [1, 2, 3]}

    def caller() -> None:
        barrier.wait()
        value = typed.get_or_set("hot", loader, ttl=60)
        stored_when_released.append(typed.cache.exists("hot"))
        results.append(value)

    threads = [threading.Thread(target=caller) for _ in range(64)]
    for t in threads:
        t.start()
    # Everyone who reached the singleflight is queued behind the one loader.
    assert wait_for(lambda: len(calls) == 1 and typed.waiting("hot") >= 40)
    release.set()
    for t in threads:
        t.join(10)
    assert len(calls) == 1
    assert len(results) == 64
    assert all(r == {"items": [1, 2, 3]} for r in results)
    assert all(stored_when_released)  # the value was stored before any waiter was released
    # Each caller got its own object: mutating one result cannot leak into another request.
    results[0]["items"].append(4)
    assert sum(1 for r in results if r["items"] == [1, 2, 3]) == 63


def test_loader_exception_is_shared_and_not_cached(typed: TypedCache[Any]) -> None:
    calls = []
    release = threading.Event()
    errors: list[BaseException] = []

    def failing() -> int:
        calls.append(1)
        assert release.wait(5)
        raise LookupError("db says no")

    def caller() -> None:
        try:
            typed.get_or_set("k", failing)
        except LookupError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=caller) for _ in range(16)]
    for t in threads:
        t.start()
    assert wait_for(lambda: len(calls) == 1 and typed.waiting("k") == 15)
    release.set()
    for t in threads:
        t.join(10)
    assert len(calls) == 1
    assert len(errors) == 16
    assert typed.exists("k") is False
    assert typed.get_or_set("k", lambda: 42) == 42  # a later call retries
    assert typed.stats().load_errors == 1


def test_corrupt_bytes_self_heal(typed: TypedCache[Any], caplog: pytest.LogCaptureFixture) -> None:
    calls = []
    for junk in [b"not json at all", b"\xcc\x01\x00j{broken", b"\xcc\x09\x00j1", b""]:
        typed.cache.set("k", junk)
        with pytest.raises(SerializationError):
            typed.get("k")
        with caplog.at_level("WARNING", logger="cache_core"):
            assert typed.get_or_set("k", lambda: calls.append(1) or "fresh") == "fresh"
        assert typed.get("k") == "fresh"  # the entry was repaired
    assert len(calls) == 4
    assert "undecodable" in caplog.text
    assert typed.stats().decode_errors == 4


def test_foreign_serializer_bytes_are_not_misdecoded(typed: TypedCache[Any]) -> None:
    other = TypedCache(typed.cache, serializer=PickleSerializer(b"secret"))
    other.set("k", {"a": 1})
    with pytest.raises(SerializationError, match="serializer"):
        typed.get("k")
    assert typed.get_or_set("k", lambda: "json") == "json"


def test_unencodable_value_raises_naming_the_key(typed: TypedCache[Any]) -> None:
    with pytest.raises(SerializationError, match="'k'"):
        typed.set("k", object())
    marker = object()
    assert typed.get_or_set("k2", lambda: marker) is marker  # served, not stored
    assert typed.stats().encode_errors == 1
    assert typed.exists("k") is False
    assert typed.exists("k2") is False


def test_bad_input(typed: TypedCache[Any]) -> None:
    with pytest.raises(TypeError, match="key"):
        typed.get_or_set(5, lambda: 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="key"):
        typed.get_or_set("", lambda: 1)
    with pytest.raises(TypeError, match="fn"):
        typed.get_or_set("k", 5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ttl"):
        typed.get_or_set("k", lambda: 1, ttl=-5)
    with pytest.raises(ValueError, match="ttl"):
        typed.set("k", 1, ttl=0)
    with pytest.raises(TypeError, match="items"):
        typed.mset([("k", 1)])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="key"):
        typed.get(None)  # type: ignore[arg-type]
    assert typed.exists("k") is False


def test_constructor_rejects_non_caches() -> None:
    with pytest.raises(TypeError, match="cache"):
        TypedCache({})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="serializer"):
        TypedCache(MemoryCache(), serializer=object())  # type: ignore[arg-type]


def test_mget_mset(typed: TypedCache[Any]) -> None:
    typed.mset({"a": 1, "b": [2]}, ttl=60)
    typed.cache.set("c", b"junk")
    assert typed.mget(["a", "b", "c", "d"]) == {"a": 1, "b": [2]}


def test_delete_and_clear(typed: TypedCache[Any]) -> None:
    typed.set("a", 1)
    typed.set("b", 2)
    assert typed.delete("a") is True
    assert typed.delete("a") is False
    assert typed.clear() == 1


def test_outage_answers_from_loader_once_per_key(fault_server: RedisServer) -> None:
    cache = RedisCache.from_url(fault_server.url, prefix="out")
    typed: TypedCache[Any] = TypedCache(cache)
    fault_server.stop()
    calls: dict[str, int] = {"a": 0, "b": 0}
    lock = threading.Lock()
    results: list[Any] = []
    errors: list[BaseException] = []

    def loader_for(key: str) -> Any:
        def load() -> str:
            with lock:
                calls[key] += 1
            # Hold the load open until the other 15 callers of this key are queued on it.
            assert wait_for(lambda: typed.waiting(key) == 15)
            return f"value-{key}"

        return load

    def caller(key: str) -> None:
        try:
            results.append(typed.get_or_set(key, loader_for(key)))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=caller, args=(k,)) for k in "ab" for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert errors == []
    assert calls == {"a": 1, "b": 1}
    assert sorted(results) == ["value-a"] * 16 + ["value-b"] * 16
    assert typed.stats().backend_errors >= 32
    with pytest.raises(BackendError):
        typed.get("a")  # a direct get still reports the outage, as the contract says
    cache.close()


def test_json_serializer_is_the_default() -> None:
    assert isinstance(TypedCache(MemoryCache()).serializer, JSONSerializer)


def test_typed_over_redis_stores_an_envelope(redis_client: redis.Redis) -> None:
    typed: TypedCache[Any] = TypedCache(RedisCache(redis_client, prefix="env"))
    typed.set("k", {"a": 1})
    raw = redis_client.get("env:k")
    assert raw is not None and raw[:4] == b"\xcc\x01\x00j"


def test_a_custom_serializer_failing_oddly_still_self_heals() -> None:
    class Fragile:
        def dumps(self, obj: Any) -> bytes:
            return repr(obj).encode()

        def loads(self, data: bytes) -> Any:
            if data == b"boom":
                raise ZeroDivisionError("decoder bug")
            return int(data)

    store = MemoryCache()
    typed: TypedCache[Any] = TypedCache(store, serializer=Fragile())  # type: ignore[arg-type]
    typed.set("k", 5)
    assert typed.get("k") == 5
    store.set("k", b"\xcc\x01\x00\x00boom")
    with pytest.raises(SerializationError, match="ZeroDivisionError"):
        typed.get("k")
    assert typed.get_or_set("k", lambda: 7) == 7
    assert typed.get("k") == 7


class _GatedReads:
    """A byte cache that counts reads and can hold one thread right after its read."""

    def __init__(self) -> None:
        self.inner = MemoryCache()
        self.reads = 0
        self.hold_thread: int | None = None
        self.read_done = threading.Event()
        self.release = threading.Event()

    def get(self, key: str, default: Any = None) -> Any:
        self.reads += 1
        value = self.inner.get(key, default)
        if threading.get_ident() == self.hold_thread:
            self.hold_thread = None
            self.read_done.set()
            assert self.release.wait(5)
        return value

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_miss_overtaken_by_a_store_rereads_instead_of_loading_again() -> None:
    store = _GatedReads()
    typed: TypedCache[str] = TypedCache(store)  # type: ignore[arg-type]
    calls: list[str] = []
    result: list[str] = []

    def late_caller() -> None:
        store.hold_thread = threading.get_ident()
        result.append(typed.get_or_set("k", lambda: calls.append("late") or "late"))

    t = threading.Thread(target=late_caller)
    t.start()
    assert store.read_done.wait(5)  # its miss is read; it has not reached the flight yet
    assert typed.get_or_set("k", lambda: calls.append("first") or "first") == "first"
    store.release.set()
    t.join(5)
    assert result == ["first"]  # it re-read and found the stored value ...
    assert calls == ["first"]  # ... instead of loading a second time


def test_a_plain_miss_reads_the_cache_once() -> None:
    store = _GatedReads()
    typed: TypedCache[str] = TypedCache(store)  # type: ignore[arg-type]
    assert typed.get_or_set("k", lambda: "v") == "v"
    assert store.reads == 1  # nothing was stored meanwhile: no second round trip
