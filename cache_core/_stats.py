"""A counter that threads can bump without a lock."""

from __future__ import annotations

import functools
import itertools
import threading
from collections.abc import Callable

__all__ = ["Counter"]


class Counter:
    """Exact under threads: ``next()`` on ``itertools.count`` is one C call, atomic under the GIL.

    Cheaper than a lock on hot paths (a hit costs one ``incr``).
    """

    __slots__ = ("_count", "_offset", "_read_lock")

    def __init__(self) -> None:
        self._count = itertools.count()
        self._offset = 0
        self._read_lock = threading.Lock()

    def incr(self) -> None:
        next(self._count)

    def bound(self) -> Callable[[], object]:
        """The increment as one C-level callable (``partial(next, count)``): no Python frame."""
        return functools.partial(next, self._count)

    def add(self, n: int) -> None:
        for _ in range(n):
            next(self._count)

    def reset_lock(self) -> None:
        """After a fork: a read lock held by another thread of the parent is never released."""
        self._read_lock = threading.Lock()

    @property
    def value(self) -> int:
        # Reading consumes one number from the counter; remember it so it is not counted.
        with self._read_lock:
            seen = next(self._count) - self._offset
            self._offset += 1
        return seen
