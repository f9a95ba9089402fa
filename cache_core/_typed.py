"""TypedCache[T]: typed values over any byte cache, with a protected read-through.

``get_or_set`` is where the protection patterns meet:

* singleflight (always): one loader per key at a time in this process; waiters share the result
  and the value is stored before they are released;
* ``distributed_lock``: one loader per key across processes (``_lease_lock``);
* ``early_refresh=β``: XFetch (``_xfetch``) recomputes hot keys shortly before they expire;
* ``stale_ttl``: stale-while-revalidate, ``stale_if_error``: keep serving the last value when a
  refresh fails;
* ``ttl_jitter``: every TTL written is shortened by up to that fraction (``_jitter``).

Refreshes (early or stale) run in the calling thread of the one reader that wins the
singleflight (and the lease, when enabled); every other reader gets the current value at once,
never waiting. A cache backend failure never fails ``get_or_set``: it answers from the loader,
still inside the singleflight.
"""

from __future__ import annotations

import builtins
import logging
import random as _random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Generic, NamedTuple, TypeVar, overload

from ._breaker import is_unreachable
from ._codec import TypedCodec
from ._envelope import Entry, pack, plain_prefix, serializer_id, unpack
from ._jitter import check_jitter, jittered
from ._lease_lock import LeaseLock, LeaseLockFactory
from ._metrics import CacheMetrics, CacheStats, LevelCounters, StatsView, derive
from ._multilevel import MultiLevelCache
from ._protocols import FencedCache, LeaseLockSource
from ._redis import RedisCache
from ._serializers import (
    CompressedSerializer,
    JSONSerializer,
    MsgpackSerializer,
    PickleSerializer,
    Serializer,
)
from ._singleflight import Singleflight
from ._stats import Counter
from ._validate import MISSING, TTL, check_key, ttl_seconds
from ._xfetch import should_refresh_early
from .errors import BackendError, CacheMiss, NoValue, SerializationError

__all__ = ["TypedCache", "TypedCacheStats"]

T = TypeVar("T")
D = TypeVar("D")
log = logging.getLogger("cache_core")

_BYTE_CACHE_METHODS: Final = ("get", "set", "delete", "exists", "clear")
_UNSET: Final[Any] = object()
_BUSY: Final[Any] = object()  # "another process holds the lease": keep the current value


class _TypedCacheFields(NamedTuple):
    hits: int
    misses: int
    loads: int
    load_errors: int
    backend_errors: int
    decode_errors: int
    refreshes: int
    stale_hits: int
    stale_errors_served: int
    lock_waits: int
    encode_errors: int = 0


class TypedCacheStats(_TypedCacheFields, StatsView):
    """Counters since the cache was built (each exact under threads), plus ``CacheStats``.

    One request counts once: ``hits + misses + stale_hits`` is the number of ``get`` and
    ``get_or_set`` calls (re-reads inside a load are not requests).
    """


@dataclass(frozen=True, slots=True)
class _Options:
    distributed_lock: bool
    lock_timeout: float
    early_refresh: float | None
    stale_ttl: float | None
    stale_if_error: bool
    ttl_jitter: float

    @property
    def wants_meta(self) -> bool:
        return self.early_refresh is not None or self.stale_ttl is not None


def _check_options(
    distributed_lock: object,
    lock_timeout: object,
    early_refresh: object,
    stale_ttl: object,
    stale_if_error: object,
    ttl_jitter: object,
) -> _Options:
    if not isinstance(distributed_lock, bool):
        raise TypeError(f"distributed_lock must be a bool, not {type(distributed_lock).__name__}")
    if not isinstance(stale_if_error, bool):
        raise TypeError(f"stale_if_error must be a bool, not {type(stale_if_error).__name__}")
    timeout = ttl_seconds(lock_timeout, None, "lock_timeout")
    if timeout is None:
        raise TypeError("lock_timeout must be a number of seconds, not None")
    beta: float | None = None
    if early_refresh is not None:
        if isinstance(early_refresh, bool) or not isinstance(early_refresh, int | float):
            raise TypeError(
                f"early_refresh must be None or a float beta > 0, "
                f"not {type(early_refresh).__name__}"
            )
        beta = float(early_refresh)
        if not 0.0 < beta < float("inf"):
            raise ValueError(f"early_refresh must be a finite beta > 0, got {early_refresh!r}")
    stale = ttl_seconds(stale_ttl, None, "stale_ttl")
    return _Options(
        distributed_lock, timeout, beta, stale, stale_if_error, check_jitter(ttl_jitter)
    )


class _Filled(NamedTuple):
    """What one flight produced: the value, its encoding, who ran it, and whether it counts.

    ``current`` is False when the fenced store was refused: a write reached the key after the
    load began, so the value may predate it. The thread that ran the loader still returns it
    (its call overlapped the write); callers that merely joined the flight load again.
    """

    value: Any
    encoded: bytes | None
    runner: int
    current: bool = True


#: No fence could be taken: serve the loaded value, store nothing. ``_NO_STORE`` in an outage
#: (the breaker is open, or Redis cannot be reached: callers that joined the load share it, so
#: an outage costs one load per key, not three); ``_UNSURE`` after any other failure (Redis
#: answered, or this process ran out of connections: a write may have landed meanwhile, so
#: joined callers load again).
_NO_STORE: Final[Any] = object()
_UNSURE: Final[Any] = object()
#: How often a caller that joined an overtaken flight loads again before taking its value.
_OVERTAKEN_RETRIES: Final = 2


_OWN_SERIALIZERS: Final = (
    JSONSerializer,
    MsgpackSerializer,
    PickleSerializer,
    CompressedSerializer,
    TypedCodec,
)
_WARNED_MAX: Final = 1000  # distinct encode failures logged per cache, then silence


def _typed_serializer(serializer: Serializer, type_: Any) -> Serializer:
    """The serializer's typed form for ``type_`` (its ``for_type``), checked once."""
    for_type = getattr(serializer, "for_type", None)
    if not callable(for_type):
        raise TypeError(
            f"type= needs a serializer with a typed form (for_type), such as JSONSerializer "
            f"or MsgpackSerializer; {type(serializer).__name__} has none"
        )
    typed = for_type(type_)
    if not isinstance(typed, Serializer):
        raise TypeError(f"{type(serializer).__name__}.for_type returned {typed!r}")
    return typed


def _strict_loads(serializer: Serializer) -> Callable[[bytes], object]:
    """A user serializer's ``loads`` whose every failure is a SerializationError.

    Stored bytes that cannot be decoded must read as "undecodable" (a repaired miss in
    ``get_or_set``) whatever exception a third-party decoder happens to raise.
    """
    loads = serializer.loads
    name = type(serializer).__name__

    def strict(data: bytes) -> object:
        try:
            return loads(data)
        except SerializationError:
            raise
        except Exception as exc:
            raise SerializationError(f"{name}.loads failed: {type(exc).__name__}: {exc}") from exc

    return strict


def _redis_below(cache: Any) -> RedisCache | None:
    """The RedisCache that a cache stores in (itself, or a multi-level cache's L2)."""
    while True:
        if isinstance(cache, RedisCache):
            return cache
        if isinstance(cache, MultiLevelCache):
            cache = cache.l2
            continue
        return None


class TypedCache(Generic[T]):
    """Typed values over a byte cache: ``get`` / ``set`` / ``get_or_set`` / ``delete`` / ``clear``.

    Values are encoded by ``serializer`` (JSON by default) inside a small envelope, so bytes
    written by something else, by another serializer or by an older layout are detected instead
    of mis-decoded. Undecodable stored bytes count as a miss in ``get_or_set`` and are repaired.

    Options (constructor defaults, each overridable per ``get_or_set`` call):

    ``distributed_lock`` (False): a miss takes a Redis lease lock before loading; other
    processes wait for the value (woken by BLPOP, bounded by ``lock_timeout``) instead of
    loading. Needs a ``RedisCache`` underneath (directly or as a ``MultiLevelCache``'s L2).
    ``lock_timeout`` (10 s): the lease; a crashed holder blocks the key at most this long, and
    a follower waits at most this long before loading itself. Set it above your loader's time.
    ``early_refresh`` (None): XFetch β (1.0 is the paper's default).
    ``stale_ttl`` (None): seconds an entry stays readable after its TTL while one reader
    refreshes it. ``stale_if_error`` (True): a failed refresh serves the stale value.
    ``ttl_jitter`` (0.1): every TTL written is shortened by a random fraction below this.
    ``clock`` (``time.time``, a wall clock: expiries in the envelope are shared between hosts)
    and ``random`` are injectable for deterministic tests.
    """

    def __init__(
        self,
        cache: Any,
        *,
        serializer: Serializer | None = None,
        distributed_lock: bool = False,
        lock_timeout: float = 10.0,
        early_refresh: float | None = None,
        stale_ttl: TTL | None = None,
        stale_if_error: bool = True,
        ttl_jitter: float = 0.1,
        clock: Callable[[], float] = time.time,
        random: Callable[[], float] = _random.random,
        type: type[T] | None = None,
        name: str | None = None,
    ) -> None:
        missing = [m for m in _BYTE_CACHE_METHODS if not callable(getattr(cache, m, None))]
        if missing:
            raise TypeError(
                f"cache must be a byte cache (Cache protocol), "
                f"{builtins.type(cache).__name__} lacks {', '.join(missing)}"
            )
        if serializer is None:
            serializer = JSONSerializer()
        elif not (
            callable(getattr(serializer, "dumps", None))
            and callable(getattr(serializer, "loads", None))
        ):
            raise TypeError(
                "serializer must have dumps() and loads(), "
                f"not {builtins.type(serializer).__name__}"
            )
        if not callable(clock):
            raise TypeError(f"clock must be callable, not {builtins.type(clock).__name__}")
        if not callable(random):
            raise TypeError(f"random must be callable, not {builtins.type(random).__name__}")
        self._options = _check_options(
            distributed_lock, lock_timeout, early_refresh, stale_ttl, stale_if_error, ttl_jitter
        )
        self._locks: LeaseLockFactory | None = None
        if isinstance(cache, LeaseLockSource):
            self._locks = cache.lease_locks()
        if self._locks is None and distributed_lock:
            raise ValueError(
                "distributed_lock=True needs a RedisCache underneath (directly or as the L2 of "
                f"a MultiLevelCache); {builtins.type(cache).__name__} has none"
            )
        self._type = type
        if type is not None:
            serializer = _typed_serializer(serializer, type)
        self._cache = cache
        self._serializer = serializer
        self._dumps = serializer.dumps
        own = builtins.type(serializer) in _OWN_SERIALIZERS
        self._loads = serializer.loads if own else _strict_loads(serializer)
        self._fid = serializer_id(serializer)
        self._prefix = plain_prefix(self._fid)
        self._clock = clock
        self._random = random
        self._flight = Singleflight()
        self._refreshes = Counter()
        self._encode_errors = Counter()
        self._init_metrics(cache, _redis_below(cache), name)
        self._warned: set[str] = set()
        self._mset_ttls = getattr(cache, "mset_with_ttls", None)
        self._fenced: FencedCache | None = cache if isinstance(cache, FencedCache) else None
        self._ttl_checked: object = None  # the last ttl object get_or_set validated
        self._stores = 0  # bumped after every store by a flight; see _fill

    @property
    def cache(self) -> Any:
        """The byte cache underneath."""
        return self._cache

    @property
    def serializer(self) -> Serializer:
        """The serializer in use (with ``type=``, the typed form of the one given)."""
        return self._serializer

    @property
    def type(self) -> Any:
        """The type values decode into (``type=``), or None for untyped values."""
        return self._type

    # -- metrics (issue 17) --------------------------------------------------------------------

    def _init_metrics(self, cache: Any, redis_cache: RedisCache | None, name: str | None) -> None:
        """Counters by level: over a MultiLevelCache, read L1 and L2 through its seams so each
        request is counted once, at the level that answered it, and cover its own counts."""
        inner = getattr(cache, "metrics", None)
        if name is None:
            name = inner.name if isinstance(inner, CacheMetrics) else None
        if name is None:
            name = redis_cache.prefix if redis_cache is not None and redis_cache.prefix else None
        self._metrics = m = CacheMetrics(name or "default", "typed")
        read_l1 = getattr(cache, "read_l1", None)
        read_l2 = getattr(cache, "read_l2", None)
        peek = getattr(cache, "peek", None)
        if callable(read_l1) and callable(read_l2) and callable(peek):
            self._read_l1: Callable[[str], bytes | None] | None = read_l1
            self._first_read: Callable[..., Any] = read_l2
            self._peek: Callable[..., Any] = peek
            self._l1 = m.levels["l1"]
            self._l2 = m.levels["l2"]
        else:
            self._read_l1 = None
            self._first_read = self._peek = lambda key: cache.get(key, None)
            level = "l2" if redis_cache is not None else "l1"
            self._l1 = self._l2 = m.levels[level]
        if isinstance(inner, CacheMetrics):
            inner.cover()

    @property
    def metrics(self) -> CacheMetrics:
        """This cache's metrics handle (its ``name``, what exporters read)."""
        return self._metrics

    @property
    def name(self) -> str:
        return self._metrics.name

    def stats(self) -> TypedCacheStats:
        m = self._metrics
        snap: CacheStats = m.snapshot(bloom=False)  # a guard's stats() reports its filter
        return derive(
            snap,
            TypedCacheStats(
                hits=snap.count_requests(result="hit"),
                misses=snap.count_requests(result="miss"),
                loads=snap.loads_total,
                load_errors=snap.load_errors_total,
                backend_errors=sum(snap.backend_errors_by_kind.values()),
                decode_errors=snap.decode_errors_total,
                refreshes=self._refreshes.value,
                stale_hits=snap.count_requests(result="stale"),
                stale_errors_served=snap.stale_errors_served_total,
                lock_waits=snap.lock_waits_total,
                encode_errors=self._encode_errors.value,
            ),
        )

    def __repr__(self) -> str:
        shown = "" if self._type is None else f", type={self._type!r}"
        return f"TypedCache({self._cache!r}, serializer={self._serializer!r}{shown})"

    # -- TTLs --------------------------------------------------------------------------------

    def _base_ttl(self, ttl: TTL | None) -> float | None:
        default = getattr(self._cache, "default_ttl", None)
        if not isinstance(default, float | int) or isinstance(default, bool):
            default = None
        return ttl_seconds(ttl, default)

    def _ttls(self, ttl: TTL | None, opts: _Options) -> tuple[float | None, float | None]:
        """(logical TTL after jitter, physical TTL to write: logical + stale window)."""
        return self._jittered(self._base_ttl(ttl), opts)

    def _jittered(self, base: float | None, opts: _Options) -> tuple[float | None, float | None]:
        if base is None:
            return None, None
        logical = jittered(base, opts.ttl_jitter, self._random)
        if opts.stale_ttl is None:
            return logical, logical
        return logical, logical + opts.stale_ttl

    # -- encoding ----------------------------------------------------------------------------

    def _payload(self, key: str, value: object) -> bytes:
        try:
            return self._dumps(value)
        except SerializationError as exc:
            raise SerializationError(f"cannot encode the value for key {key!r}: {exc}") from exc

    def _encode(
        self, key: str, value: object, opts: _Options, logical: float | None, delta: float
    ) -> bytes:
        payload = self._payload(key, value)
        if opts.wants_meta and logical is not None:
            return pack(self._fid, payload, delta=delta, expires_at=self._clock() + logical)
        return pack(self._fid, payload)

    def _decode(self, data: bytes) -> Any:
        # Fast path: the plain envelope is a 4-byte prefix check and one slice.
        if data[:4] == self._prefix:
            return self._loads(data[4:])
        return self._loads(self._entry(data).payload)

    def _entry(self, data: bytes) -> Entry:
        entry = unpack(data, self._fid)
        if entry.tombstone:
            raise SerializationError("stored value is a tombstone, not a value")
        return entry

    # -- plain operations --------------------------------------------------------------------

    @overload
    def get(self, key: str) -> T: ...

    @overload
    def get(self, key: str, default: D) -> T | D: ...

    def get(self, key: str, default: Any = MISSING) -> Any:
        """Return the value; ``CacheMiss`` on a miss unless ``default`` is given.

        Stored bytes that cannot be decoded raise ``SerializationError`` (``get_or_set``
        repairs them instead). An entry kept past its TTL for ``stale_ttl`` is still returned.
        """
        if type(key) is not str or not key:
            check_key(key)
        data, rq = self._lookup(key, catch=False)
        if data is None:
            rq.miss()
            if default is MISSING:
                raise CacheMiss(key)
            return default
        rq.hit()
        return self._decode(data)

    def set(self, key: str, value: T, ttl: TTL | None = None) -> None:
        """Store ``value`` (its TTL jittered as configured)."""
        check_key(key)
        opts = self._options
        logical, physical = self._ttls(ttl, opts)
        self._cache.set(key, self._encode(key, value, opts, logical, 0.0), physical)
        self._stores += 1

    def delete(self, key: str) -> bool:
        return bool(self._cache.delete(key))

    def exists(self, key: str) -> bool:
        return bool(self._cache.exists(key))

    def clear(self) -> int:
        return int(self._cache.clear())

    def mget(self, keys: Iterable[str]) -> dict[str, T]:
        """Decoded hits among ``keys``; an undecodable entry is left out (and logged)."""
        found: dict[str, T] = {}
        for key, data in self._cache.mget(keys).items():
            try:
                found[key] = self._decode(data)
            except SerializationError as exc:
                self._metrics.decode_errors.incr()
                log.warning("cache_core: undecodable entry %r skipped: %s", key, exc)
        return found

    def mset(self, items: Mapping[str, T], ttl: TTL | None = None) -> None:
        """Store many values in one round trip, each with its own jittered TTL."""
        if not isinstance(items, Mapping):
            raise TypeError(f"items must be a Mapping[str, T], not {type(items).__name__}")
        entries = self._entries(items, ttl)
        if not entries:
            return
        try:
            if self._mset_ttls is not None:
                self._mset_ttls(entries)
                return
            # A byte cache without per-key TTLs: one TTL for the batch (jitter applied once).
            first_ttl = next(iter(entries.values()))[1]
            self._cache.mset({k: v for k, (v, _) in entries.items()}, first_ttl)
        finally:
            self._stores += 1  # after the store, as in _run_loader (see _fill)

    def fence_many(self, keys: Iterable[str]) -> dict[str, str | None]:
        """Fence tokens for keys about to be loaded in bulk (see ``mset_loaded``).

        None for a key means it is stored unfenced (the byte cache has no fences, or cannot
        fence that key). Take them before loading: a write that comes after refuses the store.
        """
        take = getattr(self._cache, "fence_many", None)
        if take is None:
            return dict.fromkeys(keys)
        return dict(take(keys))

    def mset_loaded(
        self, items: Mapping[str, T], tokens: Mapping[str, str | None], ttl: TTL | None = None
    ) -> int:
        """Store values loaded after ``fence_many``: each only if no write to its key came
        since its token was taken (unfenced keys are stored as by ``mset``). Returns how many
        were stored; the others lost to a write and are left to it."""
        if not isinstance(items, Mapping):
            raise TypeError(f"items must be a Mapping[str, T], not {type(items).__name__}")
        if not isinstance(tokens, Mapping):
            raise TypeError(
                f"tokens must be a Mapping[str, str | None], not {type(tokens).__name__}"
            )
        store_fenced = getattr(self._cache, "mset_fenced", None)
        fenced = {k: v for k, v in items.items() if isinstance(tokens.get(k), str)}
        if store_fenced is None or not fenced:
            self.mset(items, ttl)
            return len(items)
        plain = {k: v for k, v in items.items() if k not in fenced}
        if plain:
            self.mset(plain, ttl)
        entries = self._entries(fenced, ttl)
        try:
            stored = store_fenced(entries, {k: tokens[k] for k in entries})
        finally:
            self._stores += 1
        return len(plain) + len(stored)

    def _entries(
        self, items: Mapping[str, T], ttl: TTL | None
    ) -> dict[str, tuple[bytes, float | None]]:
        """Encoded entries, each with its own jittered TTL (validated once, before encoding):
        the one batch encoder of ``mset`` and ``mset_loaded`` (the warmer's path)."""
        opts = self._options
        base = self._base_ttl(ttl)  # validated once, before encoding anything
        entries: dict[str, tuple[bytes, float | None]] = {}
        if opts.wants_meta or base is None:
            for key, value in items.items():
                check_key(key)
                logical, physical = self._jittered(base, opts)  # a TTL of its own per key
                entries[key] = (self._encode(key, value, opts, logical, 0.0), physical)
            return entries
        # The warming path: _encode and _jittered inlined (no metadata, a TTL per key).
        dumps, prefix, random, jitter = self._dumps, self._prefix, self._random, opts.ttl_jitter
        for key, value in items.items():
            if type(key) is not str or not key:
                check_key(key)  # the byte cache checks the rest of the grammar before I/O
            try:
                payload = dumps(value)
            except SerializationError as exc:
                raise SerializationError(f"cannot encode the value for key {key!r}: {exc}") from exc
            entries[key] = (prefix + payload, base * (1.0 - jitter * random()))
        return entries

    # -- read-through ------------------------------------------------------------------------

    def get_or_set(
        self,
        key: str,
        fn: Callable[[], T],
        ttl: TTL | None = None,
        *,
        distributed_lock: bool | None = None,
        lock_timeout: float | None = None,
        early_refresh: Any = _UNSET,
        stale_ttl: Any = _UNSET,
        stale_if_error: bool | None = None,
        ttl_jitter: float | None = None,
    ) -> T:
        """Return the cached value, or load it with ``fn`` (once per key at a time) and store it.

        The keyword options override the constructor's for this call.
        """
        if type(key) is not str or not key:
            check_key(key)
        if not callable(fn):
            raise TypeError(f"fn must be callable, not {type(fn).__name__}")
        opts = self._options
        if not (
            distributed_lock is None
            and lock_timeout is None
            and early_refresh is _UNSET
            and stale_ttl is _UNSET
            and stale_if_error is None
            and ttl_jitter is None
        ):
            opts = self._override(
                opts, distributed_lock, lock_timeout, early_refresh, stale_ttl,
                stale_if_error, ttl_jitter,
            )  # fmt: skip
        if ttl is not None and ttl is not self._ttl_checked:
            ttl_seconds(ttl, None)
            self._ttl_checked = ttl  # numbers and timedeltas are immutable: checked once
        seen = self._stores
        # Inlined _lookup: the level that answered, without an allocation per hit.
        read_l1 = self._read_l1
        if read_l1 is not None and (data := read_l1(key)) is not None:
            rq = self._l1
        else:
            data = self._read(key)
            rq = self._l2
        if data is not None and data[:4] == self._prefix:  # plain entry: no expiry metadata
            try:
                value = self._loads(data[4:])
            except SerializationError as exc:
                self._undecodable(key, exc)
                data = None
            else:
                rq.hit()
                return value  # type: ignore[return-value]
        return self._after_read(key, fn, ttl, opts, seen, data, rq)

    def get_or_call(
        self,
        key: str,
        fn: Callable[..., T],
        args: tuple[Any, ...] = (),
        kwargs: Mapping[str, Any] | None = None,
        ttl: TTL | None = None,
    ) -> tuple[T, bool]:
        """``get_or_set`` for a loader that takes arguments: ``(value, whether fn ran here)``.

        ``fn(*args, **kwargs)`` runs on a miss only, so a hit builds no closure (the hit path
        of every memoized call). The constructor's options apply.
        """
        if type(key) is not str or not key:
            check_key(key)
        if ttl is not None and ttl is not self._ttl_checked:
            ttl_seconds(ttl, None)
            self._ttl_checked = ttl
        seen = self._stores
        read_l1 = self._read_l1  # _lookup, inlined
        if read_l1 is not None and (data := read_l1(key)) is not None:
            rq = self._l1
        else:
            data = self._read(key)
            rq = self._l2
        if data is not None and data[:4] == self._prefix:
            try:
                value = self._loads(data[4:])
            except SerializationError as exc:
                self._undecodable(key, exc)
                data = None
            else:
                rq.hit()
                return value, False  # type: ignore[return-value]
        if not callable(fn):
            raise TypeError(f"fn must be callable, not {type(fn).__name__}")
        ran = False

        def load() -> T:
            nonlocal ran
            ran = True
            return fn(*args, **(kwargs or {}))

        value = self._after_read(key, load, ttl, self._options, seen, data, rq)
        return value, ran

    def _after_read(
        self,
        key: str,
        fn: Callable[[], T],
        ttl: TTL | None,
        opts: _Options,
        seen: int | None,
        data: bytes | None,
        rq: LevelCounters,
    ) -> T:
        """The rest of a read-through once the request's read returned ``data`` (counted by
        ``rq``, the level that answered). ``get_or_set`` rules out the plain-entry hit first; a
        layer that made the read itself (ProtectedCache) continues here instead of reading
        again, plain entries included."""
        if data is not None:
            try:
                if data[:4] == self._prefix:
                    return self._hit(self._loads(data[4:]), rq)  # type: ignore[no-any-return]
                entry = self._entry(data)
                value = self._loads(entry.payload)
            except SerializationError as exc:
                self._undecodable(key, exc)
            else:
                return self._hit_with_meta(key, fn, ttl, opts, entry, value, rq)
        rq.miss()
        return self._load(key, fn, ttl, opts, seen)

    @staticmethod
    def _hit(value: Any, rq: LevelCounters) -> Any:
        rq.hit()
        return value

    def _lookup(self, key: str, *, catch: bool = True) -> tuple[bytes | None, LevelCounters]:
        """A request's read: the bytes (None: miss) and the counters of the level that answered.

        ``catch``: a backend failure reads as a miss (read-through), else it propagates.
        """
        read_l1 = self._read_l1
        if read_l1 is not None:
            data = read_l1(key)
            if data is not None:
                return data, self._l1
        if catch:
            return self._read(key), self._l2
        return self._first_read(key), self._l2

    def _override(
        self,
        opts: _Options,
        distributed_lock: bool | None,
        lock_timeout: float | None,
        early_refresh: Any,
        stale_ttl: Any,
        stale_if_error: bool | None,
        ttl_jitter: float | None,
    ) -> _Options:
        merged = _check_options(
            opts.distributed_lock if distributed_lock is None else distributed_lock,
            opts.lock_timeout if lock_timeout is None else lock_timeout,
            opts.early_refresh if early_refresh is _UNSET else early_refresh,
            opts.stale_ttl if stale_ttl is _UNSET else stale_ttl,
            opts.stale_if_error if stale_if_error is None else stale_if_error,
            opts.ttl_jitter if ttl_jitter is None else ttl_jitter,
        )
        if merged.distributed_lock and self._locks is None:
            raise ValueError("distributed_lock=True needs a RedisCache underneath")
        return merged

    def _warn_unstorable(self, exc: SerializationError) -> None:
        cause = str(exc.__cause__ or exc)
        if cause in self._warned or len(self._warned) >= _WARNED_MAX:
            log.debug("cache_core: value not cached: %s", exc)
            return
        self._warned.add(cause)
        log.warning("cache_core: value served but not cached (it cannot be stored): %s", exc)

    def _undecodable(self, key: str, exc: Exception) -> None:
        self._metrics.decode_errors.incr()
        log.warning("cache_core: undecodable entry %r will be reloaded: %s", key, exc)

    def _hit_with_meta(
        self,
        key: str,
        fn: Callable[[], T],
        ttl: TTL | None,
        opts: _Options,
        entry: Entry,
        value: Any,
        rq: LevelCounters,
    ) -> T:
        expires_at = entry.expires_at
        if expires_at is not None:
            now = self._clock()
            if now >= expires_at:
                if opts.stale_ttl is not None:
                    rq.stale()
                    return self._revalidate(key, fn, ttl, opts, value, stale=True)
                rq.miss()
                return self._load(key, fn, ttl, opts)
            beta = opts.early_refresh
            if beta is not None and should_refresh_early(
                now, expires_at, entry.delta or 0.0, beta, self._random
            ):
                rq.hit()
                self._metrics.early_refreshes.incr()
                return self._revalidate(key, fn, ttl, opts, value, stale=False)
        rq.hit()
        return value  # type: ignore[no-any-return]

    def _read(self, key: str) -> bytes | None:
        """A request's read below L1 (of the whole cache if it has no levels): a backend failure
        is a miss, never the caller's error."""
        try:
            data = self._first_read(key)
        except BackendError as exc:
            self._metrics.backend_error(exc)
            log.debug("cache_core: read of %r failed, loading instead: %s", key, exc)
            return None
        return data  # type: ignore[no-any-return]

    def _reread(self, key: str) -> bytes | None:
        """A re-read inside a request already counted (double-checks): not a request itself."""
        try:
            data = self._peek(key)
        except BackendError as exc:
            self._metrics.backend_error(exc)
            log.debug("cache_core: re-read of %r failed, loading instead: %s", key, exc)
            return None
        return data  # type: ignore[no-any-return]

    def _fresh(self, data: bytes | None) -> tuple[Any, bytes] | None:
        """Decode ``data`` if it holds a value that is not past its logical expiry."""
        if data is None:
            return None
        try:
            if data[:4] == self._prefix:
                return self._loads(data[4:]), data
            entry = self._entry(data)
            if entry.expires_at is not None and self._clock() >= entry.expires_at:
                return None
            return self._loads(entry.payload), data
        except SerializationError:
            return None

    def _load(
        self,
        key: str,
        fn: Callable[[], T],
        ttl: TTL | None,
        opts: _Options,
        seen: int | None = None,
    ) -> T:
        """The blocking miss path: one loader per key, everyone gets (a copy of) its value.

        ``seen``: the store counter read before the caller's miss; None if unknown.
        """
        me = threading.get_ident()
        overtaken = 0
        while True:

            def fill(seen: int | None = seen) -> _Filled:
                return self._fill(key, fn, ttl, opts, blocking=True, seen=seen)

            filled, _ = self._flight.do(key, fill)
            seen = None  # a retry cannot vouch for its earlier read
            if filled.value is _BUSY:
                # We joined a non-blocking refresh that gave way to another process's lease:
                # it has no value for us. Its flight is over; the next do() is our own fill.
                continue
            if filled.current or filled.runner == me or overtaken >= _OVERTAKEN_RETRIES:
                break
            # We joined a flight whose store a write refused: its value may predate that
            # write, which may have returned before we called. Load again (bounded).
            overtaken += 1
        if filled.runner != me and filled.encoded is not None:
            # Waiters get their own decoded copy: no mutable object is shared between requests.
            return self._decode(filled.encoded)  # type: ignore[no-any-return]
        return filled.value  # type: ignore[no-any-return]

    def _revalidate(
        self,
        key: str,
        fn: Callable[[], T],
        ttl: TTL | None,
        opts: _Options,
        current: Any,
        *,
        stale: bool,
    ) -> T:
        """Refresh without making anyone wait: whoever cannot refresh gets ``current``."""
        try:
            result = self._flight.try_do(
                key, lambda: self._fill(key, fn, ttl, opts, blocking=False, stale=stale)
            )
        except NoValue:
            raise  # the loader says the key does not exist (ProtectedCache): not a failure
        except Exception as exc:
            if not stale:
                # An early refresh failed while the current value is still fresh: serve it.
                log.warning("cache_core: early refresh of %r failed: %s", key, exc)
                return current  # type: ignore[no-any-return]
            if opts.stale_if_error:
                self._metrics.stale_errors_served.incr()
                log.warning("cache_core: refresh of %r failed, serving stale value: %s", key, exc)
                return current  # type: ignore[no-any-return]
            raise
        if result is None or result[0].value is _BUSY:
            return current  # type: ignore[no-any-return]
        self._refreshes.incr()
        return result[0].value  # type: ignore[no-any-return]

    def _fill(
        self,
        key: str,
        fn: Callable[[], T],
        ttl: TTL | None,
        opts: _Options,
        *,
        blocking: bool,
        stale: bool = False,
        seen: int | None = None,
    ) -> _Filled:
        """Load and store ``key`` (the body of a singleflight call).

        ``blocking``: a miss; wait for another process's load if it holds the lease.
        Otherwise a refresh: give up (``_BUSY``) when the lease is taken. ``stale``: the entry
        we saw was past its TTL, so a fresh one found after taking the lease is someone
        else's refresh and is returned instead of loading again.
        """
        me = threading.get_ident()
        if blocking and seen != self._stores:
            # A caller that missed just before the previous flight stored its value finds it
            # here instead of running the loader a second time. If no flight of this cache
            # has stored anything since our miss was read, that read is still good: skip the
            # second round trip (it delays the load in a stampede).
            found = self._fresh(self._reread(key))
            if found is not None:
                return _Filled(found[0], found[1], me)
        lock: LeaseLock | None = None
        if opts.distributed_lock and self._locks is not None:
            lock = self._locks.lock(key, opts.lock_timeout)
            try:
                if lock.try_acquire():
                    holding = True
                elif not blocking:
                    return _Filled(_BUSY, None, me)
                else:
                    found, holding = self._follow(key, lock, opts)
                    if found is not None:
                        return _Filled(found[0], found[1], me)
                if holding and (blocking or stale):
                    # Double-check under the lock: the previous holder may have stored the
                    # value between our read and our acquire.
                    found = self._fresh(self._reread(key))
                    if found is not None:
                        self._release(key, lock)
                        return _Filled(found[0], found[1], me)
                if not holding:
                    lock = None
            except BackendError as exc:
                self._metrics.backend_error(exc)
                log.debug("cache_core: lease lock for %r unavailable, loading: %s", key, exc)
                lock = None
        try:
            return self._run_loader(key, fn, ttl, opts, me, self._take_fence(key))
        finally:
            if lock is not None:
                self._release(key, lock)

    def _take_fence(self, key: str) -> Any:
        """The fence token to store the coming load with: None (no fences: plain store), a
        token, or ``_NO_STORE`` when the backend cannot hand one out (the load is served
        uncached rather than stored unchecked)."""
        fenced = self._fenced
        if fenced is None:
            return None
        try:
            return fenced.fence(key)
        except BackendError as exc:
            self._metrics.backend_error(exc)
            log.debug("cache_core: fence for %r unavailable; the load is not stored: %s", key, exc)
            return _NO_STORE if is_unreachable(exc) else _UNSURE

    def _release(self, key: str, lock: LeaseLock) -> None:
        """Release the lease; a failure only costs followers the wait until it expires."""
        try:
            lock.release()
        except BackendError as exc:
            self._metrics.backend_error(exc)
            log.debug("cache_core: lease release for %r failed: %s", key, exc)

    def _follow(
        self, key: str, lock: LeaseLock, opts: _Options
    ) -> tuple[tuple[Any, bytes] | None, bool]:
        """Wait for another process's load: (value found, or None + whether we now hold the lock).

        Woken by the holder's release; bounded by the lease, after which the lock has expired
        (the holder died or overran) and this caller takes it over, or loads without it.
        """
        self._metrics.lock_waits.incr()
        deadline = time.monotonic() + opts.lock_timeout
        while True:
            found = self._fresh(self._reread(key))
            if found is not None:
                return found, False
            if lock.try_acquire():
                self._metrics.lock_takeovers.incr()
                return None, True
            left = deadline - time.monotonic()
            if left <= 0:
                log.warning(
                    "cache_core: waited %.1fs for %r, loading it here", opts.lock_timeout, key
                )
                return None, False
            lock.wait(left)

    def _run_loader(
        self,
        key: str,
        fn: Callable[[], T],
        ttl: TTL | None,
        opts: _Options,
        me: int,
        token: Any,
    ) -> _Filled:
        start = self._clock()
        try:
            value = fn()
        except NoValue as exc:
            # A loader that found nothing (ProtectedCache): not an error. It may hand us an
            # entry (a tombstone) to store, fenced like a value.
            if exc.entry is not None:
                self._store(key, exc.entry[0], exc.entry[1], token)
            raise
        except BaseException:
            self._metrics.load_errors.incr()
            raise
        delta = max(self._clock() - start, 0.0)  # XFetch's Δ, on the injectable clock
        self._metrics.observe_load(delta)
        logical, physical = self._ttls(ttl, opts)
        try:
            encoded = self._encode(key, value, opts, logical, delta)
        except SerializationError as exc:
            # Nothing unreadable is stored: the caller (and every waiter) gets the loaded value,
            # the failure is counted and logged once per distinct cause.
            self._encode_errors.incr()
            self._warn_unstorable(exc)
            self._stores += 1
            return _Filled(value, None, me)
        return _Filled(value, encoded, me, self._store(key, encoded, physical, token))

    def _store(self, key: str, data: bytes, ttl: float | None, token: Any) -> bool:
        """Store a loaded entry through the key's fence; False if a write overtook the load.

        False also when it is not known: a backend failure (other than an open breaker) is
        logged and counted, never raised, and the value is served uncached, but callers that
        joined the load load again (a write may have landed meanwhile).
        """
        try:
            if token is _NO_STORE:
                return True
            if token is _UNSURE:
                return False
            if token is None:
                self._cache.set(key, data, ttl)
                return True
            assert self._fenced is not None
            stored = self._fenced.set_fenced(key, data, ttl, token)
            if not stored:
                log.debug("cache_core: a write overtook the load of %r; not stored", key)
            return stored
        except BackendError as exc:
            self._metrics.backend_error(exc)
            log.debug("cache_core: store of %r failed; value served uncached: %s", key, exc)
            return is_unreachable(exc)
        finally:
            # Any change will do: callers compare it with what they read before their miss.
            self._stores += 1
