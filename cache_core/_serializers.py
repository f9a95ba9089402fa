"""Serializers: turn Python values into the bytes a byte cache stores, and back.

``JSONSerializer`` is the default everywhere; ``MsgpackSerializer`` is the same engine writing
msgpack. Both encode with msgspec and keep one promise, which the tests prove: what ``dumps``
accepts, ``loads`` returns equal and of the same types all the way down; what could not come
back that way, ``dumps`` refuses with ``SerializationError`` naming the type and its path. The
tag scheme that carries tuples, sets, datetimes and the rest through JSON is in ``_codec``.
``PickleSerializer`` signs what it stores and is never a default. ``CompressedSerializer`` wraps
any of them and zlib-compresses large values.

Each class has a one-byte ``format_id``; the typed layer writes it into the value header so
that bytes written by another serializer are detected instead of mis-decoded. ``for_type(T)``
returns the serializer a ``TypedCache(type=T)`` uses: it decodes straight into ``T``.

Entries written by earlier versions of ``JSONSerializer`` (same tags, tuples written as lists)
are read as they were written.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import pickle
import zlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

import msgspec

from ._codec import TAG, Format, TypedCodec, has_mark, native_loads, type_name
from ._codec_tagged import Registry, Tagged
from .errors import SerializationError

__all__ = [
    "CompressedSerializer",
    "JSONSerializer",
    "MsgpackSerializer",
    "PickleSerializer",
    "Serializer",
]


@runtime_checkable
class Serializer(Protocol):
    """Turns a value into bytes and back; every serializer in cache_core implements it."""

    def dumps(self, obj: Any) -> bytes: ...

    def loads(self, data: bytes) -> object: ...


def _as_bytes(data: object) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"data must be bytes-like, not {type(data).__name__}")


_type_name = type_name


class _MsgspecSerializer:
    """The untyped engine shared by the JSON and msgpack serializers (see ``_codec``)."""

    format_id: bytes
    _fmt: Format
    _mark: bytes  # the tag key as it appears in the encoding; absent means "nothing to revive"

    def __init__(self, *, types: Iterable[type] | Mapping[str, type] = ()) -> None:
        self._registry = Registry(types)
        self._tagged = Tagged(self._registry, native_bytes=self._fmt == "msgpack")
        self._plain = self._tagged.plain
        self._native = self._tagged.native
        self._revive = self._tagged.revive
        self._encode: Callable[[Any], bytes]
        self._decode: Callable[[bytes], Any]
        if self._fmt == "json":
            self._encode = msgspec.json.Encoder().encode
            self._decode = msgspec.json.Decoder().decode
        else:
            self._encode = msgspec.msgpack.Encoder().encode
            self._decode = msgspec.msgpack.Decoder().decode
        if native_loads is not None:
            # loads without a Python frame (native/plain.c); the method below is its fallback
            # for anything unusual, and the whole of loads under CACHE_CORE_PURE_PYTHON=1.
            self.loads = functools.partial(  # type: ignore[method-assign]
                native_loads, self._decode, self._mark, self._revive, self.loads
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(types={sorted(self._registry.classes)!r})"

    def for_type(self, type_: Any) -> TypedCodec:
        """The serializer of a ``TypedCache(type=type_)``: decodes into ``type_``, validating."""
        return TypedCodec(type_, fmt=self._fmt)

    def dumps(self, obj: Any) -> bytes:
        """Encode ``obj``; refuse it (SerializationError, with its path) if it cannot come back.

        Plain data goes to msgspec as it is, after one exact-type walk; anything else is first
        rewritten with type tags (``_codec``).
        """
        t = type(obj)
        if t is dict or t is list:
            try:
                if self._plain(obj):
                    return self._encode(obj)
            except (RecursionError, OverflowError, ValueError):
                pass  # too deep, circular, an int too large: the careful path says which, where
        return self._careful_dumps(obj)

    def _careful_dumps(self, obj: Any) -> bytes:
        try:
            return self._encode(self._native(obj))
        except SerializationError:
            raise
        except RecursionError as exc:
            raise SerializationError("cannot serialize value: nested too deeply") from exc
        except UnicodeEncodeError as exc:
            raise SerializationError(
                "cannot serialize str containing a lone surrogate "
                f"{exc.object[exc.start : exc.end]!r}"
            ) from exc
        except (TypeError, ValueError, OverflowError) as exc:
            raise SerializationError(
                f"cannot serialize value of type {type_name(obj)}: {exc}"
            ) from exc

    def loads(self, data: bytes) -> Any:
        """Decode bytes written by ``dumps``; anything else raises SerializationError.

        Bytes without the tag key decode at msgspec speed; the others are revived in one walk.
        """
        raw = data if type(data) is bytes else _as_bytes(data)
        try:
            value = self._decode(raw)
            if has_mark(raw, self._mark):
                value = self._revive(value)
            return value
        except SerializationError:
            raise
        except RecursionError as exc:
            raise SerializationError("cannot decode value: nested too deeply") from exc
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError, TypeError) as exc:
            raise SerializationError(f"cannot decode {self._fmt} value: {exc}") from exc


class JSONSerializer(_MsgspecSerializer):
    """Compact UTF-8 JSON, exact round trips; the default serializer everywhere.

    Round-trips JSON values plus tuple, set, frozenset, dicts with non-str keys (int, tuple,
    ...), datetime (naive or with a ``datetime.timezone``), date, time, timedelta, UUID,
    Decimal, bytes, bytearray, non-finite floats, and instances of the dataclasses, NamedTuples,
    ``msgspec.Struct`` classes and Enums named in ``types`` (see ``_codec`` for the tags).

    ``types`` lists those classes (stored under ``module.qualname``) or maps names to them
    (``{name: class}``, for names that survive a rename). Decoding only ever builds classes from
    this registry: a type name read from stored bytes is never imported. Dataclasses are rebuilt
    through ``__init__`` from their ``init=True`` fields, so ``__post_init__`` runs.
    Values with no exact way back (subclasses of builtins, a ``ZoneInfo`` tzinfo, unregistered
    classes) are refused by ``dumps``. Output is strict JSON, readable by any other reader.
    """

    format_id = b"j"
    _fmt: Format = "json"
    _mark = b'"' + TAG.encode() + b'"'


class MsgpackSerializer(_MsgspecSerializer):
    """msgpack through the same engine and the same promise as ``JSONSerializer``.

    Smaller and a little faster than JSON, not readable in ``redis-cli``. bytes are stored as
    msgpack binary (no base64); everything else is tagged as in JSON.
    """

    format_id = b"m"
    _fmt: Format = "msgpack"
    _mark = b"\xa4" + TAG.encode()


class PickleSerializer:
    """Pickle signed with HMAC-SHA256; never a default.

    ``pickle.loads`` runs arbitrary code chosen by whoever wrote the bytes, and a shared cache
    is writable by more parties than the application. Stored bytes are ``tag + pickle`` where
    ``tag`` is the 32-byte HMAC-SHA256 of the pickle under ``key``; ``loads`` verifies it with
    a constant-time comparison and only then unpickles. Rotating the key makes old entries
    undecodable (SerializationError), which the typed layer treats as a miss.
    """

    format_id = b"p"
    _TAG_SIZE = hashlib.sha256().digest_size

    def __init__(self, key: bytes | str, *, protocol: int = pickle.HIGHEST_PROTOCOL) -> None:
        if isinstance(key, str):
            key = key.encode("utf-8")
        elif isinstance(key, (bytearray, memoryview)):
            key = bytes(key)
        if not isinstance(key, bytes):
            raise TypeError(f"key must be bytes or str, not {type(key).__name__}")
        if not key:
            raise ValueError("key must be a non-empty secret, got an empty key")
        if type(protocol) is not int or not 0 <= protocol <= pickle.HIGHEST_PROTOCOL:
            raise ValueError(
                f"protocol must be an int in 0..{pickle.HIGHEST_PROTOCOL}, got {protocol!r}"
            )
        self._key = key
        self._protocol = protocol

    def __repr__(self) -> str:
        return f"PickleSerializer(key=<hidden>, protocol={self._protocol})"

    def _sign(self, payload: bytes) -> bytes:
        return hmac.digest(self._key, payload, "sha256")

    def dumps(self, obj: Any) -> bytes:
        """Pickle ``obj`` and prefix the HMAC of the pickle."""
        try:
            payload = pickle.dumps(obj, protocol=self._protocol)
        except Exception as exc:  # pickling fails with many types: PicklingError, TypeError, ...
            raise SerializationError(
                f"cannot pickle value of type {_type_name(obj)}: {exc}"
            ) from exc
        return self._sign(payload) + payload

    def loads(self, data: bytes) -> Any:
        """Verify the HMAC, then unpickle; bytes that fail verification never reach pickle."""
        raw = _as_bytes(data)
        size = self._TAG_SIZE
        if len(raw) <= size:
            raise SerializationError(
                f"cannot decode pickle value: {len(raw)} bytes is too short to be signed"
            )
        tag, payload = raw[:size], raw[size:]
        if not hmac.compare_digest(tag, self._sign(payload)):
            raise SerializationError(
                "cannot decode pickle value: signature mismatch (tampered, unsigned, "
                "or written with another key)"
            )
        try:
            return pickle.loads(payload)
        except Exception as exc:
            raise SerializationError(f"cannot decode pickle value: {exc}") from exc


class CompressedSerializer:
    """Wraps a serializer and zlib-compresses encodings of at least ``threshold`` bytes.

    The output starts with one marker byte: ``0x00`` raw, ``0x01`` zlib. Small values pay only
    that byte. ``max_size`` caps the decompressed size, so a small stored blob cannot expand
    into gigabytes of memory (a decompression bomb).
    """

    format_id: bytes = b"z"
    _RAW = 0
    _ZLIB = 1

    def __init__(
        self,
        inner: Serializer,
        *,
        threshold: int = 1024,
        level: int = 6,
        max_size: int = 64 * 1024 * 1024,
    ) -> None:
        if not isinstance(inner, Serializer):
            raise TypeError(f"inner must be a Serializer, not {type(inner).__name__}")
        if type(threshold) is not int or threshold < 0:
            raise ValueError(f"threshold must be an int >= 0, got {threshold!r}")
        if type(level) is not int or not -1 <= level <= 9:
            raise ValueError(f"level must be an int in -1..9, got {level!r}")
        if type(max_size) is not int or max_size <= 0:
            raise ValueError(f"max_size must be an int > 0, got {max_size!r}")
        self.inner = inner
        self.threshold = threshold
        self.level = level
        self.max_size = max_size

    def __repr__(self) -> str:
        return (
            f"CompressedSerializer({self.inner!r}, threshold={self.threshold}, "
            f"level={self.level}, max_size={self.max_size})"
        )

    def for_type(self, type_: Any) -> CompressedSerializer:
        """Compression over the inner serializer's typed form (``inner.for_type(type_)``)."""
        for_type = getattr(self.inner, "for_type", None)
        if for_type is None:
            raise TypeError(f"{type(self.inner).__name__} has no typed form (for_type)")
        typed = CompressedSerializer(
            for_type(type_), threshold=self.threshold, level=self.level, max_size=self.max_size
        )
        typed.format_id = b"Z"  # a typed entry is not read as an untyped one, and vice versa
        return typed

    def dumps(self, obj: Any) -> bytes:
        """Encode with the inner serializer; compress when the encoding is large enough.

        An encoding above ``max_size`` is refused here: ``loads`` would refuse to inflate it,
        and an entry that can never be read must not be stored.
        """
        data = self.inner.dumps(obj)
        if len(data) > self.max_size:
            raise SerializationError(
                f"cannot serialize value of type {_type_name(obj)}: its encoding is "
                f"{len(data)} bytes, above max_size={self.max_size} (loads would refuse it)"
            )
        if len(data) >= self.threshold:
            packed = zlib.compress(data, self.level)
            # Incompressible data stays raw: never pay the inflate on read for nothing.
            if len(packed) < len(data):
                return b"\x01" + packed
        return b"\x00" + data

    def loads(self, data: bytes) -> Any:
        """Undo ``dumps``: strip the marker, inflate under the size cap, decode with inner."""
        raw = _as_bytes(data)
        if not raw:
            raise SerializationError("cannot decode compressed value: empty data")
        marker = raw[0]
        if marker == self._RAW:
            return self.inner.loads(raw[1:])
        if marker != self._ZLIB:
            raise SerializationError(
                f"cannot decode compressed value: unknown marker {marker:#04x}"
            )
        inflater = zlib.decompressobj()
        try:
            # Ask for one byte more than allowed: getting it proves the value is too large,
            # and zlib never allocated more than the cap to find out.
            body = inflater.decompress(memoryview(raw)[1:], self.max_size + 1)
        except zlib.error as exc:
            raise SerializationError(f"cannot decode compressed value: {exc}") from exc
        if len(body) > self.max_size:
            raise SerializationError(
                f"cannot decode compressed value: inflates past max_size={self.max_size} bytes"
            )
        # Below the cap, decompress() consumed all input, so nothing is left pending.
        if not inflater.eof or inflater.unused_data:
            raise SerializationError("cannot decode compressed value: truncated or trailing data")
        return self.inner.loads(body)
