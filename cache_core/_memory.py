"""MemoryCache: the embedded, in-process byte cache (cachetools ``TLRUCache`` under one lock)."""

from __future__ import annotations

import fnmatch
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from cachetools import TLRUCache

from ._fence import FENCE_TTL, new_token
from ._fork import after_fork_in_child
from ._validate import (
    MISSING,
    TTL,
    check_callable,
    check_entries,
    check_int,
    check_items,
    check_key,
    check_keys,
    check_value,
    ttl_seconds,
)
from .errors import CacheMiss

__all__ = ["MemoryCache"]

# Entries are (value, absolute expiry on ``timer``); the expiry is kept so that a multi-level
# cache can ask how long an entry has left (``get_with_ttl``).
_Entry = tuple[bytes, float]


def _time_to_use(_key: str, entry: _Entry, _now: float) -> float:
    return entry[1]


class MemoryCache:
    """Thread-safe in-process byte cache with per-entry TTL, bounded by ``maxsize`` (LRU).

    ``timer`` is injectable so tests tick a fake clock instead of sleeping. Every operation holds
    one lock for a few dict operations only; no user code ever runs under it.
    """

    __slots__ = ("__weakref__", "_data", "_default_ttl", "_fences", "_lock", "_maxsize", "_timer")

    def __init__(
        self,
        *,
        maxsize: int = 10_000,
        default_ttl: TTL | None = None,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        check_int(maxsize, "maxsize", minimum=1)
        check_callable(timer, "timer")
        self._maxsize = maxsize
        self._default_ttl = ttl_seconds(default_ttl, None, "default_ttl")
        self._timer = timer
        self._data: TLRUCache[str, _Entry] = TLRUCache(maxsize, _time_to_use, timer)
        self._lock = threading.Lock()
        # key -> (fence token, expiry on ``timer``); see _fence. Every write drops the key's.
        self._fences: dict[str, tuple[str, float]] = {}
        after_fork_in_child(self._after_fork_in_child)

    def _after_fork_in_child(self) -> None:
        # A thread of the parent may have held the lock at the fork; it does not exist here.
        self._lock = threading.Lock()

    @property
    def maxsize(self) -> int:
        return self._maxsize

    @property
    def default_ttl(self) -> float | None:
        return self._default_ttl

    def __repr__(self) -> str:
        return f"MemoryCache(maxsize={self._maxsize}, default_ttl={self._default_ttl})"

    def _expiry(self, ttl: TTL | None) -> float:
        seconds = ttl_seconds(ttl, self._default_ttl)
        return math.inf if seconds is None else self._timer() + seconds

    def get(self, key: str, default: Any = MISSING) -> Any:
        """Return the value; ``CacheMiss`` on a miss unless ``default`` is given."""
        if type(key) is not str or not key:
            check_key(key)
        try:
            with self._lock:
                return self._data[key][0]
        except KeyError:
            # A key that ``set`` refuses (reserved, unencodable) can only miss: checking it
            # here, not before the lookup, keeps the hit path free of the check.
            check_key(key)
            if default is MISSING:
                raise CacheMiss(key) from None
            return default

    def get_with_ttl(self, key: str) -> tuple[bytes, float | None] | None:
        """``(value, seconds left or None for no expiry)``, or None on a miss."""
        check_key(key)
        with self._lock:
            entry = self._data.get(key)
            now = self._timer()
        if entry is None:
            return None
        return entry[0], None if entry[1] == math.inf else max(entry[1] - now, 0.0)

    def mget_with_ttl(self, keys: Iterable[str]) -> dict[str, tuple[bytes, float | None]]:
        """Like ``mget``, with each hit's remaining lifetime."""
        wanted = check_keys(keys)
        found: dict[str, tuple[bytes, float | None]] = {}
        with self._lock:
            now = self._timer()
            for key in wanted:
                entry = self._data.get(key)
                if entry is not None:
                    left = None if entry[1] == math.inf else max(entry[1] - now, 0.0)
                    found[key] = (entry[0], left)
        return found

    def set(self, key: str, value: bytes, ttl: TTL | None = None) -> None:
        """Store ``value`` (bytes-like, copied to bytes) for ``ttl`` seconds."""
        check_key(key)
        entry = (check_value(value), self._expiry(ttl))
        with self._lock:
            self._data[key] = entry
            if self._fences:
                self._fences.pop(key, None)

    def fence(self, key: str) -> str:
        """Take the fence token of ``key`` before loading it (see ``_fence``)."""
        check_key(key)
        with self._lock:
            now = self._timer()
            fences = self._fences
            held = fences.get(key)
            if held is not None and held[1] > now:
                return held[0]
            if len(fences) >= self._maxsize:
                # Bounded: drop the expired ones, or all (their stores are refused: safe).
                live = {k: v for k, v in fences.items() if v[1] > now}
                fences.clear()
                if len(live) < self._maxsize:
                    fences.update(live)
            token = new_token()
            fences[key] = (token, now + FENCE_TTL)
            return token

    def fence_many(self, keys: Iterable[str]) -> dict[str, str | None]:
        """``fence`` for a batch."""
        return {key: self.fence(key) for key in dict.fromkeys(check_keys(keys))}

    def mset_fenced(
        self, entries: Mapping[str, tuple[bytes, TTL | None]], tokens: Mapping[str, str]
    ) -> frozenset[str]:
        """Store loaded values, each only if its fence still holds its token; the keys stored."""
        checked = check_entries(entries, self._default_ttl)
        stored: list[str] = []
        with self._lock:
            now = self._timer()
            for key, (value, seconds) in checked.items():
                held = self._fences.get(key)
                if held is None or held[0] != tokens.get(key) or held[1] <= now:
                    continue
                del self._fences[key]
                self._data[key] = (value, math.inf if seconds is None else now + seconds)
                stored.append(key)
        return frozenset(stored)

    def set_fenced(self, key: str, value: bytes, ttl: TTL | None, token: str) -> bool:
        """Store a loaded value only if no write to ``key`` came after ``fence(key)``."""
        check_key(key)
        entry = (check_value(value), self._expiry(ttl))
        with self._lock:
            held = self._fences.get(key)
            if held is None or held[0] != token or held[1] <= self._timer():
                return False
            del self._fences[key]
            self._data[key] = entry
            return True

    def delete(self, key: str) -> bool:
        check_key(key)
        with self._lock:
            if self._fences:
                self._fences.pop(key, None)
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
            self._fences.clear()
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
        checked = check_items(items)
        expiry = self._expiry(ttl)
        with self._lock:
            for key, value in checked.items():
                self._data[key] = (value, expiry)
            self._drop_fences(checked)

    def mset_with_ttls(self, entries: Mapping[str, tuple[bytes, TTL | None]]) -> None:
        """Store items that each carry their own TTL."""
        checked = check_entries(entries, self._default_ttl)
        now = self._timer()
        with self._lock:
            for key, (value, seconds) in checked.items():
                self._data[key] = (value, math.inf if seconds is None else now + seconds)
            self._drop_fences(checked)

    def mdelete(self, keys: Iterable[str]) -> int:
        wanted = check_keys(keys)
        removed = 0
        with self._lock:
            for key in dict.fromkeys(wanted):
                if self._data.pop(key, None) is not None:
                    removed += 1
            self._drop_fences(wanted)
        return removed

    def _drop_fences(self, keys: Iterable[str]) -> None:
        """Every write drops the written keys' fences; call with the lock held."""
        fences = self._fences
        if fences:
            for key in keys:
                fences.pop(key, None)

    def scan_keys(self, match: str = "*") -> Iterator[str]:
        """Unexpired keys matching the glob ``match`` (a snapshot taken under the lock)."""
        if not isinstance(match, str):
            raise TypeError(f"match must be str, not {type(match).__name__}")
        with self._lock:
            self._data.expire()
            keys = list(self._data.keys())
        return iter(fnmatch.filter(keys, match) if match != "*" else keys)

    def __len__(self) -> int:
        """Number of unexpired entries (expired ones are dropped first)."""
        with self._lock:
            self._data.expire()
            return len(self._data)
