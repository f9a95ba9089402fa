"""A frozen copy of the JSONSerializer of before issue 16 (baseline for tests and benchmarks).

Serializers: turn Python values into the bytes a byte cache stores, and back.

``JSONSerializer`` is the default everywhere. ``PickleSerializer`` signs what it stores and is
never a default. ``CompressedSerializer`` wraps either one and zlib-compresses large values.

Each class has a one-byte ``format_id``; the typed layer writes it into the value header so
that bytes written by another serializer are detected instead of mis-decoded.

JSON type tags
--------------
Values JSON cannot represent are written as a JSON object with exactly one key, the reserved
tag key ``"__cc"``, whose value is ``[type_name, payload]``::

    datetime   {"__cc":["datetime","2024-05-01T12:00:00+02:00"]}   isoformat()
    date       {"__cc":["date","2024-05-01"]}
    time       {"__cc":["time","12:00:00.000001"]}
    timedelta  {"__cc":["timedelta",[days,seconds,microseconds]]}
    UUID       {"__cc":["uuid","0b6c...-..."]}
    Decimal    {"__cc":["decimal","1.10"]}                          str(), exact
    bytes      {"__cc":["bytes","AAEC"]}                            base64
    bytearray  {"__cc":["bytearray","AAEC"]}
    set        {"__cc":["set",[...]]}                               sorted when sortable
    frozenset  {"__cc":["frozenset",[...]]}
    float      {"__cc":["float","nan"]}                             only nan, inf, -inf
    dataclass  {"__cc":["dataclass",["name",{field:value,...}]]}   registered types only
    dict       {"__cc":["dict",[[key,value],...]]}                  a user dict holding "__cc"

The last row is the escape: a user's own dict that contains the tag key is written as a list
of pairs, so no JSON object holding the tag key is ever a user dict, and decoding is
unambiguous. Every object holding the tag key that is not a well-formed tag is an error.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import datetime
import decimal
import hashlib
import hmac
import json
import math
import pickle
import uuid
import zlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

from cache_core.errors import SerializationError

__all__ = [
    "CompressedSerializer",
    "JSONSerializer",
    "PickleSerializer",
    "Serializer",
]

_TAG = "__cc"
# What every tagged or escaped object looks like in our own output. Its absence from the stored
# bytes lets ``loads`` use the plain C decoder without an object_hook.
_MARK = b'"__cc"'

# Types the C encoder writes as they are; the scan never descends into them.
_SCALARS = frozenset({str, int, float, bool, type(None)})


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


def _type_name(obj: object) -> str:
    cls = type(obj)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


class _Unsafe(Exception):
    """The fast encoding path cannot be trusted for this value; take the careful path."""


def _scan(obj: object) -> None:
    """Raise _Unsafe if a dict anywhere in ``obj`` has a non-str key or holds the tag key.

    The C encoder silently turns int/float/bool/None keys into strings, which would not
    round-trip, and offers no hook for keys, so this walk is the price of catching them. It only
    visits containers; scalars are skipped by a set lookup on their type.
    """
    if isinstance(obj, dict):
        for k, v in obj.items():
            if type(k) is not str:
                raise _Unsafe
            if type(v) not in _SCALARS:
                _scan(v)
        if _TAG in obj:
            raise _Unsafe
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            if type(v) not in _SCALARS:
                _scan(v)


def _sorted_if_possible(items: Iterable[Any]) -> list[Any]:
    # Sorting makes the output deterministic across processes (str hashing is randomized);
    # mixed types that cannot be ordered keep iteration order.
    values = list(items)
    with contextlib.suppress(TypeError):
        values.sort()
    return values


def _b64(data: bytes | bytearray) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(payload: object) -> bytes:
    if not isinstance(payload, str):
        raise TypeError("base64 payload must be a str")
    return base64.b64decode(payload, validate=True)


def _float_tag(value: float) -> str:
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


_FLOATS = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def _decode_float(payload: object) -> float:
    if not isinstance(payload, str) or payload not in _FLOATS:
        raise ValueError(f"float payload must be one of {sorted(_FLOATS)}")
    return _FLOATS[payload]


def _decode_timedelta(payload: object) -> datetime.timedelta:
    if not (
        isinstance(payload, list) and len(payload) == 3 and all(type(x) is int for x in payload)
    ):
        raise ValueError("timedelta payload must be [days, seconds, microseconds]")
    return datetime.timedelta(days=payload[0], seconds=payload[1], microseconds=payload[2])


def _str_payload(parse: Callable[[str], Any]) -> Callable[[object], Any]:
    def decode(payload: object) -> Any:
        if not isinstance(payload, str):
            raise TypeError("payload must be a str")
        return parse(payload)

    return decode


# Encoders by exact type: subclasses (a pendulum DateTime, an IntFlag-like bytes subclass) are
# rejected rather than silently decoded as their base class.
_ENCODERS: dict[type, tuple[str, Callable[[Any], Any]]] = {
    datetime.datetime: ("datetime", datetime.datetime.isoformat),
    datetime.date: ("date", datetime.date.isoformat),
    datetime.time: ("time", datetime.time.isoformat),
    datetime.timedelta: ("timedelta", lambda d: [d.days, d.seconds, d.microseconds]),
    uuid.UUID: ("uuid", str),
    decimal.Decimal: ("decimal", str),
    bytes: ("bytes", _b64),
    bytearray: ("bytearray", _b64),
    set: ("set", _sorted_if_possible),
    frozenset: ("frozenset", _sorted_if_possible),
    float: ("float", _float_tag),
}

_DECODERS: dict[str, Callable[[Any], Any]] = {
    "datetime": _str_payload(datetime.datetime.fromisoformat),
    "date": _str_payload(datetime.date.fromisoformat),
    "time": _str_payload(datetime.time.fromisoformat),
    "timedelta": _decode_timedelta,
    "uuid": _str_payload(uuid.UUID),
    "decimal": _str_payload(decimal.Decimal),
    "bytes": _unb64,
    "bytearray": lambda p: bytearray(_unb64(p)),
    "set": lambda p: set(_list_payload(p)),
    "frozenset": lambda p: frozenset(_list_payload(p)),
    "float": _decode_float,
}


def _list_payload(payload: object) -> list[Any]:
    if not isinstance(payload, list):
        raise TypeError("payload must be a list")
    return payload


def _path(parent: str, part: object) -> str:
    return f"{parent}[{part!r}]"


class JSONSerializer:
    """Compact UTF-8 JSON with tagged extension types; the default serializer everywhere.

    Round-trips JSON values plus datetime (naive or aware), date, time, timedelta, UUID, Decimal,
    bytes, bytearray, set, frozenset, non-finite floats and instances of the dataclasses named in
    ``types`` (see the module docstring for the tag scheme). Tuples come back as lists.

    ``types`` lists the dataclasses that may be stored, as classes (stored under
    ``module.qualname``) or as a mapping ``{name: class}`` for names that survive a rename.
    Decoding only ever builds classes from this registry: a type name read from stored bytes is
    never imported, which would be pickle's arbitrary-construction problem again. Dataclasses are
    rebuilt through ``__init__`` from their ``init=True`` fields, so ``__post_init__`` runs and
    ``init=False`` fields are recomputed, not stored.

    Aware datetimes come back with a fixed-offset ``timezone`` (equal instant, zone name lost);
    ``fold`` is not kept. Non-finite floats are tagged so the output stays strict JSON that any
    other reader accepts. Non-str dict keys are an error rather than silently becoming strings.
    """

    format_id = b"j"

    def __init__(self, *, types: Iterable[type] | Mapping[str, type] = ()) -> None:
        named: dict[str, type] = {}
        items = types.items() if isinstance(types, Mapping) else ((None, t) for t in types)
        for name, cls in items:
            if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
                raise TypeError(f"types must hold dataclass classes, got {cls!r}")
            key = name if name is not None else f"{cls.__module__}.{cls.__qualname__}"
            if not isinstance(key, str) or not key:
                raise TypeError(f"types names must be non-empty str, got {key!r}")
            if key in named or cls in named.values():
                raise ValueError(f"types registers {key!r} ({cls.__qualname__}) twice")
            named[key] = cls
        self._classes: dict[str, type] = named
        self._names: dict[type, str] = {cls: name for name, cls in named.items()}
        self._encoder = json.JSONEncoder(
            ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=self._default
        )
        self._plain_encoder = json.JSONEncoder(
            ensure_ascii=False, allow_nan=False, separators=(",", ":")
        )
        self._decoder = json.JSONDecoder(parse_constant=self._reject_constant)
        self._tag_decoder = json.JSONDecoder(
            object_hook=self._object_hook, parse_constant=self._reject_constant
        )

    def __repr__(self) -> str:
        return f"JSONSerializer(types={sorted(self._classes)!r})"

    # -- encoding ---------------------------------------------------------------------------

    def dumps(self, obj: Any) -> bytes:
        """Encode ``obj`` as compact UTF-8 JSON.

        Fast path: a container-only scan, then the C encoder with ``default=`` for extension
        types. Anything unusual (a non-str key, a dict holding the tag key, a non-finite float,
        an unsupported type) reruns the careful walk, which escapes or names the offending path.
        """
        try:
            _scan(obj)
            text = self._encoder.encode(obj)
        except (_Unsafe, TypeError, ValueError, RecursionError):
            text = self._careful_dumps(obj)
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise SerializationError(
                "cannot serialize str containing a lone surrogate "
                f"{exc.object[exc.start : exc.end]!r}"
            ) from exc

    def _default(self, obj: Any) -> Any:
        name, payload = self._tag(obj, "value")
        if name == "dataclass":
            _scan(payload[1])
        return {_TAG: [name, payload]}

    def _tag(self, obj: Any, path: str) -> tuple[str, Any]:
        entry = _ENCODERS.get(type(obj))
        if entry is not None:
            name, encode = entry
            return name, encode(obj)
        dc_name = self._names.get(type(obj))
        if dc_name is not None:
            fields = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.init}
            return "dataclass", [dc_name, fields]
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            raise SerializationError(
                f"cannot serialize unregistered dataclass {_type_name(obj)} at {path}: "
                f"register it with JSONSerializer(types=[{type(obj).__qualname__}])"
            )
        raise SerializationError(
            f"cannot serialize value of type {_type_name(obj)} at {path} as JSON"
        )

    def _careful_dumps(self, obj: Any) -> str:
        try:
            native = self._to_native(obj, "value", set())
            return self._plain_encoder.encode(native)
        except SerializationError:
            raise
        except RecursionError as exc:
            raise SerializationError("cannot serialize value: nested too deeply") from exc
        except (TypeError, ValueError) as exc:
            raise SerializationError(
                f"cannot serialize value of type {_type_name(obj)}: {exc}"
            ) from exc

    def _to_native(self, obj: Any, path: str, active: set[int]) -> Any:
        """Convert ``obj`` to plain JSON types with tags and escapes; errors name the path."""
        # Same acceptance as the C encoder: subclasses of str/int/float/list/tuple/dict pass.
        if obj is None or isinstance(obj, (str, int)):
            return obj
        if isinstance(obj, float):
            return obj if math.isfinite(obj) else {_TAG: ["float", _float_tag(obj)]}
        if id(obj) in active:
            raise SerializationError(f"cannot serialize circular reference at {path}")
        active.add(id(obj))
        try:
            if isinstance(obj, dict):
                for k in obj:
                    if not isinstance(k, str):
                        raise SerializationError(
                            f"cannot serialize dict key {k!r} of type {_type_name(k)} at {path}: "
                            "JSON object keys must be str"
                        )
                if _TAG in obj:
                    pairs = [
                        [k, self._to_native(v, _path(path, k), active)] for k, v in obj.items()
                    ]
                    return {_TAG: ["dict", pairs]}
                return {k: self._to_native(v, _path(path, k), active) for k, v in obj.items()}
            if isinstance(obj, (list, tuple)):
                return [self._to_native(v, _path(path, i), active) for i, v in enumerate(obj)]
            name, payload = self._tag(obj, path)
            if name in ("set", "frozenset"):
                payload = [self._to_native(v, f"{path}<element>", active) for v in payload]
            elif name == "dataclass":
                dc_name, fields = payload
                payload = [
                    dc_name,
                    self._to_native(fields, f"{path}<{type(obj).__qualname__}>", active),
                ]
            return {_TAG: [name, payload]}
        finally:
            active.discard(id(obj))

    # -- decoding ---------------------------------------------------------------------------

    def loads(self, data: bytes) -> Any:
        """Decode bytes written by ``dumps``; anything else raises SerializationError.

        Bytes without the tag marker take the plain C decoder (no object_hook), so untagged
        values decode at ``json.loads`` speed.
        """
        raw = _as_bytes(data)
        decoder = self._tag_decoder if _MARK in raw else self._decoder
        try:
            return decoder.decode(raw.decode("utf-8"))
        except SerializationError:
            raise
        except UnicodeDecodeError as exc:
            raise SerializationError(f"cannot decode JSON value: not UTF-8 ({exc.reason})") from exc
        except json.JSONDecodeError as exc:
            raise SerializationError(f"cannot decode JSON value: {exc}") from exc
        except RecursionError as exc:
            raise SerializationError("cannot decode JSON value: nested too deeply") from exc
        except (ValueError, OverflowError) as exc:
            # e.g. an integer beyond sys.get_int_max_str_digits(): json raises a bare ValueError
            raise SerializationError(f"cannot decode JSON value: {exc}") from exc

    @staticmethod
    def _reject_constant(name: str) -> Any:
        raise SerializationError(f"cannot decode JSON value: {name} is not valid JSON")

    def _object_hook(self, obj: dict[str, Any]) -> Any:
        if _TAG not in obj:
            return obj
        tagged = obj[_TAG]
        if len(obj) != 1 or not (
            isinstance(tagged, list) and len(tagged) == 2 and isinstance(tagged[0], str)
        ):
            raise SerializationError(
                f"cannot decode JSON value: malformed {_TAG!r} tag {obj!r:.80}"
            )
        name, payload = tagged
        try:
            if name == "dict":
                return self._decode_pairs(payload)
            if name == "dataclass":
                return self._decode_dataclass(payload)
            decode = _DECODERS.get(name)
            if decode is None:
                raise SerializationError(f"cannot decode JSON value: unknown type tag {name!r}")
            return decode(payload)
        except SerializationError:
            raise
        except (
            TypeError,
            ValueError,
            OverflowError,
            binascii.Error,
            decimal.InvalidOperation,
        ) as exc:
            raise SerializationError(
                f"cannot decode JSON value: bad {name} payload {payload!r:.80}"
            ) from exc

    @staticmethod
    def _decode_pairs(payload: object) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for pair in _list_payload(payload):
            if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)):
                raise TypeError("dict payload must be a list of [str, value] pairs")
            out[pair[0]] = pair[1]
        return out

    def _decode_dataclass(self, payload: object) -> Any:
        if not (isinstance(payload, list) and len(payload) == 2 and isinstance(payload[1], dict)):
            raise TypeError("dataclass payload must be [name, fields]")
        name, fields = payload
        cls = self._classes.get(name) if isinstance(name, str) else None
        if cls is None:
            raise SerializationError(
                f"cannot decode dataclass {name!r}: not registered with this JSONSerializer "
                "(pass it in types=)"
            )
        return cls(**fields)


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

    format_id = b"z"
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

    def dumps(self, obj: Any) -> bytes:
        """Encode with the inner serializer; compress when the encoding is large enough."""
        data = self.inner.dumps(obj)
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
