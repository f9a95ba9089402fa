"""A Django cache backend on cache_core: ``BaseCache``'s whole contract, on Redis or a Cluster.

::

    CACHES = {
        "default": {
            "BACKEND": "cache_core.contrib.django.RedisCache",
            "LOCATION": "redis://127.0.0.1:6379/0",
            "KEY_PREFIX": "myapp",
            "OPTIONS": {"L1": {"MAXSIZE": 10_000, "TTL": 5}},
        }
    }

What it adds to Django's own ``django.core.cache.backends.redis.RedisCache``:

* ``get_or_set`` is a protected read-through (``TypedCache``): one call of the default per key
  at a time in the process, and with ``DISTRIBUTED_LOCK`` (on by default) across processes;
  the value is stored before the waiters are released.
* ``clear()`` removes this cache's namespace only (SCAN + UNLINK), never FLUSHDB.
* values are pickled **and signed** (HMAC-SHA256, key derived from ``SECRET_KEY``): bytes that
  someone else wrote into Redis are never unpickled. Rotating ``SECRET_KEY`` turns the old
  entries into misses.
* ints are stored as Redis integers, so ``incr``/``decr`` are one atomic INCRBY;
* an optional in-process L1, a circuit breaker, short client timeouts.

Django builds one backend object per thread; they all share one store (client, L1,
singleflight, breaker) per configuration, so the protections span the whole process.

OPTIONS (upper case: this backend; lower case: keyword arguments for the redis-py client,
e.g. ``"socket_timeout": 0.5``, as with Django's own backend):

``NAMESPACE``      Redis prefix of every key, and what ``clear()`` removes (default: KEY_PREFIX,
                   or ``"django"`` when that is empty). Redis keys read ``NAMESPACE:<key>``,
                   where ``<key>`` is what ``KEY_FUNCTION`` made.
``CLUSTER``        True: LOCATION names Redis Cluster nodes (one is enough).
``L1``             None (default), True, or ``{"MAXSIZE": 10_000, "TTL": 5.0}``: an in-process
                   cache in front of Redis, invalidated by every write to the prefix (Redis
                   key tracking); TTL bounds staleness only if that fails.
``DISTRIBUTED_LOCK`` (True), ``LOCK_TIMEOUT`` (10 s): the cross-process lease of get_or_set.
``BREAKER``        True (default), False, or ``{"FAILURE_THRESHOLD": 5, "RESET_TIMEOUT": 1.0}``.
``SERIALIZER``     a cache_core ``Serializer`` (instance, class or dotted path) for values other
                   than ints; default ``PickleSerializer(key derived from SECRET_KEY)``.
``SIGNING_KEY``    the PickleSerializer key, instead of one derived from ``SECRET_KEY``.
``TTL_JITTER``     fraction by which TTLs are randomly shortened (default 0: exact timeouts).

Timeouts follow Django: ``None`` never expires, ``0`` (or less) does not cache (``set`` deletes
the key, ``add`` stores nothing and answers whether the key was absent), ``DEFAULT_TIMEOUT``
is the cache's ``TIMEOUT``; sub-second timeouts are honoured.

``set_many`` returns the keys that were not stored: all of them when Redis could not be
reached (the error is logged); other operations raise ``cache_core.BackendError``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache
from django.core.exceptions import ImproperlyConfigured
from django.utils.crypto import salted_hmac
from django.utils.module_loading import import_string

from .._serializers import PickleSerializer, Serializer
from ..errors import CacheMiss, SerializationError
from ._store import Store, StoreConfig, breaker_option, l1_option, original_error

__all__ = ["RedisCache", "signing_key"]

_OPTION_NAMES: Final = frozenset(
    {
        "NAMESPACE",
        "CLUSTER",
        "L1",
        "DISTRIBUTED_LOCK",
        "LOCK_TIMEOUT",
        "BREAKER",
        "SERIALIZER",
        "SIGNING_KEY",
        "TTL_JITTER",
        # read by Django's BaseCache for its local backends; meaningless for Redis
        "MAX_ENTRIES",
        "CULL_FREQUENCY",
    }
)
_ABSENT: Final = object()
_SIGNING_SALT: Final = "cache_core.contrib.django.RedisCache"

_stores: dict[tuple[Any, ...], Store] = {}
_stores_lock = threading.Lock()


def signing_key(secret: str | bytes | None = None) -> bytes:
    """The key that signs pickled values: an HMAC of a fixed salt under ``SECRET_KEY``.

    Derived rather than ``SECRET_KEY`` itself, so the cache never holds the site's secret.
    """
    secret = settings.SECRET_KEY if secret is None else secret
    if not secret:
        raise ImproperlyConfigured(
            "cache_core.contrib.django.RedisCache signs pickled values with a key derived from "
            "SECRET_KEY, which is empty; set SECRET_KEY or OPTIONS['SIGNING_KEY']"
        )
    digest: bytes = salted_hmac(
        _SIGNING_SALT, "PickleSerializer", secret=secret, algorithm="sha256"
    ).digest()
    return digest


def _urls(server: Any) -> tuple[str, ...]:
    if isinstance(server, str):
        return tuple(u.strip() for u in re.split("[;,]", server) if u.strip())
    if isinstance(server, Iterable):
        return tuple(str(u) for u in server)
    raise ImproperlyConfigured(f"LOCATION must be a Redis URL or a list of them, not {server!r}")


def _serializer(options: Mapping[str, Any]) -> Serializer:
    chosen = options.get("SERIALIZER")
    if chosen is None:
        return PickleSerializer(options.get("SIGNING_KEY") or signing_key())
    if isinstance(chosen, str):
        chosen = import_string(chosen)
    if isinstance(chosen, type):
        chosen = chosen()
    if not isinstance(chosen, Serializer):
        raise ImproperlyConfigured(f"OPTIONS['SERIALIZER'] is not a Serializer: {chosen!r}")
    return chosen


def _config(server: Any, key_prefix: str, options: Mapping[str, Any]) -> StoreConfig:
    unknown = sorted(k for k in options if k.isupper() and k not in _OPTION_NAMES)
    if unknown:
        raise ImproperlyConfigured(
            f"unknown OPTIONS for cache_core.contrib.django.RedisCache: {', '.join(unknown)} "
            f"(known: {', '.join(sorted(_OPTION_NAMES))}; lower-case names go to redis-py)"
        )
    l1 = l1_option(options.get("L1"), "MAXSIZE", "TTL")
    if l1 is None:
        raise ImproperlyConfigured(
            f"OPTIONS['L1'] must be None, a bool or a dict, not {options.get('L1')!r}"
        )
    l1_maxsize, l1_ttl = l1[0], float(l1[1])
    breaker = breaker_option(options.get("BREAKER", True), "FAILURE_THRESHOLD", "RESET_TIMEOUT")
    try:
        return StoreConfig(
            urls=_urls(server),
            namespace=options.get("NAMESPACE") or key_prefix or "django",
            serializer=_serializer(options),
            cluster=bool(options.get("CLUSTER", False)),
            client_kwargs={k: v for k, v in options.items() if not k.isupper()},
            l1_maxsize=l1_maxsize,
            l1_ttl=l1_ttl,
            distributed_lock=bool(options.get("DISTRIBUTED_LOCK", True)),
            lock_timeout=float(options.get("LOCK_TIMEOUT", 10.0)),
            ttl_jitter=float(options.get("TTL_JITTER", 0.0)),
            **breaker,
        )
    except (TypeError, ValueError) as exc:
        raise ImproperlyConfigured(f"cache_core.contrib.django.RedisCache: {exc}") from exc


def _frozen(value: Any) -> Any:
    """A hashable stand-in for a setting: plain data by value, any other object by identity.

    Objects in settings (a serializer instance) live as long as the process, and two of them
    with equal reprs may still differ (a PickleSerializer hides its key).
    """
    if value is None or isinstance(value, str | bytes | int | float | bool):
        return value
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _frozen(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_frozen(v) for v in value)
    return ("object", id(value))


def _shared_store(server: Any, key_prefix: str, options: Mapping[str, Any]) -> Store:
    """One store per configuration, shared by the per-thread backend objects Django builds."""
    derived = None
    if options.get("SERIALIZER") is None and not options.get("SIGNING_KEY"):
        derived = signing_key()  # a changed SECRET_KEY is another configuration
    ident = (_frozen(server), key_prefix, _frozen(options), derived)
    store = _stores.get(ident)
    if store is None:
        with _stores_lock:
            store = _stores.get(ident)
            if store is None:
                store = _stores[ident] = Store(_config(server, key_prefix, options))
    return store


class RedisCache(BaseCache):  # type: ignore[misc]  # django ships no type information
    """Django ``BaseCache`` on cache_core (see the module docstring for LOCATION and OPTIONS)."""

    def __init__(self, server: Any, params: dict[str, Any]) -> None:
        super().__init__(params)
        self._store = _shared_store(server, self.key_prefix, params.get("OPTIONS", {}))

    @property
    def store(self) -> Store:
        """The shared store (its ``typed``, ``redis``, ``l1`` and ``bytes`` caches)."""
        return self._store

    def get_backend_timeout(self, timeout: Any = DEFAULT_TIMEOUT) -> float | None:
        """Seconds to keep an entry: None = forever, 0 = do not store (negatives become 0)."""
        if timeout is DEFAULT_TIMEOUT:
            timeout = self.default_timeout
        if timeout is None:
            return None
        return max(0.0, float(timeout))

    # -- reads -------------------------------------------------------------------------------

    def get(self, key: Any, default: Any = None, version: Any = None) -> Any:
        return self._store.get(self.make_and_validate_key(key, version=version), default)

    def get_many(self, keys: Iterable[Any], version: Any = None) -> dict[Any, Any]:
        key_map = {self.make_and_validate_key(key, version=version): key for key in keys}
        found = self._store.get_many(list(key_map))
        return {key_map[k]: v for k, v in found.items()}

    def has_key(self, key: Any, version: Any = None) -> bool:
        return self._store.has(self.make_and_validate_key(key, version=version))

    def get_or_set(
        self, key: Any, default: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None
    ) -> Any:
        """The cached value, or ``default`` (called if callable) stored and returned.

        A miss runs ``default`` once per key at a time in this process (and across processes
        with DISTRIBUTED_LOCK): concurrent callers wait for its value instead of running it.
        """
        rkey = self.make_and_validate_key(key, version=version)
        fn: Callable[[], Any] = default if callable(default) else (lambda: default)
        ttl = self.get_backend_timeout(timeout)
        if ttl is not None and ttl <= 0:  # not cached: a hit still counts, a miss is computed
            value = self._store.get(rkey, _ABSENT)
            return fn() if value is _ABSENT else value
        try:
            return self._store.get_or_set(rkey, fn, ttl)
        except SerializationError as exc:
            raise original_error(exc) from None

    # -- writes ------------------------------------------------------------------------------

    def set(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None
    ) -> None:
        rkey = self.make_and_validate_key(key, version=version)
        ttl = self.get_backend_timeout(timeout)
        try:
            self._store.set(rkey, value, ttl)  # <= 0: not cached, the key deleted
        except SerializationError as exc:
            raise original_error(exc) from None

    def add(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None
    ) -> bool:
        rkey = self.make_and_validate_key(key, version=version)
        ttl = self.get_backend_timeout(timeout)
        try:
            return self._store.add(rkey, value, ttl)  # <= 0: whether it would have been added
        except SerializationError as exc:
            raise original_error(exc) from None

    def set_many(
        self, data: Mapping[Any, Any], timeout: Any = DEFAULT_TIMEOUT, version: Any = None
    ) -> list[Any]:
        """Store every item in one round trip; returns the keys that were not stored."""
        if not data:
            return []
        safe = {
            self.make_and_validate_key(key, version=version): value for key, value in data.items()
        }
        stored = self._store.set_many_or_warn(safe, self.get_backend_timeout(timeout))
        return [] if stored else list(data)

    def touch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None) -> bool:
        rkey = self.make_and_validate_key(key, version=version)
        return self._store.touch(rkey, self.get_backend_timeout(timeout))

    def delete(self, key: Any, version: Any = None) -> bool:
        return self._store.delete(self.make_and_validate_key(key, version=version))

    def delete_many(self, keys: Iterable[Any], version: Any = None) -> None:
        safe = [self.make_and_validate_key(key, version=version) for key in keys]
        if safe:
            self._store.delete_many(safe)

    def incr(self, key: Any, delta: int = 1, version: Any = None) -> Any:
        """Add ``delta`` atomically in Redis (INCRBY); ValueError if the key is missing."""
        rkey = self.make_and_validate_key(key, version=version)
        try:
            return self._store.incr(rkey, delta)
        except CacheMiss:
            raise ValueError(f"Key '{key}' not found") from None
        except SerializationError as exc:
            raise original_error(exc) from None

    def clear(self) -> None:
        """Remove this cache's namespace (SCAN + UNLINK); nothing else in the database."""
        self._store.clear()

    def close(self, **kwargs: Any) -> None:
        """Nothing to do per request: the pooled connections are shared and stay open."""

    # -- async: the specialised sync methods, in a worker thread ------------------------------

    async def aget_many(self, keys: Iterable[Any], version: Any = None) -> dict[Any, Any]:
        return await sync_to_async(self.get_many, thread_sensitive=True)(list(keys), version)

    async def aset_many(
        self, data: Mapping[Any, Any], timeout: Any = DEFAULT_TIMEOUT, version: Any = None
    ) -> list[Any]:
        return await sync_to_async(self.set_many, thread_sensitive=True)(data, timeout, version)

    async def adelete_many(self, keys: Iterable[Any], version: Any = None) -> None:
        await sync_to_async(self.delete_many, thread_sensitive=True)(list(keys), version)

    async def aget_or_set(
        self, key: Any, default: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None
    ) -> Any:
        return await sync_to_async(self.get_or_set, thread_sensitive=True)(
            key, default, timeout, version
        )

    async def ahas_key(self, key: Any, version: Any = None) -> bool:
        return await sync_to_async(self.has_key, thread_sensitive=True)(key, version)

    async def aincr(self, key: Any, delta: int = 1, version: Any = None) -> Any:
        return await sync_to_async(self.incr, thread_sensitive=True)(key, delta, version)
