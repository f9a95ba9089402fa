"""The seams between layers, as runtime-checkable protocols.

``Cache`` and ``BatchCache`` are the public byte-cache contract (``ByteCache``: both, what a
``MultiLevelCache`` level is). The others are optional
capabilities a byte cache declares by having the methods, which the layers above test with
``isinstance`` instead of asking for a concrete class:

* ``FencedCache``: stores of loaded values lose to writes (read-through, warmer);
* ``LeaseLockSource``: lends cross-process lease locks (``distributed_lock=True``);
* ``KeyLister``: lists its keys by glob (``CacheWarmer.refresh``);
* ``LevelledCache``: reads one level at a time, so the typed layer counts each request once,
  at the level that answered;
* ``BloomTarget``: what a penetration guard asks (a ``BloomFilter``, a ``BloomSnapshot``, a
  ``RedisBloomFilter``).

Argument checks use ``check_implements``: ``isinstance`` alone only asks that the attributes
exist, the check wants them callable and names the missing ones.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Generic, Protocol, runtime_checkable

from ._validate import TTL

if TYPE_CHECKING:
    from ._lease_lock import LeaseLockFactory

__all__ = [
    "BatchCache",
    "ByteCache",
    "BloomTarget",
    "Cache",
    "FencedCache",
    "KeyLister",
    "LeaseLockSource",
    "LevelledCache",
    "check_implements",
    "missing_methods",
]


@runtime_checkable
class Cache(Protocol):
    """A thread-safe mapping of ``str`` keys to ``bytes`` values with per-entry TTLs."""

    def get(self, key: str, default: Any = ...) -> bytes:
        """Return the value; raise ``CacheMiss`` on a miss unless ``default`` is given."""
        ...

    def set(self, key: str, value: bytes, ttl: TTL | None = None) -> None:
        """Store ``value`` under ``key`` (``ttl=None``: the cache's ``default_ttl``)."""
        ...

    def delete(self, key: str) -> bool:
        """Remove ``key``; True if an entry was removed."""
        ...

    def exists(self, key: str) -> bool:
        """True if ``key`` holds an unexpired entry."""
        ...

    def clear(self) -> int:
        """Remove every entry of this cache's namespace (and nothing else); return the count."""
        ...


@runtime_checkable
class BatchCache(Protocol):
    """Bulk operations; one round trip where the backend allows it."""

    def mget(self, keys: Iterable[str]) -> dict[str, bytes]:
        """Return the hits among ``keys`` (misses are absent from the result)."""
        ...

    def mset(self, items: Mapping[str, bytes], ttl: TTL | None = None) -> None:
        """Store every item with the same TTL."""
        ...

    def mdelete(self, keys: Iterable[str]) -> int:
        """Remove ``keys``; return how many entries were removed."""
        ...


@runtime_checkable
class ByteCache(Cache, BatchCache, Protocol):
    """A ``Cache`` with its batch operations: what each level of a ``MultiLevelCache`` is."""


@runtime_checkable
class FencedCache(Protocol):
    """A byte cache whose stores of loaded values lose to writes (see ``_fence``).

    A read-through takes ``fence(key)`` before running its loader and stores the result with
    ``set_fenced``; any write to the key in between (by any process) makes that store a no-op.
    """

    def fence(self, key: str) -> str | None:
        """The key's fence token; None when the key cannot be fenced (store it with ``set``)."""
        ...

    def set_fenced(self, key: str, value: bytes, ttl: TTL | None, token: str) -> bool:
        """Store ``value`` only if ``token`` is still the key's fence; True if stored."""
        ...


@runtime_checkable
class LeaseLockSource(Protocol):
    """A byte cache that can lend cross-process lease locks for its keys."""

    def lease_locks(self) -> LeaseLockFactory | None:
        """The lease-lock factory for this cache's keys (built on first use), or None when
        this cache has no shared store to lock in."""
        ...


@runtime_checkable
class KeyLister(Protocol):
    """A byte cache that can list its keys (never with KEYS: SCAN on Redis)."""

    def scan_keys(self, match: str = "*") -> Iterator[str]:
        """The cache keys matching the glob ``match`` (entries only, no library keys)."""
        ...


@runtime_checkable
class LevelledCache(Protocol):
    """A byte cache with levels (``MultiLevelCache``): one read per level, and a re-read."""

    def read_l1(self, key: str) -> bytes | None:
        """The L1's entry, or None (never raises)."""
        ...

    def read_l2(self, key: str) -> bytes | None:
        """A request's read below L1 (filling L1 on a hit); backend errors propagate."""
        ...

    def peek(self, key: str) -> bytes | None:
        """A re-read inside a request already counted."""
        ...


@runtime_checkable
class BloomTarget(Protocol):
    """A set of keys that may exist, as a penetration guard asks it."""

    def __contains__(self, key: object) -> bool: ...

    def add(self, key: str | bytes) -> Any: ...

    def update(self, keys: Iterable[str | bytes]) -> Any: ...

    def contains_many(self, keys: Iterable[str | bytes]) -> list[bool]: ...


_MACHINERY = frozenset({"__init__", "__subclasshook__", "__init_subclass__", "__class_getitem__"})


def missing_methods(obj: object, protocol: type) -> list[str]:
    """The methods of ``protocol`` (its own and its base protocols') that ``obj`` lacks or
    holds as something not callable.

    ``isinstance`` against a runtime-checkable protocol only asks whether the attributes exist;
    an argument check wants them callable, and its error message wants their names.
    """
    names = {
        name: None
        for base in protocol.__mro__
        if base not in (object, Protocol, Generic)
        for name, member in vars(base).items()
        if inspect.isfunction(member) and name not in _MACHINERY
    }
    return [name for name in names if not callable(getattr(obj, name, None))]


def check_implements(obj: object, protocol: type, name: str, what: str) -> None:
    """``TypeError`` naming the argument ``name`` unless ``obj`` implements ``protocol``."""
    missing = missing_methods(obj, protocol)
    if missing:
        raise TypeError(f"{name} must be {what}, {type(obj).__name__} lacks {', '.join(missing)}")
