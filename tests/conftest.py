"""Shared fixtures: real redis-server processes on free loopback ports, a fake clock, and one
factory for "a byte cache of kind X" (``make_byte_cache`` / the parametrized ``byte_cache``)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest
import redis
from redis.cluster import RedisCluster

from cache_core import MemoryCache, MultiLevelCache, RedisCache
from tests.redis_harness import (
    HOST,
    RedisClusterHarness,
    RedisServer,
    ReplicatedClusterHarness,
    SentinelHarness,
)


def wait_for(predicate: Callable[[], object], timeout: float = 5.0) -> bool:
    """Poll a condition another thread or process will make true (only to line them up).

    Used where no event exists to wait on: a count of waiters inside the library, another
    process's progress. Returns False on timeout so the caller's assert reports it.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


class FakeClock:
    """A monotonic clock that only moves when a test says so."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def redis_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("redis")


@pytest.fixture(scope="session")
def redis_server(redis_workdir: Path) -> Iterator[RedisServer]:
    """One real redis-server for the whole session (tests isolate themselves by prefix)."""
    server = RedisServer(redis_workdir / "main").start()
    yield server
    server.stop()


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A client on the session server, whose database starts empty for each test."""
    client = redis_server.client()
    client.flushdb()  # the test harness may flush its own throwaway server; the library never does
    yield client
    client.close()


@pytest.fixture
def fault_server(redis_workdir: Path) -> Iterator[RedisServer]:
    """A private redis-server that the test may stop, pause (SIGSTOP) and restart."""
    server = RedisServer(redis_workdir / "fault").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(redis_workdir: Path) -> Iterator[RedisClusterHarness]:
    """A real 3-master Redis Cluster on loopback ports (about 2-3 s to become writable)."""
    harness = RedisClusterHarness(redis_workdir / "cluster").start()
    yield harness
    harness.stop()


@pytest.fixture
def cluster_client(redis_cluster: RedisClusterHarness) -> Iterator[RedisCluster]:
    client = RedisCluster(host=HOST, port=redis_cluster.ports[0])
    client.flushall(target_nodes=RedisCluster.PRIMARIES)
    yield client
    client.close()


@pytest.fixture(scope="session")
def replicated_cluster(redis_workdir: Path) -> Iterator[ReplicatedClusterHarness]:
    """3 primaries + 3 replicas (node timeout 1 s, full coverage no), started once.

    Tests that kill or move things call ``restore()`` at the end, so the next test gets a
    healthy cluster (the primaries' ports may have changed: use ``primaries()``).
    """
    harness = ReplicatedClusterHarness(redis_workdir / "rcluster").start()
    yield harness
    harness.stop()


@pytest.fixture(scope="session")
def sentinel_setup(redis_workdir: Path) -> Iterator[SentinelHarness]:
    """One primary, one replica and one sentinel, started once for the session."""
    harness = SentinelHarness(redis_workdir / "sentinel").start()
    yield harness
    harness.stop()


_prefix_counter = itertools.count()


@pytest.fixture
def unique_prefix(request: pytest.FixtureRequest) -> str:
    return f"t{next(_prefix_counter)}"


# -- byte caches -------------------------------------------------------------------------------

#: A byte cache as the factory builds it (every one implements ``Cache`` and ``BatchCache``).
ByteCache = MemoryCache | RedisCache | MultiLevelCache

#: The kinds ``make_byte_cache`` builds, and the ``byte_cache`` fixture runs over.
#: ``multilevel`` is a MemoryCache L1 over a RedisCache L2 with the library's default
#: (invalidation on).
BYTE_CACHE_KINDS = ("memory", "redis", "cluster", "multilevel")
#: The kinds that can lend lease locks (``distributed_lock=True`` works on them).
LOCK_KINDS = ("redis", "cluster", "multilevel")


class ByteCacheFactory(Protocol):
    def __call__(
        self,
        kind: str,
        *,
        prefix: str | None = None,
        timer: Callable[[], float] | None = None,
        default_ttl: float | None = None,
        maxsize: int | None = None,
        l1_ttl: float = 30,
        l2_ttl: float | None = None,
        invalidation: bool = True,
    ) -> ByteCache: ...


@pytest.fixture
def make_byte_cache(request: pytest.FixtureRequest) -> Iterator[ByteCacheFactory]:
    """Build a byte cache of ``kind`` (one of ``BYTE_CACHE_KINDS``), each on a fresh namespace.

    Redis kinds use the session's redis-server / 3-master Cluster (requested only when a test
    asks for that kind; their databases start empty for each test). ``prefix``: the Redis
    prefix (default: a fresh one per call; pass the same one to build two views of one
    namespace, as two processes would). ``timer``: the MemoryCache's clock (the L1's for
    ``multilevel``). ``default_ttl``: the cache's default (the L2's for ``multilevel``).
    ``maxsize``: the MemoryCache's bound (the L1's). ``l1_ttl``, ``l2_ttl``, ``invalidation``:
    ``MultiLevelCache``'s. Every MultiLevelCache made is closed after the test.
    """
    made: list[MultiLevelCache] = []

    def memory(timer: Callable[[], float] | None, maxsize: int | None, **kw: Any) -> MemoryCache:
        if timer is not None:
            kw["timer"] = timer
        if maxsize is not None:
            kw["maxsize"] = maxsize
        return MemoryCache(**kw)

    def make(
        kind: str,
        *,
        prefix: str | None = None,
        timer: Callable[[], float] | None = None,
        default_ttl: float | None = None,
        maxsize: int | None = None,
        l1_ttl: float = 30,
        l2_ttl: float | None = None,
        invalidation: bool = True,
    ) -> ByteCache:
        if kind not in BYTE_CACHE_KINDS:
            raise ValueError(f"kind must be one of {BYTE_CACHE_KINDS}, not {kind!r}")
        if kind == "memory":
            return memory(timer, maxsize, default_ttl=default_ttl)
        if prefix is None:
            prefix = f"bc{next(_prefix_counter)}"
        client_fixture = "cluster_client" if kind == "cluster" else "redis_client"
        redis_cache = RedisCache(
            request.getfixturevalue(client_fixture), prefix=prefix, default_ttl=default_ttl
        )
        if kind != "multilevel":
            return redis_cache
        multi = MultiLevelCache(
            memory(timer, maxsize),
            redis_cache,
            l1_ttl=l1_ttl,
            l2_ttl=l2_ttl,
            invalidation=invalidation,
        )
        made.append(multi)
        return multi

    yield make
    for multi in made:
        multi.close()


@pytest.fixture(params=BYTE_CACHE_KINDS)
def byte_cache_kind(request: pytest.FixtureRequest) -> str:
    """Each kind of byte cache in turn (the test id names it)."""
    return str(request.param)


@pytest.fixture
def byte_cache(byte_cache_kind: str, make_byte_cache: ByteCacheFactory) -> Any:
    """A fresh byte cache of each kind in turn: memory, redis, cluster, multilevel."""
    return make_byte_cache(byte_cache_kind)


@pytest.fixture(params=LOCK_KINDS)
def lock_cache_kind(request: pytest.FixtureRequest) -> str:
    """Each kind of byte cache that can lend lease locks (``distributed_lock=True``)."""
    return str(request.param)
