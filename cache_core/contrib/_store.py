"""The store behind the framework backends: any picklable value, counters as raw integers.

What a framework key holds in Redis (under the namespace, a ``RedisCache`` prefix)::

    b"7", b"-42"            a Python ``int`` in the signed 64-bit range, as ASCII decimal, so
                            INCRBY updates it in place: incr/decr are one atomic command
    0xCC 0x01 0x00 'F' ...  any other value: the typed layer's envelope (serializer id 'F')
                            around b"o" + the inner serializer's bytes (signed pickle by default)

``TypedCache`` (which runs ``get_or_set`` with the singleflight and the lease lock) only knows
the envelope form, in which an int is b"i" + its digits. ``CounterRedisCache`` translates at
the Redis boundary: that envelope goes to Redis as the bare digits, and bare digits come back
as that envelope. A value stored by ``get_or_set`` can therefore be incremented, and a counter
can be read by ``get_or_set``. An L1 (``MultiLevelCache``) holds envelopes, never bare digits.

Increments that INCRBY cannot do (a pickled value such as a float, a result past 64 bits) fall
back to read, add, compare-and-set in a Lua script, retried until no other writer intervened.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, cast
from urllib.parse import urlsplit

from redis.cluster import ClusterNode

from .._breaker import CircuitBreaker
from .._envelope import plain_prefix
from .._memory import MemoryCache
from .._multilevel import MultiLevelCache
from .._redis import RedisCache
from .._serializers import Serializer
from .._typed import TypedCache
from .._validate import MISSING, TTL, check_value, ttl_ms
from ..errors import BackendError, CacheMiss, SerializationError

__all__ = ["CounterRedisCache", "FrameworkSerializer", "Store", "StoreConfig", "original_error"]

log = logging.getLogger("cache_core")

_INT_TAG: Final = b"i"
_OBJ_TAG: Final = b"o"
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_DIGITS: Final = re.compile(rb"-?[0-9]{1,19}")
_MAGIC: Final = b"\xcc"
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


class FrameworkSerializer:
    """Ints as decimal digits (b"i" + digits), everything else b"o" + ``inner``'s bytes.

    Digits are parsed with ``int()`` after a strict pattern check, never unpickled: a raw
    counter in Redis needs no signature to be safe to read.
    """

    format_id = b"F"

    def __init__(self, inner: Serializer) -> None:
        if not (
            callable(getattr(inner, "dumps", None)) and callable(getattr(inner, "loads", None))
        ):
            raise TypeError(f"serializer must have dumps() and loads(), not {type(inner).__name__}")
        self.inner = inner
        self._dumps = inner.dumps
        self._loads = inner.loads

    def __repr__(self) -> str:
        return f"FrameworkSerializer({self.inner!r})"

    def dumps(self, obj: Any) -> bytes:
        if type(obj) is int and _INT64_MIN <= obj <= _INT64_MAX:
            return _INT_TAG + str(obj).encode("ascii")
        return _OBJ_TAG + self._dumps(obj)

    def loads(self, data: bytes) -> Any:
        tag = data[:1]
        if tag == _OBJ_TAG:
            return self._loads(data[1:])
        if tag == _INT_TAG:
            digits = bytes(data[1:])
            if _DIGITS.fullmatch(digits):
                return int(digits)
            raise SerializationError(f"stored counter is not a decimal integer: {digits[:40]!r}")
        raise SerializationError(f"unknown framework value tag {tag!r}")


#: The envelope of an int (TypedCache's plain header for serializer 'F', then the int tag).
_INT_HEADER: Final = plain_prefix(FrameworkSerializer.format_id[0]) + _INT_TAG
_INT_HEADER_LEN: Final = len(_INT_HEADER)


def _to_redis(data: bytes) -> bytes:
    return data[_INT_HEADER_LEN:] if data[:_INT_HEADER_LEN] == _INT_HEADER else data


def _from_redis(data: bytes) -> bytes:
    # Anything that is not an envelope is read as a counter; the serializer validates it.
    return data if data[:1] == _MAGIC else _INT_HEADER + data


class CounterRedisCache(RedisCache):
    """A ``RedisCache`` that stores the envelope of an int as the bare digits (see module doc).

    Only the value bytes change on the way in and out; keys, TTLs, the breaker and every other
    behaviour are ``RedisCache``'s.
    """

    def get(self, key: str, default: Any = MISSING) -> Any:
        data = super().get(key, None)
        if data is None:
            if default is MISSING:
                raise CacheMiss(key)
            return default
        return data if data[:1] == _MAGIC else _INT_HEADER + data

    def get_with_ttl(self, key: str) -> tuple[bytes, float | None] | None:
        hit = super().get_with_ttl(key)
        return None if hit is None else (_from_redis(hit[0]), hit[1])

    def mget(self, keys: Iterable[str]) -> dict[str, bytes]:
        return {k: _from_redis(v) for k, v in super().mget(keys).items()}

    def mget_with_ttl(self, keys: Iterable[str]) -> dict[str, tuple[bytes, float | None]]:
        return {k: (_from_redis(v), t) for k, (v, t) in super().mget_with_ttl(keys).items()}

    def set(self, key: str, value: bytes, ttl: TTL | None = None) -> None:
        super().set(key, _to_redis(check_value(value)), ttl)

    def mset(self, items: Mapping[str, bytes], ttl: TTL | None = None) -> None:
        if isinstance(items, Mapping):
            items = {k: _to_redis(check_value(v)) for k, v in items.items()}
        super().mset(items, ttl)

    def mset_with_ttls(self, entries: Mapping[str, tuple[bytes, TTL | None]]) -> None:
        super().mset_with_ttls(_entries_to_redis(entries))

    def set_fenced(self, key: str, value: bytes, ttl: TTL | None, token: str) -> bool:
        return super().set_fenced(key, _to_redis(check_value(value)), ttl, token)

    def mset_fenced(
        self, entries: Mapping[str, tuple[bytes, TTL | None]], tokens: Mapping[str, str]
    ) -> frozenset[str]:
        return super().mset_fenced(_entries_to_redis(entries), tokens)


def _entries_to_redis(
    entries: Mapping[str, tuple[bytes, TTL | None]],
) -> Mapping[str, tuple[bytes, TTL | None]]:
    if isinstance(entries, Mapping) and all(
        isinstance(p, tuple) and len(p) == 2 for p in entries.values()
    ):
        return {k: (_to_redis(check_value(v)), t) for k, (v, t) in entries.items()}
    return entries  # malformed: RedisCache raises the error naming it


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
        if isinstance(self.l1_maxsize, bool) or not isinstance(self.l1_maxsize, int):
            raise TypeError(f"L1 maxsize must be an int, not {type(self.l1_maxsize).__name__}")
        if self.l1_maxsize < 0:
            raise ValueError(f"L1 maxsize must be >= 0, got {self.l1_maxsize}")


class Store:
    """Framework values over ``CounterRedisCache`` [+ ``MemoryCache`` L1], read-through typed.

    Keys are the framework's final keys (already prefixed and versioned by it); TTLs are
    seconds > 0 or None (no expiry): each backend maps its own timeout conventions first.
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
        return _to_redis(self._header + self.serializer.dumps(value))

    def decode(self, raw: bytes) -> Any:
        """The value of bytes as Redis holds them; SerializationError if they are not one."""
        data = _from_redis(raw)
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
        self.typed.set(key, value, ttl)

    def set_many(self, items: Mapping[str, Any], ttl: float | None) -> None:
        self.typed.mset(items, ttl)

    def _keys(self, key: str) -> list[str]:
        """The value's Redis key and, where it can share the slot, its fence (KEYS[2])."""
        rkey = self.redis.redis_key(key)
        fence = self.redis.redis_fence_key(key)
        return [rkey] if fence is None else [rkey, fence]

    def add(self, key: str, value: Any, ttl: float | None) -> bool:
        """SET NX: True if the key was absent and now holds ``value``."""
        data = self.encode(value)
        redis = self.redis
        px = 0 if ttl is None else ttl_ms(ttl)
        added = redis.run("SET NX", self._add, self._keys(key), [data, px])
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
            if type(delta) is int and _INT64_MIN <= delta <= _INT64_MAX:
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
                if self.add(key, delta, ttl):
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
