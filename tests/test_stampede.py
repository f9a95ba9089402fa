"""Stampede and avalanche protection: lease lock, XFetch, stale-while-revalidate, jitter."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster

from cache_core import MemoryCache, MultiLevelCache, RedisCache, TypedCache
from cache_core._lease_lock import LeaseLockFactory
from cache_core._redis_keys import slot_tag
from tests.conftest import ByteCache, ByteCacheFactory, FakeClock, wait_for
from tests.redis_harness import RedisServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Seq:
    """An injectable random source that returns the given values in order."""

    def __init__(self, *values: float) -> None:
        self.values = list(values)

    def __call__(self) -> float:
        return self.values.pop(0)


class CountingLoader:
    def __init__(self, value: Any = "v", clock: FakeClock | None = None, cost: float = 0.0):
        self.calls = 0
        self.value = value
        self.clock = clock
        self.cost = cost
        self.lock = threading.Lock()

    def __call__(self) -> Any:
        with self.lock:
            self.calls += 1
            n = self.calls
        if self.clock is not None:
            self.clock.advance(self.cost)  # the load "takes" cost seconds on the fake clock
        return f"{self.value}{n}" if isinstance(self.value, str) else self.value


@pytest.fixture
def byte_cache(
    byte_cache_kind: str, make_byte_cache: ByteCacheFactory, clock: FakeClock
) -> ByteCache:
    """A byte cache of each kind; the in-process ones run on the typed layer's fake clock."""
    return make_byte_cache(byte_cache_kind, timer=clock, l1_ttl=1000)


# -- XFetch ----------------------------------------------------------------------------------


def test_xfetch_refreshes_exactly_when_the_formula_says(byte_cache: Any, clock: FakeClock) -> None:
    # delta = 2 s, beta = 1, expiry at t0 + 2 + 100. At 2 s before expiry the read refreshes iff
    # -2 * ln(1 - r) >= 2, i.e. r >= 1 - 1/e = 0.6321...
    threshold = 1 - 1 / math.e
    rng = Seq(threshold - 0.001, threshold + 0.001)
    typed: TypedCache[str] = TypedCache(
        byte_cache, early_refresh=1.0, ttl_jitter=0.0, clock=clock, random=rng
    )
    load = CountingLoader(clock=clock, cost=2.0)
    assert typed.get_or_set("k", load, ttl=100) == "v1"
    clock.advance(98)  # 2 s before the logical expiry
    assert typed.get_or_set("k", load, ttl=100) == "v1"  # r just below the threshold: no refresh
    assert load.calls == 1
    assert typed.get_or_set("k", load, ttl=100) == "v2"  # r just above: this reader refreshes
    assert load.calls == 2
    assert typed.get("k") == "v2"
    assert typed.stats().refreshes == 1


def test_xfetch_probability_matches_exp(clock: FakeClock) -> None:
    # P(refresh at `gap` seconds before expiry) = exp(-gap / (beta * delta)); sample it.
    import random

    rnd = random.Random(7)
    typed: TypedCache[str] = TypedCache(
        MemoryCache(timer=clock), early_refresh=2.0, ttl_jitter=0.0, clock=clock, random=rnd.random
    )
    typed.get_or_set("k", CountingLoader(clock=clock, cost=1.0), ttl=1000)
    clock.advance(1000 - 3)  # 3 s before expiry: p = exp(-3 / 2) = 0.223
    refreshed = 0
    for _ in range(4000):
        before = typed.stats().refreshes
        load = CountingLoader(clock=clock, cost=0.0)
        typed.get_or_set("k", load, ttl=1000)
        if load.calls:
            refreshed += 1
            # put the original timing back so every sample sees the same (delta, expiry)
            typed.cache.clear()
            clock.advance(-(1000 - 3))
            typed.get_or_set("k", CountingLoader(clock=clock, cost=1.0), ttl=1000)
            clock.advance(1000 - 3)
        assert typed.stats().refreshes >= before
    assert abs(refreshed / 4000 - math.exp(-1.5)) < 0.03


def test_early_refresh_failure_serves_the_current_value(clock: FakeClock) -> None:
    typed: TypedCache[str] = TypedCache(
        MemoryCache(timer=clock),
        early_refresh=1.0,
        ttl_jitter=0.0,
        clock=clock,
        random=lambda: 0.99,
    )
    typed.get_or_set("k", CountingLoader(clock=clock, cost=5.0), ttl=10)
    clock.advance(9)

    def broken() -> str:
        raise ConnectionError("db down")

    assert typed.get_or_set("k", broken, ttl=10) == "v1"


def test_threaded_xfetch_readers_never_miss_after_warmup() -> None:
    """Real time: a hot key with a short TTL keeps being refreshed, nobody ever misses."""
    # beta=2 refreshes a little earlier than the paper's 1, leaving room for a GIL stall of the
    # refreshing thread on a busy machine before the entry really expires.
    typed: TypedCache[int] = TypedCache(MemoryCache(), early_refresh=2.0, ttl_jitter=0.0)
    loads = CountingLoader(value=1)

    def loader() -> int:
        loads()
        time.sleep(0.01)  # the database call whose Δ XFetch measures
        return 1

    typed.get_or_set("hot", loader, ttl=0.4)
    stop = time.monotonic() + 1.5
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            while time.monotonic() < stop:
                typed.get_or_set("hot", loader, ttl=0.4)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = typed.stats()
    assert errors == []
    assert stats.misses == 1  # the warm-up only: every later read found a value
    assert stats.refreshes >= 2  # ... because XFetch kept refreshing before expiry
    assert loads.calls == stats.refreshes + 1


# -- stale-while-revalidate and stale-if-error ------------------------------------------------


def test_stale_while_revalidate(byte_cache: Any, clock: FakeClock) -> None:
    typed: TypedCache[str] = TypedCache(byte_cache, stale_ttl=50, ttl_jitter=0.0, clock=clock)
    assert typed.get_or_set("k", CountingLoader("old"), ttl=10) == "old1"
    clock.advance(11)  # logically expired, still within the stale window

    refreshing = threading.Event()
    release = threading.Event()

    def slow_new() -> str:
        refreshing.set()
        assert release.wait(5)
        return "new"

    refresher_result: list[str] = []
    refresher = threading.Thread(
        target=lambda: refresher_result.append(typed.get_or_set("k", slow_new, ttl=10))
    )
    refresher.start()
    assert refreshing.wait(5)
    # While the first reader refreshes, everyone else gets the stale value at once.
    others = [typed.get_or_set("k", slow_new, ttl=10) for _ in range(20)]
    assert others == ["old1"] * 20
    release.set()
    refresher.join(5)
    assert refresher_result == ["new"]
    assert typed.get_or_set("k", slow_new, ttl=10) == "new"
    stats = typed.stats()
    assert stats.stale_hits == 21
    assert stats.refreshes == 1


def test_stale_if_error(byte_cache: Any, clock: FakeClock) -> None:
    typed: TypedCache[str] = TypedCache(byte_cache, stale_ttl=50, ttl_jitter=0.0, clock=clock)
    typed.get_or_set("k", CountingLoader("old"), ttl=10)
    clock.advance(11)

    def broken() -> str:
        raise TimeoutError("db timeout")

    assert typed.get_or_set("k", broken, ttl=10) == "old1"
    assert typed.stats().stale_errors_served == 1
    with pytest.raises(TimeoutError):
        typed.get_or_set("k", broken, ttl=10, stale_if_error=False)
    # a miss (no stale value at all) always propagates the loader's error
    with pytest.raises(TimeoutError):
        typed.get_or_set("never-cached", broken, ttl=10)


def test_past_the_stale_window_is_a_miss(clock: FakeClock) -> None:
    typed: TypedCache[str] = TypedCache(
        MemoryCache(timer=clock), stale_ttl=5, ttl_jitter=0.0, clock=clock
    )
    typed.get_or_set("k", CountingLoader("old"), ttl=10)
    clock.advance(16)
    load = CountingLoader("new")
    assert typed.get_or_set("k", load, ttl=10) == "new1"
    assert typed.stats().stale_hits == 0


# -- TTL jitter --------------------------------------------------------------------------------


def test_jitter_spreads_ttls_below_the_requested_one(redis_client: redis.Redis) -> None:
    typed: TypedCache[int] = TypedCache(RedisCache(redis_client, prefix="j"))  # default 10 %
    started = time.monotonic()
    for i in range(500):
        typed.set(f"s{i}", i, ttl=100)
    typed.mset({f"m{i}": i for i in range(500)}, ttl=100)
    pipe = redis_client.pipeline(transaction=False)
    for i in range(500):
        pipe.pttl(f"j:s{i}")
        pipe.pttl(f"j:m{i}")
    pttls = pipe.execute()
    elapsed_ms = (time.monotonic() - started) * 1000  # PTTLs keep falling while we write
    assert len(pttls) == 1000
    assert all(90_000 - elapsed_ms < p <= 100_000 for p in pttls), (min(pttls), max(pttls))
    assert min(pttls) < 91_000 and max(pttls) > 99_000  # really spread over the window
    assert len(set(pttls)) > 900


def test_jitter_applies_to_get_or_set_and_default_ttl(redis_client: redis.Redis) -> None:
    typed: TypedCache[int] = TypedCache(
        RedisCache(redis_client, prefix="j", default_ttl=100), ttl_jitter=0.5
    )
    started = time.monotonic()
    for i in range(200):
        typed.get_or_set(f"g{i}", lambda: 1)
    pttls = [redis_client.pttl(f"j:g{i}") for i in range(200)]
    elapsed_ms = (time.monotonic() - started) * 1000  # PTTLs keep falling while we write
    assert all(50_000 - elapsed_ms < p <= 100_000 for p in pttls), (min(pttls), max(pttls))
    assert min(pttls) < 60_000


def test_jitter_zero_writes_the_exact_ttl(redis_client: redis.Redis) -> None:
    typed: TypedCache[int] = TypedCache(RedisCache(redis_client, prefix="j"), ttl_jitter=0)
    typed.set("k", 1, ttl=100)
    assert 99_000 < redis_client.pttl("j:k") <= 100_000


# -- option validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"ttl_jitter": 1.0}, ValueError, "ttl_jitter"),
        ({"ttl_jitter": -0.1}, ValueError, "ttl_jitter"),
        ({"ttl_jitter": "0.1"}, TypeError, "ttl_jitter"),
        ({"early_refresh": 0}, ValueError, "early_refresh"),
        ({"early_refresh": math.nan}, ValueError, "early_refresh"),
        ({"early_refresh": True}, TypeError, "early_refresh"),
        ({"stale_ttl": -1}, ValueError, "stale_ttl"),
        ({"lock_timeout": 0}, ValueError, "lock_timeout"),
        ({"distributed_lock": 1}, TypeError, "distributed_lock"),
        ({"stale_if_error": None}, TypeError, "stale_if_error"),
        ({"clock": 5}, TypeError, "clock"),
        ({"random": 5}, TypeError, "random"),
    ],
)
def test_bad_options(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        TypedCache(MemoryCache(), **kwargs)


def test_per_call_options_are_validated_too() -> None:
    typed: TypedCache[int] = TypedCache(MemoryCache())
    with pytest.raises(ValueError, match="ttl_jitter"):
        typed.get_or_set("k", lambda: 1, ttl_jitter=2.0)
    with pytest.raises(ValueError, match="distributed_lock"):
        typed.get_or_set("k", lambda: 1, distributed_lock=True)


def test_distributed_lock_needs_redis_underneath(redis_client: redis.Redis) -> None:
    with pytest.raises(ValueError, match="RedisCache"):
        TypedCache(MemoryCache(), distributed_lock=True)
    with pytest.raises(ValueError, match="RedisCache"):
        TypedCache(MultiLevelCache(MemoryCache(), MemoryCache(), l1_ttl=5), distributed_lock=True)
    TypedCache(RedisCache(redis_client, prefix="x"), distributed_lock=True)
    TypedCache(
        MultiLevelCache(MemoryCache(), RedisCache(redis_client, prefix="x"), l1_ttl=5),
        distributed_lock=True,
    )


# -- the lease lock ----------------------------------------------------------------------------


def test_lease_locks_need_a_redis_cache(redis_client: redis.Redis) -> None:
    with pytest.raises(TypeError, match="RedisCache"):
        LeaseLockFactory(redis_client)  # type: ignore[arg-type]


def test_slot_tag_matches_redis_hashing() -> None:
    assert slot_tag("p:user:1") == "p:user:1"
    assert slot_tag("p:{user}:1") == "user"
    assert slot_tag("{}p") != "" and "{" not in slot_tag("{}p")
    assert "}" not in slot_tag("a}b")


def test_lock_and_value_share_a_cluster_slot(cluster_client: RedisCluster) -> None:
    factory = LeaseLockFactory(RedisCache(cluster_client, prefix="app"))
    for key in ["user:1", "order:{42}:items", "x}y", "{}z"]:
        lock = factory.lock(key, 1.0)
        slots = {cluster_client.keyslot(lock.lock_key), cluster_client.keyslot(lock.done_key)}
        assert len(slots) == 1
        if "{" not in key and "}" not in key:
            assert slots == {cluster_client.keyslot("app:" + key)}
        assert lock.try_acquire()
        assert lock.release()


def test_keys_sharing_a_hash_tag_have_separate_locks(cluster_client: RedisCluster) -> None:
    factory = LeaseLockFactory(RedisCache(cluster_client, prefix="{app}"))
    one, two = factory.lock("user:1", 5.0), factory.lock("user:2", 5.0)
    tagged_a, tagged_b = factory.lock("x{7}a", 5.0), factory.lock("y{7}b", 5.0)
    assert one.try_acquire()
    assert two.try_acquire()  # a different key: not blocked by user:1's lock
    assert tagged_a.try_acquire()
    assert tagged_b.try_acquire()
    for lock in (one, two, tagged_a, tagged_b):
        keys = {lock.lock_key, lock.done_key, lock.waiters_key}
        assert len(keys) == 3
        assert len({cluster_client.keyslot(k) for k in keys}) == 1
        assert lock.release()


def test_follower_waits_longer_than_the_socket_timeout(redis_server: RedisServer) -> None:
    """from_url's 0.25 s socket timeout and a 0.6 s load: BLPOP waits in short slices."""
    cache = RedisCache.from_url(redis_server.url, prefix="slow")
    assert cache.breaker is not None
    leader: TypedCache[str] = TypedCache(cache, distributed_lock=True, lock_timeout=5)
    follower: TypedCache[str] = TypedCache(cache, distributed_lock=True, lock_timeout=5)
    started = threading.Event()
    calls = CountingLoader("v")

    def slow() -> str:
        calls()
        started.set()
        time.sleep(0.6)  # the load being waited for (longer than the socket timeout)
        return "value"

    results: list[str] = []
    t = threading.Thread(target=lambda: results.append(leader.get_or_set("k", slow, ttl=60)))
    t.start()
    assert started.wait(5)
    assert follower.get_or_set("k", slow, ttl=60) == "value"
    t.join(5)
    assert results == ["value"]
    assert calls.calls == 1
    assert follower.stats().lock_waits == 1
    assert follower.stats().backend_errors == 0
    assert cache.breaker.state == "closed"
    cache.close()


def test_lock_is_never_released_by_another_token(redis_client: redis.Redis) -> None:
    factory = LeaseLockFactory(RedisCache(redis_client, prefix="p"))
    holder = factory.lock("k", 5.0)
    intruder = factory.lock("k", 5.0)
    assert holder.try_acquire()
    assert not intruder.try_acquire()
    assert intruder.release() is False
    assert intruder.extend() is False
    assert redis_client.get(holder.lock_key) == holder.token.encode()
    assert holder.extend(9.0)
    assert 8_000 < redis_client.pttl(holder.lock_key) <= 9_000
    assert holder.release() is True
    assert redis_client.exists(holder.lock_key) == 0


def test_wait_wakes_on_release_not_by_polling(redis_client: redis.Redis) -> None:
    factory = LeaseLockFactory(RedisCache(redis_client, prefix="p"))
    holder = factory.lock("k", 10.0)
    follower = factory.lock("k", 10.0)
    assert holder.try_acquire()
    woke: list[float] = []

    def wait() -> None:
        woke.append(float(follower.wait(5.0)))

    t = threading.Thread(target=wait)
    t.start()
    assert wait_for(lambda: any(c.get("cmd") == "blpop" for c in redis_client.client_list()))
    released_at = time.monotonic()
    holder.release()
    t.join(5)
    assert woke == [1.0]
    assert time.monotonic() - released_at < 0.2  # a poll loop would take 100 ms steps


@pytest.fixture
def lock_backend(
    lock_cache_kind: str, make_byte_cache: ByteCacheFactory, unique_prefix: str
) -> Callable[[], ByteCache]:
    """Views of one namespace on each kind that lends lease locks, as separate processes."""
    return lambda: make_byte_cache(lock_cache_kind, prefix=unique_prefix, l1_ttl=60)


def test_lock_makes_one_load_among_many_caches(lock_backend: Any) -> None:
    """8 TypedCache objects (8 singleflights, as in 8 processes) x 4 threads: one load."""
    caches: list[TypedCache[str]] = [
        TypedCache(lock_backend(), distributed_lock=True, lock_timeout=5) for _ in range(8)
    ]
    calls = CountingLoader("v")
    release = threading.Event()

    def loader() -> str:
        calls()
        assert release.wait(5)
        return "value"

    barrier = threading.Barrier(32)
    results: list[str] = []

    def caller(typed: TypedCache[str]) -> None:
        barrier.wait()
        results.append(typed.get_or_set("cold", loader, ttl=60))

    threads = [threading.Thread(target=caller, args=(c,)) for c in caches for _ in range(4)]
    for t in threads:
        t.start()
    assert wait_for(lambda: sum(c.stats().lock_waits for c in caches) == 7)
    release.set()
    for t in threads:
        t.join(10)
    assert calls.calls == 1
    assert results == ["value"] * 32


# -- real processes --------------------------------------------------------------------------


def _spawn(server: RedisServer, prefix: str, threads: int, loader_s: float, mode: str) -> Any:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.stampede_worker", server.url, prefix, str(threads),
         str(loader_s), mode],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait(10)


@pytest.mark.slow
def test_eight_processes_sixteen_threads_one_load(
    redis_server: RedisServer, redis_client: redis.Redis, procs: list[Any]
) -> None:
    prefix = "xp"
    for _ in range(8):
        procs.append(_spawn(redis_server, prefix, 16, 0.3, "lock"))
    assert wait_for(lambda: int(redis_client.get(f"{prefix}:ready") or 0) == 8, timeout=60)
    redis_client.rpush(f"{prefix}:go", *[b"1"] * 8)
    outputs = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert int(redis_client.get(f"{prefix}:calls") or 0) == 1
    results = [r for out in outputs for r in out["results"]]
    assert results == [{"loaded_by_call": 1}] * 128


@pytest.mark.slow
def test_killed_lock_holder_is_taken_over_within_the_lease(
    redis_server: RedisServer, redis_client: redis.Redis, procs: list[Any]
) -> None:
    prefix = "kill"
    holder = _spawn(redis_server, prefix, 1, 0.0, "hang")
    procs.append(holder)
    assert wait_for(lambda: redis_client.get(f"{prefix}:ready") == b"1", timeout=30)
    redis_client.rpush(f"{prefix}:go", b"1")
    assert wait_for(lambda: redis_client.exists(f"{prefix}:hanging") == 1, timeout=30)
    lock_key = LeaseLockFactory(RedisCache(redis_client, prefix=prefix)).lock("hot", 3.0).lock_key
    holder_token = redis_client.get(lock_key)
    assert holder_token is not None

    holder.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    lock_timeout = 3.0
    typed: TypedCache[Any] = TypedCache(
        RedisCache.from_url(redis_server.url, prefix=prefix),  # default 0.25 s socket timeout
        distributed_lock=True,
        lock_timeout=lock_timeout,
    )
    got: list[Any] = []
    follower = threading.Thread(
        target=lambda: got.append(typed.get_or_set("hot", lambda: "reloaded", ttl=60))
    )
    follower.start()
    # While the dead holder's lease runs, nobody else's token may delete its lock.
    assert wait_for(lambda: typed.stats().lock_waits == 1)
    assert redis_client.get(lock_key) == holder_token
    follower.join(lock_timeout + 2)
    assert not follower.is_alive()
    assert got == ["reloaded"]
    assert time.monotonic() - killed_at <= lock_timeout + 1.0
    assert int(redis_client.get(f"{prefix}:calls") or 0) == 1  # only the dead holder's call


def test_a_miss_that_joins_a_refresh_which_gave_way_gets_a_real_value(
    redis_client: redis.Redis, clock: FakeClock
) -> None:
    """A stale refresh finds the lease taken and gives way (no value); a blocking caller that
    joined its flight must then load for itself, never receive the internal marker."""
    typed: TypedCache[str] = TypedCache(
        RedisCache(redis_client, prefix="busy"),
        distributed_lock=True,
        stale_ttl=60,
        ttl_jitter=0.0,
        clock=clock,
    )
    typed.get_or_set("k", lambda: "old", ttl=10)
    clock.advance(11)  # stale: the next reader refreshes without blocking

    in_acquire = threading.Event()
    release = threading.Event()
    locks = typed.cache.lease_locks()
    real_lock = locks.lock
    attempts: list[int] = []

    class GatedLock:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def try_acquire(self) -> bool:
            attempts.append(1)
            if len(attempts) == 1:  # the refresher: another process "holds" the lease
                in_acquire.set()
                assert release.wait(5)
                return False
            return bool(self.inner.try_acquire())

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

    locks.lock = lambda key, lease: GatedLock(real_lock(key, lease))  # type: ignore[method-assign]
    results: dict[str, Any] = {}
    refresher = threading.Thread(
        target=lambda: results.__setitem__("A", typed.get_or_set("k", lambda: "new", ttl=10))
    )
    refresher.start()
    assert in_acquire.wait(5)
    opts = typed.options
    miss = threading.Thread(
        target=lambda: results.__setitem__("B", typed._rt.load("k", lambda: "new", 10, opts))
    )
    miss.start()
    assert wait_for(lambda: typed.waiting("k") == 1)  # B joined A's flight
    release.set()
    refresher.join(5)
    miss.join(5)
    assert results == {"A": "old", "B": "new"}
