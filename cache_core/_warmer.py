"""CacheWarmer: fill a TypedCache ahead of traffic, in batches, under the keys readers use.

The original design's warmer wrote ``"%v"`` keys that reads (``"user:" + id``) never found,
aborted the run on the first failed batch and printed failures. Here every value is stored under
``key_fn(k)``, the same function readers use; each batch is one batch-loader call plus one
``TypedCache.mset`` (one round trip, each key with its own jittered TTL, so warmed keys do not
expire together); a failed batch is recorded in the report and the run goes on.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from ._protocols import BloomTarget, KeyLister
from ._typed import TypedCache
from ._validate import TTL, ttl_seconds
from .errors import CacheError

__all__ = ["CacheWarmer", "WarmReport"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
log = logging.getLogger("cache_core")

_SCAN_COUNT = 1000


@dataclass(frozen=True, slots=True)
class WarmReport(Generic[K]):
    """What a ``warm()`` / ``refresh()`` run did.

    ``loaded`` / ``missing`` / ``failed`` are counts of keys: stored; not returned by the loader
    (nothing stored for them); in a batch that failed (loader raised, returned no Mapping,
    ``key_fn`` failed, or the cache/bloom write failed). ``missing_keys`` and ``failed_keys``
    name them; ``errors`` holds one exception per failed batch; ``duration`` is in seconds.
    """

    loaded: int
    missing: int
    failed: int
    duration: float
    batches: int = 0
    missing_keys: tuple[K, ...] = ()
    failed_keys: tuple[K, ...] = ()
    errors: tuple[Exception, ...] = field(default=(), repr=False)

    @property
    def ok(self) -> bool:
        """No batch failed (missing keys are an answer, not a failure)."""
        return self.failed == 0


ProgressFn = Callable[[int, int, int, int], object]
"""``progress(done, loaded, missing, failed)``: called after each batch, keys processed so far."""


def _identity(stored: str) -> Any:
    return stored


def _batches(keys: Iterable[K], size: int) -> Iterator[list[K]]:
    it = iter(keys)
    while batch := list(itertools.islice(it, size)):
        yield batch


class CacheWarmer(Generic[K, V]):
    """Load keys in batches through a batch loader and store them with one ``mset`` per batch.

    ``loader(list_of_ids) -> Mapping[id, value]``: ids absent from the mapping are reported as
    missing (a ``None`` value is stored as ``None``, like any value). ``key_fn(id)`` is the cache
    key, exactly as readers look it up (``str`` by default). ``parse_key(cache_key) -> id`` is
    its inverse, used by ``refresh()`` to turn the keys found in the cache back into ids; it may
    return None to skip a key (default: the key itself).
    """

    def __init__(
        self,
        cache: TypedCache[V],
        loader: Callable[[list[K]], Mapping[K, V]],
        *,
        key_fn: Callable[[K], str] = str,
        batch_size: int = 100,
        parse_key: Callable[[str], K | None] = _identity,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        if not isinstance(cache, TypedCache):
            raise TypeError(f"cache must be a TypedCache, not {type(cache).__name__}")
        for name, fn in (
            ("loader", loader),
            ("key_fn", key_fn),
            ("parse_key", parse_key),
            ("timer", timer),
        ):
            if not callable(fn):
                raise TypeError(f"{name} must be callable, not {type(fn).__name__}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int):
            raise TypeError(f"batch_size must be an int, not {type(batch_size).__name__}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        self._typed = cache
        self._loader = loader
        self._key_fn = key_fn
        self._parse_key = parse_key
        self._batch_size = batch_size
        self._timer = timer

    @property
    def cache(self) -> TypedCache[V]:
        return self._typed

    @property
    def batch_size(self) -> int:
        return self._batch_size

    def warm(
        self,
        keys: Iterable[K],
        ttl: TTL | None = None,
        *,
        progress: ProgressFn | None = None,
        bloom: BloomTarget | None = None,
    ) -> WarmReport[K]:
        """Load and store ``keys`` batch by batch; a failed batch is reported, the run goes on.

        ``bloom``: a bloom filter (anything with ``update``) that receives the cache key of every
        stored value, for a ``ProtectedCache`` in front of the same cache. ``progress`` is called
        after each batch; an exception from it stops the run (a way to cancel).
        """
        if isinstance(keys, str | bytes) or not isinstance(keys, Iterable):
            raise TypeError(f"keys must be an iterable of ids, not {type(keys).__name__}")
        if ttl is not None:
            ttl_seconds(ttl, None)
        if progress is not None and not callable(progress):
            raise TypeError(f"progress must be callable, not {type(progress).__name__}")
        if bloom is not None and not callable(getattr(bloom, "update", None)):
            raise TypeError(f"bloom must have update(keys), {type(bloom).__name__} has not")
        start = self._timer()
        loaded = 0
        batches = 0
        missing: list[K] = []
        failed: list[K] = []
        errors: list[Exception] = []
        for batch in _batches(keys, self._batch_size):
            batches += 1
            try:
                stored, absent = self._warm_batch(batch, ttl, bloom)
            except Exception as exc:  # any failure of this batch: record it, go on
                log.warning("cache_core: warming a batch of %d keys failed: %r", len(batch), exc)
                failed.extend(batch)
                errors.append(exc)
            else:
                loaded += stored
                missing.extend(absent)
            if progress is not None:
                progress(loaded + len(missing) + len(failed), loaded, len(missing), len(failed))
        return WarmReport(
            loaded,
            len(missing),
            len(failed),
            max(self._timer() - start, 0.0),
            batches,
            tuple(missing),
            tuple(failed),
            tuple(errors),
        )

    def _warm_batch(
        self, batch: list[K], ttl: TTL | None, bloom: BloomTarget | None
    ) -> tuple[int, list[K]]:
        key_fn = self._key_fn
        cache_keys: dict[K, str] = {}
        for k in batch:
            cache_key = key_fn(k)
            if type(cache_key) is not str:
                raise TypeError(
                    f"key_fn must return str, returned {type(cache_key).__name__} for {k!r}"
                )
            cache_keys[k] = cache_key
        # Fences first (one round trip): a write to a key between this batch's load and its
        # store wins, and the value loaded before it is not stored (see _fence).
        tokens = self._typed.fence_many(list(cache_keys.values()))
        found = self._loader(batch)
        if not isinstance(found, Mapping):
            raise TypeError(f"loader must return a Mapping, returned {type(found).__name__}")
        items: dict[str, V] = {}
        absent: list[K] = []
        for k in batch:
            if k in found:
                items[cache_keys[k]] = found[k]
            else:
                absent.append(k)
        if items:
            if bloom is not None:
                # Filter first (as ProtectedCache.set does): no reader is turned away between
                # the two writes, and a failed mset leaves only harmless extra filter bits.
                bloom.update(list(items))
            self._typed.mset_loaded(items, tokens, ttl)
        return len(items), absent

    def refresh(
        self,
        pattern: str = "*",
        ttl: TTL | None = None,
        *,
        progress: ProgressFn | None = None,
        bloom: BloomTarget | None = None,
    ) -> WarmReport[K]:
        """Re-load every key that exists in the cache under the glob ``pattern``.

        The keys are listed with SCAN (never KEYS; every primary of a Cluster) on a RedisCache
        (the L2 of a MultiLevelCache), or from a MemoryCache's entries under its lock; the
        pattern applies to cache keys (without the RedisCache prefix). ``parse_key`` maps them
        back to ids for the loader. A listing failure raises BackendError.
        """
        if not isinstance(pattern, str):
            raise TypeError(f"pattern must be str, not {type(pattern).__name__}")
        if not pattern:
            raise ValueError("pattern must be a non-empty glob, got ''")
        ids: list[K] = []
        parse = self._parse_key
        for stored in dict.fromkeys(self._existing_keys(pattern)):
            k = parse(stored)
            if k is not None:
                ids.append(k)
        return self.warm(ids, ttl, progress=progress, bloom=bloom)

    def _existing_keys(self, pattern: str) -> list[str]:
        cache = self._typed.cache
        if not isinstance(cache, KeyLister):
            raise CacheError(
                f"refresh() cannot list the keys of a {type(cache).__name__}; "
                "pass the ids to warm() instead"
            )
        return list(cache.scan_keys(pattern))
