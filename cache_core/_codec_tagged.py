"""Untyped values to and from plain data with type tags (``Tagged``), and the registry of the
only classes an untyped decode ever builds (``Registry``).

The format (which values pass as they are, the ``"__cc"`` tags, what is refused) is specified in
``_codec``'s docstring, "Untyped values".
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import datetime
import decimal
import enum
import math
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

import msgspec

from ._codec import TAG, key_path, native_plain, type_name
from .errors import SerializationError

__all__ = ["Registry", "Tagged"]

_NoneType: Final = type(None)


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
        walk = native_plain(native_bytes)
        self.plain = walk if walk is not None else _plain_check(frozenset(leaf))
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
                return {k: native(v, key_path(path, k), active) for k, v in obj.items()}
            pairs = [
                [native(k, f"{path}<key {k!r}>", active), native(v, key_path(path, k), active)]
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
