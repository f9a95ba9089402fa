"""Argument checks shared by every cache: keys, values and TTLs are rejected before any I/O."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Final, TypeVar

_T = TypeVar("_T")

__all__ = [
    "MAX_TTL",
    "MISSING",
    "RESERVED_MARK",
    "TTL",
    "is_reserved",
    "check_bool",
    "check_callable",
    "check_int",
    "check_key",
    "check_number",
    "check_keys",
    "check_items",
    "check_value",
    "has_segment",
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

#: The longest TTL any cache accepts: 100 years (3,153,600,000 s). Every backend can store it
#: (Redis refuses a PX whose deadline overflows a 64-bit millisecond clock); a longer one is a
#: ``ValueError`` before any I/O, on every cache, instead of a late ``BackendError``.
MAX_TTL: Final = 100 * 365 * 24 * 3600.0

#: The library's reserved key space. A key segment (the start of a key, or the text after a
#: ``:``) that starts with this belongs to the library: lease locks, shared bloom filters,
#: snapshots. User keys may not enter it, so every ``clear()`` and ``scan_keys()`` can tell the
#: library's keys of *any* cache (a child prefix too) from entries by the key text alone.
RESERVED_MARK: Final = "__cc"
_RESERVED_SEGMENT: Final = ":" + RESERVED_MARK


def is_reserved(text: str) -> bool:
    """Whether ``text`` (a key, or a Redis key with its prefix removed) is in the reserved space."""
    return text.startswith(RESERVED_MARK) or _RESERVED_SEGMENT in text


def has_segment(rest: bytes, mark: bytes = RESERVED_MARK.encode()) -> bool:
    """``is_reserved`` on the raw bytes of a Redis key with its prefix removed (SCAN results,
    invalidation messages); ``mark`` narrows it to one kind of library key (``__cc_fence__:``)."""
    return rest.startswith(mark) or b":" + mark in rest


def check_key(key: object) -> str:
    """Return ``key`` if it is a usable key, else raise TypeError / ValueError naming ``key``.

    Usable: a non-empty str with a UTF-8 form (no lone surrogates) outside the reserved space.
    The common case (ASCII, no ``__cc``) costs three C-level checks.
    """
    if type(key) is str and key and key.isascii() and RESERVED_MARK not in key:
        return key
    return _check_key_slow(key)


def _check_key_slow(key: object) -> str:
    if not isinstance(key, str):
        raise TypeError(f"key must be str, not {type(key).__name__}: {key!r}")
    if not key:
        raise ValueError("key must be a non-empty str, got ''")
    if not key.isascii():
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(
                f"key must be encodable as UTF-8 (no lone surrogates), got {key!r}"
            ) from None
    if is_reserved(key):
        raise ValueError(
            f"key {key!r} lies in the library's reserved space (a key or a ':'-segment "
            f"starting with {RESERVED_MARK!r}); choose another key"
        )
    return key


def check_keys(keys: Iterable[str]) -> list[str]:
    """Validate an iterable of keys (a bare str is rejected: it would iterate characters)."""
    if isinstance(keys, str | bytes):
        raise TypeError(f"keys must be an iterable of str, not a single {type(keys).__name__}")
    try:
        wanted = list(keys)
    except TypeError as exc:
        raise TypeError(f"keys must be an iterable of str, not {type(keys).__name__}") from exc
    # Batch hot path: a few C-level passes instead of a Python-level check per key.
    if set(map(type, wanted)) <= {str} and "" not in wanted:
        joined = "\n".join(wanted)
        if joined.isascii() and RESERVED_MARK not in joined:
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
    if type(ttl) is float and 0.0 < ttl <= MAX_TTL:  # the common cases, checked cheaply
        return ttl
    if type(ttl) is int and 0 < ttl <= MAX_TTL:
        return float(ttl)
    if isinstance(ttl, timedelta):
        seconds = ttl.total_seconds()
    elif isinstance(ttl, int | float) and not isinstance(ttl, bool):
        if isinstance(ttl, int) and ttl > MAX_TTL:
            raise ValueError(
                f"{name} must be at most {MAX_TTL:.0f} seconds (100 years), got {ttl!r}"
            )
        seconds = float(ttl)
    else:
        raise TypeError(
            f"{name} must be a number of seconds or a timedelta, not {type(ttl).__name__}: {ttl!r}"
        )
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{name} must be a finite number of seconds > 0, got {ttl!r}")
    if seconds > MAX_TTL:
        raise ValueError(f"{name} must be at most {MAX_TTL:.0f} seconds (100 years), got {ttl!r}")
    return seconds


def ttl_ms(seconds: float) -> int:
    """Milliseconds for Redis ``PX``: rounded down (never longer than asked), at least 1."""
    ms = int(seconds * 1000.0)
    return ms if ms > 0 else 1


# -- small argument checks shared by every module (each names the argument) -----------------


def check_callable(value: _T, name: str) -> _T:
    """``value`` if it is callable, else ``TypeError`` naming ``name``."""
    if not callable(value):
        raise TypeError(f"{name} must be callable, not {type(value).__name__}")
    return value


def check_bool(value: object, name: str) -> bool:
    """``value`` if it is a bool (not merely truthy), else ``TypeError`` naming ``name``."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, not {type(value).__name__}")
    return value


def check_int(value: object, name: str, *, minimum: int | None = None) -> int:
    """``value`` if it is an int (a bool is not) ``>= minimum``; else TypeError / ValueError."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}: {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def check_number(
    value: object,
    name: str,
    *,
    minimum: float | None = None,
    positive: bool = False,
    maximum: float | None = None,
) -> float:
    """``value`` as a finite float (an int is fine, a bool is not) within the bounds given:
    ``minimum`` inclusive, ``positive`` (> 0), ``maximum`` inclusive; else TypeError /
    ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}: {value!r}")
    number = float(value)
    if (
        not math.isfinite(number)
        or (minimum is not None and number < minimum)
        or (positive and number <= 0)
        or (maximum is not None and number > maximum)
    ):
        bounds = [
            "finite",
            *([f">= {minimum}"] if minimum is not None else []),
            *(["> 0"] if positive else []),
            *([f"<= {maximum}"] if maximum is not None else []),
        ]
        raise ValueError(f"{name} must be a {' and '.join(bounds)} number, got {value!r}")
    return number
