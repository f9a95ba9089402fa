"""The store of a loaded value, through the key's fence (``FencedCache``; see ``_fence``).

The read-through takes the key's fence token before its loader runs, and stores the loaded value
only if no write reached the key since: a write always wins over a slow load. When no token can
be had, the value is served uncached rather than stored unchecked.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from ._breaker import is_unreachable
from ._metrics import CacheMetrics
from ._protocols import Cache, FencedCache
from .errors import BackendError

__all__ = ["NO_STORE", "UNSURE", "FencedStore"]

log = logging.getLogger("cache_core")

#: No fence could be taken: serve the loaded value, store nothing. ``NO_STORE`` in an outage
#: (callers that joined the load share it: an outage costs one load per key, not three);
#: ``UNSURE`` after any other failure (a write may have landed: joined callers load again).
NO_STORE: Final[Any] = object()
UNSURE: Final[Any] = object()


class FencedStore:
    """Fence tokens and fenced stores for one byte cache (plain stores when it has no fences)."""

    def __init__(self, cache: Cache, metrics: CacheMetrics) -> None:
        self._cache = cache
        self._fenced: FencedCache | None = cache if isinstance(cache, FencedCache) else None
        self._metrics = metrics

    def take(self, key: str) -> Any:
        """The token to store the coming load with: None (no fences: a plain store), a token,
        or ``NO_STORE`` / ``UNSURE`` when the backend cannot hand one out."""
        fenced = self._fenced
        if fenced is None:
            return None
        try:
            return fenced.fence(key)
        except BackendError as exc:
            self._metrics.backend_error(exc)
            log.debug("cache_core: fence for %r unavailable; the load is not stored: %s", key, exc)
            return NO_STORE if is_unreachable(exc) else UNSURE

    def store(self, key: str, data: bytes, ttl: float | None, token: Any) -> bool:
        """Store a loaded entry through the key's fence; False if a write overtook the load.

        False also when it is not known: a backend failure (other than an outage) is logged
        and counted, never raised, and the value is served uncached, but callers that joined
        the load load again (a write may have landed meanwhile).
        """
        try:
            if token is NO_STORE:
                return True
            if token is UNSURE:
                return False
            if token is None or self._fenced is None:
                self._cache.set(key, data, ttl)
                return True
            stored = self._fenced.set_fenced(key, data, ttl, token)
            if not stored:
                log.debug("cache_core: a write overtook the load of %r; not stored", key)
            return stored
        except BackendError as exc:
            self._metrics.backend_error(exc)
            log.debug("cache_core: store of %r failed; value served uncached: %s", key, exc)
            return is_unreachable(exc)
