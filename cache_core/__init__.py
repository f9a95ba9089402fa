"""cache_core: a synchronous, thread-safe caching library.

Redis-backed byte caches with an in-process L1, a typed read-through layer, protection against
stampedes, avalanches and penetration, and a bloom filter with a C core.
"""

from __future__ import annotations

from ._backend import NATIVE
from ._bloom import BloomFilter
from ._hashing import hash128
from .errors import BackendError, CacheError, CacheMiss, CircuitOpenError, SerializationError

__version__ = "0.1.0.dev0"

__all__ = [
    "BackendError",
    "BloomFilter",
    "CacheError",
    "CacheMiss",
    "CircuitOpenError",
    "NATIVE",
    "SerializationError",
    "__version__",
    "hash128",
]
