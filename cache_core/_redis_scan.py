"""Walking a ``RedisCache``'s key space: SCAN pages (never KEYS), on every primary of a cluster.

``clear()`` unlinks what the pages hold, ``scan_keys()`` reports it. Both tell the library's own
keys under the prefix (a ``__cc`` segment: lease locks, shared bloom filters, snapshots, fences)
from cache entries by the key text alone: user keys never enter the reserved space.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final

import redis
from redis.cluster import RedisCluster

from ._breaker import CircuitBreaker
from ._fence import FENCE_MARK
from ._redis_dispatch import REDIS_ERRORS, wrap_redis_error
from ._redis_keys import escape_glob
from ._validate import has_segment

__all__ = ["SCAN_COUNT", "KeyScanner"]

#: Keys asked per SCAN call, and the largest UNLINK of a clear.
SCAN_COUNT: Final = 1000
_FENCE: Final = FENCE_MARK.encode()


class KeyScanner:
    """Pages of the Redis keys under one cache's prefix ``kp`` (``prefix + ":"`` or empty)."""

    def __init__(self, client: redis.Redis | RedisCluster, kp: str) -> None:
        self.client = client
        self.kp = kp
        self.cluster = isinstance(client, RedisCluster)
        self._cut = len(kp.encode("utf-8"))

    def is_library_key(self, raw: bytes) -> bool:
        """Whether a Redis key found under the prefix is a library key of some cache.

        A ``__cc`` segment after this cache's prefix marks a key of the library: this cache's
        own, or one of a cache whose prefix extends this one (``app`` sees
        ``app:sessions:__ccbf__:...``).
        """
        return has_segment(raw[self._cut :])

    def pages(self, match: str | None) -> Iterator[list[Any]]:
        """The keys matching the glob ``match`` (None: all), a page at a time."""
        if not self.cluster:
            client = self.client
            cursor = 0
            while True:
                cursor, keys = client.scan(cursor=cursor, match=match, count=SCAN_COUNT)
                if keys:
                    yield keys
                if cursor == 0:
                    return
        # RedisCluster.scan_iter walks every primary; page its stream so each UNLINK stays small.
        page: list[Any] = []
        for key in self.client.scan_iter(match=match, count=SCAN_COUNT):
            page.append(key)
            if len(page) >= SCAN_COUNT:
                yield page
                page = []
        if page:
            yield page

    def clear_match(self, allow_clear_all: bool) -> str | None:
        """What ``RedisCache.clear`` scans for: every key under the prefix. An empty prefix
        would mean the whole database: a ValueError unless ``allow_clear_all``."""
        if not self.kp and not allow_clear_all:
            raise ValueError(
                "clear() on a RedisCache with an empty prefix would remove every key in the "
                "database; give the cache a prefix or build it with allow_clear_all=True"
            )
        return escape_glob(self.kp) + "*" if self.kp else None

    def unlink_all(self, match: str | None) -> int:
        """UNLINK every entry matching ``match``, with its fence; the number of entries removed.

        The library's own keys (lease locks, shared bloom filters, snapshots) are not cache
        entries: they expire by themselves or belong to a guard, and stay. Fences go with the
        entries (uncounted): a clear is a write, and refuses the stores of loads in flight.
        """
        removed = 0
        cut = self._cut
        for page in self.pages(match):
            entries: list[bytes] = []
            fences: list[bytes] = []
            for raw in page:
                if not has_segment(raw[cut:]):
                    entries.append(raw)
                elif has_segment(raw[cut:], _FENCE):
                    fences.append(raw)
            if fences:
                self.client.unlink(*fences)
            if entries:
                removed += int(self.client.unlink(*entries))
        return removed

    def keys(self, pattern: str, breaker: CircuitBreaker | None) -> Iterator[str]:
        """The cache keys (prefix removed) whose Redis keys match ``pattern``, through
        ``breaker``; library keys are never reported. Redis errors leave as BackendError."""
        cut = len(self.kp)
        library = self.is_library_key
        if breaker is not None:
            breaker.allow()
        try:
            for page in self.pages(pattern):
                for raw in page:
                    if library(raw):
                        continue
                    yield raw.decode("utf-8", "surrogateescape")[cut:]
        except REDIS_ERRORS as exc:
            if breaker is not None:
                breaker.record_failure(exc)
            raise wrap_redis_error("SCAN", exc) from exc
        except BaseException:
            if breaker is not None:
                breaker.abandon()
            raise
        if breaker is not None:
            breaker.record_success()
