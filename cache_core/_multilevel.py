"""MultiLevelCache: an in-process L1 in front of a shared L2, itself a byte cache."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from ._fork import after_fork_in_child
from ._l1_coherence import L1Coherence, l2_reader
from ._metrics import CacheMetrics
from ._multilevel_stats import MultiLevelStats, count, default_name, multilevel_stats
from ._protocols import ByteCache, Cache, KeyLister, LeaseLockSource, check_implements
from ._validate import (
    MISSING,
    TTL,
    check_entries,
    check_items,
    check_key,
    check_keys,
    check_value,
    ttl_seconds,
)
from .errors import BackendError, CacheError, CacheMiss

if TYPE_CHECKING:
    from ._lease_lock import LeaseLockFactory

__all__ = ["MultiLevelCache", "MultiLevelStats"]


def _level(cache: Cache, which: str) -> ByteCache:
    """``cache`` as a level: a byte cache with its batch operations, else TypeError."""
    check_implements(cache, ByteCache, which, "a byte cache (Cache + BatchCache)")
    assert isinstance(cache, ByteCache)
    return cache


class MultiLevelCache:
    """L1 (usually ``MemoryCache``) over L2 (usually ``RedisCache``); a byte cache itself.

    Reads try L1, then L2, and promote an L2 hit into L1 before returning, for at most
    ``l1_ttl`` and never longer than the entry has left in L2. Writes go to L2 first, then L1;
    deletes remove from both. Promotions and writes of a key carry a per-key epoch, checked
    under one lock: a write or delete that lands in the middle of another thread's promotion
    or write wins, so a deleted or overwritten value is never resurrected in L1.

    Within one process L1 is coherent with this cache's own writes. Writes made by anyone
    else (other processes, ``redis-cli``, expiry, eviction, other caches in this process):

    * ``invalidation=True`` (the default) and an L2 that offers ``invalidation_listener()``
      (``RedisCache``): Redis' broadcast key tracking tells a shared listener thread, which
      drops the keys from L1 (milliseconds after the write). An L2 read that races an
      invalidation never installs the old value (the invalidation bumps the key's epoch).
      While the listener is not subscribed (starting, reconnecting, dead connection, missed
      pong, after a fork) L1 is bypassed: reads go to L2 and nothing is promoted. L1 answers
      only when L2 fails too (stale-if-error, as without invalidation), and it is flushed
      when the listener is back. ``FLUSHDB``/``FLUSHALL`` flush L1.
    * otherwise (``invalidation=False``, or an L2 without a listener): they reach L1 only when
      its entry expires.

    Either way ``l1_ttl`` bounds the staleness if everything else fails. While L2 is
    unreachable, reads of keys in L1 are still answered from it, and writes still fill L1
    (for at most ``l1_ttl``) while raising the L2's ``BackendError`` to the writer.

    ``on_invalidate(callback)`` lets a layer above hear the keys dropped by invalidations
    (``None``: everything); ``close()`` unsubscribes from the listener.
    """

    def __init__(
        self,
        l1: Cache,
        l2: Cache,
        *,
        l1_ttl: TTL,
        l2_ttl: TTL | None = None,
        invalidation: bool = True,
        name: str | None = None,
    ) -> None:
        self._l1 = _level(l1, "l1")
        self._l2 = _level(l2, "l2")
        if l1 is l2:
            raise ValueError("l1 and l2 must be different caches")
        l1_seconds = ttl_seconds(l1_ttl, None, "l1_ttl")
        if l1_seconds is None:
            raise TypeError("l1_ttl is required: an L1 entry must expire to see other processes")
        self._l1_ttl = l1_seconds
        self._l2_ttl = ttl_seconds(l2_ttl, None, "l2_ttl")
        self._coherence = L1Coherence(
            self._l1, l1_seconds, lambda: self._trusted, l2_reader(self._l2, l1_seconds)
        )
        # metrics (issue 17): the request counters of the handle are this cache's counters;
        # the listener reports through metrics.record_invalidations() / record_l1_flush()
        self._metrics = CacheMetrics(name or default_name(l2), "multilevel")
        self._l1_hits = self._metrics.levels["l1"]
        self._l2_hits = self._metrics.levels["l2"]
        # Whether L1 may be read and filled: always without a listener; with one, only while
        # it is subscribed. Read without the lock on the hit path (one attribute load).
        self._trusted = True
        self._callbacks: list[Callable[[list[str] | None], None]] = []
        self._listener: Any = None
        after_fork_in_child(self._after_fork_in_child)
        if invalidation:
            seam = getattr(l2, "invalidation_listener", None)
            listener = seam() if callable(seam) else None
            if listener is not None:
                self._trusted = False
                self._listener = listener
                listener.add(self)  # reports its state to us at once, then on every change
                # A cache built while Redis is up starts with a working L1; one built while it
                # is down starts bypassed, after a bounded wait.
                listener.wait_connected(1.0)

    # -- invalidation ------------------------------------------------------------------------

    @property
    def invalidation(self) -> bool:
        """Whether a listener keeps L1 coherent with every write (else only ``l1_ttl`` does)."""
        return self._listener is not None

    @property
    def l1_trusted(self) -> bool:
        """Whether L1 is in use now (False while the invalidation listener is not subscribed)."""
        return self._trusted

    def invalidation_state(self, connected: bool) -> None:
        """Listener callback: writes are heard again (True) or may go unheard (False)."""
        if connected:
            self._metrics.record_l1_flush()  # L1 is flushed below: it may hold lost writes
        with self._coherence.lock:
            # Both ways, the reads in flight are dropped: what they read may predate a write
            # whose invalidation was lost. Going down, L1 is kept only as the answer of last
            # resort while L2 fails (see ``get``); coming back, it is flushed: it may hold
            # values whose invalidations were lost while the listener was away.
            self._trusted = connected
            self._coherence.forget_all()
            if connected:
                self._l1.clear()
        if not connected:
            self._notify(None)

    def invalidate(self, keys: list[str] | None) -> None:
        """Listener callback: ``keys`` were written by someone (``None``: FLUSHDB/FLUSHALL)."""
        if keys is None:
            self._metrics.record_l1_flush()
        else:
            self._metrics.record_invalidations(len(keys))
        with self._coherence.lock:
            if keys is None:
                self._coherence.forget_all()
                self._l1.clear()
            else:
                self._coherence.heard(keys)
        self._notify(keys)

    def on_invalidate(self, callback: Callable[[list[str] | None], None]) -> None:
        """Call ``callback(keys)`` in the listener thread after ``keys`` left L1 (None: all).

        Also called with None when the listener disconnects. Keep it short: it delays the
        next invalidation.
        """
        self._callbacks.append(callback)

    def _notify(self, keys: list[str] | None) -> None:
        for callback in self._callbacks:
            callback(keys)

    def close(self) -> None:
        """Stop hearing invalidations: L1 is bypassed from now on (answers only when L2 fails)."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.remove(self)
            self.invalidation_state(False)

    def _after_fork_in_child(self) -> None:
        # Another thread may have held the lock or been promoting a key; the child's listener
        # starts from scratch and misses everything written until it subscribes.
        self._coherence.after_fork()
        if self._listener is not None:
            self._trusted = False
        with contextlib.suppress(Exception):
            self._l1.clear()

    def _untrusted(self) -> None:
        """On the bypass path: make sure a listener exists to end the bypass (after a fork)."""
        listener = self._listener
        if listener is not None:
            listener.ensure_running()

    @property
    def metrics(self) -> CacheMetrics:
        """This cache's metrics handle (its ``name``; the invalidation counters)."""
        return self._metrics

    def stats(self) -> MultiLevelStats:
        return multilevel_stats(self._metrics)

    @property
    def l1(self) -> Cache:
        return self._l1

    @property
    def l2(self) -> Cache:
        return self._l2

    def lease_locks(self) -> LeaseLockFactory | None:
        """The L2's lease locks (``LeaseLockSource``): the shared level is where processes meet."""
        l2 = self._l2
        return l2.lease_locks() if isinstance(l2, LeaseLockSource) else None

    def scan_keys(self, match: str = "*") -> Iterator[str]:
        """The L2's keys (``KeyLister``): the shared level is the one that knows every key.
        A ``CacheError`` when the L2 cannot list its keys."""
        l2 = self._l2
        if not isinstance(l2, KeyLister):
            raise CacheError(f"the L2 ({type(l2).__name__}) cannot list its keys")
        return l2.scan_keys(match)

    @property
    def l1_ttl(self) -> float:
        return self._l1_ttl

    @property
    def default_ttl(self) -> float | None:
        """The TTL a write gets when it names none: ``l2_ttl``, else L2's own default."""
        if self._l2_ttl is not None:
            return self._l2_ttl
        default = getattr(self._l2, "default_ttl", None)
        return default if isinstance(default, float | int) else None

    def __repr__(self) -> str:
        return (
            f"MultiLevelCache(l1={self._l1!r}, l2={self._l2!r}, l1_ttl={self._l1_ttl}, "
            f"invalidation={self._listener is not None})"
        )

    def _l2_seconds(self, ttl: TTL | None) -> float | None:
        return ttl_seconds(ttl, self.default_ttl)

    # -- Cache -------------------------------------------------------------------------------

    def get(self, key: str, default: Any = MISSING) -> Any:
        value = self.read_l1(key)
        if value is None:
            value = self.read_l2(key)
            if value is None:
                if default is MISSING:
                    raise CacheMiss(key)
                return default
        return value

    # -- seams for a layer above that counts requests itself (TypedCache) ----------------------

    def read_l1(self, key: str) -> bytes | None:
        """The L1 step of ``get``: the bytes if L1 has them and may be read (counted as an L1
        hit), else None.

        ``get`` is exactly ``read_l1`` then ``read_l2``, and ``TypedCache`` calls the two itself
        to learn at which level a request was answered, without an allocation per hit: every
        rule about reading L1 belongs here (and in ``_read_below_l1``), not in ``get``.
        """
        if self._trusted:
            value = self._l1.get(key, None)
            if value is not None:
                self._l1_hits.hit()
            return value
        return None

    def read_l2(self, key: str) -> bytes | None:
        """The L2 step of ``get`` (promotion included), counted as an L2 hit or a miss (or an
        L1 hit when L1 answers for an unreachable L2 while it is bypassed)."""
        value, from_l1 = self._read_below_l1(key)
        if from_l1:
            self._l1_hits.hit()
        elif value is None:
            self._l2_hits.miss()
        else:
            self._l2_hits.hit()
        return value

    def peek(self, key: str) -> bytes | None:
        """``get(key, None)`` without counting: a re-read by a layer above (a double-check
        before or under a lock) belongs to a request that layer has already counted."""
        if self._trusted:
            value = self._l1.get(key, None)
            if value is not None:
                return value
        return self._read_below_l1(key)[0]

    def _read_below_l1(self, key: str) -> tuple[bytes | None, bool]:
        """(value from L2, False); while L1 is bypassed and L2 fails: (value from L1, True)."""
        check_key(key)  # after the L1 lookup: a key set() refuses is never in L1
        if self._trusted:
            return self._coherence.read([key]).get(key), False
        self._untrusted()
        try:
            return self._coherence.read([key]).get(key), False
        except BackendError:
            value = self._l1.get(key, None)  # stale-if-error: L2 cannot answer either
            if value is None:
                raise
            return value, True

    def set(self, key: str, value: bytes, ttl: TTL | None = None) -> None:
        check_key(key)
        value = check_value(value)
        seconds = self._l2_seconds(ttl)
        self._write(lambda: self._l2.set(key, value, ttl=seconds), {key: (value, seconds)})

    def _write(
        self,
        write_l2: Callable[[], object],
        entries: dict[str, tuple[bytes, float | None]],
        *,
        fenced: bool = False,
    ) -> frozenset[str]:
        """Write L2, then L1: the one write path (see ``L1Coherence.write``)."""
        own = self._listener is not None and self._trusted
        return self._coherence.write(write_l2, entries, fenced=fenced, own=own)

    # -- fences: the L2's, so a store of a loaded value loses to writes of any process --------

    def fence(self, key: str) -> str | None:
        """The L2's fence token for ``key`` (None when the L2 has no fences: store plainly)."""
        check_key(key)
        take = getattr(self._l2, "fence", None)
        return None if take is None else take(key)

    def set_fenced(self, key: str, value: bytes, ttl: TTL | None, token: str) -> bool:
        """Store a loaded value in L2 only if no write came after ``fence``; then in L1.

        A refused store leaves L1 without the key (a write won; the next read promotes what L2
        holds). When L2 is unreachable the error is raised and L1 is left as it was: a write of
        this process during the outage may be there, and the loaded value may be older.
        """
        check_key(key)
        value = check_value(value)
        seconds = self._l2_seconds(ttl)
        l2: Any = self._l2  # a FencedCache (else AttributeError, as without fences)

        def write_l2() -> frozenset[str]:
            stored = l2.set_fenced(key, value, seconds, token)
            return frozenset((key,)) if stored else frozenset()

        return key in self._write(write_l2, {key: (value, seconds)}, fenced=True)

    def fence_many(self, keys: Iterable[str]) -> dict[str, str | None]:
        """The L2's fence tokens for a batch (all None when the L2 has no fences)."""
        wanted = check_keys(keys)
        take = getattr(self._l2, "fence_many", None)
        return dict.fromkeys(wanted) if take is None else dict(take(wanted))

    def mset_fenced(
        self, entries: Mapping[str, tuple[bytes, TTL | None]], tokens: Mapping[str, str]
    ) -> frozenset[str]:
        """Store loaded values in L2 where their fences hold, then those in L1."""
        checked = check_entries(entries, self.default_ttl)
        l2: Any = self._l2  # a byte cache with fences (else AttributeError, as without fences)
        return self._write(lambda: frozenset(l2.mset_fenced(checked, tokens)), checked, fenced=True)

    def delete(self, key: str) -> bool:
        check_key(key)
        try:
            removed = bool(self._l2.delete(key))
        finally:
            removed_l1 = self._coherence.drop([key])
        return removed or removed_l1 > 0

    def exists(self, key: str) -> bool:
        if self._trusted:
            return bool(self._l1.exists(key)) or bool(self._l2.exists(key))
        try:
            return bool(self._l2.exists(key))
        except BackendError:
            if self._l1.exists(key):
                return True
            raise

    def clear(self) -> int:
        """Clear L2 (the count is L2's, the shared truth), then L1."""
        try:
            removed = int(self._l2.clear())
        finally:
            self._coherence.flush()
        return removed

    # -- BatchCache --------------------------------------------------------------------------

    def mget(self, keys: Iterable[str]) -> dict[str, bytes]:
        wanted = check_keys(keys)
        if self._trusted:
            found = self._l1.mget(wanted)
        else:
            self._untrusted()
            try:
                from_l2 = self._coherence.read(list(dict.fromkeys(wanted)))
            except BackendError:
                found = self._l1.mget(wanted)  # stale-if-error, when L1 has every key
                if len(found) < len(set(wanted)):
                    raise
                count(self._l1_hits.hit, len(found))
                return dict(found)
            count(self._l2_hits.hit, len(from_l2))
            count(self._l2_hits.miss, len(set(wanted)) - len(from_l2))
            return from_l2
        count(self._l1_hits.hit, len(found))
        if len(found) < len(wanted):
            missing = [k for k in dict.fromkeys(wanted) if k not in found]
            from_l2 = self._coherence.read(missing)
            count(self._l2_hits.hit, len(from_l2))
            count(self._l2_hits.miss, len(missing) - len(from_l2))
            found.update(from_l2)
        return dict(found)

    def mset(self, items: Mapping[str, bytes], ttl: TTL | None = None) -> None:
        checked = check_items(items)
        seconds = self._l2_seconds(ttl)
        self._write(
            lambda: self._l2.mset(checked, ttl=seconds),
            {k: (v, seconds) for k, v in checked.items()},
        )

    def mset_with_ttls(self, entries: Mapping[str, tuple[bytes, TTL | None]]) -> None:
        """Store items that each carry their own TTL (L2 first, then L1, each bounded)."""
        checked = check_entries(entries, self.default_ttl)
        l2_many = getattr(self._l2, "mset_with_ttls", None)

        def write_l2() -> None:
            if l2_many is not None:
                l2_many(checked)
            else:
                for key, (value, seconds) in checked.items():
                    self._l2.set(key, value, ttl=seconds)

        self._write(write_l2, checked)

    def mdelete(self, keys: Iterable[str]) -> int:
        wanted = list(dict.fromkeys(check_keys(keys)))
        removed = 0
        try:
            removed = int(self._l2.mdelete(wanted))
        finally:
            removed_l1 = self._coherence.drop(wanted)
        return max(removed, removed_l1)
