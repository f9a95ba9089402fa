"""Singleflight: Go's singleflight.Group semantics under real threads."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from cache_core import CacheError, Singleflight, SingleflightInterrupted

JOIN_TIMEOUT = 10.0


def wait_until(predicate: Callable[[], bool], timeout: float = JOIN_TIMEOUT) -> None:
    """Poll a condition the code under test reports (not a sleep standing in for one)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.001)


class Counter:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.n = 0

    def incr(self) -> int:
        with self._lock:
            self.n += 1
            return self.n


def run_callers(
    group: Singleflight, key: str, fn: Callable[[], Any], n: int
) -> tuple[list[threading.Thread], list[tuple[str, Any]]]:
    """Start n threads calling group.do(key, fn); each appends ("ok", (v, shared)) or ("err", e)."""
    results: list[tuple[str, Any]] = []
    lock = threading.Lock()

    def call() -> None:
        try:
            out: tuple[str, Any] = ("ok", group.do(key, fn))
        except BaseException as exc:  # KeyboardInterrupt in a leader thread is recorded too
            out = ("err", exc)
        with lock:
            results.append(out)

    threads = [threading.Thread(target=call, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    return threads, results


def join_all(threads: list[threading.Thread]) -> None:
    deadline = time.monotonic() + JOIN_TIMEOUT
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    alive = sum(t.is_alive() for t in threads)
    assert alive == 0, f"{alive} threads still blocked"


def blocking_fn(
    calls: Counter, release: threading.Event, result: Callable[[], Any]
) -> Callable[[], Any]:
    def fn() -> Any:
        calls.incr()
        assert release.wait(JOIN_TIMEOUT)
        return result()

    return fn


def test_64_concurrent_callers_share_one_call() -> None:
    group, calls, release = Singleflight(), Counter(), threading.Event()
    value = {"payload": [1, 2, 3]}
    threads, results = run_callers(group, "k", blocking_fn(calls, release, lambda: value), 64)
    wait_until(lambda: group.waiting("k") == 63)
    release.set()
    join_all(threads)

    assert calls.n == 1
    assert len(results) == 64
    assert all(kind == "ok" for kind, _ in results)
    assert all(v is value and shared is True for _, (v, shared) in results)
    assert not group.in_flight("k") and group.waiting("k") == 0


def test_leader_alone_is_not_shared() -> None:
    group, calls = Singleflight(), Counter()
    assert group.do("k", lambda: calls.incr()) == (1, False)


def test_nothing_is_cached_after_the_call() -> None:
    group, calls = Singleflight(), Counter()
    for i in range(1, 4):
        assert group.do("k", calls.incr) == (i, False)
    assert calls.n == 3


def test_shared_exception_reaches_every_caller_then_retry_succeeds() -> None:
    group, calls, release = Singleflight(), Counter(), threading.Event()

    class LoaderError(ValueError):
        def __init__(self, msg: str, code: int) -> None:
            super().__init__(msg, code)
            self.code = code

    def fail() -> Any:
        raise LoaderError("db down", 503)

    threads, results = run_callers(group, "k", blocking_fn(calls, release, fail), 32)
    wait_until(lambda: group.waiting("k") == 31)
    release.set()
    join_all(threads)

    assert calls.n == 1
    errors = [e for kind, e in results if kind == "err"]
    assert len(errors) == 32
    assert all(type(e) is LoaderError and e.code == 503 for e in errors)
    # One original (the leader's) and 31 per-thread copies caused by it.
    originals = [e for e in errors if e.__cause__ is None]
    assert len(originals) == 1
    copies = [e for e in errors if e.__cause__ is not None]
    assert all(e.__cause__ is originals[0] for e in copies)
    assert len({id(e) for e in errors}) == 32
    assert all(e.__traceback__ is not originals[0].__traceback__ for e in copies)

    # The failure is not remembered.
    assert group.do("k", lambda: "recovered") == ("recovered", False)


def test_uncopyable_exception_is_reraised_as_is() -> None:
    group, release = Singleflight(), threading.Event()

    class Odd(Exception):
        def __new__(cls, a: int, b: int) -> Odd:  # cannot be rebuilt from its args ("1-2",)
            return super().__new__(cls, a, b)

        def __init__(self, a: int, b: int) -> None:
            super().__init__(f"{a}-{b}")

    def fail() -> Any:
        assert release.wait(JOIN_TIMEOUT)
        raise Odd(1, 2)

    threads, results = run_callers(group, "k", fail, 4)
    wait_until(lambda: group.waiting("k") == 3)
    release.set()
    join_all(threads)
    errors = [e for kind, e in results if kind == "err"]
    assert len(errors) == 4 and all(type(e) is Odd for e in errors)
    assert len({id(e) for e in errors}) == 1


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, SystemExit, GeneratorExit])
def test_leader_interrupt_does_not_hang_waiters(interrupt: type[BaseException]) -> None:
    group, calls, release = Singleflight(), Counter(), threading.Event()

    def interrupted() -> Any:
        raise interrupt()

    threads, results = run_callers(group, "k", blocking_fn(calls, release, interrupted), 16)
    wait_until(lambda: group.waiting("k") == 15)
    release.set()
    join_all(threads)

    assert calls.n == 1 and len(results) == 16
    leader = [e for _, e in results if type(e) is interrupt]
    waiters = [e for _, e in results if isinstance(e, SingleflightInterrupted)]
    assert len(leader) == 1 and len(waiters) == 15
    assert all(isinstance(e, CacheError) and e.__cause__ is leader[0] for e in waiters)
    assert all(interrupt.__name__ in str(e) for e in waiters)
    # Not poisoned: the next call runs fn again.
    assert group.do("k", lambda: 7) == (7, False)


def test_forget_starts_a_new_call_while_the_first_runs() -> None:
    group, calls, release1 = Singleflight(), Counter(), threading.Event()
    threads, results = run_callers(group, "k", blocking_fn(calls, release1, lambda: "first"), 2)
    wait_until(lambda: group.waiting("k") == 1)

    group.forget("k")
    assert not group.in_flight("k")
    # The first call is still blocked, yet a new caller runs fn again.
    assert group.do("k", lambda: (calls.incr(), "second")[1]) == ("second", False)
    assert calls.n == 2

    # A third call is now in flight when the first finishes: the first must not remove it.
    release3 = threading.Event()
    threads3, results3 = run_callers(group, "k", blocking_fn(calls, release3, lambda: "third"), 1)
    wait_until(lambda: calls.n == 3)
    release1.set()
    join_all(threads)
    assert sorted(r for _, r in results) == [("first", True), ("first", True)]
    assert group.in_flight("k")

    late, late_results = run_callers(group, "k", lambda: "never runs", 1)
    wait_until(lambda: group.waiting("k") == 1)
    release3.set()
    join_all(threads3 + late)
    assert results3 == [("ok", ("third", True))]
    assert late_results == [("ok", ("third", True))]
    assert calls.n == 3


def test_forget_unknown_key_is_a_no_op() -> None:
    group = Singleflight()
    group.forget("missing")
    assert group.do("missing", lambda: 1) == (1, False)


def test_different_keys_run_concurrently() -> None:
    group = Singleflight()
    both_inside = threading.Barrier(2, timeout=JOIN_TIMEOUT)

    def fn() -> str:
        both_inside.wait()  # BrokenBarrierError if the keys were serialized
        return "ok"

    ta, ra = run_callers(group, "a", fn, 1)
    tb, rb = run_callers(group, "b", fn, 1)
    join_all(ta + tb)
    assert ra == [("ok", ("ok", False))] and rb == [("ok", ("ok", False))]


def test_no_lock_is_held_while_fn_runs() -> None:
    group = Singleflight()

    def outer() -> tuple[Any, ...]:
        # Each of these takes the group's lock; a lock held around fn would deadlock here.
        return group.do("inner", lambda: "x"), group.waiting("outer"), group.in_flight("outer")

    threads, results = run_callers(group, "outer", outer, 1)
    join_all(threads)
    assert results == [("ok", ((("x", False), 0, True), False))]


def test_reentrant_call_for_same_key_raises_instead_of_deadlocking() -> None:
    group = Singleflight()

    def fn() -> Any:
        return group.do("k", lambda: 1)

    threads, results = run_callers(group, "k", fn, 1)
    join_all(threads)
    [(kind, err)] = results
    assert kind == "err" and type(err) is RuntimeError and "re-entrant" in str(err)
    assert not group.in_flight("k")


def test_try_do_runs_when_idle_and_returns_none_when_busy() -> None:
    group = Singleflight()
    assert group.try_do("k", lambda: 1) == (1, False)
    started = threading.Event()
    release = threading.Event()

    def slow() -> int:
        started.set()
        assert release.wait(5)
        return 2

    leader = threading.Thread(target=lambda: group.do("k", slow))
    leader.start()
    assert started.wait(5)
    calls = []
    assert group.try_do("k", lambda: calls.append(1)) is None  # busy: no wait, no call
    assert calls == []
    release.set()
    leader.join(5)
    assert group.try_do("k", lambda: 3) == (3, False)


class UserNotFound(Exception):
    """An exception whose __init__ formats its argument and has a side effect."""

    inits = 0

    def __init__(self, user_id: int) -> None:
        type(self).inits += 1
        super().__init__(f"user {user_id} not found")
        self.user_id = user_id


class Slotted(Exception):
    __slots__ = ("code", "unset")

    def __init__(self, code: int) -> None:
        super().__init__("slotted failure")
        self.code = code


class HoldsALock(Exception):
    def __init__(self) -> None:
        super().__init__("holds a lock")
        self.lock = threading.Lock()  # cannot be pickled or deep-copied


@pytest.mark.parametrize(
    "make",
    [lambda: UserNotFound(42), lambda: Slotted(7), HoldsALock],
    ids=["custom-init", "slots", "unpicklable-attribute"],
)
def test_waiters_get_the_leaders_exception_without_rerunning_init(make: Any) -> None:
    group, release = Singleflight(), threading.Event()
    leader_errors: list[BaseException] = []

    def fail() -> Any:
        assert release.wait(JOIN_TIMEOUT)
        exc = make()
        leader_errors.append(exc)
        raise exc

    UserNotFound.inits = 0
    threads, results = run_callers(group, "k", fail, 6)
    wait_until(lambda: group.waiting("k") == 5)
    release.set()
    join_all(threads)
    errors = [e for kind, e in results if kind == "err"]
    (original,) = leader_errors
    assert len(errors) == 6
    for exc in errors:
        assert type(exc) is type(original)
        assert str(exc) == str(original) and exc.args == original.args
        for name in ("user_id", "code", "lock"):
            if hasattr(original, name):
                assert getattr(exc, name) is getattr(original, name)
        assert not hasattr(exc, "unset")
    if isinstance(original, UserNotFound):
        assert UserNotFound.inits == 1  # the waiters' copies did not run __init__ again
        assert {str(e) for e in errors} == {"user 42 not found"}
