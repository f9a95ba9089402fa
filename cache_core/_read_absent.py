"""Negative caching inside the read-through: "does not exist" as a cached answer.

``ProtectedCache``'s hook (``TypedCache.get_or_absent``): a loader's None ends its flight with
``NoValue`` carrying a *tombstone* (the envelope's "does not exist" entry), which the read-through
stores through the key's fence before the waiters are released; a tombstone read answers None
without calling the loader.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, TypeVar

from ._metrics import LevelCounters
from ._options import ReadThroughOptions
from ._read_through import ReadThrough
from ._validate import TTL
from .errors import NoValue

__all__ = ["Event", "Observer", "after_absent_read"]

T = TypeVar("T")

#: What an ``observe`` callback hears, as it happens (so a loader that raises is still counted):
#: first what the request's first read found: ``hit`` (a plain value), ``tombstone`` (a
#: negative entry) or ``miss`` (nothing); an entry with metadata or undecodable bytes is not
#: reported (the full read-through runs). Then, from the one caller that runs the flight:
#: ``load`` before the loader runs, ``absent`` when it found nothing (a tombstone is stored),
#: ``late_tombstone`` when the flight found a tombstone stored after the request's first read
#: (no load).
Event = Literal["hit", "tombstone", "miss", "load", "absent", "late_tombstone"]
Observer = Callable[[Event], object]


class _Absent(NoValue):
    """A nullable loader found nothing (``entry``: the tombstone to store), or a tombstone
    another flight stored after this request's first read."""


def _ignore(event: Event) -> None:
    return None


def after_absent_read(
    rt: ReadThrough,
    key: str,
    fn: Callable[[], T | None],
    ttl: TTL | None,
    opts: ReadThroughOptions,
    null_ttl: float,
    observe: Observer | None,
    data: bytes | None,
    rq: LevelCounters,
) -> T | None:
    """A read-through where "does not exist" is an answer, once the request's first read
    returned ``data`` (counted by ``rq``; ``TypedCache.get_or_absent`` answers plain hits
    itself): a tombstone answers None without the loader; a loader's None stores a tombstone
    for ``null_ttl`` (through the key's fence, before the waiters are released) and answers
    None."""
    codec = rt.codec
    tell = observe or _ignore
    if data is not None:
        if data[:4] == codec.tomb_prefix:
            rq.tombstone()
            tell("tombstone")
            return None
        loader = _nullable(rt, key, fn, null_ttl, tell)
        try:
            return rt.after_read(key, loader, ttl, opts, None, data, rq)
        except _Absent:
            return None
    rq.miss()
    tell("miss")
    try:
        return rt.load(key, _nullable(rt, key, fn, null_ttl, tell), ttl, opts)
    except _Absent:
        return None


def _nullable(
    rt: ReadThrough,
    key: str,
    fn: Callable[[], T | None],
    null_ttl: float,
    tell: Observer,
) -> Callable[[], T]:
    """``fn`` for the singleflight: its None becomes a stored tombstone (``_Absent``)."""
    codec = rt.codec

    def load() -> T:
        # A flight that ended just before this one began may have stored a tombstone that
        # the double-check (which looks for values) does not recognise: look for it here.
        if codec.is_tombstone(rt.reread(key)):
            tell("late_tombstone")
            raise _Absent(key)
        tell("load")
        value = fn()
        if value is not None:
            return value
        tell("absent")
        absent = _Absent(key)
        absent.entry = (codec.tombstone, null_ttl)
        raise absent

    return load
