"""cache_core: a synchronous, thread-safe caching library.

Redis-backed byte caches with an in-process L1, a typed read-through layer, protection against
stampedes, avalanches and penetration, and a bloom filter with a C core.
"""

from __future__ import annotations

from ._backend import NATIVE
from ._bloom import BloomFilter
from ._bloom_params import BloomParams
from ._bloom_redis import RedisBloomFilter
from ._bloom_snapshot import BloomSnapshot, load_bloom, save_bloom
from ._breaker import CircuitBreaker
from ._default import default_cache
from ._hashing import hash128
from ._memoize import CacheInfo, Memoized, memoize
from ._memory import MemoryCache
from ._metrics import CacheMetrics, CacheStats, MetricsRegistry, metrics_registry
from ._multilevel import MultiLevelCache, MultiLevelStats
from ._options import ReadThroughOptions
from ._protected import ProtectedCache, ProtectedCacheStats
from ._protocols import BatchCache, Cache
from ._redis import RedisCache
from ._serializers import (
    CompressedSerializer,
    JSONSerializer,
    MsgpackSerializer,
    PickleSerializer,
    Serializer,
)
from ._singleflight import Singleflight
from ._typed import TypedCache, TypedCacheStats
from ._validate import MAX_TTL
from ._warmer import CacheWarmer, WarmReport
from .errors import (
    BackendError,
    CacheError,
    CacheMiss,
    CircuitOpenError,
    NoValue,
    SerializationError,
    SingleflightInterrupted,
    Unencodable,
)

__version__ = "0.1.0.dev0"

__all__ = [
    "MAX_TTL",
    "BackendError",
    "BatchCache",
    "BloomFilter",
    "BloomParams",
    "BloomSnapshot",
    "Cache",
    "CacheError",
    "CacheInfo",
    "CacheMetrics",
    "CacheMiss",
    "CacheStats",
    "CacheWarmer",
    "CircuitBreaker",
    "CircuitOpenError",
    "CompressedSerializer",
    "JSONSerializer",
    "MsgpackSerializer",
    "Memoized",
    "MemoryCache",
    "MetricsRegistry",
    "MultiLevelCache",
    "MultiLevelStats",
    "NATIVE",
    "NoValue",
    "PickleSerializer",
    "ProtectedCache",
    "ProtectedCacheStats",
    "ReadThroughOptions",
    "RedisBloomFilter",
    "RedisCache",
    "SerializationError",
    "Serializer",
    "Singleflight",
    "SingleflightInterrupted",
    "TypedCache",
    "TypedCacheStats",
    "Unencodable",
    "WarmReport",
    "__version__",
    "default_cache",
    "hash128",
    "load_bloom",
    "memoize",
    "metrics_registry",
    "save_bloom",
]
