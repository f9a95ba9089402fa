"""A Flask-Caching backend on cache_core: ``CACHE_TYPE = "cache_core.contrib.flask.RedisCache"``.

::

    app.config.update(
        SECRET_KEY="...",                       # signs the pickled values (or signing_key below)
        CACHE_TYPE="cache_core.contrib.flask.RedisCache",
        CACHE_REDIS_URL="redis://127.0.0.1:6379/0",
        CACHE_KEY_PREFIX="myapp",               # the Redis namespace; clear() removes only it
        CACHE_DEFAULT_TIMEOUT=300,
        CACHE_OPTIONS={"l1": {"maxsize": 10_000, "ttl": 5}},
    )
    cache = Cache(app)

It implements Flask-Caching's ``BaseCache`` (cachelib's contract): ``get`` returns None on a
miss, ``set``/``add``/``delete`` return booleans, ``get_many(*keys)`` a list, ``set_many`` the
keys it stored, ``delete_many(*keys)`` the keys deleted, ``inc``/``dec`` the new value (a
missing key starts from 0), ``clear`` a bool. A timeout of ``0`` means never expire, ``None``
the default timeout, a negative one expires the entry at once. ``@cache.cached`` and
``@cache.memoize`` work on it unchanged; ``get_or_set`` is an addition (singleflight plus the
cross-process lease: one call of the loader per cold key).

Values are pickled and signed with HMAC-SHA256 under a key derived from the app's
``SECRET_KEY`` (or ``CACHE_OPTIONS["signing_key"]``): bytes written into Redis by anyone else
are never unpickled. Ints are Redis integers, so ``inc``/``dec`` are one atomic INCRBY.
Backend failures do not raise from ``get``/``set``/``add``/``set_many``/``inc``: they answer
None / False as the contract says, and are logged (a circuit breaker keeps them fast).

``CACHE_OPTIONS`` (keyword arguments of ``RedisCache``): ``cluster``, ``l1`` (None, True or
``{"maxsize": ..., "ttl": ...}``), ``distributed_lock`` (True), ``lock_timeout`` (10 s),
``breaker`` (True, False or ``{"failure_threshold": 5, "reset_timeout": 5.0}``),
``serializer`` (a cache_core Serializer for non-int values), ``signing_key``,
``client_kwargs`` (for redis-py).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import math
from collections.abc import Callable, Mapping
from typing import Any, Final

from flask import Flask
from flask_caching.backends.base import BaseCache

from .._serializers import PickleSerializer, Serializer
from ..errors import BackendError, CacheMiss, SerializationError
from ._store import Store, StoreConfig, breaker_option, l1_option, original_error

__all__ = ["RedisCache", "signing_key"]

log = logging.getLogger("cache_core")

_SIGNING_SALT: Final = b"cache_core.contrib.flask.RedisCache"


def signing_key(secret: str | bytes) -> bytes:
    """The key that signs pickled values: HMAC-SHA256 of a fixed salt under the app secret."""
    if isinstance(secret, str):
        secret = secret.encode("utf-8")
    if not secret:
        raise ValueError(
            "cache_core.contrib.flask.RedisCache signs pickled values: set the app's SECRET_KEY "
            "or CACHE_OPTIONS['signing_key']"
        )
    return hmac.new(secret, _SIGNING_SALT, hashlib.sha256).digest()


class RedisCache(BaseCache):
    """Flask-Caching backend on cache_core (see the module docstring)."""

    def __init__(
        self,
        url: str = "redis://localhost:6379/0",
        *,
        signing_key: bytes | str | None = None,
        key_prefix: str = "flask_cache_",
        default_timeout: int | float | dt.timedelta = 300,
        ignore_delete_many_errors: bool = False,
        cluster: bool = False,
        l1: bool | Mapping[str, Any] | None = None,
        distributed_lock: bool = True,
        lock_timeout: float = 10.0,
        breaker: bool | Mapping[str, Any] = True,
        serializer: Serializer | None = None,
        client_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        self._default_seconds = self._seconds(default_timeout, "default_timeout")
        super().__init__(
            default_timeout=math.ceil(self._default_seconds),
            ignore_delete_many_errors=ignore_delete_many_errors,
        )
        if serializer is None:
            if signing_key is None:
                raise ValueError(
                    "signing_key is required to sign pickled values (the factory derives one "
                    "from the app's SECRET_KEY), or pass serializer="
                )
            serializer = PickleSerializer(signing_key)
        l1_maxsize, l1_ttl = l1_option(l1, "maxsize", "ttl") or (0, 5.0)
        l1_maxsize, l1_ttl = int(l1_maxsize), float(l1_ttl)
        self.key_prefix = key_prefix
        self._store = Store(
            StoreConfig(
                urls=(url,),
                namespace=key_prefix or "flask_cache",
                serializer=serializer,
                cluster=cluster,
                client_kwargs=dict(client_kwargs or {}),
                l1_maxsize=l1_maxsize,
                l1_ttl=l1_ttl,
                distributed_lock=distributed_lock,
                lock_timeout=lock_timeout,
                **breaker_option(breaker, "failure_threshold", "reset_timeout"),
            )
        )

    @classmethod
    def factory(
        cls, app: Flask, config: dict[str, Any], args: list[Any], kwargs: dict[str, Any]
    ) -> RedisCache:
        """Build from the app config, as Flask-Caching does for ``CACHE_TYPE``.

        ``CACHE_REDIS_URL`` (else ``CACHE_REDIS_HOST``/``PORT``/``DB``/``PASSWORD``),
        ``CACHE_KEY_PREFIX``, ``CACHE_DEFAULT_TIMEOUT``, ``CACHE_OPTIONS``; the signing key is
        derived from ``SECRET_KEY`` unless ``CACHE_OPTIONS`` names one.
        """
        url = config.get("CACHE_REDIS_URL")
        if not url:
            password = config.get("CACHE_REDIS_PASSWORD")
            auth = f":{password}@" if password else ""
            host = config.get("CACHE_REDIS_HOST", "localhost")
            port = config.get("CACHE_REDIS_PORT", 6379)
            url = f"redis://{auth}{host}:{port}/{config.get('CACHE_REDIS_DB', 0)}"
        options = dict(kwargs)
        if options.get("signing_key") is None and options.get("serializer") is None:
            options["signing_key"] = signing_key(config.get("SECRET_KEY") or app.secret_key or "")
        prefix = config.get("CACHE_KEY_PREFIX")
        if prefix is not None:
            options.setdefault("key_prefix", prefix)
        return cls(url, *args, **options)

    @property
    def store(self) -> Store:
        return self._store

    # -- timeouts ----------------------------------------------------------------------------

    @staticmethod
    def _seconds(timeout: Any, name: str = "timeout") -> float:
        if isinstance(timeout, dt.timedelta):
            return timeout.total_seconds()
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise TypeError(f"{name} must be a number of seconds or a timedelta, not {timeout!r}")
        if math.isnan(timeout):
            raise ValueError(f"{name} must be a number, got NaN")
        return float(timeout)

    def _ttl(self, timeout: Any) -> float | None:
        """Seconds for the store: None = never expire (timeout 0); <= 0 = expired already."""
        seconds = self._default_seconds if timeout is None else self._seconds(timeout)
        if seconds == 0:
            return None
        return seconds if seconds > 0 else -1.0

    # -- the contract ------------------------------------------------------------------------

    def get(self, key: str) -> Any:
        try:
            return self._store.get(key, None)
        except BackendError as exc:
            log.warning("cache_core: get of %r failed: %s", key, exc)
            return None

    def get_many(self, *keys: str) -> list[Any]:
        if not keys:
            return []
        try:
            found = self._store.get_many(list(keys))
        except BackendError as exc:
            log.warning("cache_core: get_many of %d keys failed: %s", len(keys), exc)
            return [None] * len(keys)
        return [found.get(k) for k in keys]

    def has(self, key: str) -> bool:
        try:
            return self._store.has(key)
        except BackendError as exc:
            log.warning("cache_core: has of %r failed: %s", key, exc)
            return False

    def set(self, key: str, value: Any, timeout: Any = None) -> bool:
        ttl = self._ttl(timeout)
        try:
            self._store.set(key, value, ttl)  # expired: not stored, the key deleted
        except SerializationError as exc:
            raise original_error(exc) from None
        except BackendError as exc:
            log.warning("cache_core: set of %r failed: %s", key, exc)
            return False
        return True

    def add(self, key: str, value: Any, timeout: Any = None) -> bool:
        ttl = self._ttl(timeout)
        try:
            return self._store.add(key, value, ttl)
        except SerializationError as exc:
            raise original_error(exc) from None
        except BackendError as exc:
            log.warning("cache_core: add of %r failed: %s", key, exc)
            return False

    def set_many(self, mapping: Mapping[str, Any], timeout: Any = None) -> list[Any]:
        """Store every item in one round trip; returns the keys stored (all, or none)."""
        if not mapping:
            return []
        stored = self._store.set_many_or_warn(mapping, self._ttl(timeout))
        return list(mapping) if stored else []

    def delete(self, key: str) -> bool:
        return self._store.delete(key)

    def delete_many(self, *keys: str) -> list[Any]:
        """Delete in one round trip; returns the keys now absent (all, when Redis answered)."""
        if not keys:
            return []
        try:
            self._store.delete_many(list(keys))
        except BackendError as exc:
            if not self.ignore_delete_many_errors:
                raise RuntimeError(f"Failed to delete keys: {list(keys)}") from exc
            log.warning("cache_core: delete_many of %d keys failed: %s", len(keys), exc)
            return []
        return list(keys)

    def clear(self) -> bool:
        """Remove this cache's namespace (``key_prefix``) only."""
        self._store.clear()
        return True

    def inc(self, key: str, delta: int = 1) -> Any:
        """Add ``delta`` atomically (INCRBY); a missing key starts from 0 with the default
        timeout. None if Redis failed."""
        try:
            return self._store.incr(key, delta, create=True, ttl=self._ttl(None))
        except BackendError as exc:
            log.warning("cache_core: inc of %r failed: %s", key, exc)
            return None
        except CacheMiss:  # an entry that is not a value of this cache: start over
            self._store.delete(key)
            return self._store.incr(key, delta, create=True, ttl=self._ttl(None))

    def dec(self, key: str, delta: int = 1) -> Any:
        return self.inc(key, -delta)

    def get_or_set(self, key: str, fn: Callable[[], Any], timeout: Any = None) -> Any:
        """The cached value, or ``fn()`` stored: one ``fn`` call per key at a time in this
        process, and across processes with ``distributed_lock`` (the default)."""
        ttl = self._ttl(timeout)
        if ttl is not None and ttl < 0:
            return fn()
        try:
            return self._store.get_or_set(key, fn, ttl)
        except SerializationError as exc:
            raise original_error(exc) from None

    def close(self) -> None:
        """Close the Redis client this backend built."""
        self._store.close()
