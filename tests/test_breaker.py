"""CircuitBreaker state machine, and its use by RedisCache, the lease lock and the typed layer."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from cache_core import (
    BackendError,
    CircuitBreaker,
    CircuitOpenError,
    MemoryCache,
    MultiLevelCache,
    RedisCache,
    TypedCache,
)
from tests.conftest import FakeClock
from tests.redis_harness import RedisServer


def test_opens_after_threshold_consecutive_outage_errors(clock: FakeClock) -> None:
    b = CircuitBreaker(failure_threshold=3, reset_timeout=5, timeout_threshold=10, clock=clock)
    for _ in range(2):
        b.allow()
        b.record_failure(RedisConnectionError("down"))
    assert b.state == "closed"
    b.record_success()  # a success resets the count: failures must be consecutive
    for _ in range(2):
        b.record_failure(RedisTimeoutError("slow"))
    assert b.state == "closed"
    b.record_failure(RedisConnectionError("down"))
    assert b.state == "open"
    with pytest.raises(CircuitOpenError, match="open"):
        b.allow()
    assert b.rejected == 1
    assert b.opened_count == 1


def test_one_timeout_opens_the_breaker(clock: FakeClock) -> None:
    # A paused server: every call would wait its own socket timeout. One is enough to know.
    b = CircuitBreaker(clock=clock)
    b.record_failure(RedisConnectionError("refused"))
    assert b.state == "closed"  # a refusal is fast: the consecutive-failure count applies
    b.record_failure(RedisTimeoutError("Timeout reading from socket"))
    assert b.state == "open"
    b2 = CircuitBreaker(timeout_threshold=3, clock=clock)
    for _ in range(2):
        b2.record_failure(TimeoutError("timed out"))
    assert b2.state == "closed"
    b2.record_success()  # consecutive, like failures
    for _ in range(3):
        b2.record_failure(TimeoutError("timed out"))
    assert b2.state == "open"


def test_probe_delays_are_jittered_per_opening(clock: FakeClock) -> None:
    # Processes that opened together probe at different moments within [0.4, 0.9] x reset.
    delays = []
    for r in (0.0, 0.25, 0.5, 0.999):
        b = CircuitBreaker(
            failure_threshold=1, reset_timeout=2.0, clock=clock, random=lambda r=r: r
        )
        b.record_failure(RedisConnectionError("down"))
        opened = clock.now
        while True:
            try:
                b.allow()
                break
            except CircuitOpenError:
                clock.advance(0.01)
        delays.append(round(clock.now - opened, 2))
    assert delays == sorted(set(delays))  # all different
    assert delays[0] == pytest.approx(0.8, abs=0.011)
    assert delays[-1] == pytest.approx(1.8, abs=0.011)


def test_command_errors_do_not_count(clock: FakeClock) -> None:
    b = CircuitBreaker(failure_threshold=2, clock=clock)
    for _ in range(10):
        b.record_failure(ResponseError("WRONGTYPE"))
    assert b.state == "closed"


def test_half_open_lets_exactly_one_probe_through(clock: FakeClock) -> None:
    # random() = 1.0: the probe delay is 0.9 * reset_timeout = 4.5 s.
    b = CircuitBreaker(failure_threshold=1, reset_timeout=5, clock=clock, random=lambda: 1.0)
    b.record_failure(RedisConnectionError("down"))
    clock.advance(4.4)
    with pytest.raises(CircuitOpenError):
        b.allow()
    clock.advance(0.2)
    b.allow()  # this caller is the probe
    assert b.state == "half_open"
    with pytest.raises(CircuitOpenError, match="probe"):
        b.allow()
    b.record_failure(RedisConnectionError("still down"))
    assert b.state == "open"
    with pytest.raises(CircuitOpenError):
        b.allow()
    clock.advance(5)
    b.allow()
    b.record_success()
    assert b.state == "closed"
    b.allow()
    b.allow()


def test_an_abandoned_probe_frees_the_half_open_slot(clock: FakeClock) -> None:
    b = CircuitBreaker(failure_threshold=1, reset_timeout=1, clock=clock)
    b.record_failure(RedisConnectionError("down"))
    clock.advance(1)
    b.allow()
    b.abandon()  # the probe died of KeyboardInterrupt, say
    b.allow()  # another caller may probe now


def test_state_changes_are_logged_once(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    b = CircuitBreaker(failure_threshold=2, reset_timeout=1, clock=clock)
    with caplog.at_level(logging.INFO, logger="cache_core"):
        for _ in range(50):
            b.record_failure(RedisConnectionError("down"))
            with contextlib.suppress(CircuitOpenError):
                b.allow()
        clock.advance(1)
        b.allow()
        b.record_success()
        for _ in range(50):
            b.allow()
            b.record_success()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("open after" in m for m in messages) == 1
    assert sum("half-open" in m for m in messages) == 1
    assert sum("closed" in m for m in messages) == 1


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"failure_threshold": 0}, ValueError, "failure_threshold"),
        ({"timeout_threshold": 0}, ValueError, "timeout_threshold"),
        ({"timeout_threshold": "1"}, TypeError, "timeout_threshold"),
        ({"random": 0.5}, TypeError, "random"),
        ({"failure_threshold": 2.5}, TypeError, "failure_threshold"),
        ({"failure_threshold": True}, TypeError, "failure_threshold"),
        ({"reset_timeout": 0}, ValueError, "reset_timeout"),
        ({"reset_timeout": float("inf")}, ValueError, "reset_timeout"),
        ({"reset_timeout": "5"}, TypeError, "reset_timeout"),
        ({"clock": 1}, TypeError, "clock"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        CircuitBreaker(**kwargs)


def test_redis_cache_rejects_a_non_breaker(redis_client: redis.Redis) -> None:
    with pytest.raises(TypeError, match="breaker"):
        RedisCache(redis_client, breaker=object())  # type: ignore[arg-type]


def test_from_url_has_a_breaker_by_default(redis_server: RedisServer) -> None:
    with RedisCache.from_url(redis_server.url, prefix="b") as cache:
        assert isinstance(cache.breaker, CircuitBreaker)
        assert cache.breaker.failure_threshold == 5
        assert cache.breaker.reset_timeout == 1.0
        assert cache.breaker.timeout_threshold == 1
    with RedisCache.from_url(redis_server.url, prefix="b", breaker=None) as cache:
        assert cache.breaker is None


def test_paused_server_opens_the_breaker_and_calls_fail_fast(fault_server: RedisServer) -> None:
    breaker = CircuitBreaker(failure_threshold=2, reset_timeout=60)
    cache = RedisCache.from_url(fault_server.url, prefix="f", socket_timeout=0.2, breaker=breaker)
    cache.set("k", b"v")
    fault_server.pause()
    try:
        for _ in range(2):
            with pytest.raises(BackendError):
                cache.get("k")  # each of these waits for the socket timeout
        assert breaker.state == "open"
        start = time.perf_counter()
        for _ in range(1000):
            with pytest.raises(CircuitOpenError):
                cache.get("k")
        per_call = (time.perf_counter() - start) / 1000
        assert per_call < 0.005  # far below one socket timeout (0.2 s); measured in benchmarks
    finally:
        fault_server.resume()
    cache.close()


def test_breaker_recovers_after_restart_without_rebuild(fault_server: RedisServer) -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=2, clock=clock)
    cache = RedisCache.from_url(fault_server.url, prefix="f", breaker=breaker)
    fault_server.stop()
    with pytest.raises(BackendError):
        cache.set("k", b"v")
    assert breaker.state == "open"
    fault_server.start()
    with pytest.raises(CircuitOpenError):
        cache.set("k", b"v")  # still open: no call reaches the restarted server yet
    clock.advance(2)
    cache.set("k", b"v")  # the probe
    assert breaker.state == "closed"
    assert cache.get("k") == b"v"
    cache.close()


def test_typed_get_or_set_answers_from_loader_while_open(fault_server: RedisServer) -> None:
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=60)
    cache = RedisCache.from_url(fault_server.url, prefix="f", breaker=breaker)
    typed: TypedCache[str] = TypedCache(cache, distributed_lock=True)
    fault_server.stop()
    assert typed.get_or_set("k", lambda: "loaded") == "loaded"
    assert breaker.state == "open"
    calls_before = breaker.rejected
    assert typed.get_or_set("k", lambda: "loaded again") == "loaded again"
    assert breaker.rejected > calls_before  # read, lock and store were all refused at once
    cache.close()


def test_multilevel_keeps_serving_l1_while_l2_is_open(fault_server: RedisServer) -> None:
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=60)
    l2 = RedisCache.from_url(fault_server.url, prefix="f", breaker=breaker)
    multi = MultiLevelCache(MemoryCache(), l2, l1_ttl=60)
    multi.set("hot", b"v")
    fault_server.stop()
    with pytest.raises(BackendError):
        multi.get("cold")
    assert breaker.state == "open"
    for _ in range(100):
        assert multi.get("hot") == b"v"
    rejected = breaker.rejected
    with pytest.raises(CircuitOpenError):
        multi.set("new", b"x")  # no L2 write while open (the caller is told) ...
    assert breaker.rejected == rejected + 1  # ... and no network call was attempted
    assert multi.get("new") == b"x"  # but this process serves it from L1 meanwhile
    l2.close()


# -- deletes during an outage -------------------------------------------------------------------


def test_delete_during_outage_is_never_undone(fault_server: RedisServer) -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=1, clock=clock)
    cache = RedisCache.from_url(fault_server.url, prefix="f", breaker=breaker)
    # Keep Redis' data across the outage: a paused server still holds the old value.
    cache.set("user:1", b"old")
    cache.mset({"a": b"1", "b": b"2"})
    fault_server.pause()
    try:
        with pytest.raises(BackendError):
            cache.delete("user:1")
        with pytest.raises(CircuitOpenError):
            cache.mdelete(["a"])
        assert cache.pending_deletes == 2
    finally:
        fault_server.resume()
    clock.advance(1)
    # Redis still holds the old values, but this cache never serves them again ...
    assert cache.get("user:1", None) is None
    assert cache.exists("a") is False
    assert cache.mget(["user:1", "a", "b"]) == {"b": b"2"}
    # ... and the delete was replayed once Redis answered.
    assert cache.pending_deletes == 0
    with redis.Redis.from_url(fault_server.url) as raw:
        assert raw.exists("f:user:1", "f:a") == 0
        assert raw.get("f:b") == b"2"
    cache.close()


def test_a_write_after_a_failed_delete_supersedes_it(fault_server: RedisServer) -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=1, clock=clock)
    cache = RedisCache.from_url(fault_server.url, prefix="f", breaker=breaker)
    cache.set("k", b"old")
    fault_server.pause()
    try:
        with pytest.raises(BackendError):
            cache.delete("k")
    finally:
        fault_server.resume()
    clock.advance(1)
    cache.set("k", b"new")
    assert cache.get("k") == b"new"
    assert cache.pending_deletes == 0
    cache.close()


def test_pending_deletes_are_thread_safe(fault_server: RedisServer) -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=1, clock=clock)
    cache = RedisCache.from_url(fault_server.url, prefix="f", breaker=breaker)
    cache.mset({f"k{i}": b"v" for i in range(400)})
    fault_server.stop()
    barrier = threading.Barrier(8)

    def deleter(t: int) -> None:
        barrier.wait()
        for i in range(t, 400, 8):
            with contextlib.suppress(BackendError):
                cache.delete(f"k{i}")

    threads = [threading.Thread(target=deleter, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert cache.pending_deletes == 400
    cache.close()
