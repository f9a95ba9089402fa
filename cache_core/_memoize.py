"""``@memoize``: cache a function's results in a cache_core cache, keyed by its arguments.

Keys: see ``_keys`` (namespace + canonical encoding of the bound arguments, identical across
processes). Read-through: every call goes through ``TypedCache.get_or_set``, so concurrent
callers of one cold key run the function once in this process, and a cache outage falls back
to calling the function.

Methods: the wrapper is a descriptor; ``obj.method(x)`` calls the function with ``obj`` as its
first argument, and ``obj`` is part of the key like any argument. The cache never keeps a
reference to it (keys are text). An instance is identified by its ``__cache_key__()`` method
(say, a primary key), by its fields if it is a dataclass, or by ``key=``; any other instance
raises ``TypeError`` on the first call instead of silently sharing results between instances
(dogpile.cache issue #213) or keying on ``id()`` (which another process, or a later object at
the same address, would reuse). ``cls`` of a classmethod is keyed by the class's qualified name.

``cache_clear()`` is O(1): the key holds a generation token, stored in the cache under
``{namespace}:gen``; clearing writes a new random token, so every old key becomes unreachable
and ages out by its TTL. A wrapper re-reads the token at most every ``generation_interval``
seconds (default 1 s): the hit path pays a clock read, not a cache round trip, and another
process sees a ``cache_clear()`` within that interval (plus ``l1_ttl`` over a MultiLevelCache
without invalidation, whose L1 serves the old token like any other value). Over a
MultiLevelCache with invalidation, the invalidation of the token key also makes the next call
re-read it at once: other processes see a ``cache_clear()`` (and an ``invalidate()``, a plain
delete) within the invalidation delay, milliseconds, not the interval. A failed token read
keeps the last known token (fail-open). The token is written with the cache's default TTL: if
it expires or is evicted, the generation reads as "0" again, and entries written before the
first clear could be served again if they are still alive; give entries a ``ttl`` to bound that.
"""

from __future__ import annotations

import functools
import logging
import math
import secrets
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Generic, ParamSpec, TypeVar, overload

from ._default import default_cache
from ._keys import KEY_VERSION, KeyBuilder, hash128, value_text
from ._memoize_bound import BoundMemoized
from ._memoize_setup import (
    CacheInfo,
    MemoizeConfig,
    check_function,
    func_name,
    looks_like_cache,
    namespace_for,
)
from ._protocols import Cache
from ._serializers import Serializer
from ._stats import Counter
from ._typed import TypedCache, TypedCacheStats
from ._validate import MISSING, TTL
from .errors import BackendError

__all__ = ["CacheInfo", "Memoized", "memoize"]

P = ParamSpec("P")
R = TypeVar("R")
log = logging.getLogger("cache_core")

_INITIAL_GENERATION = "0"

# Positional arguments of these exact types map to their key text through a bounded dict:
# equal tuples of them always have equal key text (no 1 / 1.0 / True aliasing), and the text
# itself is what KeyBuilder writes, so it is identical in every process.
_MEMO_TYPES = frozenset({str, int})
_MEMO_MAX = 4096


class Memoized(Generic[P, R]):
    """A memoized function: call it like the original; inspect and manage its cache entries.

    Built by ``memoize``; not meant to be instantiated directly.
    """

    def __init__(self, func: Callable[P, R], config: MemoizeConfig) -> None:
        check_function(func)
        namespace = namespace_for(func, config.namespace)
        self._config = config
        self._returns = config.result_type(func)
        self.__wrapped__ = func
        functools.update_wrapper(self, func)
        self._func = func
        self._ttl = config.ttl
        self._namespace = namespace
        self._key_fn = config.key
        self._keys: KeyBuilder | None = None
        if config.key is None:
            try:
                self._keys = KeyBuilder(func, typed=config.typed)
            except (ValueError, TypeError) as exc:  # some builtins have no signature
                raise TypeError(
                    f"memoize cannot read the signature of {func_name(func)} ({exc}); pass key=..."
                ) from exc
        self._lock = threading.Lock()
        self._typed: TypedCache[R] | None = None
        self._byte_cache: Any = None
        self._generation_key = f"{namespace}:gen"
        if isinstance(config.cache, TypedCache):
            self._set_cache(config.cache)
        elif config.cache is not None:
            # Built now so that a bad byte cache or serializer fails at decoration time.
            self._set_cache(self._typed_cache(config.cache))
        self._generation = _INITIAL_GENERATION
        self._prefix = self._key_prefix(_INITIAL_GENERATION)
        self._interval = float(config.generation_interval)
        self._timer = config.timer
        self._generation_due = -float("inf")  # read the token on the first call
        self._hits = Counter()
        self._misses = Counter()
        self._errors = Counter()
        self._memo: dict[tuple[Any, ...], str] = {}
        # Bound once: a hit pays one C-level call to count itself, not a Python method call.
        self._hit = self._hits.incr
        self._miss = self._misses.incr
        self._error = self._errors.incr
        # A plain dict: CPython 3.11 reads attributes of the key-sharing one that update_wrapper
        # materialised 18 ns slower each (51 vs 33 ns), on every hit.
        self.__dict__ = dict(self.__dict__)

    # -- cache resolution -------------------------------------------------------------------

    def _typed_cache(self, byte_cache: Cache) -> TypedCache[R]:
        return TypedCache(
            byte_cache,
            serializer=self._config.serializer,
            type=self._returns,
            name=self._namespace,  # the metrics name (issue 17)
            options=self._config.options,
        )

    def _set_cache(self, typed: TypedCache[R]) -> None:
        self._byte_cache = typed.cache
        self._typed = typed
        on_invalidate = getattr(self._byte_cache, "on_invalidate", None)
        if callable(on_invalidate):
            on_invalidate(_generation_watcher(weakref.ref(self), self._generation_key))

    def _resolve(self) -> TypedCache[R]:
        """The TypedCache, built over ``default_cache()`` on first use if none was given.

        Lazy so that ``CACHE_CORE_URL`` set after import (by the app's startup) still counts.
        """
        with self._lock:
            if self._typed is None:
                self._set_cache(self._typed_cache(default_cache()))
            assert self._typed is not None
            return self._typed

    @property
    def cache(self) -> TypedCache[R]:
        """The TypedCache holding this function's entries (resolving the default if needed)."""
        return self._typed or self._resolve()

    @property
    def namespace(self) -> str:
        return self._namespace

    # -- generation ---------------------------------------------------------------------------

    def _key_prefix(self, generation: str) -> str:
        return f"{self._namespace}:k{KEY_VERSION}:{generation}:"

    def _read_generation(self, now: float) -> None:
        """Refresh the generation token from the cache; on a backend failure keep the last one."""
        try:
            data = self._byte_cache.get(self._generation_key, None)
        except BackendError as exc:
            log.debug("cache_core: generation read for %s failed: %s", self._namespace, exc)
            self._generation_due = now + self._interval
            return
        if data is None:
            generation = _INITIAL_GENERATION
        else:
            raw = bytes(data)
            if raw.isalnum() and raw.isascii() and len(raw) <= 32:
                generation = raw.decode("ascii")
            else:  # written by something else: any stable text will do, as long as all agree
                generation = format(hash128(raw), "032x")
        if generation != self._generation:
            self._prefix = self._key_prefix(generation)
            self._generation = generation
        self._generation_due = now + self._interval

    def reread_generation(self) -> None:
        """Re-read the ``cache_clear`` token on the next call (another process cleared)."""
        self._generation_due = -math.inf

    # -- calls --------------------------------------------------------------------------------

    def _arg_text(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        keys = self._keys
        if keys is not None:
            return keys.text(args, kwargs)
        assert self._key_fn is not None
        return value_text(
            self._key_fn(*args, **kwargs),
            typed=self._config.typed,
            what=f"the value key= returned for {self._namespace}",
        )

    def _key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        if self._typed is None:
            self._resolve()
        now = self._timer()
        if now >= self._generation_due:
            self._read_generation(now)
        return self._prefix + self._arg_text(args, kwargs)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        # _key, inlined: every frame on this path is measured against a cachetools hit.
        typed = self._typed
        if typed is None:
            typed = self._resolve()
        now = self._timer()
        if now >= self._generation_due:
            self._read_generation(now)
        keys = self._keys
        if keys is None:
            key = self._prefix + self._arg_text(args, kwargs)
        elif kwargs:
            key = self._prefix + keys.text(args, kwargs)
        else:
            text = self._memo.get(args) if _MEMO_TYPES.issuperset(map(type, args)) else None
            if text is None:
                text = keys.text(args, kwargs)
                self._remember(args, text)
            key = self._prefix + text
        try:
            value, ran = typed.get_or_call(key, self._run, args, kwargs, self._ttl)
        except BaseException:
            self._error()  # a miss that ran the function was counted by _run
            raise
        if not ran:
            self._hit()
        return value

    def _run(self, *args: Any, **kwargs: Any) -> R:
        """The function itself, on a miss (counted before it runs: it may raise)."""
        self._miss()
        return self._func(*args, **kwargs)

    def _remember(self, args: tuple[Any, ...], text: str) -> None:
        """Keep the key text of plain positional arguments (bounded: cleared when full)."""
        if _MEMO_TYPES.issuperset(map(type, args)):
            memo = self._memo
            if len(memo) >= _MEMO_MAX:
                memo.clear()
            memo[args] = text

    def __get__(self, instance: object, owner: type | None = None) -> Any:
        if instance is None:
            return self
        return BoundMemoized(self, instance)

    def __repr__(self) -> str:
        return f"<memoized {self._namespace}>"

    # -- management ---------------------------------------------------------------------------

    def cache_key(self, *args: Any, **kwargs: Any) -> str:
        """The cache key a call with these arguments uses now (for logs and debugging)."""
        return self._key(args, kwargs)

    def cache_info(self) -> CacheInfo:
        """Counts of hits, misses and errors since decoration (``cache_clear`` keeps them)."""
        return CacheInfo(self._hits.value, self._misses.value, self._errors.value)

    def stats(self) -> TypedCacheStats:
        """The metrics snapshot of the TypedCache holding this function's entries (named after
        the namespace unless a TypedCache was given); ``cache_info()`` counts calls instead."""
        return self.cache.stats()

    def cache_clear(self) -> None:
        """Make every entry of this function unreachable, in every process, in O(1).

        Writes a new generation token; other functions' entries are untouched. Old entries are
        not deleted: they expire by their TTL (or are evicted). Backend errors propagate: a
        clear that did not happen must not look as if it did.
        """
        self.cache  # noqa: B018  (resolve the default cache)
        token = secrets.token_hex(8)
        self._byte_cache.set(self._generation_key, token.encode("ascii"))
        with self._lock:
            self._prefix = self._key_prefix(token)
            self._generation = token
            self._generation_due = self._timer() + self._interval

    def invalidate(self, *args: Any, **kwargs: Any) -> bool:
        """Delete the entry of this call; True if there was one. Backend errors propagate."""
        key = self._key(args, kwargs)
        return self.cache.delete(key)

    def refresh(self, *args: Any, **kwargs: Any) -> R:
        """Run the function now, store its result for this call and return it.

        A forced write, not a read-through: the store wins over loads in flight (it drops the
        key's fence), and like any write it can overwrite an update that landed while the
        function ran. A failed store is logged and the value still returned (fail-open).
        """
        key = self._key(args, kwargs)
        value = self._func(*args, **kwargs)
        try:
            self.cache.set(key, value, self._ttl)
        except BackendError as exc:
            log.debug("cache_core: refresh of %r could not be stored: %s", key, exc)
        return value


def _generation_watcher(
    ref: weakref.ReferenceType[Memoized[Any, Any]], generation_key: str
) -> Callable[[list[str] | None], None]:
    """An ``on_invalidate`` callback: re-read the token on the next call once it was written.

    Holds the wrapper weakly; runs in the invalidation listener's thread (one comparison).
    """

    def watch(keys: list[str] | None) -> None:
        memoized = ref()
        if memoized is not None and (keys is None or generation_key in keys):
            memoized.reread_generation()

    return watch


@overload
def memoize(cache: Callable[P, R], /) -> Memoized[P, R]: ...


@overload
def memoize(
    cache: Cache | TypedCache[Any] | None = None,
    *,
    ttl: TTL | None = None,
    namespace: str | None = None,
    key: Callable[..., object] | None = None,
    typed: bool = False,
    serializer: Serializer | None = None,
    generation_interval: float = 1.0,
    timer: Callable[[], float] = time.monotonic,
    distributed_lock: Any = MISSING,
    lock_timeout: Any = MISSING,
    early_refresh: Any = MISSING,
    stale_ttl: Any = MISSING,
    stale_if_error: Any = MISSING,
    ttl_jitter: Any = MISSING,
    returns: Any = MISSING,
) -> Callable[[Callable[P, R]], Memoized[P, R]]: ...


# long-function: the public signature and its documentation (API.md); the work is 25 lines
def memoize(
    cache: Any = None,
    *,
    ttl: TTL | None = None,
    namespace: str | None = None,
    key: Callable[..., object] | None = None,
    typed: bool = False,
    serializer: Serializer | None = None,
    generation_interval: float = 1.0,
    timer: Callable[[], float] = time.monotonic,
    distributed_lock: Any = MISSING,
    lock_timeout: Any = MISSING,
    early_refresh: Any = MISSING,
    stale_ttl: Any = MISSING,
    stale_if_error: Any = MISSING,
    ttl_jitter: Any = MISSING,
    returns: Any = MISSING,
) -> Any:
    """Cache the decorated function's results: ``@memoize``, ``@memoize()``, ``@memoize(cache)``.

    ``cache``: a byte cache (wrapped in a ``TypedCache`` with ``serializer``, JSON by default),
    a ``TypedCache`` (used as is), or None for ``default_cache()``, resolved at the first call.
    ``ttl``: lifetime of each entry (None: the cache's default). ``namespace``: the key prefix,
    ``module:qualname`` by default. ``key``: a callable taking the function's arguments and
    returning a str or a tuple of stable values, for arguments that cannot be encoded.
    ``typed``: separate ``1``, ``1.0`` and ``True`` (and other equal values of different types).
    ``generation_interval``: how often (seconds) the ``cache_clear`` token is re-read; 0 reads
    it on every call. ``timer``: the clock for that interval (for tests).
    ``distributed_lock``, ``lock_timeout``, ``early_refresh``, ``stale_ttl``,
    ``stale_if_error``, ``ttl_jitter``: passed to ``TypedCache`` when given.
    ``returns``: the type results decode into (``TypedCache(type=...)``), so every call returns
    the same type; by default the function's return annotation when it names a user class
    (a ``NamedTuple``, a dataclass, ``list[Point]``, ...); ``returns=None`` keeps results untyped.

    Bad arguments, async functions and generator functions raise ``TypeError`` / ``ValueError``
    here, at decoration time.
    """
    given = {
        name: value
        for name, value in (
            ("distributed_lock", distributed_lock),
            ("lock_timeout", lock_timeout),
            ("early_refresh", early_refresh),
            ("stale_ttl", stale_ttl),
            ("stale_if_error", stale_if_error),
            ("ttl_jitter", ttl_jitter),
        )
        if value is not MISSING
    }
    bare = cache is not None and not looks_like_cache(cache)
    if bare and not (callable(cache) or isinstance(cache, classmethod | staticmethod)):
        raise TypeError(
            f"memoize's first argument must be a cache, a TypedCache or the function to "
            f"decorate, not {type(cache).__name__}: {cache!r}"
        )
    # Validated now: a decorator factory that only fails once applied is a trap.
    config = MemoizeConfig(
        cache=None if bare else cache,
        ttl=ttl,
        namespace=namespace,
        key=key,
        typed=typed,
        serializer=serializer,
        generation_interval=generation_interval,
        timer=timer,
        returns=returns,
        given=tuple(given.items()),
    )
    if bare:
        return _decorate(cache, config)  # bare @memoize

    def decorate(func: Callable[P, R]) -> Any:
        return _decorate(func, config)

    return decorate


def _decorate(func: Any, config: MemoizeConfig) -> Any:
    if isinstance(func, classmethod | staticmethod):
        # @memoize over @classmethod / @staticmethod: memoize the function, keep the kind.
        return type(func)(_decorate(func.__func__, config))
    return Memoized(func, config)
