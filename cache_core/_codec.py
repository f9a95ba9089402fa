"""The codec engine under every msgspec serializer: exact round trips, typed or not.

msgspec encodes and decodes (JSON, or msgpack as an option); this module decides what it is
given, so that ``loads(dumps(v)) == v`` with the same types all the way down, or ``dumps``
refuses ``v`` with a ``SerializationError`` naming the type and its path (``$.edges[0]``).

Untyped values (``Tagged``, in ``_codec_tagged``)
-------------------------------------------------
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

import dataclasses
import datetime
import functools
import os
import re
from collections.abc import Callable
from typing import Any, Final, Literal

import msgspec

from ._backend import PURE_PYTHON_FORCED
from .errors import SerializationError

__all__ = [
    "NATIVE_PLAIN",
    "TAG",
    "Format",
    "TypedCodec",
    "first_difference",
    "has_mark",
    "key_path",
    "native_loads",
    "native_plain",
    "type_name",
]

try:
    from . import _plain as _plain_native
except ImportError as _exc:  # not built: the Python walk in _codec_tagged does the same, slower
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


def native_plain(native_bytes: bool) -> Callable[[Any], bool] | None:
    """The C exact-type walk (``Tagged.plain``) for msgpack (``native_bytes``: bytes are plain)
    or JSON; None when the walk runs in Python (not built, or CACHE_CORE_PURE_PYTHON=1)."""
    if not NATIVE_PLAIN:
        return None
    walk: Callable[[Any], bool] = (
        _plain_native.plain_msgpack if native_bytes else _plain_native.plain_json
    )
    return walk


TAG: Final = "__cc"
Format = Literal["json", "msgpack"]
_IDENT: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def type_name(obj: object) -> str:
    cls = obj if isinstance(obj, type) else type(obj)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def key_path(parent: str, key: object) -> str:
    """The path of ``parent``'s item ``key`` in error messages: ``$.name`` or ``$[1]``."""
    if type(key) is str and _IDENT.match(key):
        return f"{parent}.{key}"
    return f"{parent}[{key!r}]"


# -- typed ------------------------------------------------------------------------------------


def first_difference(a: Any, b: Any, path: str = "$") -> str | None:
    """The path of the first place where ``b`` differs from ``a`` in value or type, or None."""
    if type(a) is not type(b):
        return f"{path} ({type_name(a)} came back as {type_name(b)})"
    if isinstance(a, dict):
        if set(a) != set(b):
            return f"{path} (keys differ)"
        for k in a:
            found = first_difference(a[k], b[k], key_path(path, k))
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
