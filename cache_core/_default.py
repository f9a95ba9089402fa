"""default_cache(): the process-wide cache that ``@memoize`` and the demo use when given none."""

from __future__ import annotations

import os
import threading
from typing import Any

from ._memory import MemoryCache
from ._protocols import Cache
from ._redis import RedisCache
from ._urls import redacted

__all__ = ["default_cache", "reset_default_cache"]

_REDIS_SCHEMES = (
    "redis://",
    "rediss://",
    "unix://",
    "redis+cluster://",
    "rediss+cluster://",
    "redis+sentinel://",
    "rediss+sentinel://",
)
_lock = threading.Lock()
_default: Any = None


def _build() -> Any:
    url = os.environ.get("CACHE_CORE_URL", "").strip()
    if not url:
        return MemoryCache()
    if not url.lower().startswith(_REDIS_SCHEMES):
        raise ValueError(
            "CACHE_CORE_URL must be a Redis URL ("
            + ", ".join(_REDIS_SCHEMES)
            + f"), got {redacted(url)!r}"
        )
    prefix = os.environ.get("CACHE_CORE_PREFIX", "cache_core")
    return RedisCache.from_url(url, prefix=prefix)


def default_cache() -> Cache:
    """The shared default byte cache, built on first use.

    ``MemoryCache()`` unless ``CACHE_CORE_URL`` names a Redis URL (any form ``from_url``
    takes: ``redis://``, ``rediss://``, ``unix://``, ``redis+cluster://``,
    ``redis+sentinel://``), in which case a
    ``RedisCache.from_url`` with prefix ``CACHE_CORE_PREFIX`` (default ``"cache_core"``): a
    namespace of its own, so its ``clear()`` never touches anyone else's keys.
    """
    global _default
    cache = _default
    if cache is None:
        with _lock:
            if _default is None:
                _default = _build()
            cache = _default
    return cache  # type: ignore[no-any-return]


def reset_default_cache() -> None:
    """Forget the default cache (closing it if it owns a client); the next call builds anew."""
    global _default
    with _lock:
        cache, _default = _default, None
    close = getattr(cache, "close", None)
    if callable(close):
        close()
