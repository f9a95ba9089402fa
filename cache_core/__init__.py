"""cache_core: a synchronous, thread-safe caching library.

Redis-backed byte caches with an in-process L1, a typed read-through layer, protection against
stampedes, avalanches and penetration, and a bloom filter with a C core.
"""

from __future__ import annotations

from ._serializers import CompressedSerializer, JSONSerializer, PickleSerializer, Serializer
from ._singleflight import Singleflight, SingleflightInterrupted
from .errors import BackendError, CacheError, CacheMiss, CircuitOpenError, SerializationError

__version__ = "0.1.0.dev0"

__all__ = [
    "BackendError",
    "CacheError",
    "CacheMiss",
    "CircuitOpenError",
    "CompressedSerializer",
    "JSONSerializer",
    "PickleSerializer",
    "SerializationError",
    "Serializer",
    "Singleflight",
    "SingleflightInterrupted",
    "__version__",
]
