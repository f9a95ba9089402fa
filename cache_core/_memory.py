"""MemoryCache: the embedded, in-process byte cache (cachetools ``TLRUCache`` under one lock)."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from cachetools import TLRUCache

from ._validate import MISSING, TTL, check_items, check_key, check_keys, check_value, ttl_seconds
from .errors import CacheMiss

__all__ = ["MemoryCache"]

# Entries are (value, ttl_seconds); cachetools asks for the expiry when it stores the entry and
# passes its own reading of the timer, so each write reads the clock exactly once.
_Entry = tuple[bytes, float]


def _time_to_use(_key: str, entry: _Entry, now: float) -> float:
    return now + entry[1]


class MemoryCache:
    """Thread-safe in-process byte cache with per-entry TTL, bounded by ``maxsize`` (LRU).

    ``timer`` is injectable so tests tick a fake clock instead of sleeping. Every operation holds
    one lock for a few dict operations only; no user code ever runs under it.
    """

    __slots__ = ("_data", "_default_ttl", "_lock", "_maxsize", "_timer")

    def __init__(
        self,
        *,
        maxsize: int = 10_000,
        default_ttl: TTL | None = None,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(maxsize, int) or isinstance(maxsize, bool):
            raise TypeError(f"maxsize must be an int, not {type(maxsize).__name__}")
        if maxsize <= 0:
            raise ValueError(f"maxsize must be > 0, got {maxsize!r}")
        if not callable(timer):
            raise TypeError(f"timer must be callable, not {type(timer).__name__}")
        self._maxsize = maxsize
        self._default_ttl = ttl_seconds(default_ttl, None, "default_ttl")
        self._timer = timer
        self._data: TLRUCache[str, _Entry] = TLRUCache(maxsize, _time_to_use, timer)
        self._lock = threading.Lock()

    @property
    def maxsize(self) -> int:
        return self._maxsize

    @property
    def default_ttl(self) -> float | None:
        return self._default_ttl

    def __repr__(self) -> str:
        return f"MemoryCache(maxsize={self._maxsize}, default_ttl={self._default_ttl})"

    def _lifetime(self, ttl: TTL | None) -> float:
        seconds = ttl_seconds(ttl, self._default_ttl)
        return math.inf if seconds is None else seconds

    def get(self, key: str, default: Any = MISSING) -> Any:
        """Return the value; ``CacheMiss`` on a miss unless ``default`` is given."""
        if type(key) is not str or not key:
            check_key(key)
        try:
            with self._lock:
                return self._data[key][0]
        except KeyError:
            if default is MISSING:
                raise CacheMiss(key) from None
            return default

    def set(self, key: str, value: bytes, ttl: TTL | None = None) -> None:
        """Store ``value`` (bytes-like, copied to bytes) for ``ttl`` seconds."""
        entry = (check_value(value), self._lifetime(ttl))
        check_key(key)
        with self._lock:
            self._data[key] = entry

    def delete(self, key: str) -> bool:
        check_key(key)
        with self._lock:
            # TLRUCache.pop returns the default for an expired entry (and drops it).
            return self._data.pop(key, None) is not None

    def exists(self, key: str) -> bool:
        check_key(key)
        with self._lock:
            return key in self._data

    def clear(self) -> int:
        """Remove every entry; return how many unexpired entries there were."""
        with self._lock:
            self._data.expire()
            count = len(self._data)
            self._data.clear()
        return count

    def mget(self, keys: Iterable[str]) -> dict[str, bytes]:
        wanted = check_keys(keys)
        found: dict[str, bytes] = {}
        data = self._data
        with self._lock:
            for key in wanted:
                entry = data.get(key)  # TLRUCache.get honours expiry
                if entry is not None:
                    found[key] = entry[0]
        return found

    def mset(self, items: Mapping[str, bytes], ttl: TTL | None = None) -> None:
        lifetime = self._lifetime(ttl)
        checked = check_items(items)
        with self._lock:
            for key, value in checked.items():
                self._data[key] = (value, lifetime)

    def mdelete(self, keys: Iterable[str]) -> int:
        wanted = check_keys(keys)
        removed = 0
        with self._lock:
            for key in dict.fromkeys(wanted):
                if self._data.pop(key, None) is not None:
                    removed += 1
        return removed

    def __len__(self) -> int:
        """Number of unexpired entries (expired ones are dropped first)."""
        with self._lock:
            self._data.expire()
            return len(self._data)
