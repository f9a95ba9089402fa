"""Serializers: JSON tags and escapes, signed pickle, compression."""

from __future__ import annotations

import collections
import dataclasses
import datetime
import decimal
import enum
import json
import math
import pickle
import random
import uuid
import zlib
import zoneinfo
from typing import Any, NamedTuple

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cache_core import (
    CompressedSerializer,
    JSONSerializer,
    MsgpackSerializer,
    PickleSerializer,
    SerializationError,
    Serializer,
    _codec,
    _codec_tagged,
    _serializers,
)


@dataclasses.dataclass
class Point:
    x: int
    y: int


@dataclasses.dataclass(frozen=True)
class Shape:
    name: str
    points: list[Point]
    created: datetime.datetime
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    area: float = dataclasses.field(init=False, default=0.0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "area", float(len(self.points)))


@dataclasses.dataclass
class Unregistered:
    a: int


class Pair(NamedTuple):
    a: int
    b: str


class Color(enum.Enum):
    RED = "red"
    BLUE = 2


class Level(enum.IntEnum):
    LOW = 1


class Tile(msgspec.Struct):
    x: int
    tags: list[str]


REGISTERED = [Point, Pair, Color, Tile]


# -- strategies ------------------------------------------------------------------------------

offsets = st.timedeltas(
    min_value=datetime.timedelta(hours=-23, minutes=-59),
    max_value=datetime.timedelta(hours=23, minutes=59),
).map(lambda d: datetime.timezone(datetime.timedelta(seconds=round(d.total_seconds()))))
tzs = st.none() | offsets
hashables = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text() | st.binary() | st.uuids() | st.dates(),
    lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=3),
    max_leaves=6,
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text()
    | st.datetimes(timezones=tzs)
    | st.dates()
    | st.times(timezones=tzs)
    | st.timedeltas()
    | st.uuids()
    | st.decimals(allow_nan=False)
    | st.binary()
    | st.builds(bytearray, st.binary())
    | st.frozensets(hashables, max_size=4)
    | st.sets(hashables, max_size=4)
    | st.builds(Point, st.integers(), st.integers())
    | st.builds(Pair, st.integers(), st.text())
    | st.sampled_from(Color)
    | st.builds(Tile, st.integers(), st.lists(st.text(), max_size=3))
)
# Keys are biased towards the tag key so that escaping is exercised, not just possible.
keys = st.sampled_from(["__cc", "a", '"__cc"', "__cc:"]) | st.text() | hashables
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.tuples(inner, inner)
        | st.dictionaries(keys, inner, max_size=5)
    ),
    max_leaves=30,
)


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down (== alone lets 1 == True == 1.0 pass)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(
            same(k, next(k2 for k2 in b if k2 == k)) and same(a[k], b[k]) for k in a
        )
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, set | frozenset):
        return a == b and all(any(same(x, y) for y in b) for x in a)
    if dataclasses.is_dataclass(a):
        return same(dataclasses.asdict(a), dataclasses.asdict(b))  # type: ignore[arg-type]
    if isinstance(a, msgspec.Struct):
        return same(msgspec.structs.asdict(a), msgspec.structs.asdict(b))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, datetime.datetime | datetime.time) and a.utcoffset() != b.utcoffset():
        return False
    return bool(a == b)


SERIALIZERS = {
    "json": lambda: JSONSerializer(types=REGISTERED),
    "msgpack": lambda: MsgpackSerializer(types=REGISTERED),
    "compressed-json": lambda: CompressedSerializer(JSONSerializer(types=REGISTERED), threshold=64),
    "compressed-msgpack": lambda: CompressedSerializer(
        MsgpackSerializer(types=REGISTERED), threshold=64
    ),
    "pickle": lambda: PickleSerializer(b"k"),
}


@pytest.fixture
def js() -> JSONSerializer:
    return JSONSerializer(types=[Point, Shape])


# -- JSON ------------------------------------------------------------------------------------


def test_serializers_satisfy_protocol() -> None:
    for s in (JSONSerializer(), PickleSerializer(b"k"), CompressedSerializer(JSONSerializer())):
        assert isinstance(s, Serializer)
    assert {
        JSONSerializer.format_id,
        PickleSerializer.format_id,
        CompressedSerializer.format_id,
    } == {
        b"j",
        b"p",
        b"z",
    }


@pytest.mark.parametrize("name", sorted(SERIALIZERS))
@settings(deadline=None, max_examples=150)  # shared 2-vCPU CI: timing is not what is tested
@given(value=values)
def test_round_trip_exact_types_every_serializer(name: str, value: Any) -> None:
    s = SERIALIZERS[name]()
    data = s.dumps(value)
    assert isinstance(data, bytes)
    if name == "json":
        json.loads(data)  # always strict, standard JSON
    assert same(value, s.loads(data))


class Loose(str):
    pass


# Values that have no exact way back through an untyped JSON/msgpack decode.
unsupported = (
    st.builds(collections.OrderedDict, st.dictionaries(st.text(), st.integers(), max_size=2))
    | st.builds(
        lambda d: collections.defaultdict(int, d), st.dictionaries(st.text(), st.integers())
    )
    | st.just(Level.LOW)
    | st.builds(Loose, st.text())
    | st.builds(Unregistered, st.integers())
    | st.builds(memoryview, st.binary())
    | st.datetimes(timezones=st.just(zoneinfo.ZoneInfo("Europe/Paris")))
    | st.just(object())
    | st.complex_numbers()
)
mixed = st.recursive(
    scalars | unsupported,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@pytest.mark.parametrize("name", ["json", "msgpack", "compressed-json"])
@settings(deadline=None, max_examples=150)
@given(value=mixed)
def test_dumps_refuses_whatever_would_not_come_back(name: str, value: Any) -> None:
    """The rule itself: either the value comes back exactly, or dumps refuses it."""
    s = SERIALIZERS[name]()
    try:
        data = s.dumps(value)
    except SerializationError as exc:
        assert "$" in str(exc) or "surrogate" in str(exc)
        return
    assert same(value, s.loads(data))


@pytest.mark.parametrize(
    "value",
    [
        {"edges": {(1, 2), (2, 3)}},
        {1: "a", (2, 3): ["b"], None: 1.5, frozenset({1}): True},
        Pair(1, "x"),
        {"p": [Pair(1, "x")], "t": (1, (2, 3))},
        Color.RED,
        {"c": [Color.BLUE]},
        Tile(1, ["a"]),
        datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone(datetime.timedelta(seconds=30))),
        datetime.datetime(2024, 1, 1, 12, 0),
        {"inf": math.inf, "ninf": -math.inf},
        decimal.Decimal("1.10"),
        uuid.UUID(int=7),
        b"\x00\xff",
        {"__cc": ["tuple", [1]]},
    ],
)
@pytest.mark.parametrize("name", ["json", "msgpack"])
def test_issue_values_round_trip(name: str, value: Any) -> None:
    s = SERIALIZERS[name]()
    assert same(value, s.loads(s.dumps(value)))


def test_set_of_tuples_was_unreadable_before() -> None:
    """Defect 2 of issue 16: the old serializer wrote what its own loads refused."""
    from tests._legacy_serializers import JSONSerializer as Legacy

    value = {"edges": {(1, 2), (2, 3)}}
    with pytest.raises(SerializationError, match="bad set payload"):
        Legacy().loads(Legacy().dumps(value))
    assert JSONSerializer().loads(JSONSerializer().dumps(value)) == value


@settings(deadline=None, max_examples=100)
@given(
    value=st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats()
        | st.text()
        | st.datetimes()
        | st.dates()
        | st.uuids()
        | st.decimals(allow_nan=False)
        | st.binary()
        | st.sets(st.integers() | st.text())
        | st.builds(Point, st.integers(), st.integers()),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
        max_leaves=20,
    )
)
def test_entries_written_by_the_previous_json_serializer_still_read(value: Any) -> None:
    """Backward compatibility: same tags, so old bytes decode to what the old loads gave."""
    from tests._legacy_serializers import JSONSerializer as Legacy

    legacy = Legacy(types=[Point])
    data = legacy.dumps(value)
    expected = legacy.loads(data)
    assert same(expected, JSONSerializer(types=[Point]).loads(data))


@settings(deadline=None)  # shared 2-vCPU CI: timing is not what is tested
@given(st.dictionaries(st.text(), st.integers() | st.text(), max_size=4))
def test_user_dict_holding_tag_key_round_trips_unchanged(extra: dict[str, Any]) -> None:
    s = JSONSerializer()
    # Exactly what a tagged datetime looks like, but it is the user's own dict.
    lookalike = {"__cc": ["datetime", "2024-01-01T00:00:00"]}
    value = {**extra, "__cc": lookalike, "nested": [lookalike]}
    back = s.loads(s.dumps(value))
    assert back == value
    assert back["__cc"] == lookalike
    assert isinstance(back["nested"][0]["__cc"], list)


def test_common_values_are_plain_compact_json(js: JSONSerializer) -> None:
    value = {"a": [1, 2.5, None, True], "é": "ü"}
    assert js.dumps(value) == json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def test_tag_format_is_documented_shape(js: JSONSerializer) -> None:
    data = js.dumps({"when": datetime.date(2024, 5, 1), "id": b"\x00\x01"})
    assert json.loads(data) == {
        "when": {"__cc": ["date", "2024-05-01"]},
        "id": {"__cc": ["bytes", "AAE="]},
    }


def test_tuples_stay_tuples(js: JSONSerializer) -> None:
    back = js.loads(js.dumps({"t": (1, (2, 3))}))
    assert back == {"t": (1, (2, 3))} and type(back["t"][1]) is tuple


def test_aware_datetime_keeps_instant_and_offset(js: JSONSerializer) -> None:
    tz = datetime.timezone(datetime.timedelta(hours=5, minutes=30))
    dt = datetime.datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=tz)
    back = js.loads(js.dumps(dt))
    assert back == dt
    assert back.utcoffset() == dt.utcoffset()
    naive = datetime.datetime(2024, 5, 1, 12, 0)
    assert js.loads(js.dumps(naive)).tzinfo is None


def test_non_finite_floats_are_tagged_not_bare(js: JSONSerializer) -> None:
    data = js.dumps([math.inf, -math.inf, math.nan, 1.5])
    assert b"NaN" not in data and b"Infinity" not in data
    back = js.loads(data)
    assert back[0] == math.inf and back[1] == -math.inf and math.isnan(back[2]) and back[3] == 1.5


def test_sets_are_sorted_for_deterministic_output(js: JSONSerializer) -> None:
    assert json.loads(js.dumps({"b", "a", "c"})) == {"__cc": ["set", ["a", "b", "c"]]}


def test_registered_dataclass_round_trips_nested(js: JSONSerializer) -> None:
    shape = Shape(
        "tri",
        [Point(0, 0), Point(1, 0), Point(0, 1)],
        datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),
        meta={"__cc": 1, "tags": {"x"}},
    )
    back = js.loads(js.dumps({"shapes": [shape]}))
    assert back == {"shapes": [shape]}
    got = back["shapes"][0]
    assert type(got) is Shape and type(got.points[1]) is Point
    assert got.area == 3.0  # init=False field recomputed by __post_init__
    assert "area" not in js.dumps(shape).decode()


def test_dataclass_registered_under_explicit_name() -> None:
    s = JSONSerializer(types={"pt": Point})
    data = s.dumps(Point(1, 2))
    assert json.loads(data) == {"__cc": ["dataclass", ["pt", {"x": 1, "y": 2}]]}
    assert s.loads(data) == Point(1, 2)


def test_stored_type_name_is_never_imported() -> None:
    writer = JSONSerializer(types=[Point])
    reader = JSONSerializer()  # Point not registered: must not be found by importing its name
    with pytest.raises(SerializationError, match=r"Point.*not registered"):
        reader.loads(writer.dumps(Point(1, 2)))
    gadget = json.dumps({"__cc": ["dataclass", ["os.system", {"command": "true"}]]}).encode()
    with pytest.raises(SerializationError, match=r"os\.system"):
        reader.loads(gadget)


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (object(), r"type object at \$"),
        ({"a": [1, {"b": object()}]}, r"type object at \$\.a\[1\]\.b"),
        ({"edges": [Level.LOW]}, r"unregistered enum .*Level at \$\.edges\[0\]"),
        ({frozenset([1]), 2j}, r"type complex"),
        (collections.OrderedDict(a=1), r"collections\.OrderedDict at \$"),
        (Loose("x"), r"Loose at \$"),
        (memoryview(b"x"), r"memoryview at \$"),
        (
            datetime.datetime(2024, 1, 1, tzinfo=zoneinfo.ZoneInfo("Europe/Paris")),
            r"ZoneInfo would come back as a fixed offset",
        ),
        (Unregistered(1), r"unregistered dataclass .*Unregistered.*types=\[Unregistered\]"),
        ([Unregistered(1)], r"Unregistered at \$\[0\]"),
        ({"we ird": Unregistered(1)}, r"Unregistered at \$\['we ird'\]"),
        ("\ud800", r"lone surrogate"),
        ({"n": [10**5000]}, r"int at \$\.n\[0\]"),
    ],
)
@pytest.mark.parametrize("name", ["json", "msgpack"])
def test_dumps_errors_name_the_type_and_path(name: str, value: Any, match: str) -> None:
    with pytest.raises(SerializationError, match=match):
        SERIALIZERS[name]().dumps(value)


def test_non_str_keys_keep_their_type(js: JSONSerializer) -> None:
    # json.dumps would silently write {"1": ...}; here the int key comes back an int.
    assert json.dumps({1: 2}) == '{"1": 2}'
    back = js.loads(js.dumps({"ok": {1: 2, (1, "a"): 3, None: 4}}))
    assert back == {"ok": {1: 2, (1, "a"): 3, None: 4}}
    assert [type(k) for k in js.loads(js.dumps({1: 2, "1": 3}))] == [int, str]


def test_set_of_unhashables_cannot_be_decoded(js: JSONSerializer) -> None:
    data = json.dumps({"__cc": ["set", [{"a": 1}]]}).encode()
    with pytest.raises(SerializationError, match="bad set payload") as info:
        js.loads(data)
    assert isinstance(info.value.__cause__, TypeError)


def test_circular_reference_is_an_error(js: JSONSerializer) -> None:
    loop: list[Any] = [1]
    loop.append(loop)
    with pytest.raises(SerializationError, match=r"circular reference at \$\[1\]"):
        js.dumps(loop)


@pytest.mark.parametrize(
    ("data", "match", "cause"),
    [
        (b"\xff\xfe{}", "cannot decode json", msgspec.DecodeError),
        (b'{"a": [1, 2', "cannot decode json", msgspec.DecodeError),
        (b"", "cannot decode json", msgspec.DecodeError),
        (b'{"__cc":["datetime","yesterday"]}', "bad datetime payload", ValueError),
        (b'{"__cc":["uuid",5]}', "bad uuid payload", TypeError),
        (b'{"__cc":["bytes","not base64!"]}', "bad bytes payload", ValueError),
        (b'{"__cc":["decimal","x1"]}', "bad decimal payload", decimal.InvalidOperation),
        (b'{"__cc":["timedelta",[1,2]]}', "bad timedelta payload", ValueError),
        (b'{"__cc":["dict",[["a"]]]}', "bad dict payload", TypeError),
        (b'{"__cc":["set",[[1]]]}', "bad set payload", TypeError),
        (b'{"__cc":["dataclass",["tests.Point",{"x":1}]]}', "not registered", None),
    ],
)
def test_json_loads_errors(
    js: JSONSerializer, data: bytes, match: str, cause: type[BaseException] | None
) -> None:
    with pytest.raises(SerializationError, match=match) as info:
        js.loads(data)
    if cause is not None:
        assert isinstance(info.value.__cause__, cause)


@pytest.mark.parametrize(
    "data",
    [
        b'{"__cc":["nope",1]}',
        b'{"__cc":"datetime"}',
        b'{"__cc":["datetime","2024-01-01"],"extra":1}',
        b'{"__cc":[1,2]}',
        b"NaN",
        b'{"a":Infinity}',
    ],
)
def test_json_loads_rejects_foreign_shapes(js: JSONSerializer, data: bytes) -> None:
    with pytest.raises(SerializationError):
        js.loads(data)


def test_registered_dataclass_with_wrong_fields_is_an_error(js: JSONSerializer) -> None:
    name = f"{Point.__module__}.{Point.__qualname__}"
    data = json.dumps({"__cc": ["dataclass", [name, {"x": 1, "z": 2}]]}).encode()
    with pytest.raises(SerializationError, match="bad dataclass payload") as info:
        js.loads(data)
    assert isinstance(info.value.__cause__, TypeError)


def test_untagged_bytes_skip_the_revive_walk(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = 0
    real = _codec_tagged.Tagged.revive

    def counting(self: _codec_tagged.Tagged, obj: Any) -> Any:
        nonlocal calls
        calls += 1
        return real(self, obj)

    monkeypatch.setattr(_codec_tagged.Tagged, "revive", counting)
    js = JSONSerializer()
    assert js.loads(js.dumps({"a": {"b": {"c": 1}}})) == {"a": {"b": {"c": 1}}}
    assert calls == 0
    assert js.loads(js.dumps({"a": {"b": datetime.date(2024, 1, 1)}})) == {
        "a": {"b": datetime.date(2024, 1, 1)}
    }
    assert calls >= 1


@pytest.mark.parametrize(
    "data", [b"{", b'{"__cc":["set",[[1]]]}', b'{"__cc":["nope",1]}', b"[" * 5000 + b"]" * 5000]
)
def test_native_and_python_loads_fail_alike(data: bytes) -> None:
    js = JSONSerializer()
    with pytest.raises(SerializationError):
        js.loads(data)
    with pytest.raises(SerializationError):
        type(js).loads(js, data)  # the Python method, whichever loads the instance uses


def test_loads_accepts_bytes_like_only(js: JSONSerializer) -> None:
    assert js.loads(bytearray(b"[1]")) == [1]
    assert js.loads(memoryview(b"[1]")) == [1]
    with pytest.raises(TypeError, match="data must be bytes-like, not str"):
        js.loads("[1]")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("types", "error"),
    [([int], TypeError), ([Point(1, 2)], TypeError), ([Point, Point], ValueError)],
)
def test_json_types_argument_is_checked(types: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="types"):
        JSONSerializer(types=types)


# -- Pickle ----------------------------------------------------------------------------------


class _Boom:
    """Unpickling this object calls a function: the visible side effect of a gadget."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_record_unpickle, ("unpickled",))


_UNPICKLED: list[str] = []


def _record_unpickle(what: str) -> str:
    _UNPICKLED.append(what)
    return what


@pytest.fixture
def counted_pickle_loads(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    calls: list[bytes] = []
    real = pickle.loads

    def spy(data: bytes, /, **kwargs: Any) -> Any:
        calls.append(data)
        return real(data, **kwargs)

    monkeypatch.setattr(_serializers.pickle, "loads", spy)
    return calls


def test_pickle_round_trip(counted_pickle_loads: list[bytes]) -> None:
    s = PickleSerializer("secret")
    value = {"p": Point(1, 2), "t": (1, 2), "s": {1}, "k": {1: 2}}
    data = s.dumps(value)
    assert len(data) > 32
    assert s.loads(data) == value
    assert len(counted_pickle_loads) == 1


def test_pickle_wrong_key_never_unpickles(counted_pickle_loads: list[bytes]) -> None:
    _UNPICKLED.clear()
    data = PickleSerializer(b"attacker").dumps(_Boom())
    with pytest.raises(SerializationError, match="signature mismatch"):
        PickleSerializer(b"secret").loads(data)
    assert counted_pickle_loads == [] and _UNPICKLED == []


def test_pickle_tampered_byte_never_unpickles(counted_pickle_loads: list[bytes]) -> None:
    s = PickleSerializer(b"secret")
    data = bytearray(s.dumps({"a": 1}))
    for i in (0, 31, 32, len(data) - 1):  # in the tag and in the pickle
        tampered = bytearray(data)
        tampered[i] ^= 0x01
        with pytest.raises(SerializationError, match="signature mismatch"):
            s.loads(bytes(tampered))
    assert counted_pickle_loads == []


@pytest.mark.parametrize("data", [b"", b"x" * 32, pickle.dumps({"unsigned": True})])
def test_pickle_short_or_unsigned_never_unpickles(
    counted_pickle_loads: list[bytes], data: bytes
) -> None:
    with pytest.raises(SerializationError):
        PickleSerializer(b"secret").loads(data)
    assert counted_pickle_loads == []


def test_pickle_unpicklable_value_is_serialization_error() -> None:
    with pytest.raises(SerializationError, match="cannot pickle value of type function") as info:
        PickleSerializer(b"k").dumps(lambda: None)
    assert info.value.__cause__ is not None


@pytest.mark.parametrize(
    ("key", "error"), [(None, TypeError), (123, TypeError), (b"", ValueError), ("", ValueError)]
)
def test_pickle_requires_a_secret_key(key: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="key"):
        PickleSerializer(key)
    with pytest.raises(TypeError):
        PickleSerializer()  # type: ignore[call-arg]


def test_pickle_repr_hides_the_key() -> None:
    assert "hunter2" not in repr(PickleSerializer("hunter2"))


# -- Compression -----------------------------------------------------------------------------


def test_small_values_pay_one_byte() -> None:
    inner = JSONSerializer()
    s = CompressedSerializer(inner, threshold=1024)
    value = {"a": "x" * 10}
    data = s.dumps(value)
    assert data == b"\x00" + inner.dumps(value)
    assert s.loads(data) == value


def test_large_values_are_compressed() -> None:
    inner = JSONSerializer()
    s = CompressedSerializer(inner, threshold=1024)
    value = {"a": "x" * 5000}
    data = s.dumps(value)
    assert data[:1] == b"\x01"
    assert len(data) < len(inner.dumps(value)) // 10
    assert s.loads(data) == value


def test_incompressible_values_stay_raw() -> None:
    s = CompressedSerializer(PickleSerializer(b"k"), threshold=16)
    value = random.Random(0).randbytes(600)
    data = s.dumps(value)
    assert data[:1] == b"\x00"
    assert s.loads(data) == value


def test_compressed_refuses_at_dumps_what_its_loads_would_refuse() -> None:
    """Defect 3 of issue 16: a 2 MiB value compressed to a few KB that loads then refused."""
    from tests._legacy_serializers import CompressedSerializer as LegacyCompressed
    from tests._legacy_serializers import JSONSerializer as Legacy

    value = {"blob": "x" * (2 * 1024 * 1024)}
    legacy = LegacyCompressed(Legacy(), max_size=1024 * 1024)
    stored = legacy.dumps(value)
    assert len(stored) < 8 * 1024
    with pytest.raises(SerializationError, match="max_size"):
        legacy.loads(stored)
    s = CompressedSerializer(JSONSerializer(), max_size=1024 * 1024)
    with pytest.raises(SerializationError, match=r"above max_size=1048576"):
        s.dumps(value)
    small = {"blob": "x" * 1000}
    assert s.loads(s.dumps(small)) == small


def test_compressed_for_type_is_a_different_format() -> None:
    s = CompressedSerializer(JSONSerializer(), threshold=8)
    typed = s.for_type(list[int])
    assert typed.format_id == b"Z" and s.format_id == b"z"
    assert typed.loads(typed.dumps([1] * 100)) == [1] * 100
    with pytest.raises(TypeError, match="typed form"):
        CompressedSerializer(PickleSerializer(b"k")).for_type(int)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "empty"),
        (b"\x02{}", "unknown marker"),
        (b"\x01" + b"garbage", "Error -3"),
        (b"\x01" + zlib.compress(b'{"a":1}')[:-3], "truncated"),
        (b"\x01" + zlib.compress(b'{"a":1}') + b"junk", "trailing"),
    ],
)
def test_corrupt_compressed_data(data: bytes, match: str) -> None:
    with pytest.raises(SerializationError, match=match):
        CompressedSerializer(JSONSerializer()).loads(data)


def test_decompression_bomb_is_refused() -> None:
    bomb = b"\x01" + zlib.compress(b"[" + b"0," * (8 * 1024 * 1024) + b"0]", 9)
    assert len(bomb) < 64 * 1024
    s = CompressedSerializer(JSONSerializer(), max_size=1024 * 1024)
    with pytest.raises(SerializationError, match="max_size=1048576"):
        s.loads(bomb)
    # The same bytes are fine under a cap that fits them: the guard is the cap, not the ratio.
    assert len(CompressedSerializer(JSONSerializer(), max_size=32 * 1024 * 1024).loads(bomb)) == (
        8 * 1024 * 1024 + 1
    )


def test_output_exactly_at_max_size_is_accepted() -> None:
    payload = b'"' + b"a" * 998 + b'"'
    data = b"\x01" + zlib.compress(payload)
    assert CompressedSerializer(JSONSerializer(), max_size=1000).loads(data) == "a" * 998
    with pytest.raises(SerializationError, match="max_size"):
        CompressedSerializer(JSONSerializer(), max_size=999).loads(data)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"threshold": -1}, "threshold"),
        ({"level": 10}, "level"),
        ({"max_size": 0}, "max_size"),
    ],
)
def test_compressed_arguments_are_checked(kwargs: dict[str, int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        CompressedSerializer(JSONSerializer(), **kwargs)
    with pytest.raises(TypeError, match="inner"):
        CompressedSerializer(object())  # type: ignore[arg-type]


# -- the exact-type walk: C and Python agree -------------------------------------------------


@pytest.mark.skipif(_codec._plain_native is None, reason="cache_core._plain is not built")
@pytest.mark.parametrize("msgpack", [False, True])
@settings(deadline=None, max_examples=300)
@given(value=st.lists(mixed, max_size=3) | st.dictionaries(keys, mixed, max_size=3))
def test_native_and_python_plain_walks_agree(msgpack: bool, value: Any) -> None:
    leaf = frozenset({str, int, bool, type(None), *((bytes,) if msgpack else ())})
    python = _codec_tagged._plain_check(leaf)
    native = _codec._plain_native.plain_msgpack if msgpack else _codec._plain_native.plain_json
    assert native(value) is python(value)


@pytest.mark.skipif(_codec._plain_native is None, reason="cache_core._plain is not built")
def test_native_plain_walk_edges() -> None:
    walk = _codec._plain_native.plain_json
    loop: list[Any] = []
    loop.append(loop)
    assert walk(loop) is False  # a cycle hits the depth bound, then the careful path reports it
    deep: list[Any] = []
    for _ in range(500):
        deep = [deep]
    assert walk(deep) is False
    assert walk({"a": [1, 2.5, None, True, "x"]}) is True
    assert walk({"a": math.nan}) is False and walk([math.inf]) is False
    assert walk({"__cc": 1}) is False and walk({"__cd": 1}) is True
    assert walk([b"x"]) is False and _codec._plain_native.plain_msgpack([b"x"]) is True
    assert walk(5) is False and walk((1,)) is False
    has_mark = _codec._plain_native.has_mark
    assert has_mark(b'{"__cc":1}', b'"__cc"') and not has_mark(b'{"_cc":1}', b'"__cc"')
    assert has_mark(b"x", b"") and not has_mark(b"", b"x")
    with pytest.raises(TypeError):
        has_mark("str", b"x")  # type: ignore[arg-type]


def test_plain_walk_choice_follows_pure_python_switch() -> None:
    assert (
        _codec._plain_native is not None and not _codec.PURE_PYTHON_FORCED
    ) == _codec.NATIVE_PLAIN
