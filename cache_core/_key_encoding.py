"""The memoize key encoder: ``make_encoder(typed)`` turns a value into its key text.

Implements the grammar in ``_keys``' docstring: a table from exact type to the text of a value
of that type (scalars from ``_key_scalars``, containers nested at most ``MAX_DEPTH`` levels),
and for every other value ``__cache_key__``, enums, classes, dataclasses and subclasses of the
built-ins, in that order. The encoder is a few closures over that table: one dict lookup and one
call per value on the hot path (``KeyBuilder`` inlines the lookup).
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import fractions
import threading
import uuid
import weakref
from collections.abc import Callable
from typing import Any, Final

from ._key_scalars import (
    datetime_text,
    decimal_text,
    float_text,
    fraction_text,
    str_text,
    tagged,
    time_text,
    timedelta_text,
    type_name,
)
from .errors import Unencodable

__all__ = ["ENCODERS", "MAX_DEPTH", "Encoder", "TooDeep", "make_encoder"]

Encoder = Callable[[Any], str]


#: Containers (and ``__cache_key__`` / dataclass values) nested deeper than this in one argument
#: are a ``TypeError``: the work to key an argument stays bounded, and never a RecursionError.
MAX_DEPTH: Final = 100


class TooDeep(Unencodable):
    """A value nested more than ``MAX_DEPTH`` levels (or one that contains itself)."""

    def __init__(self, value: object) -> None:
        super().__init__(value, f"a value nested more than {MAX_DEPTH} levels deep")


_nesting = threading.local()


def _nested(fn: Encoder) -> Encoder:
    """``fn`` with the per-thread nesting depth counted (one level per container)."""

    def enter(value: Any) -> str:
        depth = getattr(_nesting, "depth", 0)
        if depth >= MAX_DEPTH:
            raise TooDeep(value)
        _nesting.depth = depth + 1
        try:
            return fn(value)
        finally:
            _nesting.depth = depth

    return enter


# Per-class facts found by introspection, computed once per class. Weak keys: a class defined
# inside a function may go away, and the cache must not keep it alive.
_DATACLASS_FIELDS: weakref.WeakKeyDictionary[type, tuple[str, tuple[str, ...]]] = (
    weakref.WeakKeyDictionary()
)


def _dataclass_info(cls: type) -> tuple[str, tuple[str, ...]]:
    info = _DATACLASS_FIELDS.get(cls)
    if info is None:
        names = tuple(f.name for f in dataclasses.fields(cls) if f.compare)
        info = _DATACLASS_FIELDS[cls] = (tagged("o", type_name(cls)), names)
    return info


# Built-in bases whose subclasses are encoded by their base value (a namedtuple like a tuple).
# Order matters: bool before int (bool cannot be subclassed, but keep the intent visible),
# datetime before date (a datetime is a date).
_BASES: Final[tuple[type, ...]] = (
    bool,
    int,
    float,
    str,
    bytes,
    bytearray,
    tuple,
    list,
    dict,
    set,
    frozenset,
    decimal.Decimal,
    fractions.Fraction,
    uuid.UUID,
    datetime.datetime,
    datetime.date,
    datetime.time,
    datetime.timedelta,
)

_BASE_VALUE: Final[dict[type, Callable[[Any], Any]]] = {
    int: int.__int__,
    float: float.__float__,
    str: str.__str__,
    bytes: bytes,
    bytearray: bytearray,
    tuple: tuple,
    list: list,
    dict: dict,
    set: set,
    frozenset: frozenset,
}


def make_encoder(typed: bool) -> Encoder:
    """Return ``encode(value) -> str`` for one ``typed`` mode (raises ``Unencodable``).

    ``encode.table`` (exact type -> encoder) and ``encode.other`` (everything else) are what
    ``KeyBuilder`` calls directly.
    """
    table = _scalar_table(typed)
    get = table.get

    def encode(value: Any) -> str:
        fn = get(type(value))
        if fn is not None:
            return fn(value)
        return other(value)

    _add_containers(table, encode, typed)
    other = _other_encoder(table, encode, typed)
    encode.table = table  # type: ignore[attr-defined]
    encode.other = other  # type: ignore[attr-defined]
    return encode


def _scalar_table(typed: bool) -> dict[type, Encoder]:
    """Exact type -> encoder, for the scalar types of the grammar."""

    def number(tag: str, fn: Callable[[Any], str]) -> Encoder:
        return lambda v: tag + fn(v)

    int_tag = "i" if typed else "n"

    def int_(v: int) -> str:
        # One frame for the commonest argument; str() refuses past 4300 digits: hex then.
        try:
            return int_tag + str(v)
        except ValueError:
            return int_tag + hex(v)

    def str_(v: str) -> str:
        if v.isascii():
            return "s" + str(len(v)) + ":" + v
        return str_text(v)

    return {
        type(None): lambda v: "N",
        int: int_,
        bool: (lambda v: "b1" if v else "b0") if typed else (lambda v: "n1" if v else "n0"),
        float: number("f" if typed else "n", float_text),
        decimal.Decimal: number("d" if typed else "n", decimal_text),
        fractions.Fraction: number("q" if typed else "n", fraction_text),
        str: str_,
        bytes: lambda v: "y" + v.hex(),
        bytearray: (lambda v: "Y" + v.hex()) if typed else (lambda v: "y" + v.hex()),
        uuid.UUID: lambda v: "u" + v.hex,
        datetime.datetime: datetime_text,
        datetime.date: lambda v: "a" + v.isoformat(),
        datetime.time: time_text,
        datetime.timedelta: timedelta_text,
    }


def _add_containers(table: dict[type, Encoder], encode: Encoder, typed: bool) -> None:
    """Add the built-in containers to ``table``; their items go through ``encode``."""
    set_tag = "F<" if typed else "<"

    def seq(values: Any) -> str:
        return ",".join([encode(v) for v in values])

    def sorted_set(values: Any) -> str:
        return ",".join(sorted({encode(v) for v in values}))

    def mapping(value: dict[Any, Any]) -> str:
        items = sorted([(encode(k), encode(v)) for k, v in value.items()])
        return "{" + ",".join([k + ":" + v for k, v in items]) + "}"

    table[tuple] = _nested(lambda v: "(" + seq(v) + ")")
    table[list] = _nested(lambda v: "[" + seq(v) + "]")
    table[dict] = _nested(mapping)
    table[set] = _nested(lambda v: "<" + sorted_set(v) + ">")
    table[frozenset] = _nested(lambda v: set_tag + sorted_set(v) + ">")


def _other_encoder(table: dict[type, Encoder], encode: Encoder, typed: bool) -> Encoder:
    """The encoder of values whose exact type is not in ``table``."""
    hooked = _nested(lambda v: encode(v.__cache_key__()))

    @_nested
    def fields(value: Any) -> str:
        head, names = _dataclass_info(type(value))
        return head + "(" + ",".join([encode(getattr(value, name)) for name in names]) + ")"

    def other(value: Any) -> str:
        cls = type(value)
        hook = getattr(cls, "__cache_key__", None)
        if hook is not None and callable(hook):
            return tagged("k", type_name(cls)) + hooked(value)
        if isinstance(value, enum.Enum):
            name = value._name_
            if name is None:  # a composite Flag without a name: by value
                return tagged("e", type_name(cls)) + encode(value._value_)
            return tagged("e", f"{type_name(cls)}.{name}")
        if isinstance(value, type):
            return tagged("c", type_name(value))
        if dataclasses.is_dataclass(value):
            return fields(value)
        for base in _BASES:
            if isinstance(value, base):
                convert = _BASE_VALUE.get(base)
                text = table[base](convert(value) if convert is not None else value)
                return tagged("t", type_name(cls)) + text if typed else text
        raise Unencodable(value)

    return other


#: One encoder per ``typed`` mode, built once.
ENCODERS: Final = {False: make_encoder(False), True: make_encoder(True)}
