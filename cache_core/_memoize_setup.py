"""What ``@memoize`` checks and decides before the first call: the function, its namespace,
its return type, and the rest of its configuration (``MemoizeConfig``), all at decoration time.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import msgspec

from ._codec import TypedCodec
from ._entry_codec import check_serializer
from ._options import ReadThroughOptions
from ._protocols import Cache
from ._serializers import JSONSerializer, Serializer
from ._typed import TypedCache
from ._validate import MISSING, TTL, check_bool, check_callable, is_reserved, ttl_seconds

__all__ = [
    "CacheInfo",
    "MemoizeConfig",
    "check_function",
    "func_name",
    "looks_like_cache",
    "namespace_for",
    "return_type",
]


def names_a_class(hint: Any, depth: int = 0) -> bool:
    """Whether a type hint mentions a user class (dataclass, NamedTuple, Struct, TypedDict, Enum).

    Only those need a type to come back as themselves; everything else round-trips untyped.
    """
    if depth > 20:
        return False
    args = typing.get_args(hint)
    if args:
        return any(names_a_class(a, depth + 1) for a in args)
    if not isinstance(hint, type) or hint.__module__ == "builtins":
        return False
    return (
        dataclasses.is_dataclass(hint)
        or typing.is_typeddict(hint)
        or issubclass(hint, enum.Enum | msgspec.Struct)
        or (issubclass(hint, tuple) and hasattr(hint, "_fields"))
    )


def return_type(func: Callable[..., Any], returns: Any) -> Any:
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
    if not names_a_class(hint):
        # Builtins, datetimes, Any and containers of them: the untyped codec already brings
        # them back exactly (tuples, sets, datetimes inside a dict[str, Any] included).
        return None
    try:
        TypedCodec(hint)
    except TypeError:
        return None
    return hint


def check_function(func: object) -> None:
    if not callable(func):
        raise TypeError(f"memoize needs a callable, not {type(func).__name__}: {func!r}")
    for candidate in {id(func): func, id(inspect.unwrap(func)): inspect.unwrap(func)}.values():
        if inspect.iscoroutinefunction(candidate) or inspect.isasyncgenfunction(candidate):
            raise TypeError(
                f"memoize cannot wrap the async function {func_name(func)}: cache_core is a "
                "synchronous library (the cached value would be a coroutine)"
            )
        if inspect.isgeneratorfunction(candidate):
            raise TypeError(
                f"memoize cannot wrap the generator function {func_name(func)}: a generator is "
                "consumed once; memoize a function that returns a list instead"
            )


def func_name(func: object) -> str:
    return str(getattr(func, "__qualname__", None) or type(func).__name__)


def namespace_for(func: object, namespace: object) -> str:
    """The key namespace: ``namespace`` checked, or ``module:qualname`` when it names one function.

    A qualified name holding ``<locals>`` (a function built by a factory) or ``<lambda>`` is
    shared by every function built the same way, whose results would then be shared too: such
    functions must say what distinguishes them with ``namespace=``.
    """
    if namespace is None:
        qualname = func_name(func)
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


def looks_like_cache(obj: object) -> bool:
    """Whether ``memoize``'s first argument is a cache (else it is the function to decorate)."""
    return isinstance(obj, TypedCache) or all(
        callable(getattr(obj, method, None)) for method in ("get", "set", "delete")
    )


class CacheInfo(NamedTuple):
    """Call counts of one memoized function since it was decorated (exact under threads).

    ``hits``: calls answered without running the function (from the cache, or by waiting for
    a concurrent caller's run of it). ``misses``: calls that ran the function. ``errors``: calls
    that raised (the function's exception, or an error shared from a concurrent run).
    """

    hits: int
    misses: int
    errors: int


@dataclass(frozen=True, slots=True)
class MemoizeConfig:
    """Everything ``memoize(...)`` was given but the function, validated when built.

    ``given``: the read-through options given to ``memoize``, as (name, value) pairs; once
    checked they become ``options`` (None: none given, the TypedCache's own apply).
    """

    cache: Cache | TypedCache[Any] | None = None
    ttl: TTL | None = None
    namespace: str | None = None
    key: Callable[..., object] | None = None
    typed: bool = False
    serializer: Serializer | None = None
    generation_interval: float = 1.0
    timer: Callable[[], float] = time.monotonic
    returns: Any = MISSING
    given: tuple[tuple[str, Any], ...] = ()
    options: ReadThroughOptions | None = dataclasses.field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.ttl is not None:
            ttl_seconds(self.ttl, None)
        if self.namespace is not None and not isinstance(self.namespace, str):
            raise TypeError(f"namespace must be str, not {type(self.namespace).__name__}")
        if self.key is not None and not callable(self.key):
            raise TypeError(f"key must be a callable or None, not {type(self.key).__name__}")
        check_bool(self.typed, "typed")
        interval = self.generation_interval
        if (
            isinstance(interval, bool)
            or not isinstance(interval, int | float)
            or not 0 <= interval < float("inf")
        ):
            raise ValueError(
                f"generation_interval must be a finite number of seconds >= 0, got {interval!r}"
            )
        check_callable(self.timer, "timer")
        self._check_cache()
        if self.given:  # after _check_cache: with a TypedCache, giving them is the error
            object.__setattr__(self, "options", ReadThroughOptions(**dict(self.given)))

    def _check_cache(self) -> None:
        cache, serializer = self.cache, self.serializer
        if isinstance(cache, TypedCache):
            if serializer is not None:
                raise TypeError(
                    "serializer cannot be given with a TypedCache: it already has one "
                    "(pass a byte cache to choose the serializer here)"
                )
            if self.given:
                raise TypeError(
                    f"{', '.join(sorted(name for name, _ in self.given))} cannot be given with a "
                    "TypedCache: configure the TypedCache itself"
                )
            if self.returns is not MISSING:
                raise TypeError(
                    "returns cannot be given with a TypedCache: give the TypedCache its type= "
                    "(or pass a byte cache)"
                )
        elif cache is not None and not looks_like_cache(cache):
            raise TypeError(f"cache must be a byte cache or a TypedCache, not {type(cache)!r}")
        if serializer is not None:
            check_serializer(serializer)

    def result_type(self, func: Callable[..., Any]) -> Any:
        """The type ``func``'s results decode into (None: untyped); see ``return_type``."""
        returns = return_type(func, self.returns)
        if returns is not None and self.returns is MISSING:
            # From the annotation: a serializer without a typed form keeps results untyped.
            chosen = self.serializer if self.serializer is not None else JSONSerializer()
            if not callable(getattr(chosen, "for_type", None)):
                return None
        return returns
