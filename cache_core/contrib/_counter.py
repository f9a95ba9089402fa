"""How framework values sit in Redis: any picklable value, counters as raw integers.

What a framework key holds in Redis (under the namespace, a ``RedisCache`` prefix)::

    b"7", b"-42"            a Python ``int`` in the signed 64-bit range, as ASCII decimal, so
                            INCRBY updates it in place: incr/decr are one atomic command
    0xCC 0x01 0x00 'F' ...  any other value: the typed layer's envelope (serializer id 'F')
                            around b"o" + the inner serializer's bytes (signed pickle by default)

``TypedCache`` (which runs ``get_or_set`` with the singleflight and the lease lock) only knows
the envelope form, in which an int is b"i" + its digits (``FrameworkSerializer``).
``CounterRedisCache`` translates at the Redis boundary: that envelope goes to Redis as the bare
digits, and bare digits come back as that envelope. A value stored by ``get_or_set`` can
therefore be incremented, and a counter can be read by ``get_or_set``. An L1
(``MultiLevelCache``) holds envelopes, never bare digits.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

from .._envelope import plain_prefix
from .._redis import RedisCache
from .._serializers import Serializer
from .._validate import MISSING, TTL, check_value
from ..errors import CacheMiss, SerializationError

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "CounterRedisCache",
    "FrameworkSerializer",
    "from_redis",
    "to_redis",
]

_INT_TAG: Final = b"i"
_OBJ_TAG: Final = b"o"
INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1
_DIGITS: Final = re.compile(rb"-?[0-9]{1,19}")
_MAGIC: Final = b"\xcc"


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
        if type(obj) is int and INT64_MIN <= obj <= INT64_MAX:
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


def to_redis(data: bytes) -> bytes:
    return data[_INT_HEADER_LEN:] if data[:_INT_HEADER_LEN] == _INT_HEADER else data


def from_redis(data: bytes) -> bytes:
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
        return None if hit is None else (from_redis(hit[0]), hit[1])

    def mget(self, keys: Iterable[str]) -> dict[str, bytes]:
        return {k: from_redis(v) for k, v in super().mget(keys).items()}

    def mget_with_ttl(self, keys: Iterable[str]) -> dict[str, tuple[bytes, float | None]]:
        return {k: (from_redis(v), t) for k, (v, t) in super().mget_with_ttl(keys).items()}

    def set(self, key: str, value: bytes, ttl: TTL | None = None) -> None:
        super().set(key, to_redis(check_value(value)), ttl)

    def mset(self, items: Mapping[str, bytes], ttl: TTL | None = None) -> None:
        if isinstance(items, Mapping):
            items = {k: to_redis(check_value(v)) for k, v in items.items()}
        super().mset(items, ttl)

    def mset_with_ttls(self, entries: Mapping[str, tuple[bytes, TTL | None]]) -> None:
        super().mset_with_ttls(_entriesto_redis(entries))

    def set_fenced(self, key: str, value: bytes, ttl: TTL | None, token: str) -> bool:
        return super().set_fenced(key, to_redis(check_value(value)), ttl, token)

    def mset_fenced(
        self, entries: Mapping[str, tuple[bytes, TTL | None]], tokens: Mapping[str, str]
    ) -> frozenset[str]:
        return super().mset_fenced(_entriesto_redis(entries), tokens)


def _entriesto_redis(
    entries: Mapping[str, tuple[bytes, TTL | None]],
) -> Mapping[str, tuple[bytes, TTL | None]]:
    if isinstance(entries, Mapping) and all(
        isinstance(p, tuple) and len(p) == 2 for p in entries.values()
    ):
        return {k: (to_redis(check_value(v)), t) for k, (v, t) in entries.items()}
    return entries  # malformed: RedisCache raises the error naming it
