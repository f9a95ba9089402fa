"""Every error cache_core raises on purpose.

::

    CacheError               base of every error the library raises on purpose
    ├── CacheMiss            also a KeyError: key absent or expired
    ├── SerializationError   also a ValueError: a value cannot be encoded, or bytes decoded
    └── BackendError         the backend failed or is unreachable; __cause__: driver's error
        └── CircuitOpenError raised instead of calling a backend whose breaker is open

Bad arguments raise the built-in ``TypeError`` / ``ValueError`` naming the argument. Redis' own
exception classes never escape: they are wrapped in :class:`BackendError` with ``__cause__`` set
(redis-py's ``ConnectionError`` and ``TimeoutError`` shadow the builtins, so they are never
re-exported either).
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "CacheError",
    "CacheMiss",
    "CircuitOpenError",
    "SerializationError",
]


class CacheError(Exception):
    """Base class of every error cache_core raises on purpose."""


class CacheMiss(CacheError, KeyError):
    """The key is absent or expired."""

    def __str__(self) -> str:
        # KeyError.__str__ reprs its argument; keep the message readable.
        return Exception.__str__(self)


class SerializationError(CacheError, ValueError):
    """A value cannot be encoded, or stored bytes cannot be decoded."""


class BackendError(CacheError):
    """The backend failed or is unreachable; ``__cause__`` holds the driver's exception."""


class CircuitOpenError(BackendError):
    """Raised instead of calling a backend whose circuit breaker is open."""
