"""Redis key helpers: prefixes, Cluster hash tags and SCAN glob escaping (no I/O, no redis-py)."""

from __future__ import annotations

import hashlib
from typing import Final

from ._validate import RESERVED_MARK, is_reserved

__all__ = ["check_prefix", "escape_glob", "fence_shares_slot", "slot_tag"]

_GLOB_SPECIAL: Final = str.maketrans({c: "\\" + c for c in "\\*?[]"})


def escape_glob(text: str) -> str:
    """Escape Redis glob metacharacters so ``text`` matches itself literally in SCAN MATCH."""
    return text.translate(_GLOB_SPECIAL)


def slot_tag(redis_key: str) -> str:
    """A hash tag that puts a companion key in ``redis_key``'s own Redis Cluster slot.

    Redis hashes the first non-empty ``{...}`` of a key, else the whole key. When the slot
    content cannot itself be written inside braces (it contains ``{`` or ``}``), a digest is
    used: the companions still share one slot with each other, just not with the value.
    """
    start = redis_key.find("{")
    if start != -1:
        end = redis_key.find("}", start + 1)
        if end > start + 1:
            return redis_key[start + 1 : end]
    if "{" in redis_key or "}" in redis_key:
        return hashlib.blake2b(redis_key.encode(), digest_size=12).hexdigest()
    return redis_key


def fence_shares_slot(redis_key: str) -> bool:
    """Whether the fence can live in the value's Cluster slot (not when braces are unbalanced)."""
    if "{" not in redis_key and "}" not in redis_key:
        return True
    start = redis_key.find("{")
    return start != -1 and redis_key.find("}", start + 1) > start + 1


def check_prefix(prefix: object) -> str:
    """``prefix`` if it can namespace a cache's Redis keys, else TypeError / ValueError naming
    ``prefix``: a str with a UTF-8 form, outside the library's reserved space."""
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be str, not {type(prefix).__name__}")
    if is_reserved(prefix):
        raise ValueError(
            f"prefix {prefix!r} lies in the library's reserved space (a ':'-segment "
            f"starting with {RESERVED_MARK!r}); choose another prefix"
        )
    try:
        prefix.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"prefix must be encodable as UTF-8, got {prefix!r}") from None
    return prefix
