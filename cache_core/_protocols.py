"""The byte-cache protocols every backend implements (``Cache`` and ``BatchCache``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

from ._validate import TTL

__all__ = ["BatchCache", "Cache", "FencedCache"]


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
