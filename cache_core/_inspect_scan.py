"""SCAN for ``inspect``: pages of keys, how much of the keyspace they cover, progress lines."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Final, TextIO

__all__ = ["PIPELINE", "Coverage", "Progress", "reverse_bits", "scan"]

#: Keys described per script call or pipeline.
PIPELINE: Final = 500


def reverse_bits(value: int, bits: int) -> int:
    return int(format(value, f"0{bits}b")[::-1], 2) if bits else 0


class Coverage:
    """The fraction of the hash table a SCAN has visited, from its cursors.

    Redis returns cursors below the table size 2**k and visits buckets in reverse-binary order:
    after ``v`` buckets the cursor is ``reverse_k(v)``. ``k`` is learnt from the cursors seen
    (the largest has bit k-1 set as soon as an odd number of buckets was visited).
    """

    def __init__(self) -> None:
        self.bits = 0
        self.cursor = 0

    def update(self, cursor: int) -> None:
        self.cursor = cursor
        self.bits = max(self.bits, cursor.bit_length())

    @property
    def fraction(self) -> float:
        if self.cursor == 0:
            return 1.0
        visited = reverse_bits(self.cursor, self.bits)
        return max(visited / (1 << self.bits), 1e-9)


class Progress:
    """Progress lines on ``stderr``: at most one a second, none in a run's first second."""

    def __init__(self, stderr: TextIO | None, clock: Callable[[], float], start: float) -> None:
        self._stderr = stderr
        self._clock = clock
        self._start = start
        self._last = start

    def of(self, what: str, coverage: Coverage) -> Callable[[int], None]:
        """The reporter of one pass (``what``), called with the number of keys seen so far."""

        def show(seen: int) -> None:
            now = self._clock()
            if self._stderr is not None and now - self._last >= 1.0 and now - self._start >= 1.0:
                self._last = now
                self._stderr.write(
                    f"inspect: {what}: {seen} keys, {coverage.fraction:.0%} scanned\n"
                )
                self._stderr.flush()

        return show


def scan(
    client: Any, match: str, count: int, coverage: Coverage, progress: Callable[[int], None]
) -> Iterator[list[bytes]]:
    """The pages of ``SCAN MATCH match COUNT count``, ``coverage`` updated before each."""
    cursor = 0
    seen = 0
    while True:
        cursor, keys = client.scan(cursor=cursor, match=match, count=count)
        coverage.update(int(cursor))
        seen += len(keys)
        progress(seen)
        yield keys  # empty pages too: the caller checks its time budget between pages
        if cursor == 0:
            return
