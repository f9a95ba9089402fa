"""Negative caching inside the read-through: "does not exist" as a cached answer.

``ProtectedCache``'s hook (``TypedCache.get_or_absent``): a loader's None ends its flight with
``NoValue`` carrying a *tombstone* (the envelope's "does not exist" entry), which the read-through
stores through the key's fence before the waiters are released; a tombstone read answers None
without calling the loader.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NamedTuple, TypeVar

from ._options import ReadThroughOptions
from ._read_through import ReadThrough
from ._validate import TTL
from .errors import NoValue, SerializationError

__all__ = ["Answer", "Source", "get_or_absent"]

T = TypeVar("T")

#: What answered a ``get_or_absent`` request (``ProtectedCache`` counts them):
#: ``hit`` a plain value from the first read, ``tombstone`` a negative entry from the first read,
#: ``miss`` the first read found nothing (loaded, or the loader found nothing),
#: ``late_tombstone`` it found nothing and the load found a tombstone stored meanwhile,
#: ``entry`` an entry with metadata or undecodable bytes (the full read-through ran).
Source = Literal["hit", "tombstone", "miss", "late_tombstone", "entry"]


class Answer(NamedTuple):
    """A ``get_or_absent`` result: the value (None: does not exist) and what answered."""

    value: Any
    source: Source


class _Absent(NoValue):
    """A nullable loader found nothing (``entry``: the tombstone to store), or, ``late``, the
    load found a tombstone another flight stored after this request's first read."""

    late = False


def get_or_absent(
    rt: ReadThrough,
    key: str,
    fn: Callable[[], T | None],
    ttl: TTL | None,
    opts: ReadThroughOptions,
    null_ttl: float,
) -> Answer:
    """A read-through where "does not exist" is an answer: a tombstone read answers None
    without the loader; a loader's None stores a tombstone for ``null_ttl`` (through the
    key's fence, before the waiters are released) and answers None."""
    codec = rt.codec
    data, rq = rt.lookup(key)  # a backend failure reads as a miss
    loader = _nullable(rt, key, fn, null_ttl)
    if data is not None:
        if codec.is_tombstone(data):
            rq.tombstone()
            return Answer(None, "tombstone")
        if data[:4] == codec.prefix:  # a plain value: decode here, no second read
            try:
                value = codec.loads(data[4:])
            except SerializationError:
                pass  # after_read repairs it
            else:
                rq.hit()
                return Answer(value, "hit")
        try:
            return Answer(rt.after_read(key, loader, ttl, opts, None, data, rq), "entry")
        except _Absent:
            return Answer(None, "entry")
    rq.miss()
    try:
        return Answer(rt.load(key, loader, ttl, opts), "miss")
    except _Absent as absent:
        return Answer(None, "late_tombstone" if absent.late else "miss")


def _nullable(
    rt: ReadThrough, key: str, fn: Callable[[], T | None], null_ttl: float
) -> Callable[[], T]:
    """``fn`` for the singleflight: its None becomes a stored tombstone (``_Absent``)."""
    codec = rt.codec

    def load() -> T:
        # A flight that ended just before this one began may have stored a tombstone that
        # the double-check (which looks for values) does not recognise: look for it here.
        if codec.is_tombstone(rt.reread(key)):
            late = _Absent(key)
            late.late = True
            raise late
        value = fn()
        if value is not None:
            return value
        absent = _Absent(key)
        absent.entry = (codec.tombstone, null_ttl)
        raise absent

    return load
