"""memoize keys: canonical, stable across processes, equal exactly when the arguments are equal."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import fractions
import math
import uuid
from collections import OrderedDict, namedtuple
from decimal import Decimal
from typing import Any

import mmh3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cache_core import MemoryCache, memoize
from cache_core._keys import LONG_KEY, KeyBuilder, hash128

UTC = datetime.timezone.utc
PLUS2 = datetime.timezone(datetime.timedelta(hours=2))


class Color(enum.Enum):
    RED = 1
    GREEN = 2


class Level(enum.IntEnum):
    ONE = 1


@dataclasses.dataclass(frozen=True)
class Point:
    x: Any
    y: Any
    label: str = dataclasses.field(default="", compare=False)


Pair = namedtuple("Pair", "a b")


def one(x: Any) -> None:
    """The function whose single-argument keys the property tests compare."""


def key_of(value: Any, *, typed: bool = False) -> str:
    return KeyBuilder(one, typed=typed).text((value,), {})


# -- golden: an accidental change of the encoding must fail here --------------------------------


def test_golden_key() -> None:
    @memoize(MemoryCache(), namespace="golden")
    def g(*args: Any, **kwargs: Any) -> None:
        return None

    assert g.cache_key(
        1, "a,b", b"\x00\xff", [1.5, None, True], {"b": 2, "a": {3, 1}}, z=math.nan, y=-0.0
    ) == ("golden:k1:0:(n1,s3:a,b,y00ff,[n1.5,N,n1],{s1:a:<n1,n3>,s1:b:n2}),{s1:y:n0,s1:z:nnan}")
    assert g.cache_key(
        Decimal("0.10"),
        uuid.UUID(int=1),
        datetime.date(2024, 5, 1),
        datetime.datetime(2024, 5, 1, 14, 0, tzinfo=PLUS2),
        Color.RED,
        Point(1, 2),
    ) == (
        "golden:k1:0:(n1/10,u00000000000000000000000000000001,a2024-05-01,"
        "D20:2024-05-01T12:00:00Z,e25:tests.test_keys.Color.RED,o21:tests.test_keys.Point(n1,n2)),{}"
    )


def test_golden_typed_key() -> None:
    @memoize(MemoryCache(), namespace="golden", typed=True)
    def g(*args: Any) -> None:
        return None

    assert (
        g.cache_key(
            1,
            1.0,
            True,
            Decimal(1),
            fractions.Fraction(1),
            bytearray(b"a"),
            frozenset({1}),
            Pair(1, 2),
        )
        == "golden:k1:0:(i1,f1,b1,d1,q1,Y61,F<i1>,t20:tests.test_keys.Pair(i1,i2))"
    )


def test_golden_long_key_is_hashed_with_the_namespace_kept() -> None:
    @memoize(MemoryCache(), namespace="golden")
    def g(text: str) -> None:
        return None

    arg_text = "s300:" + "x" * 300
    expected = "golden:k1:0:#" + format(
        mmh3.hash128(arg_text.encode(), 0, x64arch=True, signed=False), "032x"
    )
    assert g.cache_key("x" * 300) == expected
    assert len(g.cache_key("y" * 10_000)) == len(expected)
    assert len(g.cache_key("x" * (LONG_KEY - 10))) < len(expected) + LONG_KEY


def test_hash128_is_murmur3_x64_128_unsigned() -> None:
    assert hash128(b"abc") == mmh3.hash128(b"abc", 0, x64arch=True, signed=False)
    assert hash128("é", 7) == mmh3.hash128("é".encode(), 7, x64arch=True, signed=False)


# -- bound arguments ----------------------------------------------------------------------------


def test_bound_arguments_are_one_key() -> None:
    def f(a: int, b: int = 2) -> None: ...

    kb = KeyBuilder(f)
    keys = {
        kb.text((1, 2), {}),
        kb.text((1,), {"b": 2}),
        kb.text((), {"a": 1, "b": 2}),
        kb.text((), {"b": 2, "a": 1}),
        kb.text((1,), {}),
    }
    assert len(keys) == 1
    assert kb.text((1, 3), {}) not in keys


def test_var_args_and_kwargs() -> None:
    def f(a: int, *args: int, flag: bool = False, **kwargs: int) -> None: ...

    kb = KeyBuilder(f)
    assert kb.text((1,), {"x": 1, "y": 2}) == kb.text((1,), {"y": 2, "x": 1})
    assert kb.text((1,), {}) == kb.text((1,), {"flag": False})
    assert kb.text((1, 2, 3), {}) != kb.text((1, 3, 2), {})
    assert kb.text((1, 2), {}) != kb.text((1,), {"a2": 2})


def test_fast_path_matches_bind() -> None:
    def f(a: int, b: int = 5, /, c: Any = None, *, d: str = "x") -> None: ...

    kb = KeyBuilder(f)
    for args in [(1,), (1, 2), (1, 2, [3])]:
        assert kb.text(args, {}) == kb.text(args, {"d": "x"})  # kwargs force bind()
        assert kb.bound_values(args, {}) == kb.bound_values(args, {"d": "x"})


def test_a_call_that_does_not_bind_is_a_type_error() -> None:
    def f(a: int) -> None: ...

    with pytest.raises(TypeError):
        KeyBuilder(f).text((1, 2), {})
    with pytest.raises(TypeError):
        KeyBuilder(f).text((), {"b": 1})


# -- values -------------------------------------------------------------------------------------


def test_unhashable_and_nested_arguments() -> None:
    a = {"user": [1, 2, {"tags": {"x", "y"}}], "opts": {"deep": [[1], (2,)]}}
    b = {"opts": {"deep": [[1], (2,)]}, "user": [1, 2, {"tags": {"y", "x"}}]}
    assert key_of(a) == key_of(b)
    assert key_of([1, 2]) != key_of([2, 1])
    assert key_of({1, 2}) == key_of({2, 1}) == key_of(frozenset({1, 2}))
    assert key_of([1, 2]) != key_of((1, 2))
    assert key_of([[1], 2]) != key_of([1, [2]])
    assert key_of(["a,b"]) != key_of(["a", "b"])
    assert key_of({"a": "b:c"}) != key_of({"a:b": "c"})


def test_numbers_follow_python_equality_and_typed_separates_them() -> None:
    same = [1, 1.0, True, Decimal(1), Decimal("1.000"), fractions.Fraction(1)]
    assert len({key_of(v) for v in same}) == 1
    assert len({key_of(v, typed=True) for v in same}) == 5  # Decimal 1 and 1.000 are equal
    assert key_of(0.5) == key_of(Decimal("0.5")) == key_of(fractions.Fraction(1, 2))
    assert key_of(0.1) != key_of(Decimal("0.1"))  # 0.1 is not exactly 1/10
    assert key_of(1e300) != key_of(10**300)
    assert key_of(-0.0) == key_of(0.0) and key_of(-0.0, typed=True) == key_of(0.0, typed=True)
    assert key_of(math.nan) == key_of(float("nan")) == key_of(Decimal("NaN"))
    assert key_of(math.inf) != key_of(-math.inf)
    assert key_of(10**5000) != key_of(10**5000 + 1)  # past str(int)'s digit limit


def test_str_and_bytes() -> None:
    assert key_of("a") != key_of(b"a")
    assert key_of(b"a") == key_of(bytearray(b"a"))
    assert key_of(b"a", typed=True) != key_of(bytearray(b"a"), typed=True)
    assert key_of("\ud800") != key_of("\ud801")  # lone surrogates: encodable, distinct
    key_of("\ud800").encode("utf-8")
    assert key_of("é") == "s1:é"


def test_datetimes_compare_by_instant() -> None:
    noon_utc = datetime.datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert key_of(noon_utc) == key_of(datetime.datetime(2024, 5, 1, 14, tzinfo=PLUS2))
    assert key_of(noon_utc) != key_of(datetime.datetime(2024, 5, 1, 12))
    assert key_of(datetime.date(2024, 5, 1)) != key_of(datetime.datetime(2024, 5, 1))
    assert key_of(datetime.time(12, tzinfo=UTC)) == key_of(datetime.time(14, tzinfo=PLUS2))
    assert key_of(datetime.timedelta(days=1)) == key_of(datetime.timedelta(hours=24))
    far = datetime.datetime(1, 1, 1, 0, 30, tzinfo=PLUS2)  # before datetime.min in UTC
    assert key_of(far) != key_of(datetime.datetime(1, 1, 1, 0, 30, tzinfo=UTC))


def test_enums_dataclasses_classes_and_subclasses() -> None:
    assert key_of(Color.RED) != key_of(1)
    assert key_of(Level.ONE) != key_of(1)  # documented: enum members by class and name
    assert key_of(Point(1, 2, label="a")) == key_of(Point(1, 2, label="b"))  # compare=False
    assert key_of(Point(1, 2)) != key_of(Point(2, 1))
    assert key_of(Point([1], {"a": 2})) == key_of(Point([1], {"a": 2}))
    assert key_of(int) != key_of(str)
    assert key_of(Pair(1, 2)) == key_of((1, 2))
    assert key_of(Pair(1, 2), typed=True) != key_of((1, 2), typed=True)
    assert key_of(OrderedDict(a=1, b=2)) == key_of({"b": 2, "a": 1})


def test_objects_with_cache_key() -> None:
    class User:
        def __init__(self, uid: int) -> None:
            self.uid = uid

        def __cache_key__(self) -> int:
            return self.uid

    assert key_of(User(1)) == key_of(User(1))
    assert key_of(User(1)) != key_of(User(2))
    assert key_of(User(1)) != key_of(1)


def test_unencodable_argument_is_named() -> None:
    import socket

    def f(a: int, conn: Any) -> None: ...

    with socket.socket() as sock:
        with pytest.raises(TypeError, match=r"argument 'conn' of type socket\.socket .*key="):
            KeyBuilder(f).text((1, sock), {})
        with pytest.raises(TypeError, match=r"argument 'conn' \(a list\) contains a value"):
            KeyBuilder(f).text((1, [sock]), {})
    with pytest.raises(TypeError, match="argument 'conn'"):
        KeyBuilder(f).text((1, object()), {})
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(TypeError, match="argument 'conn' is nested more than 100 levels"):
        KeyBuilder(f).text((1, loop), {})


def test_no_hash_id_or_repr_of_arbitrary_objects() -> None:
    class Opaque:
        def __repr__(self) -> str:
            return "Opaque()"

        def __hash__(self) -> int:
            return 1

    with pytest.raises(TypeError):
        key_of(Opaque())


# -- the property: keys are equal exactly when the arguments are (documented) equal -------------


def _is_nan(v: Any) -> bool:
    return (type(v) is float and math.isnan(v)) or (type(v) is Decimal and v.is_nan())


def ref_eq(a: Any, b: Any, typed: bool) -> bool:
    """Python ``==`` with the documented exceptions; ``typed`` also compares exact types."""
    if typed and type(a) is not type(b):
        return False
    if isinstance(a, enum.Enum) or isinstance(b, enum.Enum):
        return a is b
    if _is_nan(a) or _is_nan(b):
        return _is_nan(a) and _is_nan(b)
    if dataclasses.is_dataclass(a) or dataclasses.is_dataclass(b):
        return (
            type(a) is type(b)
            and ref_eq(a.x, b.x, typed)  # type: ignore[union-attr]
            and ref_eq(a.y, b.y, typed)  # type: ignore[union-attr]
        )
    for kind in (list, tuple):
        if isinstance(a, kind) or isinstance(b, kind):
            return (
                isinstance(a, kind)
                and isinstance(b, kind)
                and len(a) == len(b)
                and all(ref_eq(x, y, typed) for x, y in zip(a, b, strict=True))
            )
    if isinstance(a, dict) or isinstance(b, dict):
        if not (isinstance(a, dict) and isinstance(b, dict)) or len(a) != len(b):
            return False
        return all(
            any(ref_eq(ka, kb, typed) and ref_eq(va, vb, typed) for kb, vb in b.items())
            for ka, va in a.items()
        )
    if isinstance(a, set | frozenset) or isinstance(b, set | frozenset):
        if not (isinstance(a, set | frozenset) and isinstance(b, set | frozenset)):
            return False
        return all(any(ref_eq(x, y, typed) for y in b) for x in a) and all(
            any(ref_eq(y, x, typed) for x in a) for y in b
        )
    return bool(a == b)


# Small pools, so that equal-but-different values are drawn often.
hashable_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 2),
    st.sampled_from([0.0, -0.0, 1.0, 0.5, 2.5, math.inf, -math.inf, 1e300, 0.1]),
    st.sampled_from([Decimal("1"), Decimal("1.0"), Decimal("0.5"), Decimal("0.1")]),
    st.sampled_from([fractions.Fraction(1, 2), fractions.Fraction(1, 3)]),
    st.text(alphabet="ab,:é\ud800", max_size=3),
    st.binary(max_size=2),
    st.sampled_from([uuid.UUID(int=1), uuid.UUID(int=2)]),
    st.sampled_from(
        [
            datetime.datetime(2024, 5, 1, 12),
            datetime.datetime(2024, 5, 1, 12, tzinfo=UTC),
            datetime.datetime(2024, 5, 1, 14, tzinfo=PLUS2),
            datetime.datetime(2024, 5, 1, 12, tzinfo=PLUS2),
            datetime.date(2024, 5, 1),
            datetime.time(12),
            datetime.time(12, tzinfo=UTC),
            datetime.time(14, tzinfo=PLUS2),
            datetime.timedelta(hours=24),
            datetime.timedelta(days=1, microseconds=1),
        ]
    ),
    st.sampled_from([Color.RED, Color.GREEN, Level.ONE]),
    st.builds(Pair, st.integers(0, 1), st.integers(0, 1)),
)
scalars = st.one_of(
    hashable_scalars,
    st.just(math.nan),
    st.just(Decimal("NaN")),
    st.binary(max_size=2).map(bytearray),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(hashable_scalars, inner, max_size=3),
        st.sets(hashable_scalars, max_size=3),
        st.frozensets(hashable_scalars, max_size=3),
        st.builds(Point, inner, inner),
    ),
    max_leaves=8,
)


@settings(max_examples=400, deadline=None)
@given(values, values, st.booleans())
def test_keys_equal_exactly_when_arguments_are_equal(a: Any, b: Any, typed: bool) -> None:
    assert (key_of(a, typed=typed) == key_of(b, typed=typed)) == ref_eq(a, b, typed)


def _rebuilt(value: Any) -> Any:
    """An equal value built in another insertion order (dicts, sets) and with fresh objects."""
    if isinstance(value, dict):
        return {k: _rebuilt(v) for k, v in reversed(list(value.items()))}
    if isinstance(value, frozenset):
        return frozenset(reversed(list(value)))
    if isinstance(value, set):
        return set(reversed(list(value)))
    if isinstance(value, list):
        return [_rebuilt(v) for v in value]
    if type(value) is tuple:
        return tuple(_rebuilt(v) for v in value)
    if isinstance(value, Point):
        return Point(_rebuilt(value.x), _rebuilt(value.y), label="other")
    return value


@settings(max_examples=300, deadline=None)
@given(values, st.booleans())
def test_equal_values_built_differently_share_a_key(a: Any, typed: bool) -> None:
    b = _rebuilt(a)
    assert ref_eq(a, b, typed)
    assert key_of(a, typed=typed) == key_of(b, typed=typed)


@settings(max_examples=200, deadline=None)
@given(st.lists(values, min_size=1, max_size=3), st.lists(values, min_size=1, max_size=3))
def test_argument_lists_do_not_run_into_each_other(a: list[Any], b: list[Any]) -> None:
    def f(*args: Any) -> None: ...

    kb = KeyBuilder(f)
    same = len(a) == len(b) and all(ref_eq(x, y, False) for x, y in zip(a, b, strict=True))
    assert (kb.text(tuple(a), {}) == kb.text(tuple(b), {})) == same
