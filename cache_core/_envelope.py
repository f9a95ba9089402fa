"""The value envelope: a small header on every value the typed layer stores.

::

    byte 0   magic 0xCC          foreign bytes (another library, a raw SET) are detected
    byte 1   format version (1)  bytes from a future or past layout are detected, not mis-decoded
    byte 2   flags               bit 0: META follows; bit 1: tombstone (a cached "does not exist")
    byte 3   serializer id       JSON bytes are never handed to the pickle decoder, and so on
    [16 B]   META, when flagged: load time Δ (f64 s) and logical expiry (f64 UNIX time), for
             XFetch early refresh and stale-while-revalidate (wall clock: shared across hosts)
    ...      the serializer's payload

The common entry (no META, not a tombstone) is checked with one 4-byte comparison.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from .errors import SerializationError

__all__ = ["Entry", "pack", "plain_prefix", "serializer_id", "unpack"]

MAGIC: Final = 0xCC
VERSION: Final = 1
FLAG_META: Final = 0x01
FLAG_TOMBSTONE: Final = 0x02
_KNOWN_FLAGS: Final = FLAG_META | FLAG_TOMBSTONE
_META: Final = struct.Struct("<dd")
HEADER_SIZE: Final = 4
META_SIZE: Final = _META.size


@dataclass(slots=True, frozen=True)
class Entry:
    """A decoded envelope: the serializer payload plus the optional metadata."""

    payload: bytes
    delta: float | None = None
    expires_at: float | None = None
    tombstone: bool = False


def serializer_id(serializer: object) -> int:
    """The one-byte id of a serializer (its ``format_id``; 0 for one that declares none)."""
    fid = getattr(serializer, "format_id", b"")
    if isinstance(fid, bytes) and len(fid) == 1:
        return fid[0]
    if isinstance(fid, int) and 0 < fid < 256:
        return fid
    return 0


def plain_prefix(fid: int) -> bytes:
    """The 4 header bytes of an entry with no metadata and no tombstone flag."""
    return bytes((MAGIC, VERSION, 0, fid))


def pack(
    fid: int,
    payload: bytes,
    *,
    delta: float | None = None,
    expires_at: float | None = None,
    tombstone: bool = False,
) -> bytes:
    flags = FLAG_TOMBSTONE if tombstone else 0
    if delta is not None or expires_at is not None:
        flags |= FLAG_META
        meta = _META.pack(
            -1.0 if delta is None else delta, -1.0 if expires_at is None else expires_at
        )
        return bytes((MAGIC, VERSION, flags, fid)) + meta + payload
    return bytes((MAGIC, VERSION, flags, fid)) + payload


def unpack(data: bytes, fid: int) -> Entry:
    """Decode an envelope written for serializer ``fid``; anything else is SerializationError."""
    if len(data) < HEADER_SIZE or data[0] != MAGIC:
        raise SerializationError("stored bytes are not a cache_core value (bad magic)")
    if data[1] != VERSION:
        raise SerializationError(f"stored value has envelope version {data[1]}, expected {VERSION}")
    flags = data[2]
    if flags & ~_KNOWN_FLAGS:
        raise SerializationError(f"stored value has unknown envelope flags 0x{flags:02x}")
    if data[3] != fid:
        raise SerializationError(
            f"stored value was written by serializer id {data[3]}, this cache reads id {fid}"
        )
    tombstone = bool(flags & FLAG_TOMBSTONE)
    if not flags & FLAG_META:
        return Entry(data[HEADER_SIZE:], tombstone=tombstone)
    if len(data) < HEADER_SIZE + META_SIZE:
        raise SerializationError("stored value is truncated inside its metadata")
    delta, expires_at = _META.unpack_from(data, HEADER_SIZE)
    return Entry(
        data[HEADER_SIZE + META_SIZE :],
        None if delta < 0 else delta,
        None if expires_at < 0 else expires_at,
        tombstone,
    )
