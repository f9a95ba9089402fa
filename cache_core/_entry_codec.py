"""EntryCodec: a typed cache's values to stored bytes and back (serializer + envelope + TTLs).

One object holds everything a value goes through on its way to a byte cache and back:

* the serializer (its typed form with ``type=``), whose ``loads`` is made *strict*: any failure
  of a third-party decoder becomes ``SerializationError``, so undecodable stored bytes always
  read as "undecodable" (a repaired miss in ``get_or_set``);
* the envelope (``_envelope``): a 4-byte header naming the serializer, optional XFetch / stale
  metadata, and the tombstone form of "does not exist" (``ProtectedCache``);
* the TTLs a write uses: jittered against avalanches (``_jitter``), stretched by the stale
  window when ``stale_ttl`` is on.

No I/O, no locks: the read-through policy (``_read_through``) and the ``TypedCache`` front
(``_typed``) both encode and decode through it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from ._codec import TypedCodec
from ._envelope import FLAG_TOMBSTONE, MAGIC, VERSION, Entry, pack, plain_prefix, serializer_id
from ._envelope import unpack as unpack_entry
from ._jitter import jittered
from ._options import ReadThroughOptions
from ._protocols import missing_methods
from ._serializers import (
    CompressedSerializer,
    JSONSerializer,
    MsgpackSerializer,
    PickleSerializer,
    Serializer,
)
from ._validate import check_key
from .errors import SerializationError

__all__ = [
    "EntryCodec",
    "check_serializer",
    "choose_serializer",
    "strict_loads",
    "typed_serializer",
]

#: Serializers whose ``loads`` already raise only SerializationError: used as they are.
_OWN_SERIALIZERS: Final = (
    JSONSerializer,
    MsgpackSerializer,
    PickleSerializer,
    CompressedSerializer,
    TypedCodec,
)

Encoded = dict[str, tuple[bytes, float | None]]


def check_serializer(serializer: object) -> Serializer:
    """``serializer`` if it has callable ``dumps`` and ``loads``, else TypeError."""
    if not isinstance(serializer, Serializer) or missing_methods(serializer, Serializer):
        raise TypeError(
            f"serializer must have dumps() and loads(), not {type(serializer).__name__}"
        )
    return serializer


def choose_serializer(serializer: object, type_: Any) -> Serializer:
    """The serializer a typed cache uses: ``serializer`` (JSON when None), checked, in its
    typed form when ``type_`` is given."""
    chosen = JSONSerializer() if serializer is None else check_serializer(serializer)
    return chosen if type_ is None else typed_serializer(chosen, type_)


def typed_serializer(serializer: Serializer, type_: Any) -> Serializer:
    """The serializer's typed form for ``type_`` (its ``for_type``), checked once."""
    for_type = getattr(serializer, "for_type", None)
    if not callable(for_type):
        raise TypeError(
            f"type= needs a serializer with a typed form (for_type), such as JSONSerializer "
            f"or MsgpackSerializer; {type(serializer).__name__} has none"
        )
    typed = for_type(type_)
    if not isinstance(typed, Serializer):
        raise TypeError(f"{type(serializer).__name__}.for_type returned {typed!r}")
    return typed


def strict_loads(serializer: Serializer) -> Callable[[bytes], Any]:
    """``serializer.loads`` whose every failure is a SerializationError (see the module doc)."""
    loads = serializer.loads
    if type(serializer) in _OWN_SERIALIZERS:
        return loads
    name = type(serializer).__name__

    def strict(data: bytes) -> Any:
        try:
            return loads(data)
        except SerializationError:
            raise
        except Exception as exc:
            raise SerializationError(f"{name}.loads failed: {type(exc).__name__}: {exc}") from exc

    return strict


class EntryCodec:
    """Values of one serializer to envelopes and back; TTLs jittered with ``random``.

    ``clock``: the wall clock of the expiry written into metadata (shared between hosts).
    Public attributes are read on hot paths: ``prefix`` (the 4 header bytes of a plain entry:
    one comparison tells the common case), ``loads`` (strict) and ``dumps``.
    """

    __slots__ = (
        "clock",
        "dumps",
        "fid",
        "loads",
        "prefix",
        "random",
        "serializer",
        "tomb_prefix",
        "tombstone",
    )

    def __init__(
        self,
        serializer: Serializer,
        *,
        clock: Callable[[], float],
        random: Callable[[], float],
    ) -> None:
        self.serializer = serializer
        self.dumps: Callable[[object], bytes] = serializer.dumps
        self.loads: Callable[[bytes], Any] = strict_loads(serializer)
        self.fid = fid = serializer_id(serializer)
        self.prefix = plain_prefix(fid)
        self.tombstone = pack(fid, b"", tombstone=True)
        self.tomb_prefix = bytes((MAGIC, VERSION, FLAG_TOMBSTONE, fid))
        self.clock = clock
        self.random = random

    # -- TTLs ------------------------------------------------------------------------------

    def ttls(
        self, base: float | None, opts: ReadThroughOptions
    ) -> tuple[float | None, float | None]:
        """(logical TTL after jitter, physical TTL to write: logical + the stale window)."""
        if base is None:
            return None, None
        logical = jittered(base, opts.ttl_jitter, self.random)
        if opts.stale_ttl is None:
            return logical, logical
        return logical, logical + opts.stale_ttl

    # -- encoding --------------------------------------------------------------------------

    def payload(self, key: str, value: object) -> bytes:
        try:
            return self.dumps(value)
        except SerializationError as exc:
            raise SerializationError(f"cannot encode the value for key {key!r}: {exc}") from exc

    def encode(
        self,
        key: str,
        value: object,
        opts: ReadThroughOptions,
        logical: float | None,
        delta: float = 0.0,
    ) -> bytes:
        """The stored form of ``value``: with metadata (load time ``delta``, logical expiry)
        when the options read it (early refresh, stale), else the plain envelope."""
        payload = self.payload(key, value)
        if opts.wants_meta and logical is not None:
            return pack(self.fid, payload, delta=delta, expires_at=self.clock() + logical)
        return pack(self.fid, payload)

    def encode_many(
        self, items: Mapping[str, object], base: float | None, opts: ReadThroughOptions
    ) -> Encoded:
        """Encoded entries, each with its own jittered TTL: the one batch encoder of ``mset``
        and ``mset_loaded`` (the warmer's path)."""
        entries: Encoded = {}
        if opts.wants_meta or base is None:
            for key, value in items.items():
                check_key(key)
                logical, physical = self.ttls(base, opts)  # a TTL of its own per key
                entries[key] = (self.encode(key, value, opts, logical), physical)
            return entries
        # The warming path: encode and ttls inlined (no metadata, a TTL per key).
        dumps, prefix, random, jitter = self.dumps, self.prefix, self.random, opts.ttl_jitter
        for key, value in items.items():
            if type(key) is not str or not key:
                check_key(key)  # the byte cache checks the rest of the grammar before I/O
            try:
                payload = dumps(value)
            except SerializationError as exc:
                raise SerializationError(f"cannot encode the value for key {key!r}: {exc}") from exc
            entries[key] = (prefix + payload, base * (1.0 - jitter * random()))
        return entries

    # -- decoding --------------------------------------------------------------------------

    def decode(self, data: bytes) -> Any:
        """The value in ``data`` (SerializationError if undecodable or a tombstone)."""
        if data[:4] == self.prefix:  # the plain envelope: a 4-byte check and one slice
            return self.loads(data[4:])
        return self.loads(self.entry(data).payload)

    def entry(self, data: bytes) -> Entry:
        """The envelope of a stored value (SerializationError for a tombstone)."""
        entry = unpack_entry(data, self.fid)
        if entry.tombstone:
            raise SerializationError("stored value is a tombstone, not a value")
        return entry

    def fresh(self, data: bytes | None) -> tuple[Any, bytes] | None:
        """(value, data) if ``data`` holds a value not past its logical expiry, else None."""
        if data is None:
            return None
        try:
            if data[:4] == self.prefix:
                return self.loads(data[4:]), data
            entry = self.entry(data)
            if entry.expires_at is not None and self.clock() >= entry.expires_at:
                return None
            return self.loads(entry.payload), data
        except SerializationError:
            return None

    def is_tombstone(self, data: bytes | None) -> bool:
        """True if ``data`` is this codec's "does not exist" entry."""
        return data is not None and data[:4] == self.tomb_prefix
