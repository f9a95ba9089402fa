"""TypedCache[T]: typed values over any byte cache, with a singleflight read-through."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, NamedTuple, TypeVar

from ._envelope import pack, plain_prefix, serializer_id, unpack
from ._serializers import JSONSerializer, Serializer
from ._singleflight import Singleflight
from ._stats import Counter
from ._validate import MISSING, TTL, check_key, ttl_seconds
from .errors import BackendError, CacheMiss, SerializationError

__all__ = ["TypedCache", "TypedCacheStats"]

T = TypeVar("T")
log = logging.getLogger("cache_core")

_BYTE_CACHE_METHODS = ("get", "set", "delete", "exists", "clear")


class TypedCacheStats(NamedTuple):
    """Counters since the cache was built (each exact under threads)."""

    hits: int
    misses: int
    loads: int
    load_errors: int
    backend_errors: int
    decode_errors: int


class TypedCache(Generic[T]):
    """Typed values over a byte cache: ``get`` / ``set`` / ``get_or_set`` / ``delete`` / ``clear``.

    Values are encoded by ``serializer`` (JSON by default) inside a small envelope, so bytes
    written by something else, by another serializer or by an older layout are detected instead
    of mis-decoded.

    ``get_or_set`` is a read-through: on a miss the loader runs at most once at a time per key in
    this process (concurrent callers wait and share its result or its exception), and the value
    is stored before the waiters are released. Undecodable stored bytes count as a miss and are
    repaired. When the cache backend fails, ``get_or_set`` still answers from the loader (inside
    the same singleflight, so an outage does not become a database stampede).
    """

    def __init__(self, cache: Any, *, serializer: Serializer | None = None) -> None:
        missing = [m for m in _BYTE_CACHE_METHODS if not callable(getattr(cache, m, None))]
        if missing:
            raise TypeError(
                f"cache must be a byte cache (Cache protocol), "
                f"{type(cache).__name__} lacks {', '.join(missing)}"
            )
        if serializer is None:
            serializer = JSONSerializer()
        elif not (
            callable(getattr(serializer, "dumps", None))
            and callable(getattr(serializer, "loads", None))
        ):
            raise TypeError(
                f"serializer must have dumps() and loads(), not {type(serializer).__name__}"
            )
        self._cache = cache
        self._serializer = serializer
        self._dumps = serializer.dumps
        self._loads = serializer.loads
        self._fid = serializer_id(serializer)
        self._prefix = plain_prefix(self._fid)
        self._flight = Singleflight()
        self._hits = Counter()
        self._misses = Counter()
        self._loads_run = Counter()
        self._load_errors = Counter()
        self._backend_errors = Counter()
        self._decode_errors = Counter()

    @property
    def cache(self) -> Any:
        """The byte cache underneath."""
        return self._cache

    @property
    def serializer(self) -> Serializer:
        return self._serializer

    def stats(self) -> TypedCacheStats:
        return TypedCacheStats(
            self._hits.value,
            self._misses.value,
            self._loads_run.value,
            self._load_errors.value,
            self._backend_errors.value,
            self._decode_errors.value,
        )

    def __repr__(self) -> str:
        return f"TypedCache({self._cache!r}, serializer={type(self._serializer).__name__})"

    # -- encoding ----------------------------------------------------------------------------

    def _encode(self, key: str, value: object) -> bytes:
        try:
            payload = self._dumps(value)
        except SerializationError as exc:
            raise SerializationError(f"cannot encode the value for key {key!r}: {exc}") from exc
        return pack(self._fid, payload)

    def _decode(self, data: bytes) -> Any:
        # Fast path: the plain envelope is a 4-byte prefix check and one slice.
        if data[:4] == self._prefix:
            return self._loads(data[4:])
        entry = unpack(data, self._fid)
        if entry.tombstone:
            raise SerializationError("stored value is a tombstone, not a value")
        return self._loads(entry.payload)

    # -- public API --------------------------------------------------------------------------

    def get(self, key: str, default: Any = MISSING) -> Any:
        """Return the value; ``CacheMiss`` on a miss unless ``default`` is given.

        Stored bytes that cannot be decoded raise ``SerializationError`` (``get_or_set``
        repairs them instead).
        """
        data = self._cache.get(key, None)
        if data is None:
            self._misses.incr()
            if default is MISSING:
                raise CacheMiss(key)
            return default
        self._hits.incr()
        return self._decode(data)

    def set(self, key: str, value: T, ttl: TTL | None = None) -> None:
        check_key(key)
        ttl_seconds(ttl, None)
        self._cache.set(key, self._encode(key, value), ttl)

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
                self._decode_errors.incr()
                log.warning("cache_core: undecodable entry %r skipped: %s", key, exc)
        return found

    def mset(self, items: Mapping[str, T], ttl: TTL | None = None) -> None:
        if not isinstance(items, Mapping):
            raise TypeError(f"items must be a Mapping[str, T], not {type(items).__name__}")
        ttl_seconds(ttl, None)
        encoded = {check_key(k): self._encode(k, v) for k, v in items.items()}
        self._cache.mset(encoded, ttl)

    def get_or_set(self, key: str, fn: Callable[[], T], ttl: TTL | None = None) -> T:
        """Return the cached value, or load it with ``fn`` (once per key at a time) and store it."""
        if type(key) is not str or not key:
            check_key(key)
        if not callable(fn):
            raise TypeError(f"fn must be callable, not {type(fn).__name__}")
        if ttl is not None:
            ttl_seconds(ttl, None)
        data = self._read(key)
        if data is not None:
            try:
                value = self._decode(data)
            except SerializationError as exc:
                self._decode_errors.incr()
                log.warning("cache_core: undecodable entry %r will be reloaded: %s", key, exc)
            else:
                self._hits.incr()
                return value  # type: ignore[no-any-return]
        self._misses.incr()
        return self._load(key, fn, ttl)

    # -- read-through internals ----------------------------------------------------------------

    def _read(self, key: str) -> bytes | None:
        """A cache read for get_or_set: a backend failure is a miss, never the caller's error."""
        try:
            data = self._cache.get(key, None)
        except BackendError as exc:
            self._backend_errors.incr()
            log.debug("cache_core: read of %r failed, loading instead: %s", key, exc)
            return None
        return data  # type: ignore[no-any-return]

    def _load(self, key: str, fn: Callable[[], T], ttl: TTL | None) -> T:
        def flight() -> tuple[Any, bytes | None, int]:
            # A caller that missed just before the previous flight stored its value finds it
            # here instead of running the loader a second time.
            data = self._read(key)
            if data is not None:
                try:
                    return self._decode(data), data, threading.get_ident()
                except SerializationError:
                    pass
            try:
                value = fn()
            except BaseException:
                self._load_errors.incr()
                raise
            self._loads_run.incr()
            encoded = self._encode(key, value)
            try:
                self._cache.set(key, encoded, ttl)
            except BackendError as exc:
                self._backend_errors.incr()
                log.debug("cache_core: store of %r failed; value served uncached: %s", key, exc)
            return value, encoded, threading.get_ident()

        (value, encoded, runner), _shared = self._flight.do(key, flight)
        if runner != threading.get_ident() and encoded is not None:
            # Waiters get their own decoded copy: no mutable object is shared between requests.
            return self._decode(encoded)  # type: ignore[no-any-return]
        return value  # type: ignore[no-any-return]
