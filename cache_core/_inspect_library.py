"""The library-key pass of ``inspect``: lease locks, shared bloom filters, bloom snapshots.

One SCAN whose MATCH returns only the library's reserved keys (``__cc``) under a prefix, bounded
by an optional deadline, then a pipeline per 500 locks (``PTTL`` and the token, against Redis'
``TIME``) and, per bloom filter, its ``:meta`` parameters and a ``BITCOUNT`` of each part.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from ._inspect_scan import PIPELINE, Coverage, scan
from ._redis_keys import escape_glob
from ._validate import has_segment

__all__ = ["BloomInfo", "LibraryKeys", "LockInfo", "bloom_info", "library_keys", "lock_age"]

_LOCK: Final = b"__cc_lock__:"
_BLOOM: Final = b"__ccbf__:"
_SNAPSHOT: Final = b"__ccbs__:"


@dataclass
class LockInfo:
    key: str
    lease_left_s: float | None
    age_s: float | None


@dataclass
class BloomInfo:
    key: str
    capacity: int
    error_rate: float
    num_bits: int
    num_hashes: int
    bits_set: int
    fill_ratio: float
    estimated_fpr: float
    approx_count: int


@dataclass
class LibraryKeys:
    locks: list[LockInfo] = field(default_factory=list)
    blooms: list[BloomInfo] = field(default_factory=list)
    snapshots: list[str] = field(default_factory=list)
    coverage: float = 1.0  # below 1.0: the deadline came before the scan ended


def library_keys(
    client: Any,
    kp: str,
    scan_count: int,
    coverage: Coverage,
    progress: Callable[[int], None],
    deadline: float | None,
    clock: Callable[[], float],
) -> LibraryKeys:
    """Locks, bloom filters and snapshots of this prefix and of prefixes nested under it."""
    found = LibraryKeys()
    locks: list[bytes] = []
    metas: list[bytes] = []
    cut = len(kp.encode())
    pages = scan(client, escape_glob(kp) + "*__cc*", scan_count, coverage, progress)
    while True:
        if deadline is not None and clock() >= deadline:
            found.coverage = coverage.fraction if coverage.bits else 0.0
            break
        page = next(pages, None)
        if page is None:
            break
        for key in page:
            if not has_segment(key[cut:]):
                continue
            if _LOCK in key:
                locks.append(key)
            elif _BLOOM in key and key.endswith(b":meta"):
                metas.append(key)
            elif _SNAPSHOT in key and key.endswith(b":ptr"):
                found.snapshots.append(key.decode("utf-8", "replace"))
    for first in range(0, len(locks), PIPELINE):
        found.locks.extend(_describe_locks(client, locks[first : first + PIPELINE]))
    for meta_key in metas:
        bloom = bloom_info(client, meta_key)
        if bloom is not None:
            found.blooms.append(bloom)
    return found


def _describe_locks(client: Any, batch: list[bytes]) -> list[LockInfo]:
    """The locks of ``batch`` still held: lease left and age, in one pipeline."""
    pipe = client.pipeline(transaction=False)
    pipe.time()
    for key in batch:
        pipe.pttl(key)
        pipe.get(key)
    replies = pipe.execute(raise_on_error=False)
    now = replies[0]
    now_ms = now[0] * 1000 + now[1] // 1000 if isinstance(now, list | tuple) else None
    held: list[LockInfo] = []
    for i, key in enumerate(batch):
        pttl, token = replies[1 + 2 * i], replies[2 + 2 * i]
        if token is None:
            continue  # released since the scan saw it
        held.append(
            LockInfo(
                key.decode("utf-8", "replace"),
                pttl / 1000 if isinstance(pttl, int) and pttl >= 0 else None,
                lock_age(token, now_ms),
            )
        )
    return held


def lock_age(token: object, now_ms: int | None) -> float | None:
    """Seconds since the lock was taken, from its token ``<hex ms>-<random>`` (see _lease_lock)."""
    if not isinstance(token, bytes) or now_ms is None:
        return None
    stamp, sep, _ = token.partition(b"-")
    try:
        taken = int(stamp, 16)
    except ValueError:
        return None
    return max(now_ms - taken, 0) / 1000 if sep else None


def bloom_info(client: Any, meta_key: bytes) -> BloomInfo | None:
    """A shared bloom filter's parameters and fill; None when its ``:meta`` is unreadable."""
    raw = client.get(meta_key)
    try:
        params = json.loads(raw)
        m, k = int(params["num_bits"]), int(params["num_hashes"])
        part_bits = int(params["part_bits"])
    except (TypeError, ValueError, KeyError):
        return None
    head = meta_key[: -len(b":meta")]
    pipe = client.pipeline(transaction=False)
    for i in range(-(-m // part_bits)):
        pipe.bitcount(head + b":p:%d" % i)
    bits = sum(n for n in pipe.execute(raise_on_error=False) if isinstance(n, int))
    fill = bits / m if m else 0.0
    approx = round(-m / k * math.log1p(-min(bits, m - 1) / m)) if m else 0
    return BloomInfo(
        meta_key.decode("utf-8", "replace"),
        int(params["capacity"]),
        float(params["error_rate"]),
        m,
        k,
        bits,
        fill,
        fill**k,
        approx,
    )
