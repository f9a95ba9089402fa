"""TypedCache[T]: typed values over any byte cache, with a protected read-through.

A thin front over two parts: the ``EntryCodec`` (serializer, envelope, jittered TTLs) and the
``ReadThrough`` policy (singleflight, lease lock, XFetch, stale handling, fences) configured by
one ``ReadThroughOptions``. What stays here: wiring, the plain and batch calls, and the hit path
of ``get_or_set`` / ``get_or_call`` (inlined: it is measured against a bare byte-cache read).
"""

from __future__ import annotations

import builtins
import logging
import random as _random
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar, cast, overload

from ._entry_codec import EntryCodec, choose_serializer
from ._metrics import CacheMetrics
from ._options import ReadThroughOptions
from ._protocols import Cache, LeaseLockSource, check_implements
from ._read_absent import Observer, after_absent_read
from ._read_through import ReadThrough
from ._serializers import Serializer
from ._typed_stats import TypedCacheStats, cover, metrics_for, typed_stats
from ._validate import MAX_TTL, MISSING, TTL, check_callable, check_key, ttl_seconds
from .errors import CacheMiss, SerializationError

__all__ = ["TypedCache", "TypedCacheStats"]

T = TypeVar("T")
D = TypeVar("D")
log = logging.getLogger("cache_core")


def _resolve_options(
    options: ReadThroughOptions | None, keywords: ReadThroughOptions
) -> ReadThroughOptions:
    """``options=`` if given (then no option keyword may differ from its default), else the
    options given as keywords."""
    if options is None:
        return keywords
    if not isinstance(options, ReadThroughOptions):
        raise TypeError(f"options must be a ReadThroughOptions, not {type(options).__name__}")
    if keywords.differs_from_defaults():
        raise TypeError(
            f"give the read-through options either as options= or as keywords, not both "
            f"({', '.join(keywords.differs_from_defaults())} given beside options=)"
        )
    return options


class TypedCache(Generic[T]):
    """Typed values over a byte cache: ``get`` / ``set`` / ``get_or_set`` / ``delete`` / ``clear``.

    Values are encoded by ``serializer`` (JSON by default) inside a small envelope, so bytes
    written by something else, by another serializer or by an older layout are detected instead
    of mis-decoded. Undecodable stored bytes count as a miss in ``get_or_set`` and are repaired.

    Read-through options (``ReadThroughOptions``; given one by one as keywords, or together as
    ``options=``; each overridable per ``get_or_set`` call):

    ``distributed_lock`` (False): a miss takes a Redis lease lock before loading; other
    processes wait for the value (woken by BLPOP, bounded by ``lock_timeout``) instead of
    loading. Needs a byte cache that lends lease locks (a ``RedisCache``, directly or as a
    ``MultiLevelCache``'s L2). ``lock_timeout`` (10 s): the lease; a crashed holder blocks the
    key at most this long, and a follower waits at most this long before loading itself. Set it
    above your loader's time. ``early_refresh`` (None): XFetch β (1.0 is the paper's default).
    ``stale_ttl`` (None): seconds an entry stays readable after its TTL while one reader
    refreshes it. ``stale_if_error`` (True): a failed refresh serves the stale value.
    ``ttl_jitter`` (0.1): every TTL written is shortened by a random fraction below this.
    ``clock`` (``time.time``, a wall clock: expiries in the envelope are shared between hosts)
    and ``random`` are injectable for deterministic tests. ``name``: the metrics name.
    """

    def __init__(
        self,
        cache: Cache,
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
        type: builtins.type[T] | None = None,
        name: str | None = None,
        options: ReadThroughOptions | None = None,
    ) -> None:
        check_implements(cache, Cache, "cache", "a byte cache (Cache protocol)")
        serializer = choose_serializer(serializer, type)
        check_callable(clock, "clock")
        check_callable(random, "random")
        options = _resolve_options(
            options,
            ReadThroughOptions(
                distributed_lock,
                lock_timeout,
                early_refresh,
                cast(float | None, stale_ttl),  # a timedelta too: __post_init__ converts it
                stale_if_error,
                ttl_jitter,
            ),
        )
        self._cache = cache
        self._type = type
        self._codec = codec = EntryCodec(serializer, clock=clock, random=random)
        self._metrics = metrics = metrics_for(cache, name)
        source = cache if isinstance(cache, LeaseLockSource) else None
        self._rt = rt = ReadThrough(
            cache, codec, metrics, lock_source=source, shared=source is not None
        )
        self._options = rt.check(options)
        # Bound once for the hit paths below.
        self._prefix = codec.prefix
        self._loads = codec.loads
        self._read_l1 = rt.read_l1
        self._read = rt.read
        self._l1 = rt.l1
        self._l2 = rt.l2
        self._mset_ttls = getattr(cache, "mset_with_ttls", None)
        self._ttl_checked: object = None  # the last ttl object get_or_set validated
        cover(cache)

    @property
    def cache(self) -> Cache:
        """The byte cache underneath."""
        return self._cache

    @property
    def serializer(self) -> Serializer:
        """The serializer in use (with ``type=``, the typed form of the one given)."""
        return self._codec.serializer

    @property
    def codec(self) -> EntryCodec:
        """Values to stored bytes and back (the envelope, the tombstone, TTL jitter)."""
        return self._codec

    @property
    def options(self) -> ReadThroughOptions:
        """The read-through options ``get_or_set`` uses unless a call overrides them."""
        return self._options

    @property
    def type(self) -> Any:
        """The type values decode into (``type=``), or None for untyped values."""
        return self._type

    def waiting(self, key: str) -> int:
        """How many callers in this process wait on the load of ``key`` now (the loader's own
        caller excluded): for diagnostics, and for tests that must know waiters arrived."""
        return self._rt.flight.waiting(key)

    @property
    def metrics(self) -> CacheMetrics:
        """This cache's metrics handle (its ``name``, what exporters read)."""
        return self._metrics

    @property
    def name(self) -> str:
        return self._metrics.name

    def stats(self) -> TypedCacheStats:
        rt = self._rt
        return typed_stats(self._metrics, rt.refreshes.value, rt.encode_errors.value)

    def __repr__(self) -> str:
        shown = "" if self._type is None else f", type={self._type!r}"
        return f"TypedCache({self._cache!r}, serializer={self.serializer!r}{shown})"

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
        data, rq = self._rt.lookup(key, catch=False)
        if data is None:
            rq.miss()
            if default is MISSING:
                raise CacheMiss(key)
            return default
        rq.hit()
        value: T = self._codec.decode(data)
        return value

    def set(self, key: str, value: T, ttl: TTL | None = None) -> None:
        """Store ``value`` (its TTL jittered as configured)."""
        check_key(key)
        opts, codec, rt = self._options, self._codec, self._rt
        logical, physical = codec.ttls(rt.base_ttl(ttl), opts)
        self._cache.set(key, codec.encode(key, value, opts, logical), physical)
        rt.stores += 1

    def delete(self, key: str) -> bool:
        return bool(self._cache.delete(key))

    def exists(self, key: str) -> bool:
        return bool(self._cache.exists(key))

    def clear(self) -> int:
        return int(self._cache.clear())

    # -- batches -----------------------------------------------------------------------------

    def mget(self, keys: Iterable[str]) -> dict[str, T]:
        """Decoded hits among ``keys``; an undecodable entry is left out (and logged)."""
        found: dict[str, T] = {}
        mget = getattr(self._cache, "mget", None)
        if not callable(mget):
            raise TypeError(f"{type(self._cache).__name__} has no mget (BatchCache)")
        for key, data in mget(keys).items():
            try:
                found[key] = self._codec.decode(data)
            except SerializationError as exc:
                self._metrics.decode_errors.incr()
                log.warning("cache_core: undecodable entry %r skipped: %s", key, exc)
        return found

    def mset(self, items: Mapping[str, T], ttl: TTL | None = None) -> None:
        """Store many values in one round trip, each with its own jittered TTL."""
        if not isinstance(items, Mapping):
            raise TypeError(f"items must be a Mapping[str, T], not {type(items).__name__}")
        entries = self._codec.encode_many(items, self._rt.base_ttl(ttl), self._options)
        if not entries:
            return
        try:
            if self._mset_ttls is not None:
                self._mset_ttls(entries)
                return
            # A byte cache without per-key TTLs: one TTL for the batch (jitter applied once).
            first_ttl = next(iter(entries.values()))[1]
            mset = getattr(self._cache, "mset", None)
            if not callable(mset):
                raise TypeError(f"{type(self._cache).__name__} has no mset (BatchCache)")
            mset({k: v for k, (v, _) in entries.items()}, first_ttl)
        finally:
            self._rt.stores += 1  # after the store, as a flight's (see ReadThrough.stores)

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
        entries = self._codec.encode_many(fenced, self._rt.base_ttl(ttl), self._options)
        try:
            stored = store_fenced(entries, {k: tokens[k] for k in entries})
        finally:
            self._rt.stores += 1
        return len(plain) + len(stored)

    # -- read-through ------------------------------------------------------------------------

    def _check_ttl(self, ttl: TTL) -> None:
        """Validate ``ttl``, remembered: numbers and timedeltas are immutable, so the hit paths
        check the same object once (they call this only for a ttl they have not seen)."""
        ttl_seconds(ttl, None)
        self._ttl_checked = ttl

    def get_or_set(
        self,
        key: str,
        fn: Callable[[], T],
        ttl: TTL | None = None,
        *,
        distributed_lock: bool | None = None,
        lock_timeout: float | None = None,
        early_refresh: Any = MISSING,
        stale_ttl: Any = MISSING,
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
            and early_refresh is MISSING
            and stale_ttl is MISSING
            and stale_if_error is None
            and ttl_jitter is None
        ):
            opts = self._rt.check(
                opts.overridden(
                    distributed_lock=distributed_lock, lock_timeout=lock_timeout,
                    early_refresh=early_refresh, stale_ttl=stale_ttl,
                    stale_if_error=stale_if_error, ttl_jitter=ttl_jitter,
                )
            )  # fmt: skip
        if ttl is not None and ttl is not self._ttl_checked:
            self._check_ttl(ttl)
        seen = self._rt.stores
        # The request's read, inlined: the level that answered, without an allocation per hit.
        read_l1 = self._read_l1
        if read_l1 is not None and (data := read_l1(key)) is not None:
            rq = self._l1
        else:
            data = self._read(key)
            rq = self._l2
        if data is not None and data[:4] == self._prefix:  # plain entry: no expiry metadata
            try:
                value: T = self._loads(data[4:])
            except SerializationError as exc:
                self._rt.undecodable(key, exc)
                data = None
            else:
                rq.hit()
                return value
        return self._rt.after_read(key, fn, ttl, opts, seen, data, rq)

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
            self._check_ttl(ttl)
        seen = self._rt.stores
        read_l1 = self._read_l1  # get_or_set's inlined read
        if read_l1 is not None and (data := read_l1(key)) is not None:
            rq = self._l1
        else:
            data = self._read(key)
            rq = self._l2
        if data is not None and data[:4] == self._prefix:
            try:
                value: T = self._loads(data[4:])
            except SerializationError as exc:
                self._rt.undecodable(key, exc)
                data = None
            else:
                rq.hit()
                return value, False
        check_callable(fn, "fn")
        ran = False

        def load() -> T:
            nonlocal ran
            ran = True
            return fn(*args, **(kwargs or {}))

        return self._rt.after_read(key, load, ttl, self._options, seen, data, rq), ran

    def get_or_absent(
        self,
        key: str,
        fn: Callable[[], T | None],
        ttl: TTL | None = None,
        *,
        null_ttl: TTL,
        observe: Observer | None = None,
    ) -> T | None:
        """The read-through with "does not exist" as an answer (``ProtectedCache``'s hook).

        ``fn`` returning None stores a *tombstone* for ``null_ttl`` (through the key's fence,
        before concurrent callers are released) and answers None; a tombstone read answers
        None without calling ``fn``. ``observe(event)``, if given, hears each step as it
        happens (``"hit"``, ``"tombstone"``, ``"miss"``, then ``"load"``, ``"absent"``,
        ``"late_tombstone"``; see ``_read_absent.Event``), so counts stay exact when the loader
        raises.
        """
        if type(key) is not str or not key:
            check_key(key)
        if not callable(fn):
            check_callable(fn, "fn")
        if type(null_ttl) is float and 0.0 < null_ttl <= MAX_TTL:
            seconds: float | None = null_ttl
        else:
            seconds = ttl_seconds(null_ttl, None, "null_ttl")
        if seconds is None:
            raise TypeError("null_ttl must be a number of seconds or a timedelta, not None")
        if ttl is not None and ttl is not self._ttl_checked:
            self._check_ttl(ttl)
        read_l1 = self._read_l1  # the request's read, as in get_or_set
        if read_l1 is not None and (data := read_l1(key)) is not None:
            rq = self._l1
        else:
            data = self._read(key)  # a backend failure reads as a miss
            rq = self._l2
        if data is not None and data[:4] == self._prefix:  # a plain value: no second read
            try:
                value: T = self._loads(data[4:])
            except SerializationError:
                pass  # the read-through repairs it
            else:
                rq.hit()
                if observe is not None:
                    observe("hit")
                return value
        return after_absent_read(self._rt, key, fn, ttl, self._options, seconds, observe, data, rq)
