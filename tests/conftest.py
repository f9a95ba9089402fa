"""Shared fixtures: real redis-server processes on free loopback ports, a fake clock."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster

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
