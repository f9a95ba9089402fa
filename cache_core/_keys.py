"""Cache keys for ``@memoize``: a canonical text encoding of a call's bound arguments.

The key of a call is ``{namespace}:k1:{generation}:{arguments}`` where ``arguments`` encodes the
bound arguments (``inspect.Signature.bind`` + ``apply_defaults``), one value per parameter in
declaration order, joined by ``,``. The encoding is built only from the values themselves, never
from ``hash()``, ``id()`` or ``repr()`` of arbitrary objects, so it is the same in every process
and under every ``PYTHONHASHSEED``. Over ``LONG_KEY`` characters, or when it holds the reserved
mark ``__cc``, ``arguments`` is replaced by ``#`` + the 32 hex digits of ``hash128`` of its UTF-8
bytes. ``k1`` is the version of this
encoding: a deliberate change bumps it so old entries are never read with new meanings.

Grammar (each item is self-delimiting; ``<len>`` counts characters)::

    None            N
    number          n<num>      bool, int, float, Decimal, Fraction: equal values, same text
    str             s<len>:<text>         (S<hex of UTF-8, surrogatepass> if it holds surrogates)
    bytes           y<hex>      bytearray too
    UUID            u<32 hex>
    datetime        D<len>:<iso>          aware: converted to UTC, suffixed "Z"
    date            a<iso>
    time            h<len>:<iso>          aware: hZ<microseconds since midnight, UTC>
    timedelta       r<total microseconds>
    Enum member     e<len>:<module.qualname.name>
    class           c<len>:<module.qualname>
    __cache_key__   k<len>:<module.qualname><encoded return value of obj.__cache_key__()>
    dataclass       o<len>:<module.qualname>(<compare=True fields in order>)
    tuple           (a,b)       list [a,b]      dict {k:v,k:v}      set, frozenset <a,b>

``<num>``: an integral value as decimal digits (``0x..`` hex past ``str(int)``'s digit limit);
otherwise ``repr(float)`` when the value is exactly a float, else ``p/q`` in lowest terms;
``inf``, ``-inf``, ``nan``. A Decimal whose normalized coefficient digits plus exponent size
exceed ``DECIMAL_EXACT_LIMIT`` (4300) is written ``[-]<digits>E<exponent>`` (trailing zeros
stripped) instead: its exact ratio could take unbounded work to build. Dict items and set
elements are sorted by their encoded text, so insertion order and hash order never matter;
list and tuple order do.

Bounded work: every value is encoded in time linear in its size (huge ints are written in hex,
huge Decimals as above), and containers nested more than ``MAX_DEPTH`` (100) levels raise
``TypeError``.

Equality (``typed=False``): two calls share an entry exactly when their bound arguments are
equal under Python's ``==``, like ``functools.lru_cache`` (``1``, ``1.0``, ``True`` and
``Decimal(1)`` share; ``-0.0`` and ``0.0`` share; ``b"a"`` and ``bytearray(b"a")`` share; a
namedtuple and the equal tuple share), with these documented exceptions: every NaN equals every
other NaN (one entry, rather than a new entry per call); a Decimal past
``DECIMAL_EXACT_LIMIT`` shares only with equal Decimals, not with an equal int or Fraction;
enum members are identified by class and name (``IntEnum`` members do not share with plain
ints); ``OrderedDict`` compares like a ``dict`` (order ignored); objects with ``__cache_key__``
are equal when that value is equal.

``typed=True`` additionally separates types: numbers are tagged ``i`` int, ``b`` bool, ``f``
float, ``d`` Decimal, ``q`` Fraction; ``Y`` bytearray; ``F<...>`` frozenset; a subclass of a
supported built-in (namedtuple, str subclass, OrderedDict...) is prefixed ``t<len>:<type name>``.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import fractions
import inspect
import math
import threading
import uuid
import weakref
from collections.abc import Callable
from typing import Any, Final

from ._hashing import hash128
from ._validate import RESERVED_MARK
from .errors import Unencodable

__all__ = [
    "KEY_VERSION",
    "LONG_KEY",
    "MAX_DEPTH",
    "KeyBuilder",
    "Unencodable",
    "hash128",
    "make_encoder",
    "value_text",
]

KEY_VERSION: Final = 1
#: Argument texts longer than this are replaced by their 128-bit hash.
LONG_KEY: Final = 200

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


def _type_name(cls: type) -> str:
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def _text(tag: str, text: str) -> str:
    return tag + str(len(text)) + ":" + text


def _int_text(value: int) -> str:
    try:
        return str(value)
    except ValueError:  # past sys.get_int_max_str_digits(): hex has no limit
        return hex(value)


def _ratio_text(p: int, q: int) -> str:
    """Canonical text of the rational p/q (lowest terms, q > 0)."""
    if q == 1:
        return _int_text(p)
    try:
        f = p / q
    except OverflowError:
        return f"{_int_text(p)}/{_int_text(q)}"
    if f.as_integer_ratio() == (p, q):
        return repr(f)  # the value is exactly this float: share the float's text
    return f"{_int_text(p)}/{_int_text(q)}"


def _float_text(value: float) -> str:
    if value != value:
        return "nan"
    if value in (_INF, -_INF):
        return "inf" if value > 0 else "-inf"
    if value.is_integer():
        return _int_text(int(value))  # also maps -0.0 to "0"
    return repr(value)


_INF: Final = float("inf")


#: A Decimal whose normalized digits plus exponent size exceed this is keyed by its decimal
#: text instead of its exact ratio: ``as_integer_ratio()`` of ``Decimal("1e20000000")`` would
#: build a 20-million-digit int. Every float, and every int ``str()`` can print, stays below it.
DECIMAL_EXACT_LIMIT: Final = 4300


def _decimal_text(value: decimal.Decimal) -> str:
    if value.is_nan():
        return "nan"
    if value.is_infinite():
        return "-inf" if value.is_signed() else "inf"
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)  # finite: nan and inf were handled above
    if len(digits) + abs(exponent) <= DECIMAL_EXACT_LIMIT:
        return _ratio_text(*value.as_integer_ratio())
    # Normalize (strip trailing zeros) so equal Decimals written differently share one text.
    coefficient = "".join(map(str, digits)).rstrip("0")
    if not coefficient:
        return "0"
    exponent += len(digits) - len(coefficient)
    if len(coefficient) + abs(exponent) > DECIMAL_EXACT_LIMIT:
        return ("-" if sign else "") + coefficient + "E" + str(exponent)
    p = int(coefficient)
    if exponent >= 0:
        p, q = p * 10**exponent, 1
    else:
        q = 10**-exponent
        common = math.gcd(p, q)
        p, q = p // common, q // common
    return _ratio_text(-p if sign else p, q)


def _fraction_text(value: fractions.Fraction) -> str:
    return _ratio_text(value.numerator, value.denominator)


def _str(value: str) -> str:
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: no UTF-8 form, so no key text either
            return "S" + value.encode("utf-8", "surrogatepass").hex()
    return "s" + str(len(value)) + ":" + value


def _datetime(value: datetime.datetime) -> str:
    offset = value.utcoffset()
    if offset is None:
        return _text("D", value.isoformat())
    try:
        utc = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    except OverflowError:  # near datetime.min/max: the instant as microseconds
        delta = value.replace(tzinfo=None) - datetime.datetime.min - offset
        return "D" + _int_text(delta // datetime.timedelta(microseconds=1)) + "Z"
    return _text("D", utc.isoformat() + "Z")


def _time(value: datetime.time) -> str:
    offset = value.utcoffset()
    if offset is None:
        return _text("h", value.isoformat())
    micros = (
        (value.hour * 3600 + value.minute * 60 + value.second) * 1_000_000 + value.microsecond
    ) - offset // datetime.timedelta(microseconds=1)
    return "hZ" + str(micros)


def _timedelta(value: datetime.timedelta) -> str:
    return "r" + str(value // datetime.timedelta(microseconds=1))


# Per-class facts found by introspection, computed once per class. Weak keys: a class defined
# inside a function may go away, and the cache must not keep it alive.
_DATACLASS_FIELDS: weakref.WeakKeyDictionary[type, tuple[str, tuple[str, ...]]] = (
    weakref.WeakKeyDictionary()
)


def _dataclass_info(cls: type) -> tuple[str, tuple[str, ...]]:
    info = _DATACLASS_FIELDS.get(cls)
    if info is None:
        names = tuple(f.name for f in dataclasses.fields(cls) if f.compare)
        info = _DATACLASS_FIELDS[cls] = (_text("o", _type_name(cls)), names)
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
    """Return ``encode(value) -> str`` for one ``typed`` mode (raises ``Unencodable``)."""

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
        return _str(v)

    table: dict[type, Encoder] = {
        type(None): lambda v: "N",
        int: int_,
        bool: (lambda v: "b1" if v else "b0") if typed else (lambda v: "n1" if v else "n0"),
        float: number("f" if typed else "n", _float_text),
        decimal.Decimal: number("d" if typed else "n", _decimal_text),
        fractions.Fraction: number("q" if typed else "n", _fraction_text),
        str: str_,
        bytes: lambda v: "y" + v.hex(),
        bytearray: (lambda v: "Y" + v.hex()) if typed else (lambda v: "y" + v.hex()),
        uuid.UUID: lambda v: "u" + v.hex,
        datetime.datetime: _datetime,
        datetime.date: lambda v: "a" + v.isoformat(),
        datetime.time: _time,
        datetime.timedelta: _timedelta,
    }
    get = table.get
    set_tag = "F<" if typed else "<"

    def encode(value: Any) -> str:
        fn = get(type(value))
        if fn is not None:
            return fn(value)
        return other(value)

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
    hooked = _nested(lambda v: encode(v.__cache_key__()))

    @_nested
    def fields(value: Any) -> str:
        head, names = _dataclass_info(type(value))
        return head + "(" + seq([getattr(value, name) for name in names]) + ")"

    def other(value: Any) -> str:
        cls = type(value)
        hook = getattr(cls, "__cache_key__", None)
        if hook is not None and callable(hook):
            return _text("k", _type_name(cls)) + hooked(value)
        if isinstance(value, enum.Enum):
            name = value._name_
            if name is None:  # a composite Flag without a name: by value
                return _text("e", _type_name(cls)) + encode(value._value_)
            return _text("e", f"{_type_name(cls)}.{name}")
        if isinstance(value, type):
            return _text("c", _type_name(value))
        if dataclasses.is_dataclass(value):
            return fields(value)
        for base in _BASES:
            if isinstance(value, base):
                convert = _BASE_VALUE.get(base)
                text = table[base](convert(value) if convert is not None else value)
                return _text("t", _type_name(cls)) + text if typed else text
        raise Unencodable(value)

    encode.table = table  # type: ignore[attr-defined]
    encode.other = other  # type: ignore[attr-defined]
    return encode


_ENCODERS: Final = {False: make_encoder(False), True: make_encoder(True)}


def value_text(value: object, *, typed: bool, what: str) -> str:
    """The key text of one value (what a ``key=`` callable returned); ``what`` names it."""
    try:
        text = _ENCODERS[bool(typed)](value)
    except (Unencodable, RecursionError) as exc:
        raise TypeError(
            f"{what} cannot be encoded stably: {exc}; return a str or a tuple of "
            "str, int, float, bytes, UUID, datetime..."
        ) from None
    if len(text) > LONG_KEY or RESERVED_MARK in text:
        return "#" + format(hash128(text), "032x")
    return text


class KeyBuilder:
    """Turns ``(args, kwargs)`` of calls to one function into the argument text of its key.

    The ``inspect.Signature`` is read once. A call with positional arguments only, within the
    positional parameters, skips ``Signature.bind``: its bound values are ``args`` followed by
    precomputed defaults (measured: about 4x faster than bind + apply_defaults for two args).
    """

    __slots__ = ("_encode", "_fast", "_get", "_is_method", "_names", "_other", "_signature")

    def __init__(self, func: Callable[..., Any], *, typed: bool = False) -> None:
        self._encode = _ENCODERS[bool(typed)]
        self._get = self._encode.table.get  # type: ignore[attr-defined]
        self._other = self._encode.other  # type: ignore[attr-defined]
        self._signature = inspect.signature(func)
        params = list(self._signature.parameters.values())
        self._names = tuple(p.name for p in params)
        self._is_method = bool(params) and params[0].name in ("self", "cls")
        self._fast = self._fast_fill(params)

    @staticmethod
    def _fast_fill(params: list[inspect.Parameter]) -> dict[int, tuple[Any, ...]]:
        """For each count of positional args the fast path accepts: the values to append."""
        P = inspect.Parameter
        positional = [p for p in params if p.kind in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD)]
        tail: list[Any] = []
        for p in params:
            if p.kind is P.KEYWORD_ONLY:
                if p.default is P.empty:
                    return {}  # a required keyword-only parameter: every call takes bind()
                tail.append(p.default)
            elif p.kind is P.VAR_POSITIONAL:
                tail.append(())
            elif p.kind is P.VAR_KEYWORD:
                tail.append({})
        # ``tail`` must come after the positional values in declaration order; params are
        # already in that order (positional ones first), so the fill is defaults + tail.
        fill: dict[int, tuple[Any, ...]] = {}
        for count in range(len(positional), -1, -1):
            missing = positional[count:]
            if any(p.default is P.empty for p in missing):
                break
            fill[count] = tuple(p.default for p in missing) + tuple(tail)
        return fill

    def bound_values(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        """The bound arguments in parameter order (TypeError if the call does not bind)."""
        if not kwargs:
            fill = self._fast.get(len(args))
            if fill is not None:
                return args + fill if fill else args
        bound = self._signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return tuple(bound.arguments.values())

    def text(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """The argument text of the key: encoded bound values, hashed when long."""
        # The fast path of bound_values, inlined: this runs on every call.
        fill = None if kwargs else self._fast.get(len(args))
        values = args + fill if fill else args
        if fill is None:
            values = self.bound_values(args, kwargs)
        get = self._get
        other = self._other
        try:
            text = ",".join([get(type(v), other)(v) for v in values])
        except (Unencodable, RecursionError):
            raise self._explain(values) from None
        if len(text) > LONG_KEY or RESERVED_MARK in text:
            # Long texts, and texts holding the reserved mark (an argument "__cc..." would
            # give the key a reserved ":__cc" segment), are keyed by their hash.
            return "#" + format(hash128(text), "032x")
        return text

    def _explain(self, values: tuple[Any, ...]) -> TypeError:
        """A TypeError naming the first argument that cannot be encoded, and the ways out."""
        for index, (name, value) in enumerate(zip(self._names, values, strict=True)):
            try:
                self._encode(value)
            except (RecursionError, TooDeep):
                return TypeError(
                    f"argument {name!r} is nested more than {MAX_DEPTH} levels deep (or "
                    "contains itself) to be encoded as a cache key; pass key=..."
                )
            except Unencodable as exc:
                kind = _type_name(type(value))
                if index == 0 and self._is_method and exc.type_name == kind:
                    return TypeError(
                        f"argument {name!r} of type {kind} cannot be encoded stably: a memoized "
                        f"method needs the instance's identity in its key. Define "
                        f"{type(value).__qualname__}.__cache_key__(self) returning a stable "
                        f"value (e.g. a primary key), make the class a dataclass (keyed by its "
                        f"fields), or pass key=lambda {name}, ...: (...)"
                    )
                inner = "" if exc.type_name == kind else f" (a {kind}) contains a value"
                return TypeError(
                    f"argument {name!r}{inner} of type {exc.type_name} cannot be encoded "
                    "stably; pass key=... or give the type a __cache_key__() method"
                )
        return TypeError("the arguments cannot be encoded stably; pass key=...")
