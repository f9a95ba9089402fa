"""Every error cache_core raises on purpose.

::

    CacheError               base of every error the library raises on purpose
    ├── CacheMiss            also a KeyError: key absent or expired
    ├── SerializationError   also a ValueError: a value cannot be encoded, or bytes decoded
    └── BackendError         the backend failed or is unreachable; __cause__: driver's error
        └── CircuitOpenError raised instead of calling a backend whose breaker is open

Beside the tree: ``SingleflightInterrupted`` (a ``CacheError``, raised in singleflight waiters
whose leader was interrupted), ``Unencodable`` (a ``TypeError``: a memoize argument without a
stable key) and ``NoValue`` (raised *by a loader* to end a read-through without a value).

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
    "NoValue",
    "SerializationError",
    "SingleflightInterrupted",
    "Unencodable",
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


class SingleflightInterrupted(CacheError):
    """Raised in callers that waited on a leader whose ``fn`` ended with a BaseException.

    KeyboardInterrupt, SystemExit and GeneratorExit belong to the leader's thread: they keep
    propagating there, and re-raising them in other threads would make those threads exit or
    look interrupted. Waiters get this error instead; ``__cause__`` is the leader's exception.
    """


def _type_name(cls: type) -> str:
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


class Unencodable(TypeError):
    """A value (possibly nested) of a type that has no stable key encoding (``memoize``)."""

    def __init__(self, value: object, reason: str = "") -> None:
        self.type_name = _type_name(type(value))
        super().__init__(reason or f"a value of type {self.type_name} cannot be encoded stably")


class NoValue(Exception):
    """Raised by a loader to end a read-through without a value, which is not a load error.

    The singleflight hands it to every waiter. ``entry``: raw bytes and a TTL (seconds) that
    the read-through stores for the key before the waiters are released, through the same
    fence as a loaded value (``ProtectedCache`` stores its tombstone this way).
    """

    entry: tuple[bytes, float] | None = None
