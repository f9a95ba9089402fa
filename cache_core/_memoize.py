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
first clear could be served again if they are still alive; give entries a ``ttl`` to bound
that.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import inspect
import logging
import math
import secrets
import threading
import time
import typing
import weakref
from collections.abc import Callable
from typing import Any, Generic, NamedTuple, ParamSpec, TypeVar, overload

import msgspec

from ._codec import TypedCodec
from ._default import default_cache
from ._keys import KEY_VERSION, KeyBuilder, hash128, value_text
from ._serializers import JSONSerializer
from ._stats import Counter
from ._typed import TypedCache, TypedCacheStats
from ._validate import MISSING, TTL, is_reserved, ttl_seconds
from .errors import BackendError

__all__ = ["CacheInfo", "Memoized", "memoize"]

P = ParamSpec("P")
R = TypeVar("R")
log = logging.getLogger("cache_core")

#: TypedCache options (the stampede layer) that memoize passes through when given.
TYPED_OPTIONS = (
    "distributed_lock",
    "lock_timeout",
    "early_refresh",
    "stale_ttl",
    "stale_if_error",
    "ttl_jitter",
)

_INITIAL_GENERATION = "0"

# Positional arguments of these exact types map to their key text through a bounded dict:
# equal tuples of them always have equal key text (no 1 / 1.0 / True aliasing), and the text
# itself is what KeyBuilder writes, so it is identical in every process.
_MEMO_TYPES = frozenset({str, int})
_MEMO_MAX = 4096


def _names_a_class(hint: Any, depth: int = 0) -> bool:
    """Whether a type hint mentions a user class (dataclass, NamedTuple, Struct, TypedDict, Enum).

    Only those need a type to come back as themselves; everything else round-trips untyped.
    """
    if depth > 20:
        return False
    args = typing.get_args(hint)
    if args:
        return any(_names_a_class(a, depth + 1) for a in args)
    if not isinstance(hint, type) or hint.__module__ == "builtins":
        return False
    return (
        dataclasses.is_dataclass(hint)
        or typing.is_typeddict(hint)
        or issubclass(hint, enum.Enum | msgspec.Struct)
        or (issubclass(hint, tuple) and hasattr(hint, "_fields"))
    )


def _return_type(func: Callable[..., Any], returns: Any) -> Any:
    """The type results decode into: ``returns`` if given, else the return annotation.

    An annotation that msgspec cannot decode into (or ``Any``, ``object``, ``None``, an
    unresolvable forward reference) leaves results untyped; an explicit ``returns`` of that
    kind is an error at decoration time (raised by TypedCache).
    """
    if returns is not MISSING:
        return returns
    try:
        hint = typing.get_type_hints(func).get("return")
    except Exception:  # unresolvable forward reference, a callable without annotations, ...
        return None
    if hint is None or hint in (type(None), Any, object):
        return None
    if not _names_a_class(hint):
        # Builtins, datetimes, Any and containers of them: the untyped codec already brings
        # them back exactly (tuples, sets, datetimes inside a dict[str, Any] included).
        return None
    try:
        TypedCodec(hint)
    except TypeError:
        return None
    return hint


class CacheInfo(NamedTuple):
    """Call counts of one memoized function since it was decorated (exact under threads).

    ``hits``: calls answered without running the function (from the cache, or by waiting for
    a concurrent caller's run of it). ``misses``: calls that ran the function. ``errors``: calls
    that raised (the function's exception, or an error shared from a concurrent run).
    """

    hits: int
    misses: int
    errors: int


def _typed_option_names() -> frozenset[str]:
    params = inspect.signature(TypedCache.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return frozenset(TYPED_OPTIONS)
    return frozenset(params)


def _check_function(func: object) -> None:
    if not callable(func):
        raise TypeError(f"memoize needs a callable, not {type(func).__name__}: {func!r}")
    for candidate in {id(func): func, id(inspect.unwrap(func)): inspect.unwrap(func)}.values():
        if inspect.iscoroutinefunction(candidate) or inspect.isasyncgenfunction(candidate):
            raise TypeError(
                f"memoize cannot wrap the async function {_name(func)}: cache_core is a "
                "synchronous library (the cached value would be a coroutine)"
            )
        if inspect.isgeneratorfunction(candidate):
            raise TypeError(
                f"memoize cannot wrap the generator function {_name(func)}: a generator is "
                "consumed once; memoize a function that returns a list instead"
            )


def _name(func: object) -> str:
    return str(getattr(func, "__qualname__", None) or type(func).__name__)


def _namespace(func: object, namespace: object) -> str:
    """The key namespace: ``namespace`` checked, or ``module:qualname`` when it names one function.

    A qualified name holding ``<locals>`` (a function built by a factory) or ``<lambda>`` is
    shared by every function built the same way, whose results would then be shared too: such
    functions must say what distinguishes them with ``namespace=``.
    """
    if namespace is None:
        qualname = _name(func)
        if "<locals>" in qualname or "<lambda>" in qualname:
            raise TypeError(
                f"memoize cannot key {qualname!r} by its qualified name: every function built "
                "by the same factory (or every lambda in the module) has that name and would "
                "share its results. Pass namespace=... naming what makes this one distinct "
                "(e.g. namespace=f'orders:{table}')"
            )
        namespace = f"{getattr(func, '__module__', None)}:{qualname}"
    elif not isinstance(namespace, str):
        raise TypeError(f"namespace must be str, not {type(namespace).__name__}")
    if not namespace:
        raise ValueError("namespace must be a non-empty str, got ''")
    try:
        namespace.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"namespace must be encodable as UTF-8, got {namespace!r}") from None
    if is_reserved(namespace):
        raise ValueError(
            f"namespace {namespace!r} lies in the library's reserved space (a ':'-segment "
            "starting with '__cc'); choose another namespace"
        )
    return namespace


def _looks_like_cache(obj: object) -> bool:
    return isinstance(obj, TypedCache) or all(
        callable(getattr(obj, m, None)) for m in ("get", "set", "delete")
    )


class Memoized(Generic[P, R]):
    """A memoized function: call it like the original; inspect and manage its cache entries.

    Built by ``memoize``; not meant to be instantiated directly.
    """

    def __init__(
        self,
        func: Callable[P, R],
        *,
        cache: Any,
        ttl: TTL | None,
        namespace: str | None,
        key: Callable[..., object] | None,
        typed: bool,
        serializer: Any,
        generation_interval: float,
        timer: Callable[[], float],
        typed_options: dict[str, Any],
        returns: Any = MISSING,
    ) -> None:
        _check_function(func)
        if ttl is not None:
            ttl_seconds(ttl, None)
        namespace = _namespace(func, namespace)
        if key is not None and not callable(key):
            raise TypeError(f"key must be a callable or None, not {type(key).__name__}")
        if not isinstance(typed, bool):
            raise TypeError(f"typed must be a bool, not {type(typed).__name__}")
        if (
            isinstance(generation_interval, bool)
            or not isinstance(generation_interval, int | float)
            or not 0 <= generation_interval < float("inf")
        ):
            raise ValueError(
                f"generation_interval must be a finite number of seconds >= 0, "
                f"got {generation_interval!r}"
            )
        if not callable(timer):
            raise TypeError(f"timer must be callable, not {type(timer).__name__}")
        _check_cache(cache, serializer, typed_options)
        if returns is not MISSING and isinstance(cache, TypedCache):
            raise TypeError(
                "returns cannot be given with a TypedCache: give the TypedCache its type= "
                "(or pass a byte cache)"
            )
        self._returns = _return_type(func, returns)
        if self._returns is not None and returns is MISSING:
            # From the annotation: a serializer without a typed form keeps results untyped.
            chosen = serializer if serializer is not None else JSONSerializer()
            if not callable(getattr(chosen, "for_type", None)):
                self._returns = None

        self.__wrapped__ = func
        functools.update_wrapper(self, func)
        self._func = func
        self._ttl = ttl
        self._namespace = namespace
        self._key_fn = key
        self._keys: KeyBuilder | None = None
        if key is None:
            try:
                self._keys = KeyBuilder(func, typed=typed)
            except (ValueError, TypeError) as exc:  # some builtins have no signature
                raise TypeError(
                    f"memoize cannot read the signature of {_name(func)} ({exc}); pass key=..."
                ) from exc
        self._typed_keys = typed
        self._serializer = serializer
        self._typed_options = typed_options
        self._lock = threading.Lock()
        self._typed: TypedCache[R] | None = None
        self._byte_cache: Any = None
        self._generation_key = f"{namespace}:gen"
        if isinstance(cache, TypedCache):
            self._set_cache(cache)
        elif cache is not None:
            # Built now so that a bad byte cache or serializer fails at decoration time.
            self._set_cache(self._typed_cache(cache))
        self._generation = _INITIAL_GENERATION
        self._prefix = self._key_prefix(_INITIAL_GENERATION)
        self._interval = float(generation_interval)
        self._timer = timer
        self._generation_due = -float("inf")  # read the token on the first call
        self._hits = Counter()
        self._misses = Counter()
        self._errors = Counter()
        self._memo: dict[tuple[Any, ...], str] = {}
        # Bound once: a hit pays one C-level call to count itself, not a Python method call.
        self._hit = self._hits.incr
        self._miss = self._misses.incr
        self._error = self._errors.incr

    # -- cache resolution -------------------------------------------------------------------

    def _typed_cache(self, byte_cache: Any) -> TypedCache[R]:
        return TypedCache(
            byte_cache,
            serializer=self._serializer,
            type=self._returns,
            name=self._namespace,  # the metrics name (issue 17)
            **self._typed_options,
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

    # -- calls --------------------------------------------------------------------------------

    def _arg_text(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        keys = self._keys
        if keys is not None:
            return keys.text(args, kwargs)
        assert self._key_fn is not None
        return value_text(
            self._key_fn(*args, **kwargs),
            typed=self._typed_keys,
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
            memoized._generation_due = -math.inf

    return watch


class BoundMemoized:
    """A memoized method bound to an instance: ``obj.method``.

    Holds ``obj`` only as long as the caller holds this object (like a bound method); nothing
    in the cache refers to it. ``invalidate`` / ``refresh`` / ``cache_key`` prepend ``obj``.
    """

    __slots__ = ("__func__", "__self__")

    def __init__(self, memoized: Memoized[..., Any], instance: object) -> None:
        self.__func__ = memoized
        self.__self__ = instance

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.__func__(self.__self__, *args, **kwargs)

    def invalidate(self, *args: Any, **kwargs: Any) -> bool:
        return self.__func__.invalidate(self.__self__, *args, **kwargs)

    def refresh(self, *args: Any, **kwargs: Any) -> Any:
        return self.__func__.refresh(self.__self__, *args, **kwargs)

    def cache_key(self, *args: Any, **kwargs: Any) -> str:
        return self.__func__.cache_key(self.__self__, *args, **kwargs)

    def cache_info(self) -> CacheInfo:
        return self.__func__.cache_info()

    def cache_clear(self) -> None:
        self.__func__.cache_clear()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__func__, name)

    def __repr__(self) -> str:
        return f"<bound memoized {self.__func__.namespace} of {type(self.__self__).__name__}>"


@overload
def memoize(cache: Callable[P, R], /) -> Memoized[P, R]: ...


@overload
def memoize(
    cache: Any = None,
    *,
    ttl: TTL | None = None,
    namespace: str | None = None,
    key: Callable[..., object] | None = None,
    typed: bool = False,
    serializer: Any = None,
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


def memoize(
    cache: Any = None,
    *,
    ttl: TTL | None = None,
    namespace: str | None = None,
    key: Callable[..., object] | None = None,
    typed: bool = False,
    serializer: Any = None,
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
    options = {
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

    if cache is not None and not _looks_like_cache(cache):
        if callable(cache) or isinstance(cache, classmethod | staticmethod):
            return _decorate(
                cache,
                None,
                ttl,
                namespace,
                key,
                typed,
                serializer,
                generation_interval,
                timer,
                options,
                returns,
            )  # bare @memoize
        raise TypeError(
            f"memoize's first argument must be a cache, a TypedCache or the function to "
            f"decorate, not {type(cache).__name__}: {cache!r}"
        )
    # Validate the options now: a decorator factory that only fails once applied is a trap.
    _probe_options(ttl, namespace, key, typed)
    _check_cache(cache, serializer, options)

    def decorate(func: Callable[P, R]) -> Any:
        return _decorate(
            func,
            cache,
            ttl,
            namespace,
            key,
            typed,
            serializer,
            generation_interval,
            timer,
            options,
            returns,
        )

    return decorate


def _decorate(
    func: Any,
    cache: Any,
    ttl: TTL | None,
    namespace: str | None,
    key: Callable[..., object] | None,
    typed: bool,
    serializer: Any,
    generation_interval: float,
    timer: Callable[[], float],
    options: dict[str, Any],
    returns: Any = MISSING,
) -> Any:
    if isinstance(func, classmethod | staticmethod):
        # @memoize over @classmethod / @staticmethod: memoize the function, keep the kind.
        inner = _decorate(
            func.__func__,
            cache,
            ttl,
            namespace,
            key,
            typed,
            serializer,
            generation_interval,
            timer,
            options,
            returns,
        )
        return type(func)(inner)
    return Memoized(
        func,
        cache=cache,
        ttl=ttl,
        namespace=namespace,
        key=key,
        typed=typed,
        serializer=serializer,
        generation_interval=generation_interval,
        timer=timer,
        typed_options=options,
        returns=returns,
    )


def _check_cache(cache: object, serializer: object, typed_options: dict[str, Any]) -> None:
    if isinstance(cache, TypedCache):
        if serializer is not None:
            raise TypeError(
                "serializer cannot be given with a TypedCache: it already has one "
                "(pass a byte cache to choose the serializer here)"
            )
        if typed_options:
            raise TypeError(
                f"{', '.join(sorted(typed_options))} cannot be given with a TypedCache: "
                "configure the TypedCache itself"
            )
    elif cache is not None and not _looks_like_cache(cache):
        raise TypeError(f"cache must be a byte cache or a TypedCache, not {type(cache)!r}")
    if serializer is not None and not (
        callable(getattr(serializer, "dumps", None))
        and callable(getattr(serializer, "loads", None))
    ):
        raise TypeError(
            f"serializer must have dumps() and loads(), not {type(serializer).__name__}"
        )
    unsupported = set(typed_options) - _typed_option_names() if typed_options else ()
    if unsupported:
        raise TypeError(
            f"this version of TypedCache does not support {', '.join(sorted(unsupported))}"
        )


def _probe_options(ttl: object, namespace: object, key: object, typed: object) -> None:
    if ttl is not None:
        ttl_seconds(ttl, None)
    if namespace is not None and not isinstance(namespace, str):
        raise TypeError(f"namespace must be str, not {type(namespace).__name__}")
    if key is not None and not callable(key):
        raise TypeError(f"key must be a callable or None, not {type(key).__name__}")
    if not isinstance(typed, bool):
        raise TypeError(f"typed must be a bool, not {type(typed).__name__}")
