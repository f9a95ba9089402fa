"""No stale value outlives a write: loads racing updates, writes during an outage, late
commands, and how fast the caches come back (issue 13).

Every race here is forced into its worst order with events (the loader has read the database,
then the update and the cache write happen, then the loader stores), so each test fails without
the fence that it checks.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from cache_core import (
    BackendError,
    BloomFilter,
    CacheWarmer,
    CircuitBreaker,
    MemoryCache,
    MultiLevelCache,
    ProtectedCache,
    RedisCache,
    TypedCache,
    memoize,
)
from tests.conftest import ByteCacheFactory, FakeClock, wait_for
from tests.redis_harness import RedisServer

JOIN = 10.0


@dataclass
class Store:
    """A byte cache under test, and a way to read what it holds without any L1."""

    cache: Any
    raw: Callable[[str], bytes | None]


@pytest.fixture
def store(byte_cache_kind: str, make_byte_cache: ByteCacheFactory) -> Store:
    cache = make_byte_cache(byte_cache_kind)
    below = cache.l2 if isinstance(cache, MultiLevelCache) else cache  # the L2: no L1 in the way
    return Store(cache, lambda k: below.get(k, None))


class Race:
    """A loader that reads the "database", then holds until the test has updated it."""

    def __init__(self, db: dict[str, Any]) -> None:
        self.db = db
        self.read = threading.Event()
        self.go = threading.Event()
        self.calls = 0

    def loader(self, key: str = "k") -> Callable[[], Any]:
        def load() -> Any:
            self.calls += 1
            value = self.db[key]
            if self.calls == 1:  # only the racing load holds; later loads run straight through
                self.read.set()
                assert self.go.wait(JOIN)
            return value

        return load


def _race(start_load: Callable[[], Any], race: Race, update: Callable[[], None]) -> list[Any]:
    """Run the load in a thread; once it has read the database, update; then let it store."""
    results: list[Any] = []
    thread = threading.Thread(target=lambda: results.append(start_load()))
    thread.start()
    assert race.read.wait(JOIN)
    update()
    race.go.set()
    thread.join(JOIN)
    assert not thread.is_alive()
    return results


@pytest.mark.parametrize("write", ["delete", "set"])
@pytest.mark.parametrize("config", ["plain", "distributed_lock"])
def test_a_load_that_read_before_an_update_is_not_stored_after_it(
    store: Store, write: str, config: str
) -> None:
    if config == "distributed_lock" and isinstance(store.cache, MemoryCache):
        pytest.skip("the lease lock needs Redis")
    typed: TypedCache[Any] = TypedCache(
        store.cache, ttl_jitter=0.0, distributed_lock=config == "distributed_lock"
    )
    db = {"k": "old"}
    race = Race(db)

    def update() -> None:
        db["k"] = "new"
        if write == "delete":
            typed.delete("k")
        else:
            typed.set("k", "new")

    results = _race(lambda: typed.get_or_set("k", race.loader(), ttl=60), race, update)
    assert results == ["old"]  # its caller overlapped the update: it may see the old value
    raw = store.raw("k")
    assert raw is None or typed.get("k") == "new"  # but the cache never holds it afterwards
    assert typed.get_or_set("k", race.loader(), ttl=60) == "new"


def test_a_stale_refresh_that_read_before_an_update_is_not_stored(store: Store) -> None:
    clock = FakeClock(start=1_000_000.0)
    typed: TypedCache[Any] = TypedCache(store.cache, ttl_jitter=0.0, stale_ttl=60, clock=clock)
    db = {"k": "old"}
    typed.set("k", "old", ttl=10)
    clock.advance(11)  # past its TTL, inside the stale window: the next read refreshes
    race = Race(db)

    def update() -> None:
        db["k"] = "new"
        typed.set("k", "new", ttl=10)

    results = _race(lambda: typed.get_or_set("k", race.loader(), ttl=10), race, update)
    assert results == ["old"]
    assert typed.get("k") == "new"


def test_a_memoized_load_loses_to_invalidate(store: Store) -> None:
    db = {"k": "old"}
    race = Race(db)

    @memoize(store.cache, ttl=60, namespace="race")
    def fetch(row: int) -> Any:
        return race.loader()()

    def update() -> None:
        db["k"] = "new"
        fetch.invalidate(1)

    assert _race(lambda: fetch(1), race, update) == ["old"]
    assert fetch(1) == "new"


def test_a_tombstone_loses_to_a_create(store: Store) -> None:
    bloom = BloomFilter(100)
    bloom.add("u1")
    guard: ProtectedCache[Any] = ProtectedCache(TypedCache(store.cache), bloom)
    db: dict[str, Any] = {"k": None}  # the user does not exist yet
    race = Race(db)

    def update() -> None:
        db["k"] = {"name": "bob"}
        guard.set("u1", {"name": "bob"})

    results = _race(lambda: guard.get_or_set("u1", race.loader()), race, update)
    assert results == [None]
    # The "does not exist" loaded before the create was not stored over it.
    assert guard.get_or_set("u1", race.loader()) == {"name": "bob"}


def test_callers_that_join_an_overtaken_load_load_again(store: Store) -> None:
    """A caller that arrives after the update returned never gets the value read before it."""
    typed: TypedCache[Any] = TypedCache(store.cache, ttl_jitter=0.0)
    db = {"k": "old"}
    race = Race(db)
    late: list[Any] = []
    leader = threading.Thread(target=lambda: typed.get_or_set("k", race.loader(), ttl=60))
    leader.start()
    assert race.read.wait(JOIN)
    db["k"] = "new"
    typed.delete("k")  # the update has returned; everything that starts now must see "new"
    joiner = threading.Thread(target=lambda: late.append(typed.get_or_set("k", race.loader())))
    joiner.start()
    assert wait_for(lambda: typed.waiting("k") == 1)  # it joined the racing flight
    race.go.set()
    leader.join(JOIN)
    joiner.join(JOIN)
    assert late == ["new"]
    assert race.calls == 2


def test_a_caller_that_joins_a_flight_stored_before_the_update_loads_again(
    redis_client: redis.Redis, unique_prefix: str
) -> None:
    """The flight stored its value, then a write removed it and returned, and only then did a
    caller miss and join the flight (still releasing its lease): the caller started after the
    update, so it must not get the value read before it (found by the consistency benchmark)."""
    cache = RedisCache(redis_client, prefix=unique_prefix)
    typed: TypedCache[Any] = TypedCache(cache, ttl_jitter=0.0, distributed_lock=True)
    locks = cache.lease_locks()
    real_lock = locks.lock
    releasing = threading.Event()
    release = threading.Event()

    class SlowRelease:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def release(self) -> bool:
            releasing.set()  # the value is stored; the flight ends after this release
            assert release.wait(JOIN)
            return bool(self.inner.release())

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

    locks.lock = lambda key, lease: SlowRelease(real_lock(key, lease))  # type: ignore[method-assign]
    db = {"k": "old"}
    calls: list[str] = []

    def load() -> str:
        calls.append(db["k"])
        return db["k"]

    leader = threading.Thread(target=lambda: typed.get_or_set("k", load, ttl=60))
    leader.start()
    assert releasing.wait(JOIN)
    assert typed.get("k") == "old"  # stored before the update
    db["k"] = "new"
    typed.delete("k")  # the update has returned
    late: list[Any] = []
    joiner = threading.Thread(target=lambda: late.append(typed.get_or_set("k", load, ttl=60)))
    joiner.start()
    assert wait_for(lambda: typed.waiting("k") == 1)  # it joined the ending flight
    release.set()
    leader.join(JOIN)
    joiner.join(JOIN)
    assert late == ["new"]
    assert calls == ["old", "new"]
    assert typed.get("k") == "new"


def test_a_warmed_batch_loses_to_an_update_during_its_load(store: Store) -> None:
    typed: TypedCache[Any] = TypedCache(store.cache, ttl_jitter=0.0)
    db = {"a": "old", "b": "old", "c": "old"}
    typed.set("c", "old")

    def load(ids: list[str]) -> dict[str, str]:
        snapshot = {k: db[k] for k in ids}  # the batch reads the database ...
        db["a"] = "new"  # ... and two updates land before it stores
        typed.delete("a")
        db["c"] = "new"
        typed.set("c", "new")
        return snapshot

    report = CacheWarmer(typed, load).warm(["a", "b", "c"], ttl=60)
    assert report.loaded == 3 and report.failed == 0
    assert typed.get("a", None) is None  # the old "a" was not stored after its delete
    assert typed.get("b") == "old"  # untouched keys are stored as usual
    assert typed.get("c") == "new"  # and the old "c" did not overwrite the new one


def test_fence_tokens_are_shared_and_dropped_by_writes(store: Store) -> None:
    cache = store.cache
    token = cache.fence("k")
    assert token is not None and cache.fence("k") == token  # concurrent loaders share it
    assert cache.fence_many(["k", "j"])["k"] == token
    cache.set("k", b"written")
    assert cache.set_fenced("k", b"loaded", 60, token) is False  # the write won
    assert cache.get("k") == b"written"
    fresh = cache.fence("k")
    assert fresh != token
    assert cache.set_fenced("k", b"loaded", 60, fresh) is True
    assert cache.set_fenced("k", b"again", 60, fresh) is False  # a stored token is spent
    tokens = cache.fence_many(["x", "y", "z"])
    cache.delete("y")
    cache.mdelete(["z"])
    stored = cache.mset_fenced({k: (b"v", 60) for k in tokens}, tokens)  # type: ignore[misc]
    assert stored == {"x"}
    with pytest.raises(ValueError, match="key"):
        cache.fence("__cc")
    with pytest.raises(TypeError, match="key"):
        cache.fence(5)


@pytest.mark.parametrize("config", ["plain", "distributed_lock", "memoize"])
def test_two_processes_a_load_in_one_loses_to_an_update_in_the_other(
    redis_server: RedisServer, redis_client: redis.Redis, unique_prefix: str, config: str
) -> None:
    redis_client.set("db:k", b"old")
    prefix = f"{unique_prefix}-{os.getpid()}"
    cache = RedisCache(redis_client, prefix=prefix)
    typed: TypedCache[Any] = TypedCache(cache)
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.consistency_worker", str(redis_server.port), prefix,
         config, "read-marker", "go-marker"],
        cwd=Path(__file__).resolve().parent.parent,
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert wait_for(lambda: redis_client.exists("read-marker") == 1, timeout=JOIN)
        redis_client.set("db:k", b"new")  # the update commits ...
        if config == "memoize":

            @memoize(cache, ttl=60, namespace="consistency")
            def fetch(row: int) -> Any:
                return redis_client.get("db:k").decode()  # type: ignore[union-attr]

            fetch.invalidate(1)  # ... and invalidates the cache, while the child still loads
        else:
            typed.delete("k")
        redis_client.rpush("go-marker", b"1")
        out, _ = child.communicate(timeout=JOIN)
    finally:
        child.kill()
    assert out.strip() == "old"  # the child's own caller overlapped the update
    if config == "memoize":
        assert fetch(1) == "new"
    else:
        assert typed.get("k", None) is None  # nothing stale was stored by the child
        assert typed.get_or_set("k", lambda: redis_client.get("db:k").decode()) == "new"  # type: ignore[union-attr]


# -- writes during an outage, late commands, recovery ------------------------------------------


_NO_RETRY = Retry(NoBackoff(), 0)


def _answers(cache: RedisCache) -> bool:
    try:
        cache.exists("probe")
    except BackendError:
        return False
    return True


def _outage_cache(server: RedisServer, prefix: str) -> RedisCache:
    # Short timeouts, as from_url builds them; the default breaker (opens on one timeout).
    return RedisCache.from_url(server.url, prefix=prefix, socket_timeout=0.2)


def test_a_set_that_fails_during_an_outage_is_replayed_as_an_invalidation(
    fault_server: RedisServer,
) -> None:
    writer = _outage_cache(fault_server, "o")
    admin = fault_server.client()
    typed: TypedCache[Any] = TypedCache(writer, ttl_jitter=0.0)
    typed.set("k", "old", ttl=60)
    fault_server.pause()
    try:
        with pytest.raises(BackendError):
            typed.set("k", "new", ttl=60)  # the direct caller gets the error ...
        assert writer.pending_deletes == 1  # ... and the write is remembered as an invalidation
        # The writer never serves the old value, not even from Redis once it is back.
        assert typed.get_or_set("k", lambda: "new") == "new"
    finally:
        fault_server.resume()
    resumed = time.monotonic()
    # The writer keeps serving requests; its first command once the breaker lets it through
    # replays the invalidation before anything else.
    assert wait_for(
        lambda: typed.get_or_set("k", lambda: "new") == "new" and writer.pending_deletes == 0,
        timeout=5,
    )
    assert time.monotonic() - resumed < 2.5  # probe delay <= 0.9 s (plus the loop's own time)
    # Another process (its own client) no longer finds the old value in Redis.
    raw = admin.get("o:k")
    assert raw is None or b"old" not in raw
    other: TypedCache[Any] = TypedCache(RedisCache(admin, prefix="o"))
    assert other.get_or_set("k", lambda: "new") == "new"


def test_a_failed_delete_and_set_are_replayed_before_a_later_write(
    fault_server: RedisServer,
) -> None:
    cache = _outage_cache(fault_server, "r")
    cache.set("a", b"old")
    fault_server.pause()
    try:
        with pytest.raises(BackendError):
            cache.delete("a")
    finally:
        fault_server.resume()
    assert wait_for(lambda: _answers(cache), timeout=5)  # the first command replays the delete
    assert cache.pending_deletes == 0
    cache.set("a", b"newer")  # a write after the failed delete is never undone by the replay
    assert cache.get("a") == b"newer"
    assert cache.pending_deletes == 0


def test_a_late_store_is_refused_when_it_finally_executes(fault_server: RedisServer) -> None:
    """A store queued in a paused Redis that already applied an update: refused there."""
    admin = fault_server.client()
    cache = RedisCache(fault_server.client(socket_timeout=0.2, retry=_NO_RETRY), prefix="l")
    late = fault_server.client(socket_timeout=0.2, retry=_NO_RETRY)
    late.ping()  # connected before the pause, like a pooled connection
    token = cache.fence("k")  # a load begins ...
    assert token is not None
    cache.delete("k")  # ... an update lands ...
    fault_server.pause()
    try:
        with pytest.raises(BackendError):
            cache.set_fenced("k", b"old", 60, token)  # ... the store times out, still queued
        # Control: a plain SET queued the same way does execute late (the hazard is real).
        with pytest.raises(redis.TimeoutError):
            late.set("control", b"late")
    finally:
        fault_server.resume()
    assert wait_for(lambda: admin.get("control") == b"late", timeout=5)
    assert admin.get("l:k") is None  # the fenced store ran after the control, and was refused


def test_a_paused_redis_costs_one_timeout_per_process(fault_server: RedisServer) -> None:
    typed: TypedCache[Any] = TypedCache(_outage_cache(fault_server, "p"))
    typed.set("k", "v")
    fault_server.pause()
    slow = 0
    try:
        for _ in range(12):
            started = time.monotonic()
            assert typed.get_or_set("k", lambda: "loaded") in ("v", "loaded")
            if time.monotonic() - started >= 0.15:
                slow += 1
    finally:
        fault_server.resume()
    # The first read times out and opens the breaker; the store after it and every later call
    # fail fast (before: five timeouts, and again at each probe).
    assert slow == 1


def test_breaker_probes_spread_and_caches_come_back_quickly(fault_server: RedisServer) -> None:
    caches = [_outage_cache(fault_server, f"s{i}") for i in range(4)]
    for cache in caches:
        cache.set("k", b"v")
    fault_server.pause()
    try:
        for cache in caches:
            with pytest.raises(BackendError):
                cache.get("k")
    finally:
        fault_server.resume()
    resumed = time.monotonic()
    back: dict[int, float] = {}

    def poll() -> bool:
        for i, cache in enumerate(caches):
            if i not in back:
                try:
                    cache.get("k")
                    back[i] = time.monotonic() - resumed
                except BackendError:
                    pass
        return len(back) == len(caches)

    assert wait_for(poll, timeout=5)
    assert max(back.values()) < 1.5, back
    delays = [c.breaker.probe_delay for c in caches if c.breaker is not None]
    assert len(set(delays)) == 4  # each process's probe at its own moment
    assert all(0.4 <= d <= 0.9 for d in delays)


def test_circuit_breaker_default_reset_is_short() -> None:
    assert CircuitBreaker().reset_timeout == 1.0


class CountingClient(redis.Redis):
    """A real client that counts the commands (round trips) it sends."""

    sent: typing.ClassVar[list[str]] = []

    def execute_command(self, *args: Any, **options: Any) -> Any:
        type(self).sent.append(str(args[0]))
        return super().execute_command(*args, **options)


def test_fences_cost_no_round_trip_on_a_hit_and_one_on_a_load(redis_server: RedisServer) -> None:
    client = CountingClient(host="127.0.0.1", port=redis_server.port)
    typed: TypedCache[Any] = TypedCache(RedisCache(client, prefix="rt"))
    typed.get_or_set("warm-up", lambda: "v")  # connect and load the scripts outside the counts
    CountingClient.sent = []
    assert typed.get_or_set("k", lambda: "v") == "v"
    assert CountingClient.sent == ["GET", "EVALSHA", "EVALSHA"]  # miss, fence, fenced store
    CountingClient.sent = []
    assert typed.get_or_set("k", lambda: "other") == "v"
    assert CountingClient.sent == ["GET"]  # a hit: as before fences
    client.close()
