"""MurmurHash3 x64_128 with mmh3's exact semantics, via the C core or mmh3.

Keys are turned into bytes here, before either implementation sees them: mmh3 segfaults on a str
holding a lone surrogate, so no str ever reaches it.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import mmh3

from ._backend import NATIVE, lib
from ._validate import check_int

__all__ = ["Key", "check_seed", "hash128", "key_bytes"]

Key: TypeAlias = str | bytes | bytearray | memoryview
"""What a bloom filter accepts as a key (collections.abc.Buffer needs Python 3.12)."""

_BYTES_LIKE = (bytearray, memoryview)


def key_bytes(key: object, name: str = "key") -> bytes:
    """Return the bytes hashed for ``key``: str as UTF-8, bytes-like objects as their raw bytes.

    This is the slow path shared by both backends (the hot paths inline the str/bytes cases).
    """
    if type(key) is bytes:
        return key
    if isinstance(key, str):
        try:
            return key.encode()
        except UnicodeEncodeError as exc:
            # A lone surrogate: reject it here rather than let mmh3 crash on it.
            raise ValueError(f"{name} {key!r} cannot be encoded as UTF-8: {exc.reason}") from exc
    if isinstance(key, bytes | bytearray | memoryview):
        # tobytes() also flattens non-contiguous or non-byte-format views.
        return bytes(key) if type(key) is not memoryview else key.tobytes()
    raise TypeError(f"{name} must be str or bytes-like, got {type(key).__name__}: {key!r:.80}")


def check_seed(seed: object) -> int:
    """Validate a murmur seed: an int in [0, 2**32); bool is rejected (almost always a bug)."""
    seed = check_int(seed, "seed")
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    return int(seed)


def _hash128_native(data: bytes, seed: int) -> int:
    # A struct returned by value: one C call; each field read costs ~75 ns, so read each once.
    r: Any = _c_hash128(data, len(data), seed)
    return r.lo | (r.hi << 64)  # type: ignore[no-any-return]


def _hash128_python(data: bytes, seed: int) -> int:
    # The third positional argument of mmh3.hash128 is x64arch, not signed: pass both by keyword.
    return int(mmh3.hash128(data, seed, x64arch=True, signed=False))


_c_hash128: Any = lib.cc_hash128 if lib is not None else None
_hash128_impl = _hash128_native if NATIVE else _hash128_python


def hash128(data: Key, seed: int = 0) -> int:
    """MurmurHash3 x64_128 of ``data`` as an unsigned 128-bit int (str is hashed as UTF-8).

    Equal to ``mmh3.hash128(data, seed, x64arch=True, signed=False)``; the low 64 bits are the
    digest's first half (h1), the high 64 bits its second half (h2), as the bloom index rule uses.
    """
    # Inline fast paths for the common argument types; the helpers raise the precise errors.
    if type(data) is str:
        try:
            data = data.encode()
        except UnicodeEncodeError:
            data = key_bytes(data, "data")
    elif type(data) is not bytes:
        data = key_bytes(data, "data")
    if type(seed) is not int or not 0 <= seed <= 0xFFFFFFFF:
        seed = check_seed(seed)
    return _hash128_impl(data, seed)
