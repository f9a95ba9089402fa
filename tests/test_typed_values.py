"""Typed values (issue 16): ``TypedCache(type=T)`` decodes into T, validates, and repairs."""

from __future__ import annotations

import dataclasses
import datetime
import logging
import threading
from typing import Any, NamedTuple, TypedDict

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cache_core import (
    CompressedSerializer,
    JSONSerializer,
    MemoryCache,
    MsgpackSerializer,
    PickleSerializer,
    SerializationError,
    TypedCache,
)
from tests._legacy_serializers import JSONSerializer as LegacyJSON


@dataclasses.dataclass
class User:
    id: int
    name: str
    joined: datetime.datetime
    tags: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class UserV2:
    id: int
    name: str
    email: str  # a field the old entries do not have


class Tile(msgspec.Struct):
    x: int
    y: int


class Movie(TypedDict):
    title: str
    year: int


class Point(NamedTuple):
    x: int
    y: int


JOINED = datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.timezone.utc)
ADA = User(1, "Ada", JOINED, ["admin"])


@pytest.mark.parametrize(
    ("type_", "value"),
    [
        (User, ADA),
        (Tile, Tile(1, 2)),
        (Movie, {"title": "Heat", "year": 1995}),
        (Point, Point(1, 2)),
        (list[Point], [Point(1, 2), Point(3, 4)]),
        (dict[int, User], {1: ADA}),
        (set[tuple[int, int]], {(1, 2), (2, 3)}),
        (User | None, None),
        (User | None, ADA),
        (int | str, "x"),
        (tuple[int, str], (1, "a")),
        (datetime.datetime, JOINED),
    ],
)
@pytest.mark.parametrize("serializer", [JSONSerializer, MsgpackSerializer])
def test_decodes_straight_into_the_type(type_: Any, value: Any, serializer: Any) -> None:
    cache = MemoryCache()
    typed: TypedCache[Any] = TypedCache(cache, serializer=serializer(), type=type_)
    typed.set("k", value)
    back = typed.get("k")
    assert back == value and type(back) is type(value)
    if isinstance(value, list):
        assert all(type(v) is Point for v in back)
    # a second reader of the same type (another process) reads the same bytes the same way
    assert TypedCache(cache, serializer=serializer(), type=type_).get("k") == value


def test_json_stays_readable_natural_json() -> None:
    cache = MemoryCache()
    TypedCache(cache, type=User).set("u", ADA)
    payload = cache.get("u")[4:]
    assert msgspec.json.decode(payload) == {
        "id": 1,
        "name": "Ada",
        "joined": "2024-05-01T12:00:00Z",
        "tags": ["admin"],
    }


def test_bytes_of_another_shape_are_undecodable_and_get_or_set_repairs() -> None:
    cache = MemoryCache()
    TypedCache(cache, type=User).set("u", ADA)  # written before the deploy that changed User
    typed = TypedCache(cache, type=UserV2)
    with pytest.raises(SerializationError, match="UserV2"):
        typed.get("u")
    fresh = UserV2(1, "Ada", "ada@example.org")
    calls: list[int] = []

    def load() -> UserV2:
        calls.append(1)
        return fresh

    assert typed.get_or_set("u", load) == fresh
    assert typed.get_or_set("u", load) == fresh
    assert calls == [1]  # repaired: the second read is a hit
    assert typed.stats().decode_errors == 1


def test_untyped_entries_are_repaired_by_a_typed_reader() -> None:
    """Entries of today's untyped JSONSerializer are another format for a typed cache."""
    cache = MemoryCache()
    TypedCache(cache).set("u", {"id": 1, "name": "Ada", "email": "a@x"})
    typed = TypedCache(cache, type=UserV2)
    assert typed.get_or_set("u", lambda: UserV2(1, "Ada", "a@x")) == UserV2(1, "Ada", "a@x")
    assert typed.stats().decode_errors == 1 and typed.get("u") == UserV2(1, "Ada", "a@x")


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ({"id": 1, "name": "Ada", "joined": JOINED}, r"dict.*User"),
        (
            User(
                1, "Ada", JOINED.replace(tzinfo=datetime.timezone(datetime.timedelta(seconds=30)))
            ),
            r"\$\.joined",
        ),
        (User(1, "Ada", JOINED, ("a",)), r"\$\.tags \(tuple came back as list\)"),  # type: ignore[arg-type]
    ],
)
def test_set_refuses_values_that_would_not_come_back(value: Any, match: str) -> None:
    typed: TypedCache[User] = TypedCache(MemoryCache(), type=User)
    with pytest.raises(SerializationError, match=match):
        typed.set("u", value)
    assert not typed.exists("u")


def test_inf_is_refused_not_written_as_null() -> None:
    typed: TypedCache[list[float]] = TypedCache(MemoryCache(), type=list[float])
    with pytest.raises(SerializationError, match=r"\$\[1\]"):
        typed.set("k", [1.0, float("inf")])


def test_get_or_set_serves_an_unstorable_value_logs_once_and_counts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    typed: TypedCache[Any] = TypedCache(MemoryCache())
    value = {"when": datetime.datetime.now(datetime.timezone.utc), "bad": object()}
    with caplog.at_level(logging.WARNING, logger="cache_core"):
        for _ in range(3):
            assert typed.get_or_set("k", lambda: value) is value
    assert typed.stats().encode_errors == 3
    assert typed.stats().loads == 3
    warnings = [r for r in caplog.records if "not cached" in r.getMessage()]
    assert len(warnings) == 1 and "$.bad" in warnings[0].getMessage()
    assert not typed.exists("k")


def test_set_of_tuples_read_through_loads_once() -> None:
    """Defect 2 of issue 16: before, 7 calls made 4 loads; now 1 (the value reads back)."""
    value = {"edges": {(1, 2), (2, 3)}}

    def calls_and_loads(serializer: Any) -> int:
        typed: TypedCache[Any] = TypedCache(MemoryCache(), serializer=serializer)
        loads = 0

        def load() -> Any:
            nonlocal loads
            loads += 1
            return value

        for _ in range(7):
            typed.get_or_set("g", load)
        return loads

    assert calls_and_loads(LegacyJSON()) > 1
    assert calls_and_loads(JSONSerializer()) == 1


def test_waiters_and_the_loader_get_the_same_type() -> None:
    typed: TypedCache[Point] = TypedCache(MemoryCache(), type=Point)
    release = threading.Event()
    results: list[Any] = []

    def load() -> Point:
        release.wait(5)
        return Point(1, 2)

    threads = [
        threading.Thread(target=lambda: results.append(typed.get_or_set("p", load)))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    release.set()
    for t in threads:
        t.join()
    assert results == [Point(1, 2)] * 4 and all(type(r) is Point for r in results)


def test_type_needs_a_serializer_with_a_typed_form() -> None:
    with pytest.raises(TypeError, match="for_type"):
        TypedCache(MemoryCache(), serializer=PickleSerializer(b"k"), type=User)
    with pytest.raises(TypeError, match="msgspec"):
        TypedCache(MemoryCache(), type=threading.Lock)  # type: ignore[arg-type]
    compressed = TypedCache(
        MemoryCache(), serializer=CompressedSerializer(JSONSerializer()), type=User
    )
    compressed.set("u", ADA)
    assert compressed.get("u") == ADA


def test_type_and_stats_are_visible() -> None:
    typed: TypedCache[User] = TypedCache(MemoryCache(), type=User)
    assert typed.type is User and "type=" in repr(typed)
    assert TypedCache(MemoryCache()).type is None


users = st.builds(
    User,
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.text(),
    st.datetimes(timezones=st.just(datetime.timezone.utc)),
    st.lists(st.text(), max_size=3),
)


@pytest.mark.parametrize("serializer", [JSONSerializer, MsgpackSerializer])
@settings(deadline=None, max_examples=100)
@given(
    value=st.dictionaries(st.integers(-(2**63), 2**63 - 1), st.lists(users, max_size=3), max_size=3)
)
def test_typed_round_trip_property(serializer: Any, value: dict[int, list[User]]) -> None:
    codec = serializer().for_type(dict[int, list[User]])
    back = codec.loads(codec.dumps(value))
    assert back == value
    assert all(type(k) is int for k in back)
    assert all(type(u) is User for us in back.values() for u in us)


def test_get_or_call_runs_fn_with_its_arguments_on_a_miss_only() -> None:
    typed: TypedCache[Point] = TypedCache(MemoryCache(), type=Point)
    calls: list[tuple[int, int]] = []

    def make(x: int, *, y: int) -> Point:
        calls.append((x, y))
        return Point(x, y)

    assert typed.get_or_call("p", make, (1,), {"y": 2}) == (Point(1, 2), True)
    value, ran = typed.get_or_call("p", make, (1,), {"y": 2})
    assert (value, ran) == (Point(1, 2), False) and type(value) is Point
    assert calls == [(1, 2)]
    with pytest.raises(TypeError, match="fn"):
        typed.get_or_call("q", 5)  # type: ignore[arg-type]
