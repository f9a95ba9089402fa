"""How a ``MultiLevelCache`` keeps its L1 coherent: per-key epochs and its own writes in flight.

Epochs: every L2 read of a key in flight (a promotion) and every write records the key's
epoch when it starts; writes, deletes and invalidations bump it. Under one lock, the promotion
or the write's L1 step goes ahead only if the epoch has not moved: a write or delete that
lands in the middle of another thread's promotion or write wins, so a deleted or overwritten
value is never resurrected in L1.

Own writes: with an invalidation listener, Redis announces this cache's own writes too. A
write records its value before it runs; the invalidation that comes back for it is taken for
ours (L1 keeps the key if it holds one of our values), any other drops the key from L1.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping

from ._protocols import ByteCache
from .errors import BackendError

__all__ = ["Fetch", "L1Coherence", "Reading", "Started", "l2_reader"]


class Reading:
    """Book-keeping for L2 reads of one key in flight: how many, and the key's write epoch."""

    __slots__ = ("epoch", "readers")

    def __init__(self) -> None:
        self.readers = 0
        self.epoch = 0


#: key -> (its book-keeping, the epoch when the read or write started)
Started = dict[str, tuple[Reading, int]]
#: A read below L1: the hits among the keys, each with the seconds it has left (None: forever)
Fetch = Callable[[list[str]], Mapping[str, tuple[bytes, float | None]]]


def l2_reader(l2: ByteCache, l1_ttl: float) -> Fetch:
    """How to read ``l2`` for a promotion: with each hit's lifetime when L2 can tell it
    (``get_with_ttl`` / ``mget_with_ttl``), else promoted for ``l1_ttl``."""
    get_ttl = getattr(l2, "get_with_ttl", None)
    mget_ttl = getattr(l2, "mget_with_ttl", None)

    def fetch(keys: list[str]) -> Mapping[str, tuple[bytes, float | None]]:
        if mget_ttl is None:
            return {k: (v, l1_ttl) for k, v in l2.mget(keys).items()}
        if len(keys) == 1 and get_ttl is not None:
            one = get_ttl(keys[0])
            return {} if one is None else {keys[0]: one}
        return dict(mget_ttl(keys))

    return fetch


class L1Coherence:
    """The epochs and own writes of one L1 (see the module doc); ``lock`` guards both.

    Methods that say "caller holds the lock" are steps of a larger critical section of the
    cache; the others take the lock themselves.
    """

    def __init__(
        self, l1: ByteCache, l1_ttl: float, trusted: Callable[[], bool], fetch: Fetch
    ) -> None:
        self.l1 = l1
        self.l1_ttl = l1_ttl
        # Whether L1 may be filled now (the cache's state), asked under the lock
        self.trusted = trusted
        self.fetch = fetch  # the read below L1 (see l2_reader)
        self.lock = threading.Lock()
        self.reading: dict[str, Reading] = {}
        # key -> values of our writes sent to L2 whose invalidations have not come back yet
        self.own_writes: dict[str, list[bytes]] = {}

    def after_fork(self) -> None:
        """In a forked child: another thread may have held the lock or been promoting a key."""
        self.lock = threading.Lock()
        self.reading.clear()
        self.own_writes.clear()

    def l1_seconds(self, l2_seconds: float | None) -> float:
        """How long L1 keeps an entry that L2 keeps ``l2_seconds`` (None: no expiry)."""
        return self.l1_ttl if l2_seconds is None else min(self.l1_ttl, l2_seconds)

    # -- steps of a critical section: caller holds the lock -------------------------------------

    def bump(self, keys: Iterable[str]) -> None:
        """Bump the epoch of keys being promoted or written right now."""
        reading = self.reading
        for key in keys:
            r = reading.get(key)
            if r is not None:
                r.epoch += 1

    def forget_all(self) -> None:
        """Every read and write in flight loses (what it read may predate a lost write), and
        no invalidation of ours is awaited any more (they went to a connection that is gone)."""
        self.own_writes.clear()
        self.bump(list(self.reading))

    def heard(self, keys: list[str]) -> None:
        """Someone wrote ``keys``: drop them from L1, unless the write was ours.

        Every pending write of ours to a key is consumed at once: with BCAST tracking Redis
        sends one invalidation per key per event-loop pass, however many writes ran in it, so
        consuming one per write would leave an entry that a later foreign write's invalidation
        would be taken for. (A foreign write in the very same pass as ours is still taken for
        ours: until l1_ttl.) L1 keeps the key only if it holds one of our values.
        """
        dropped, stale = keys, []
        if self.own_writes:
            dropped = []
            for key in keys:
                mine = self.own_writes.pop(key, None)
                if mine is None:
                    dropped.append(key)
                elif self.l1.get(key, None) not in mine:
                    stale.append(key)
        self.bump(dropped)
        self._drop_from_l1(dropped + stale)

    def _drop_from_l1(self, keys: list[str]) -> None:
        try:
            self.l1.mdelete(keys)
        except Exception:
            # A key someone else wrote need not be a valid key of ours: drop the others.
            for key in keys:
                try:
                    self.l1.delete(key)
                except Exception:
                    continue

    # -- the read and write paths -------------------------------------------------------------

    def read(self, keys: list[str]) -> dict[str, bytes]:
        """Read ``keys`` below L1 (``fetch``: hits with their seconds left) and promote the
        hits whose epochs have not moved; the values read."""
        started = self.begin(keys)
        hits: Mapping[str, tuple[bytes, float | None]] = {}
        try:
            hits = self.fetch(keys)
        finally:
            self.end(started, hits)
        return {k: v[0] for k, v in hits.items()}

    def write(
        self,
        write_l2: Callable[[], object],
        entries: dict[str, tuple[bytes, float | None]],
        *,
        fenced: bool,
        own: bool,
    ) -> frozenset[str]:
        """Run ``write_l2``, then put ``entries`` (value, L2 seconds) in L1; the keys written.

        If L2 is unreachable (``BackendError``: down, or its breaker open) the error is raised,
        but L1 still takes the values: this process keeps serving what it wrote or loaded for
        at most ``l1_ttl``, instead of sending every read of it to the loader for the length of
        the outage. Any other failure leaves L1 without the keys.

        Writes take part in the same epochs as promotions: if another write or a delete of a
        key lands between this write's L2 step and its L1 step, this write does not put its
        value in L1 but drops the key there (the next read promotes whatever L2 holds).

        ``fenced``: ``write_l2`` is a fenced store returning the keys L2 took; the others lost to
        a write (no invalidation of ours will come for them) and leave L1. ``own``: the write's
        invalidations will come back (a listener is subscribed) and are to be taken for ours.
        """
        started = self.begin(entries)
        if own:  # before the write runs: its invalidation may arrive before write_l2 returns
            self.expect_own(entries)
        try:
            try:
                result = write_l2()
            except BackendError:
                if own:
                    self.forget_own(entries)
                if not fenced:
                    self.put(started, entries, l2_failed=True)
                # A fenced store is a *loaded* value: its fence was taken before the outage, and
                # a write of ours since may only be in L1. It never enters L1 unchecked.
                raise
            except BaseException:
                if own:
                    self.forget_own(entries)
                self.drop(list(entries))
                raise
            if fenced:
                assert isinstance(result, frozenset)
                refused = [k for k in entries if k not in result]
                if refused:
                    if own:
                        self.forget_own(refused)
                    self.drop(refused)
                    entries = {k: v for k, v in entries.items() if k in result}
            self.put(started, entries)
            return frozenset(entries)
        finally:
            self.end(started, {})

    # -- promotions and writes: each takes the lock ---------------------------------------------

    def begin(self, keys: Iterable[str]) -> Started:
        """A read or write of ``keys`` starts: note each key's epoch."""
        started: Started = {}
        with self.lock:
            for key in keys:
                reading = self.reading.get(key)
                if reading is None:
                    reading = self.reading[key] = Reading()
                reading.readers += 1
                started[key] = (reading, reading.epoch)
        return started

    def end(self, started: Started, hits: Mapping[str, tuple[bytes, float | None]]) -> None:
        """Promote the L2 ``hits`` (value, seconds left) whose epoch has not moved, then end.

        Promotion happens under the lock that writers take to bump epochs: either the write's
        critical section comes first (epoch moved, promotion dropped) or it comes second (it
        overwrites or deletes what was promoted). Both end with L1 agreeing with the write.
        """
        with self.lock:
            try:
                trusted = self.trusted()
                for key, (reading, epoch) in started.items():
                    hit = hits.get(key)
                    if hit is not None and reading.epoch == epoch and trusted:
                        left = hit[1]
                        if left is None or left > 0:
                            self.l1.set(key, hit[0], ttl=self.l1_seconds(left))
            finally:
                for key, (reading, _) in started.items():
                    reading.readers -= 1
                    if reading.readers == 0:
                        del self.reading[key]

    def expect_own(self, entries: Mapping[str, tuple[bytes, float | None]]) -> None:
        """Our writes of ``entries`` are about to run: their invalidations are ours. Before the
        write: its invalidation may arrive before the write returns."""
        with self.lock:
            for key, (value, _) in entries.items():
                self.own_writes.setdefault(key, []).append(value)

    def forget_own(self, keys: Iterable[str]) -> None:
        """Writes that failed may not have run: no invalidation of them may be waited for.

        If one did run, its invalidation now drops the key from L1: a miss, never a stale hit.
        """
        with self.lock:
            for key in keys:
                self._own_write_heard(key)

    def _own_write_heard(self, key: str) -> None:
        """Consume one pending write of ours to ``key``. Caller holds the lock.

        Invalidations arrive in the order Redis ran the writes. The one consumed here is our
        write's own, or that of a write that ran before ours (which ours overwrote): either way
        the value our write puts in L1 is still the newest. A write that ran after ours comes
        after our own invalidation, finds nothing to consume, and drops the key.
        """
        pending = self.own_writes.get(key)
        if not pending:
            return
        pending.pop(0)
        if not pending:
            del self.own_writes[key]

    def put(
        self,
        started: Started,
        entries: Mapping[str, tuple[bytes, float | None]],
        *,
        l2_failed: bool = False,
    ) -> None:
        """The L1 step of a write: each value whose epoch has not moved; a key overtaken by a
        concurrent write or delete leaves L1. Untrusted, L1 keeps only what L2 could not take
        (``l2_failed``): the answers of last resort."""
        with self.lock:
            trusted = self.trusted() or l2_failed
            overtaken: list[str] = []
            for key, (value, seconds) in entries.items():
                reading, epoch = started[key]
                if reading.epoch == epoch and trusted:
                    self.l1.set(key, value, ttl=self.l1_seconds(seconds))
                else:  # a concurrent write or delete came after ours: L1 must not keep ours
                    overtaken.append(key)
            self.bump(entries)
            if overtaken:
                self.l1.mdelete(overtaken)

    def drop(self, keys: list[str]) -> int:
        """Delete ``keys`` from L1 (bumping their epochs); how many were there."""
        with self.lock:
            self.bump(keys)
            return int(self.l1.mdelete(keys))

    def flush(self) -> None:
        """Every read in flight loses, and L1 is emptied."""
        with self.lock:
            self.bump(list(self.reading))
            self.l1.clear()
