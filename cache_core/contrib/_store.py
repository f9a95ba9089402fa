"""The store behind the framework backends: ``Store`` and its validated ``StoreConfig``.

A ``Store`` is ``TypedCache`` over ``CounterRedisCache`` [+ a ``MemoryCache`` L1] (the value
format is in ``_counter``), plus what the frameworks need beyond it: SET NX, TOUCH and INCRBY in
Lua scripts that also drop the key's fence. Increments that INCRBY cannot do (a pickled value
such as a float, a result past 64 bits) fall back to read, add, compare-and-set in a Lua
script, retried until no other writer intervened.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, cast
from urllib.parse import urlsplit

from redis.cluster import ClusterNode

from .._breaker import CircuitBreaker
from .._envelope import plain_prefix
from .._memory import MemoryCache
from .._multilevel import MultiLevelCache
from .._serializers import Serializer
from .._typed import TypedCache
from .._validate import check_int, ttl_ms
from ..errors import BackendError, CacheMiss, SerializationError
from ._counter import (
    INT64_MAX,
    INT64_MIN,
    CounterRedisCache,
    FrameworkSerializer,
    from_redis,
    to_redis,
)

__all__ = [
    "CounterRedisCache",
    "FrameworkSerializer",
    "Store",
    "StoreConfig",
    "breaker_option",
    "l1_option",
    "original_error",
]

log = logging.getLogger("cache_core")

_CAS_ATTEMPTS: Final = 100

# Every script below takes the key's fence (cache_core._fence) as an optional KEYS[2] and drops
# it whenever it writes, so a read-through load in flight cannot store over the write.

# KEYS[1]; ARGV: delta, create (1/0), px for a created key (0: none). Returns the new integer,
# nil when the key is missing (and create is 0), or {value} when INCRBY cannot apply.
_INCR: Final = """
local v = redis.call('GET', KEYS[1])
if not v then
    if ARGV[2] ~= '1' then return nil end
    if #KEYS > 1 then redis.call('DEL', KEYS[2]) end
    local n = redis.call('INCRBY', KEYS[1], ARGV[1])
    if tonumber(ARGV[3]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
    return n
end
if string.match(v, '^%-?%d+$') then
    local r = redis.pcall('INCRBY', KEYS[1], ARGV[1])
    if type(r) == 'number' then
        if #KEYS > 1 then redis.call('DEL', KEYS[2]) end
        return r
    end
end
return {v}
"""

# KEYS[1]; ARGV: expected current bytes, new bytes. Keeps the key's TTL.
_CAS: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    if #KEYS > 1 then redis.call('DEL', KEYS[2]) end
    redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
    return 1
end
return 0
"""

# KEYS[1]; ARGV[1]: px (> 0), -1 to remove the expiry, 0 to expire now. 1 if the key existed.
_TOUCH: Final = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local px = tonumber(ARGV[1])
if px < 0 then
    redis.call('PERSIST', KEYS[1])
elseif px == 0 then
    if #KEYS > 1 then redis.call('DEL', KEYS[2]) end
    redis.call('DEL', KEYS[1])
else
    redis.call('PEXPIRE', KEYS[1], px)
end
return 1
"""


# KEYS[1]; ARGV: value, px (0: none). SET NX; "OK" if set (and the fence dropped), else nil.
_ADD: Final = """
local px = tonumber(ARGV[2])
local r
if px > 0 then
    r = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', px)
else
    r = redis.call('SET', KEYS[1], ARGV[1], 'NX')
end
if r and #KEYS > 1 then redis.call('DEL', KEYS[2]) end
return r
"""


def original_error(exc: SerializationError) -> BaseException:
    """The exception a serializer wrapped (e.g. ``pickle.PicklingError``), else ``exc``.

    Frameworks promise the pickle module's own errors for unpicklable values.
    """
    cause: BaseException | None = exc
    while isinstance(cause, SerializationError) and cause.__cause__ is not None:
        cause = cause.__cause__
    return cause if cause is not None else exc


@dataclass(frozen=True)
class StoreConfig:
    """Everything a backend needs to build its store, validated once (see ``Store``)."""

    urls: tuple[str, ...]
    namespace: str
    serializer: Serializer
    cluster: bool = False
    client_kwargs: Mapping[str, Any] = field(default_factory=dict)
    l1_maxsize: int = 0
    l1_ttl: float = 5.0
    distributed_lock: bool = True
    lock_timeout: float = 10.0
    breaker: bool = True
    breaker_failure_threshold: int = 5
    breaker_reset_timeout: float = 5.0
    ttl_jitter: float = 0.0

    def __post_init__(self) -> None:
        if not self.urls or not all(isinstance(u, str) and u for u in self.urls):
            raise ValueError(f"at least one Redis URL is needed, got {self.urls!r}")
        if len(self.urls) > 1 and not self.cluster:
            raise ValueError(
                "several Redis URLs are only accepted for a cluster (CLUSTER=True); "
                "read replicas are not used: give one URL"
            )
        if not isinstance(self.namespace, str) or not self.namespace:
            raise ValueError(f"namespace must be a non-empty str, got {self.namespace!r}")
        check_int(self.l1_maxsize, "L1 maxsize", minimum=0)


def l1_option(l1: object, maxsize: str, ttl: str) -> tuple[Any, Any] | None:
    """``(maxsize, ttl)`` of a backend's L1 setting, unconverted: ``(0, 5.0)`` for None or
    False (no L1), the defaults for True, a mapping's items ``maxsize`` and ``ttl`` (the
    backend's spelling of the names); None for any other value."""
    if l1 is True:
        return 10_000, 5.0
    if isinstance(l1, Mapping):
        return l1.get(maxsize, 10_000), l1.get(ttl, 5.0)
    if l1 in (None, False):
        return 0, 5.0
    return None


def breaker_option(breaker: object, threshold: str, reset: str) -> dict[str, Any]:
    """``StoreConfig`` keywords of a backend's breaker setting: True / False, or a mapping of
    its items ``threshold`` and ``reset`` (the backend's spelling of the names)."""
    if isinstance(breaker, Mapping):
        return {
            "breaker": True,
            "breaker_failure_threshold": breaker.get(threshold, 5),
            "breaker_reset_timeout": breaker.get(reset, 5.0),
        }
    return {"breaker": bool(breaker)}


class Store:
    """Framework values over ``CounterRedisCache`` [+ ``MemoryCache`` L1], read-through typed.

    Keys are the framework's final keys (already prefixed and versioned by it); TTLs are
    seconds, None for no expiry, <= 0 for an entry that expires at once (``set`` deletes the
    key, ``add`` stores nothing): each backend maps its own timeout conventions first.
    """

    def __init__(self, config: StoreConfig) -> None:
        breaker = None
        if config.breaker:
            breaker = CircuitBreaker(
                failure_threshold=config.breaker_failure_threshold,
                reset_timeout=config.breaker_reset_timeout,
                name=f"redis {config.namespace}",
            )
        kwargs = dict(config.client_kwargs)
        if config.cluster and len(config.urls) > 1:
            nodes = [urlsplit(u) for u in config.urls[1:]]
            kwargs.setdefault(
                "startup_nodes",
                [
                    ClusterNode(n.hostname or "localhost", n.port or 6379)  # type: ignore[no-untyped-call]
                    for n in nodes
                ],
            )
        self.config = config
        self.redis = cast(
            CounterRedisCache,
            CounterRedisCache.from_url(
                config.urls[0],
                prefix=config.namespace,
                cluster=config.cluster,
                breaker=breaker,
                **kwargs,
            ),
        )
        self.l1: MemoryCache | None = None
        self.bytes: Any = self.redis
        if config.l1_maxsize:
            self.l1 = MemoryCache(maxsize=config.l1_maxsize)
            self.bytes = MultiLevelCache(self.l1, self.redis, l1_ttl=config.l1_ttl)
        self.serializer = FrameworkSerializer(config.serializer)
        self._header = plain_prefix(self.serializer.format_id[0])
        self.typed: TypedCache[Any] = TypedCache(
            self.bytes,
            serializer=self.serializer,
            distributed_lock=config.distributed_lock,
            lock_timeout=config.lock_timeout,
            ttl_jitter=config.ttl_jitter,
        )
        client: Any = self.redis.client
        self._incr = client.register_script(_INCR)
        self._cas = client.register_script(_CAS)
        self._touch = client.register_script(_TOUCH)
        self._add = client.register_script(_ADD)

    # -- encoding ----------------------------------------------------------------------------

    def encode(self, value: Any) -> bytes:
        """The bytes Redis holds for ``value`` (bare digits for an int)."""
        return to_redis(self._header + self.serializer.dumps(value))

    def decode(self, raw: bytes) -> Any:
        """The value of bytes as Redis holds them; SerializationError if they are not one."""
        data = from_redis(raw)
        if data[:4] != self._header:
            raise SerializationError("stored bytes are not a framework value")
        return self.serializer.loads(data[4:])

    def _forget_l1(self, key: str) -> None:
        # This process's L1 copy is out of date after a change made in Redis alone.
        if self.l1 is not None:
            self.l1.delete(key)

    # -- reads -------------------------------------------------------------------------------

    def get(self, key: str, default: Any) -> Any:
        """The value, or ``default`` on a miss or for bytes that cannot be decoded (logged)."""
        try:
            return self.typed.get(key, default)
        except SerializationError as exc:
            log.warning("cache_core: undecodable entry %r read as a miss: %s", key, exc)
            return default

    def get_many(self, keys: list[str]) -> dict[str, Any]:
        return self.typed.mget(keys) if keys else {}

    def has(self, key: str) -> bool:
        return bool(self.bytes.exists(key))

    def get_or_set(self, key: str, fn: Callable[[], Any], ttl: float | None) -> Any:
        """Read-through: one ``fn`` call per key at a time here, and across processes with the
        lease lock (``distributed_lock``); everyone gets the stored value.

        A value that cannot be stored raises (``pickle.PicklingError`` for the frameworks),
        as the frameworks' own ``get_or_set`` does through ``add``; the typed layer alone
        would serve it uncached.
        """

        def load() -> Any:
            value = fn()
            try:
                self.serializer.dumps(value)
            except SerializationError as exc:
                raise original_error(exc) from exc
            return value

        return self.typed.get_or_set(key, load, ttl)

    # -- writes ------------------------------------------------------------------------------

    def set(self, key: str, value: Any, ttl: float | None) -> None:
        """Store ``value``; a ``ttl`` <= 0 (expired at once) stores nothing and deletes the key
        (no older value may stay behind), after checking that ``value`` could be stored."""
        if ttl is not None and ttl <= 0:
            self.encode(value)  # an unstorable value fails here too
            self.delete(key)
            return
        self.typed.set(key, value, ttl)

    def set_many(self, items: Mapping[str, Any], ttl: float | None) -> None:
        """``set`` of every item, in one round trip."""
        if ttl is not None and ttl <= 0:
            for value in items.values():
                self.encode(value)
            self.delete_many(list(items))
            return
        self.typed.mset(items, ttl)

    def set_many_or_warn(self, items: Mapping[str, Any], ttl: float | None) -> bool:
        """``set_many`` for a framework whose ``set_many`` never raises for Redis: False (and
        a warning logged) if Redis failed. An unstorable value raises the serializer's own
        error (``original_error``), as the frameworks promise."""
        try:
            self.set_many(items, ttl)
        except SerializationError as exc:
            raise original_error(exc) from None
        except BackendError as exc:
            log.warning("cache_core: set_many of %d keys failed: %s", len(items), exc)
            return False
        return True

    def _keys(self, key: str) -> list[str]:
        """The value's Redis key and, where it can share the slot, its fence (KEYS[2])."""
        rkey = self.redis.redis_key(key)
        fence = self.redis.redis_fence_key(key)
        return [rkey] if fence is None else [rkey, fence]

    def add(self, key: str, value: Any, ttl: float | None) -> bool:
        """SET NX: True if the key was absent and now holds ``value``. With a ``ttl`` <= 0
        nothing is stored: True if the key was absent (it would have been added)."""
        data = self.encode(value)
        if ttl is not None and ttl <= 0:
            return not self.has(key)
        return self._set_nx(key, data, ttl)

    def _set_nx(self, key: str, data: bytes, ttl: float | None) -> bool:
        """SET NX of encoded bytes (a ``ttl`` <= 0 is the shortest expiry, 1 ms)."""
        px = 0 if ttl is None else ttl_ms(ttl)
        added = self.redis.run("SET NX", self._add, self._keys(key), [data, px])
        if added:
            self._forget_l1(key)
        return bool(added)

    def delete(self, key: str) -> bool:
        return bool(self.bytes.delete(key))

    def delete_many(self, keys: list[str]) -> int:
        return int(self.bytes.mdelete(keys)) if keys else 0

    def clear(self) -> int:
        return int(self.bytes.clear())

    def touch(self, key: str, ttl: float | None) -> bool:
        """New expiry for an existing key: ``ttl`` seconds, None for none, <= 0 to expire now."""
        px = -1 if ttl is None else (0 if ttl <= 0 else ttl_ms(ttl))
        redis = self.redis
        try:
            return bool(redis.run("TOUCH", self._touch, self._keys(key), [px]))
        finally:
            self._forget_l1(key)

    def incr(self, key: str, delta: Any, *, create: bool = False, ttl: float | None = None) -> Any:
        """Add ``delta`` in Redis; ``CacheMiss`` if the key is absent (unless ``create``).

        An int counter takes one INCRBY (atomic). Any other value takes read, ``value + delta``
        (whose TypeError propagates), compare-and-set.
        """
        redis = self.redis
        rkey = redis.redis_key(key)
        try:
            if type(delta) is int and INT64_MIN <= delta <= INT64_MAX:
                px = 0 if ttl is None else ttl_ms(ttl)
                reply = redis.run("INCRBY", self._incr, self._keys(key), [delta, int(create), px])
                if isinstance(reply, int):
                    return reply
                if reply is None:
                    raise CacheMiss(key)
                current: Any = reply[0]
            else:
                current = redis.run("GET", redis.client.get, rkey)
            return self._incr_slow(key, rkey, current, delta, create, ttl)
        finally:
            self._forget_l1(key)

    def _incr_slow(
        self,
        key: str,
        rkey: str,
        current: Any,
        delta: Any,
        create: bool,
        ttl: float | None,
    ) -> Any:
        redis = self.redis
        for _ in range(_CAS_ATTEMPTS):
            if current is None:
                if not create:
                    raise CacheMiss(key)
                if self._set_nx(key, self.encode(delta), ttl):
                    return delta
            else:
                try:
                    value = self.decode(current)
                except SerializationError as exc:
                    raise CacheMiss(key) from exc
                new = value + delta
                if redis.run("CAS", self._cas, self._keys(key), [current, self.encode(new)]):
                    return new
            current = redis.run("GET", redis.client.get, rkey)
        raise BackendError(f"incr of {key!r} lost the compare-and-set {_CAS_ATTEMPTS} times")

    def close(self) -> None:
        """Close the Redis client (the store built it)."""
        self.redis.close()
