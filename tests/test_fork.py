"""Fork safety: a child forked mid-flight inherits no call, lock, listener or L1 it cannot use.

Each test forks the test process itself (``os.fork``) and talks to the child over a pipe; the
child always ends with ``os._exit`` so it never runs pytest's teardown.
"""

from __future__ import annotations

import json
import os
import select
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from cache_core import MemoryCache, MultiLevelCache, RedisCache, Singleflight, TypedCache
from tests.conftest import wait_for
from tests.redis_harness import RedisServer

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def in_child(body: Callable[[Callable[[], bytes]], dict[str, Any]]) -> tuple[int, int, int]:
    """Fork; the child runs ``body(read_from_parent)`` and sends back its JSON result.

    Returns (pid, fd to read the child's result, fd to write to the child).
    """
    to_parent_r, to_parent_w = os.pipe()
    to_child_r, to_child_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        status = 0
        try:
            os.close(to_parent_r)
            os.close(to_child_w)

            def from_parent() -> bytes:
                return os.read(to_child_r, 100)

            result = body(from_parent)
        except BaseException as exc:
            result = {"error": repr(exc)}
            status = 1
        finally:
            try:
                os.write(to_parent_w, json.dumps(result).encode())
            finally:
                os._exit(status)
    os.close(to_parent_w)
    os.close(to_child_r)
    return pid, to_parent_r, to_child_w


def child_result(pid: int, fd: int, timeout: float) -> dict[str, Any]:
    ready, _, _ = select.select([fd], [], [], timeout)
    if not ready:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail(f"the child did not answer within {timeout}s")
    data = os.read(fd, 65536)
    os.close(fd)
    os.waitpid(pid, 0)
    result: dict[str, Any] = json.loads(data)
    assert "error" not in result, result["error"]
    return result


@pytest.fixture
def client(redis_server: RedisServer) -> Any:
    c = redis_server.client()
    yield c
    c.close()


def test_singleflight_child_does_not_wait_for_the_parents_leader() -> None:
    group = Singleflight()
    started, release = threading.Event(), threading.Event()

    def slow() -> str:
        started.set()
        release.wait(10)
        return "parent"

    leader = threading.Thread(target=group.do, args=("k", slow))
    leader.start()
    assert started.wait(5)

    def body(_: Callable[[], bytes]) -> dict[str, Any]:
        t0 = time.monotonic()
        value, shared = group.do("k", lambda: "child")
        return {"value": value, "shared": shared, "seconds": time.monotonic() - t0}

    try:
        pid, fd, wfd = in_child(body)
        result = child_result(pid, fd, 5)
        os.close(wfd)
    finally:
        release.set()
        leader.join(5)
    assert result["value"] == "child" and not result["shared"]
    assert result["seconds"] < 1


def test_get_or_set_in_a_child_forked_while_the_parent_loads_the_key(client: redis.Redis) -> None:
    """The issue's target: the child's get_or_set of that key returns in < 1 s."""
    cache = TypedCache(
        MultiLevelCache(MemoryCache(), RedisCache(client, prefix="fork-load"), l1_ttl=60)
    )
    started, release = threading.Event(), threading.Event()

    def slow() -> str:
        started.set()
        release.wait(10)
        return "parent"

    loader = threading.Thread(target=cache.get_or_set, args=("k", slow))
    loader.start()
    assert started.wait(5)

    def body(_: Callable[[], bytes]) -> dict[str, Any]:
        t0 = time.monotonic()
        value = cache.get_or_set("k", lambda: "child")
        return {"value": value, "seconds": time.monotonic() - t0}

    try:
        pid, fd, wfd = in_child(body)
        result = child_result(pid, fd, 5)
        os.close(wfd)
    finally:
        release.set()
        loader.join(5)
    assert result["value"] == "child"
    assert result["seconds"] < 1


def test_a_child_never_serves_what_the_parents_l1_held(client: redis.Redis) -> None:
    """Written between the fork and the child's first read: the child's L1 must not answer."""
    l1 = MemoryCache()
    cache = MultiLevelCache(l1, RedisCache(client, prefix="fork-l1"), l1_ttl=600)
    assert wait_for(lambda: cache.l1_trusted)
    heard = threading.Event()
    cache.on_invalidate(lambda keys: heard.set())
    client.set("fork-l1:k", b"v1")
    assert heard.wait(5)  # its own invalidation, or it could drop the promotion below
    assert cache.get("k") == b"v1" and l1.get("k") == b"v1"
    parent_id = client.client_id()

    def body(from_parent: Callable[[], bytes]) -> dict[str, Any]:
        from_parent()  # the parent wrote v2 after the fork
        first = cache.get("k")
        trusted = wait_for(lambda: cache.l1_trusted, 5)  # the child's own listener subscribed
        client.set("fork-l1:k", b"v3")
        third = wait_for(lambda: cache.get("k") == b"v3", 5)
        return {
            "first": first.decode(),
            "trusted": trusted,
            "third": third,
            "client_id": client.client_id(),
        }

    pid, fd, wfd = in_child(body)
    client.set("fork-l1:k", b"v2")
    os.write(wfd, b"go")
    result = child_result(pid, fd, 10)
    os.close(wfd)
    assert result["first"] == "v2"
    assert result["trusted"] and result["third"]
    assert result["client_id"] != parent_id  # the child opened its own connection
    assert client.client_id() == parent_id  # and the parent's still works
    assert wait_for(lambda: cache.get("k") == b"v3")  # the parent's listener survived the fork
    cache.close()


def test_a_lock_held_by_another_thread_at_the_fork_is_free_in_the_child() -> None:
    cache = MemoryCache()
    cache.set("k", b"v")
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with cache._lock:  # a thread in the middle of an operation when the fork happens
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(5)
    try:
        pid, fd, wfd = in_child(lambda _: {"value": cache.get("k").decode()})
        result = child_result(pid, fd, 5)
        os.close(wfd)
    finally:
        release.set()
        holder.join(5)
    assert result["value"] == "v"


def test_a_waiter_stops_waiting_for_a_hung_leader_after_wait_timeout() -> None:
    group = Singleflight(wait_timeout=0.2)
    started, release = threading.Event(), threading.Event()

    def hung() -> str:
        started.set()
        release.wait(10)
        return "leader"

    leader = threading.Thread(target=group.do, args=("k", hung))
    leader.start()
    assert started.wait(5)
    try:
        assert group.do("k", lambda: "waiter") == ("waiter", False)
        assert group.waiting("k") == 0
    finally:
        release.set()
        leader.join(5)
    with pytest.raises(ValueError):
        Singleflight(wait_timeout=0)


def test_a_breaker_probe_in_flight_at_the_fork_does_not_stay_in_flight_in_the_child() -> None:
    from cache_core import CircuitBreaker, CircuitOpenError
    from tests.conftest import FakeClock

    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=1, clock=clock)
    breaker.record_failure(ConnectionError("down"))
    clock.advance(2)
    breaker.allow()  # this thread is now the half-open probe...
    with pytest.raises(CircuitOpenError):
        breaker.allow()  # ...and nobody else may probe

    def body(_: Callable[[], bytes]) -> dict[str, Any]:
        breaker.allow()  # the parent's probe does not exist here: the child may probe
        return {"ok": True}

    pid, fd, wfd = in_child(body)
    assert child_result(pid, fd, 5) == {"ok": True}
    os.close(wfd)
