"""MemoryCache beyond the shared contract: size bound, LRU order, injected clock, threads."""

from __future__ import annotations

import threading

import pytest

from cache_core import MemoryCache
from tests.conftest import FakeClock


def test_bounded_by_maxsize_evicting_least_recently_used(clock: FakeClock) -> None:
    cache = MemoryCache(maxsize=3, timer=clock)
    for key in "abc":
        cache.set(key, key.encode())
    cache.get("a")  # a is now the most recently used
    cache.set("d", b"d")
    assert len(cache) == 3
    assert cache.get("b", None) is None
    assert cache.mget(["a", "c", "d"]) == {"a": b"a", "c": b"c", "d": b"d"}


def test_size_never_exceeds_maxsize_under_mset(clock: FakeClock) -> None:
    cache = MemoryCache(maxsize=50, timer=clock)
    cache.mset({f"k{i}": b"v" for i in range(500)})
    assert len(cache) == 50


def test_expired_entries_do_not_count(clock: FakeClock) -> None:
    cache = MemoryCache(timer=clock)
    cache.set("a", b"1", ttl=1)
    cache.set("b", b"2", ttl=10)
    clock.advance(5)
    assert len(cache) == 1
    assert cache.clear() == 1
    assert cache.delete("a") is False


def test_expiry_is_exact_on_the_injected_clock(clock: FakeClock) -> None:
    cache = MemoryCache(timer=clock)
    cache.set("k", b"v", ttl=10)
    clock.advance(9.999)
    assert cache.get("k") == b"v"
    clock.advance(0.001)
    assert cache.get("k", None) is None


def test_rewrite_restarts_ttl(clock: FakeClock) -> None:
    cache = MemoryCache(timer=clock)
    cache.set("k", b"v", ttl=10)
    clock.advance(8)
    cache.set("k", b"w", ttl=10)
    clock.advance(8)
    assert cache.get("k") == b"w"


@pytest.mark.parametrize(
    ("maxsize", "error"),
    [(0, ValueError), (-1, ValueError), (1.5, TypeError), (True, TypeError), ("10", TypeError)],
)
def test_bad_maxsize(maxsize: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="maxsize"):
        MemoryCache(maxsize=maxsize)  # type: ignore[arg-type]


def test_bad_timer() -> None:
    with pytest.raises(TypeError, match="timer"):
        MemoryCache(timer=5.0)  # type: ignore[arg-type]


def test_concurrent_writers_lose_nothing() -> None:
    cache = MemoryCache(maxsize=100_000)
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            barrier.wait()
            for i in range(2000):
                cache.set(f"{t}:{i}", b"x")
                if i % 3 == 0:
                    cache.mset({f"{t}:m{i}": b"y"})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    assert len(cache) == 8 * (2000 + 667)
    assert len(cache.mget([f"{t}:{i}" for t in range(8) for i in range(2000)])) == 16_000


def test_scan_keys_lists_unexpired_keys_matching_a_glob(clock: FakeClock) -> None:
    cache = MemoryCache(timer=clock)
    cache.mset({"user:1": b"a", "user:2": b"b", "order:1": b"c"})
    cache.set("user:3", b"d", ttl=1)
    clock.advance(2)
    assert sorted(cache.scan_keys("user:*")) == ["user:1", "user:2"]
    assert sorted(cache.scan_keys()) == ["order:1", "user:1", "user:2"]
    with pytest.raises(TypeError, match="match"):
        cache.scan_keys(b"*")  # type: ignore[arg-type]
