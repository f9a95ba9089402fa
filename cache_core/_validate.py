"""Argument checks shared by every cache: keys, values and TTLs are rejected before any I/O."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Final

__all__ = [
    "MISSING",
    "TTL",
    "check_key",
    "check_keys",
    "check_items",
    "check_value",
    "ttl_ms",
    "ttl_seconds",
]

TTL = float | int | timedelta


class _Missing:
    """Sentinel type for "no default given"; falsy so a cached falsy value stays distinct."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<missing>"

    def __bool__(self) -> bool:
        return False


MISSING: Final = _Missing()


def check_key(key: object) -> str:
    """Return ``key`` if it is a non-empty str, else raise TypeError / ValueError."""
    if type(key) is str and key:
        return key
    if not isinstance(key, str):
        raise TypeError(f"key must be str, not {type(key).__name__}: {key!r}")
    if not key:
        raise ValueError("key must be a non-empty str, got ''")
    return key


def check_keys(keys: Iterable[str]) -> list[str]:
    """Validate an iterable of keys (a bare str is rejected: it would iterate characters)."""
    if isinstance(keys, str | bytes):
        raise TypeError(f"keys must be an iterable of str, not a single {type(keys).__name__}")
    try:
        wanted = list(keys)
    except TypeError as exc:
        raise TypeError(f"keys must be an iterable of str, not {type(keys).__name__}") from exc
    # Batch hot path: two C-level passes instead of a Python-level check per key.
    if set(map(type, wanted)) <= {str} and "" not in wanted:
        return wanted
    for key in wanted:
        check_key(key)
    return wanted


def check_value(value: object) -> bytes:
    """Return ``value`` as immutable bytes; anything that is not bytes-like is a TypeError."""
    if type(value) is bytes:
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise TypeError(f"value must be bytes-like, not {type(value).__name__}")


def check_items(items: Mapping[str, bytes]) -> dict[str, bytes]:
    """Validate a mapping of key -> bytes for ``mset``."""
    if not isinstance(items, Mapping):
        raise TypeError(f"items must be a Mapping[str, bytes], not {type(items).__name__}")
    return {check_key(k): check_value(v) for k, v in items.items()}


def check_entries(
    entries: Mapping[str, tuple[bytes, TTL | None]], default: float | None
) -> dict[str, tuple[bytes, float | None]]:
    """Validate ``mset_with_ttls`` input: key -> (bytes-like value, TTL); TTLs resolved."""
    if not isinstance(entries, Mapping):
        raise TypeError(
            f"entries must be a Mapping[str, (bytes, ttl)], not {type(entries).__name__}"
        )
    checked: dict[str, tuple[bytes, float | None]] = {}
    for key, pair in entries.items():
        if not isinstance(pair, tuple) or len(pair) != 2:
            raise TypeError(f"entries[{key!r}] must be a (value, ttl) tuple")
        checked[check_key(key)] = (check_value(pair[0]), ttl_seconds(pair[1], default))
    return checked


def ttl_seconds(ttl: object, default: float | None, name: str = "ttl") -> float | None:
    """Resolve a TTL argument to seconds, ``None`` meaning "no expiry".

    ``None`` selects ``default`` (itself already validated). Booleans are rejected even though
    they are ints: ``ttl=True`` is almost always a bug.
    """
    if ttl is None:
        return default
    if type(ttl) is float and 0.0 < ttl < math.inf:  # the common cases, checked cheaply
        return ttl
    if type(ttl) is int and ttl > 0:
        return float(ttl)
    if isinstance(ttl, timedelta):
        seconds = ttl.total_seconds()
    elif isinstance(ttl, int | float) and not isinstance(ttl, bool):
        seconds = float(ttl)
    else:
        raise TypeError(
            f"{name} must be a number of seconds or a timedelta, not {type(ttl).__name__}: {ttl!r}"
        )
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{name} must be a finite number of seconds > 0, got {ttl!r}")
    return seconds


def ttl_ms(seconds: float) -> int:
    """Milliseconds for Redis ``PX``: rounded down (never longer than asked), at least 1."""
    ms = int(seconds * 1000.0)
    return ms if ms > 0 else 1
