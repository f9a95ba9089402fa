"""The codec engine under every msgspec serializer: exact round trips, typed or not.

msgspec encodes and decodes (JSON, or msgpack as an option); this module decides what it is
given, so that ``loads(dumps(v)) == v`` with the same types all the way down, or ``dumps``
refuses ``v`` with a ``SerializationError`` naming the type and its path (``$.edges[0]``).

Untyped values (``_Tagged``)
----------------------------
Plain data (exact ``dict`` with ``str`` keys, ``list``, ``str``, ``int``, finite ``float``,
``bool``, ``None``; with msgpack also ``bytes``) is handed to msgspec as it is, after one walk
that checks exact types (``Tagged.plain``: ``native/plain.c``, or the same walk in Python under
``CACHE_CORE_PURE_PYTHON=1``; in Python the walk costs more than msgspec's encode itself).
Everything else is rewritten first into plain data with type tags: an object with the single
key ``"__cc"`` holding ``[type_name, payload]``::

    tuple      {"__cc":["tuple",[...]]}
    set        {"__cc":["set",[...]]}                sorted when sortable (deterministic bytes)
    frozenset  {"__cc":["frozenset",[...]]}
    dict       {"__cc":["dict",[[key,value],...]]}  non-str keys, or a user dict holding "__cc"
    datetime   {"__cc":["datetime","2024-05-01T12:00:00+02:00"]}   tzinfo None or a timezone
    date, time, timedelta, uuid, decimal, bytes, bytearray, float (nan, inf, -inf)
    dataclass, namedtuple, struct, enum   {"__cc":["enum",["name", value]]}  registered only

Keys and payloads are tagged the same way, recursively, so a set of tuples or a dict keyed by
tuples comes back as it went in. No JSON object holding the tag key is ever a user dict, so
decoding is unambiguous. Classes are only ever built from the registry given to the
serializer (``types=``): a type name read from stored bytes is never imported.

Values that have no exact way back are refused: subclasses of the builtins (``OrderedDict``,
an ``IntEnum`` that is not registered, a ``str`` subclass), aware datetimes whose tzinfo is not
a fixed ``datetime.timezone`` (a ``ZoneInfo`` would come back as a fixed offset), memoryview,
unregistered classes, circular references.

Typed values (``TypedCodec``)
-----------------------------
With a type (a dataclass, ``msgspec.Struct``, ``TypedDict``, ``NamedTuple``, containers and
unions of them), msgspec writes the value's natural JSON (no tags: readable by any other
language) and decodes straight into the type, validating as it goes. ``dumps`` decodes its own
output once and compares: what would not come back equal (a ``+00:00:30`` UTC offset that
msgspec writes as ``Z``, an ``inf`` written as ``null``, a value of another type) is refused.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import datetime
import decimal
import enum
import functools
import math
import os
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, Literal

import msgspec

from ._backend import PURE_PYTHON_FORCED
from .errors import SerializationError

__all__ = [
    "NATIVE_PLAIN",
    "has_mark",
    "native_loads",
    "TAG",
    "Format",
    "Registry",
    "TypedCodec",
    "first_difference",
    "type_name",
]

try:
    from . import _plain as _plain_native
except ImportError as _exc:  # not built: the Python walk below does the same, slower
    if os.environ.get("CACHE_CORE_REQUIRE_NATIVE") == "1":
        raise ImportError(
            "CACHE_CORE_REQUIRE_NATIVE=1 but cache_core._plain cannot be imported; "
            "rebuild with `pip install -e .` and a C compiler"
        ) from _exc
    _plain_native = None  # type: ignore[assignment]

NATIVE_PLAIN: Final = _plain_native is not None and not PURE_PYTHON_FORCED
"""The codec's exact-type walk runs in C (``native/plain.c``); CACHE_CORE_PURE_PYTHON=1 forces
the Python walk."""


def _py_has_mark(data: bytes, mark: bytes) -> bool:
    return mark in data


has_mark: Final[Callable[[bytes, bytes], bool]] = (
    _plain_native.has_mark if NATIVE_PLAIN else _py_has_mark
)
"""``has_mark(data, mark)``: whether the tag key occurs in encoded bytes (C: glibc memmem)."""

native_loads: Final[Callable[..., Any] | None] = _plain_native.loads if NATIVE_PLAIN else None
"""``native_loads(decode, mark, revive, fallback, data)``: a serializer's loads in C, or None."""

TAG: Final = "__cc"
Format = Literal["json", "msgpack"]
_NoneType: Final = type(None)
_IDENT: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def type_name(obj: object) -> str:
    cls = obj if isinstance(obj, type) else type(obj)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def _key_path(parent: str, key: object) -> str:
    if type(key) is str and _IDENT.match(key):
        return f"{parent}.{key}"
    return f"{parent}[{key!r}]"


# -- the registry: the only classes an untyped decode ever builds ------------------------------

_KINDS: Final = ("dataclass", "namedtuple", "struct", "enum")


def _kind(cls: type) -> str | None:
    if isinstance(cls, type):
        if issubclass(cls, enum.Enum):
            return "enum"
        if issubclass(cls, msgspec.Struct):
            return "struct"
        if dataclasses.is_dataclass(cls):
            return "dataclass"
        if issubclass(cls, tuple) and hasattr(cls, "_fields"):
            return "namedtuple"
    return None


class Registry:
    """Classes that untyped values may hold, by stored name (``module.qualname`` by default)."""

    def __init__(self, types: Iterable[type] | Mapping[str, type]) -> None:
        named: dict[str, type] = {}
        items = types.items() if isinstance(types, Mapping) else ((None, t) for t in types)
        for name, cls in items:
            if _kind(cls) is None:
                raise TypeError(
                    "types must hold dataclass, NamedTuple, msgspec.Struct or Enum classes, "
                    f"got {cls!r}"
                )
            key = name if name is not None else f"{cls.__module__}.{cls.__qualname__}"
            if not isinstance(key, str) or not key:
                raise TypeError(f"types names must be non-empty str, got {key!r}")
            if key in named or cls in named.values():
                raise ValueError(f"types registers {key!r} ({cls.__qualname__}) twice")
            named[key] = cls
        self.classes: dict[str, type] = named
        self.names: dict[type, tuple[str, str]] = {
            cls: (kind, name) for name, cls in named.items() if (kind := _kind(cls))
        }


# -- untyped: plain-data check, tagging, reviving ---------------------------------------------


def _sorted_if_possible(items: Iterable[Any]) -> list[Any]:
    # Sorting makes the output deterministic across processes (str hashing is randomized);
    # mixed types that cannot be ordered keep iteration order.
    values = list(items)
    with contextlib.suppress(TypeError):
        values.sort()
    return values


def _float_tag(value: float) -> str:
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


_FLOATS: Final = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def _b64(data: bytes | bytearray) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(payload: object) -> bytes:
    if not isinstance(payload, str):
        raise TypeError("base64 payload must be a str")
    return base64.b64decode(payload, validate=True)


def _str_payload(parse: Callable[[str], Any]) -> Callable[[object], Any]:
    def decode(payload: object) -> Any:
        if not isinstance(payload, str):
            raise TypeError("payload must be a str")
        return parse(payload)

    return decode


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


def _list(payload: object) -> list[Any]:
    if type(payload) is not list:
        raise TypeError("payload must be a list")
    return payload


def _fixed_tz(value: datetime.datetime | datetime.time) -> bool:
    return value.tzinfo is None or type(value.tzinfo) is datetime.timezone


# Scalars tagged by exact type (subclasses are refused: they would come back as the base).
_SCALAR_TAGS: Final[dict[type, tuple[str, Callable[[Any], Any]]]] = {
    datetime.datetime: ("datetime", datetime.datetime.isoformat),
    datetime.date: ("date", datetime.date.isoformat),
    datetime.time: ("time", datetime.time.isoformat),
    datetime.timedelta: ("timedelta", lambda d: [d.days, d.seconds, d.microseconds]),
    uuid.UUID: ("uuid", str),
    decimal.Decimal: ("decimal", str),
    bytes: ("bytes", _b64),
    bytearray: ("bytearray", _b64),
}

_SCALAR_DECODERS: Final[dict[str, Callable[[Any], Any]]] = {
    "datetime": _str_payload(datetime.datetime.fromisoformat),
    "date": _str_payload(datetime.date.fromisoformat),
    "time": _str_payload(datetime.time.fromisoformat),
    "timedelta": _decode_timedelta,
    "uuid": _str_payload(uuid.UUID),
    "decimal": _str_payload(decimal.Decimal),
    "bytes": _unb64,
    "bytearray": lambda p: bytearray(_unb64(p)),
    "float": _decode_float,
    "int": _str_payload(int),
}

_DECODE_ERRORS: Final = (
    TypeError,
    ValueError,
    OverflowError,
    binascii.Error,
    decimal.InvalidOperation,
    msgspec.ValidationError,
)


def _plain_check(leaf: frozenset[type]) -> Callable[[Any], bool]:
    # A closure over locals: this walk is the whole cost of the exactness rule on plain data.
    def plain(obj: Any) -> bool:
        if type(obj) is dict:
            if TAG in obj:
                return False
            for k, v in obj.items():
                if type(k) is not str:
                    return False
                tv = type(v)
                if tv in leaf:
                    continue
                if tv is float:
                    if v - v == 0.0:  # finite (inf - inf and nan - nan are nan)
                        continue
                    return False
                if (tv is dict or tv is list) and plain(v):
                    continue
                return False
            return True
        for v in obj:
            tv = type(v)
            if tv in leaf:
                continue
            if tv is float:
                if v - v == 0.0:
                    continue
                return False
            if (tv is dict or tv is list) and plain(v):
                continue
            return False
        return True

    return plain


class Tagged:
    """Untyped values to and from plain data with type tags (see the module docstring)."""

    def __init__(self, registry: Registry, *, native_bytes: bool) -> None:
        self._registry = registry
        self._native_bytes = native_bytes
        leaf: set[type] = {str, int, bool, _NoneType}
        if native_bytes:
            leaf.add(bytes)
        if NATIVE_PLAIN:
            self.plain = _plain_native.plain_msgpack if native_bytes else _plain_native.plain_json
        else:
            self.plain = _plain_check(frozenset(leaf))
        """``plain(obj)``: True if ``obj`` (a dict or list) is plain data msgspec writes and
        reads back exactly (exact types, str keys, no tag key, finite floats)."""

    # -- encoding -------------------------------------------------------------------------------

    def native(self, obj: Any, path: str = "$", active: set[int] | None = None) -> Any:
        """``obj`` as plain data with tags; refuses what has no exact way back, naming the path."""
        if active is None:
            active = set()
        t = type(obj)
        if t is str or t is bool or obj is None:
            return obj
        if t is int:
            if obj.bit_length() > 14_000:  # about 4300 digits: the int <-> str limit
                try:
                    str(obj)
                except ValueError:
                    raise SerializationError(
                        f"cannot serialize int at {path}: more digits than "
                        "sys.get_int_max_str_digits() lets it be decoded with"
                    ) from None
            if self._native_bytes and not -(2**63) <= obj < 2**64:
                return {TAG: ["int", str(obj)]}  # msgpack has no integers past 64 bits
            return obj
        if t is float:
            return obj if math.isfinite(obj) else {TAG: ["float", _float_tag(obj)]}
        if t is bytes and self._native_bytes:
            return obj
        entry = _SCALAR_TAGS.get(t)
        if entry is not None:
            if t in (datetime.datetime, datetime.time) and not _fixed_tz(obj):
                raise SerializationError(
                    f"cannot serialize {type_name(obj)} at {path}: its tzinfo "
                    f"{type_name(obj.tzinfo)} would come back as a fixed offset; "
                    "convert it to UTC or a datetime.timezone first"
                )
            name, encode = entry
            return {TAG: [name, encode(obj)]}
        if id(obj) in active:
            raise SerializationError(f"cannot serialize circular reference at {path}")
        active.add(id(obj))
        try:
            return self._container(obj, t, path, active)
        finally:
            active.discard(id(obj))

    def _container(self, obj: Any, t: type, path: str, active: set[int]) -> Any:
        native = self.native
        if t is list:
            return [native(v, f"{path}[{i}]", active) for i, v in enumerate(obj)]
        if t is dict:
            if TAG not in obj and all(type(k) is str for k in obj):
                return {k: native(v, _key_path(path, k), active) for k, v in obj.items()}
            pairs = [
                [native(k, f"{path}<key {k!r}>", active), native(v, _key_path(path, k), active)]
                for k, v in obj.items()
            ]
            return {TAG: ["dict", pairs]}
        if t is tuple:
            return {TAG: ["tuple", [native(v, f"{path}[{i}]", active) for i, v in enumerate(obj)]]}
        if t is set or t is frozenset:
            items = _sorted_if_possible(obj)
            payload = [native(v, f"{path}[{i}]", active) for i, v in enumerate(items)]
            return {TAG: ["set" if t is set else "frozenset", payload]}
        known = self._registry.names.get(t)
        if known is not None:
            return self._registered(obj, known, path, active)
        kind = _kind(t)
        if kind is not None:
            raise SerializationError(
                f"cannot serialize unregistered {kind} {type_name(obj)} at {path}: register it "
                f"with types=[{t.__qualname__}], or give the cache its type (type=...)"
            )
        raise SerializationError(
            f"cannot serialize value of type {type_name(obj)} at {path}: "
            "it would not come back as the same type"
        )

    def _registered(
        self, obj: Any, known: tuple[str, str], path: str, active: set[int]
    ) -> dict[str, Any]:
        kind, name = known
        inner = f"{path}<{type(obj).__qualname__}>"
        if kind == "enum":
            return {TAG: ["enum", [name, self.native(obj.value, inner, active)]]}
        if kind == "namedtuple":
            items = [self.native(v, f"{inner}[{i}]", active) for i, v in enumerate(obj)]
            return {TAG: ["namedtuple", [name, items]]}
        if kind == "struct":
            names: tuple[str, ...] = obj.__struct_fields__
        else:
            names = tuple(f.name for f in dataclasses.fields(obj) if f.init)
        fields = {f: getattr(obj, f) for f in names}
        return {TAG: [kind, [name, self.native(fields, inner, active)]]}

    # -- decoding -------------------------------------------------------------------------------

    def revive(self, obj: Any) -> Any:
        """Undo ``native`` in place on a freshly decoded tree (every tag becomes its value)."""
        t = type(obj)
        if t is dict:
            if TAG in obj:
                return self._untag(obj)
            for k, v in obj.items():
                tv = type(v)
                if tv is dict or tv is list:
                    obj[k] = self.revive(v)
            return obj
        if t is list:
            for i, v in enumerate(obj):
                tv = type(v)
                if tv is dict or tv is list:
                    obj[i] = self.revive(v)
        return obj

    def _untag(self, obj: dict[str, Any]) -> Any:
        tagged = obj[TAG]
        if len(obj) != 1 or not (
            type(tagged) is list and len(tagged) == 2 and type(tagged[0]) is str
        ):
            raise SerializationError(f"cannot decode value: malformed {TAG!r} tag {obj!r:.80}")
        name, payload = tagged
        try:
            return self._decode_tag(name, payload)
        except SerializationError:
            raise
        except _DECODE_ERRORS as exc:
            raise SerializationError(
                f"cannot decode value: bad {name} payload {payload!r:.80}"
            ) from exc

    def _decode_tag(self, name: str, payload: Any) -> Any:
        revive = self.revive
        if name == "tuple":
            return tuple([revive(v) for v in _list(payload)])
        if name == "set":
            return {revive(v) for v in _list(payload)}
        if name == "frozenset":
            return frozenset([revive(v) for v in _list(payload)])
        if name == "dict":
            out: dict[Any, Any] = {}
            for pair in _list(payload):
                if not (type(pair) is list and len(pair) == 2):
                    raise TypeError("dict payload must be a list of [key, value] pairs")
                out[revive(pair[0])] = revive(pair[1])
            return out
        if name in _KINDS:
            return self._decode_registered(name, payload)
        decode = _SCALAR_DECODERS.get(name)
        if decode is None:
            raise SerializationError(f"cannot decode value: unknown type tag {name!r}")
        return decode(payload)

    def _decode_registered(self, kind: str, payload: Any) -> Any:
        if not (type(payload) is list and len(payload) == 2):
            raise TypeError(f"{kind} payload must be [name, value]")
        name, body = payload
        cls = self._registry.classes.get(name) if type(name) is str else None
        if cls is None or _kind(cls) != kind:
            raise SerializationError(
                f"cannot decode {kind} {name!r}: not registered with this serializer "
                "(pass it in types=)"
            )
        body = self.revive(body)
        if kind == "enum":
            return cls(body)
        if kind == "namedtuple":
            return cls(*_list(body))
        if type(body) is not dict:
            raise TypeError(f"{kind} fields must be an object")
        return cls(**body)


# -- typed ------------------------------------------------------------------------------------


def first_difference(a: Any, b: Any, path: str = "$") -> str | None:
    """The path of the first place where ``b`` differs from ``a`` in value or type, or None."""
    if type(a) is not type(b):
        return f"{path} ({type_name(a)} came back as {type_name(b)})"
    if isinstance(a, dict):
        if set(a) != set(b):
            return f"{path} (keys differ)"
        for k in a:
            found = first_difference(a[k], b[k], _key_path(path, k))
            if found:
                return found
        return None
    if isinstance(a, list | tuple) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            found = first_difference(x, y, f"{path}[{i}]")
            if found:
                return found
        return None
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        for f in dataclasses.fields(a):
            found = first_difference(getattr(a, f.name), getattr(b, f.name), f"{path}.{f.name}")
            if found:
                return found
        return None
    if isinstance(a, msgspec.Struct):
        for name in a.__struct_fields__:
            found = first_difference(getattr(a, name), getattr(b, name), f"{path}.{name}")
            if found:
                return found
        return None
    if a != b:
        return f"{path} ({a!r:.60} came back as {b!r:.60})"
    if isinstance(a, datetime.datetime | datetime.time) and a.utcoffset() != b.utcoffset():
        return f"{path} (offset {a.utcoffset()} came back as {b.utcoffset()})"
    return None


def _identity(value: Any) -> Any:
    return value


class TypedCodec:
    """Encode values of one type with msgspec and decode bytes straight into that type.

    ``format_id`` differs from the untyped serializer's, so the envelope tells a typed entry
    from an untyped (tagged) one: either reader treats the other's entry as undecodable, and
    ``get_or_set`` repairs it.
    """

    def __init__(self, type_: Any, *, fmt: Format = "json") -> None:
        try:
            if fmt == "json":
                self._decoder: Any = msgspec.json.Decoder(type_)
                self._encoder: Any = msgspec.json.Encoder()
                self.format_id = b"J"
            else:
                self._decoder = msgspec.msgpack.Decoder(type_)
                self._encoder = msgspec.msgpack.Encoder()
                self.format_id = b"M"
        except TypeError as exc:
            raise TypeError(f"type {type_!r} cannot be decoded by msgspec: {exc}") from exc
        self.type = type_
        self.fmt = fmt
        self._decode = self._decoder.decode
        self._encode = self._encoder.encode
        if native_loads is not None:
            # loads without a Python frame (an empty mark: nothing to revive); the method below
            # is the fallback that turns any decode error into SerializationError.
            self.loads = functools.partial(  # type: ignore[method-assign]
                native_loads, self._decode, b"", _identity, self.loads
            )

    def __repr__(self) -> str:
        return f"TypedCodec({self.type!r}, fmt={self.fmt!r})"

    def dumps(self, obj: Any) -> bytes:
        """Encode ``obj``; refuse it unless decoding the bytes gives it back equal, same type."""
        try:
            data: bytes = self._encode(obj)
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            raise SerializationError(
                f"cannot serialize value of type {type_name(obj)} as {self._type_text()}: {exc}"
            ) from exc
        try:
            back = self._decode(data)
        except (msgspec.ValidationError, msgspec.DecodeError, RecursionError) as exc:
            raise SerializationError(
                f"cannot serialize value of type {type_name(obj)} as {self._type_text()}: "
                f"it would not decode ({exc})"
            ) from exc
        # Equality compares nested values (a tuple is not equal to the list it came back as);
        # the walk that names the path runs only for a refused value.
        if type(back) is not type(obj) or back != obj:
            where = first_difference(obj, back) or "$"
            raise SerializationError(
                f"cannot serialize value of type {type_name(obj)} as {self._type_text()}: "
                f"it would not come back the same at {where}"
            )
        return data

    def loads(self, data: bytes) -> Any:
        """Decode into the type; bytes of another shape raise SerializationError."""
        try:
            return self._decode(data)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise SerializationError(f"cannot decode {self._type_text()}: {exc}") from exc
        except RecursionError as exc:
            raise SerializationError("cannot decode value: nested too deeply") from exc

    def _type_text(self) -> str:
        t = self.type
        return type_name(t) if isinstance(t, type) else repr(t)
