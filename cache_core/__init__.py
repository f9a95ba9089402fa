"""cache_core: a synchronous, thread-safe caching library.

Redis-backed byte caches with an in-process L1, a typed read-through layer, protection against
stampedes, avalanches and penetration, and a bloom filter with a C core.
"""

from __future__ import annotations

from ._memory import MemoryCache
from ._multilevel import MultiLevelCache
from ._protocols import BatchCache, Cache
from ._redis import RedisCache
from .errors import BackendError, CacheError, CacheMiss, CircuitOpenError, SerializationError

__version__ = "0.1.0.dev0"

__all__ = [
    "BatchCache",
    "Cache",
    "MemoryCache",
    "MultiLevelCache",
    "RedisCache",
    "BackendError",
    "CacheError",
    "CacheMiss",
    "CircuitOpenError",
    "SerializationError",
    "__version__",
]
