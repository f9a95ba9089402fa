"""Singleflight: collapse concurrent calls for the same key into one call of ``fn``.

Semantics follow Go's ``golang.org/x/sync/singleflight.Group.Do``.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from ._fork import after_fork_in_child
from .errors import SingleflightInterrupted

__all__ = ["Singleflight", "SingleflightInterrupted"]

T = TypeVar("T")


class _Call:
    """One in-flight call of ``fn``; its waiters block on ``done``."""

    __slots__ = ("done", "dups", "error", "leader", "value")

    def __init__(self, leader: int) -> None:
        self.done = threading.Event()
        self.dups = 0  # callers that joined after the leader; final once the call left the map
        self.leader = leader  # thread ident, to refuse a re-entrant call instead of deadlocking
        self.value: Any = None
        self.error: BaseException | None = None


def _copy_for_waiter(exc: Exception) -> Exception:
    """A copy of ``exc`` to raise in a waiter's thread, or ``exc`` itself if it cannot be copied.

    Raising one exception object in many threads makes them all extend and read the same
    ``__traceback__``; a copy per waiter keeps each traceback to its own thread. The copy is
    made without calling ``__init__`` again (``copy.copy`` would: a custom ``__init__`` that
    formats its argument then formats the message twice, and its side effects run per waiter):
    ``__new__`` with the same ``args``, then the instance ``__dict__`` and every ``__slots__``
    attribute, shallow. When that does not give the same type, ``args`` and ``str()``, the
    leader's object itself is raised (as ``concurrent.futures`` does for every waiter).
    """
    cls = type(exc)
    try:
        dup = cls.__new__(cls, *exc.args)
        dup.args = exc.args
        state = getattr(exc, "__dict__", None)
        if state:
            dup.__dict__.update(state)
        for klass in cls.__mro__:
            slots = klass.__dict__.get("__slots__", ())
            for name in (slots,) if isinstance(slots, str) else slots:
                if name in ("__dict__", "__weakref__") or not hasattr(exc, name):
                    continue
                setattr(dup, name, getattr(exc, name))
        if type(dup) is not cls or dup.args != exc.args or str(dup) != str(exc):
            return exc
    except Exception:
        return exc
    notes = getattr(exc, "__notes__", None)
    if isinstance(notes, list):
        dup.__notes__ = list(notes)  # one list per thread, so add_note() stays per thread
    return dup


class Singleflight:
    """Run ``fn`` once per key at a time; concurrent callers share its result or exception.

    ``value, shared = group.do(key, fn)``: the first caller for ``key`` (the leader) runs
    ``fn()`` in its own thread; callers arriving while it runs wait and get the same value, or
    an exception of the same type. ``shared`` is True, for the leader too, when more than one
    caller received the result. Nothing is cached: once the call ends, the next ``do`` runs
    ``fn`` again. ``forget(key)`` makes later callers start a new call while the current one
    finishes for its own waiters.

    Exceptions: the leader raises ``fn``'s exception itself; each waiter raises a shallow copy
    (same type, args, ``str()`` and attributes, ``__cause__`` = the leader's exception; the
    exception's ``__init__`` is not run again) so tracebacks are not shared between threads;
    exceptions that cannot be copied that way are re-raised as they are. If
    ``fn`` ends with a BaseException that is not an Exception (KeyboardInterrupt, SystemExit,
    GeneratorExit), it propagates in the leader and waiters raise SingleflightInterrupted. The
    failure is not remembered: the next call runs ``fn`` again.

    The value is one object handed to every caller; mutate it only if ``fn`` returns a copy per
    call. A re-entrant ``do`` for the same key from inside ``fn`` raises RuntimeError (it would
    wait for itself forever). No lock is held while ``fn`` runs.

    Waits are bounded: a caller that waited ``wait_timeout`` seconds (60 by default) for a
    leader stops waiting and runs ``fn`` itself, alone (``shared`` False), so a leader stuck in
    a hung ``fn`` delays its followers by that much, not forever. ``None`` waits without bound.

    Fork: a child process starts with no call in flight (the leaders' threads do not exist
    there), so the child's first caller of a key that was loading in the parent leads its own
    call at once instead of waiting for a thread that will never finish.
    """

    def __init__(self, *, wait_timeout: float | None = 60.0) -> None:
        if wait_timeout is not None and (
            isinstance(wait_timeout, bool)
            or not isinstance(wait_timeout, int | float)
            or not 0 < wait_timeout < math.inf
        ):
            raise ValueError(
                f"wait_timeout must be a finite number > 0 or None, got {wait_timeout!r}"
            )
        self._wait_timeout = None if wait_timeout is None else float(wait_timeout)
        self._lock = threading.Lock()
        self._calls: dict[Hashable, _Call] = {}
        after_fork_in_child(self._after_fork_in_child)

    def _after_fork_in_child(self) -> None:
        # Only the forking thread exists in the child: no leader will ever finish the calls in
        # the map, and the lock may be held by a thread that is gone.
        self._lock = threading.Lock()
        self._calls = {}

    def __repr__(self) -> str:
        with self._lock:
            return f"<Singleflight in_flight={len(self._calls)}>"

    def do(self, key: Hashable, fn: Callable[[], T]) -> tuple[T, bool]:
        """Return ``(fn(), shared)``, running ``fn`` only if no call for ``key`` is in flight."""
        me = threading.get_ident()
        with self._lock:
            call = self._calls.get(key)
            if call is None:
                call = self._calls[key] = _Call(me)
                leader = True
            elif call.leader == me:
                raise RuntimeError(
                    f"re-entrant Singleflight.do for key {key!r} from inside its own fn"
                )
            else:
                call.dups += 1
                leader = False
        if leader:
            return self._lead(key, call, fn)
        if not call.done.wait(self._wait_timeout):
            with self._lock:
                call.dups -= 1
            return fn(), False
        return self._result(call)

    def try_do(self, key: Hashable, fn: Callable[[], T]) -> tuple[T, bool] | None:
        """Run ``fn`` like ``do`` if no call for ``key`` is in flight; else return None at once.

        For work that is optional when someone else is already doing it (an early refresh, a
        stale-while-revalidate reload): the caller never waits.
        """
        me = threading.get_ident()
        with self._lock:
            if key in self._calls:
                return None
            call = self._calls[key] = _Call(me)
        return self._lead(key, call, fn)

    def _lead(self, key: Hashable, call: _Call, fn: Callable[[], T]) -> tuple[T, bool]:
        try:
            call.value = fn()
        except BaseException as exc:
            call.error = exc
            raise
        finally:
            # Waiters must wake whatever happened in fn, or a KeyboardInterrupt in the leader
            # would hang them forever.
            with self._lock:
                if self._calls.get(key) is call:  # forget() may have removed or replaced it
                    del self._calls[key]
            call.done.set()
        return call.value, call.dups > 0

    @staticmethod
    def _result(call: _Call) -> tuple[Any, bool]:
        error = call.error
        if error is None:
            return call.value, True
        if isinstance(error, Exception):
            dup = _copy_for_waiter(error)
            if dup is error:
                raise error
            raise dup from error
        raise SingleflightInterrupted(
            f"the singleflight leader was interrupted by {type(error).__name__}; no result to share"
        ) from error

    def forget(self, key: Hashable) -> None:
        """Let the next ``do(key, ...)`` start a new call; the current call still finishes."""
        with self._lock:
            self._calls.pop(key, None)

    def waiting(self, key: Hashable) -> int:
        """How many callers joined the in-flight call for ``key`` (leader excluded); 0 if none.

        Counts callers that entered ``do`` and will receive the result, whether or not they are
        already blocked: meant for metrics and for tests that need to know waiters arrived.
        """
        with self._lock:
            call = self._calls.get(key)
            return call.dups if call is not None else 0

    def in_flight(self, key: Hashable) -> bool:
        """Whether a call for ``key`` is running and new callers would join it."""
        with self._lock:
            return key in self._calls
