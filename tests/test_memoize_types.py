"""@memoize returns the same type on every call (issue 16), and its positional key path."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from typing import Any, NamedTuple

import pytest

from cache_core import MemoryCache, PickleSerializer, SerializationError, TypedCache, memoize
from cache_core import _memoize as memoize_module
from tests._legacy_serializers import JSONSerializer as LegacyJSON


class Point(NamedTuple):
    x: int
    y: int


@dataclasses.dataclass
class Box:
    corners: list[Point]


def test_namedtuple_result_keeps_its_type_on_every_call() -> None:
    """Defect 1 of issue 16: the first call returned Point, later calls a list."""

    def origin(n: int) -> Point:
        return Point(n, n)

    fast = memoize(MemoryCache(), namespace="t:origin")(origin)
    results = [fast(1) for _ in range(3)]
    assert results == [Point(1, 1)] * 3
    assert all(type(r) is Point for r in results)
    assert results[2].x == 1
    assert fast.cache_info().misses == 1 and fast.cache.type is Point

    legacy = memoize(MemoryCache(), namespace="t:legacy", serializer=LegacyJSON(), returns=None)(
        origin
    )
    assert type(legacy(1)) is Point and type(legacy(1)) is list  # what used to happen


def test_nested_types_come_back_from_the_annotation() -> None:
    @memoize(MemoryCache(), namespace="t:box")
    def box(n: int) -> Box:
        return Box([Point(0, 0), Point(n, n)])

    box(2)
    again = box(2)
    assert again == Box([Point(0, 0), Point(2, 2)])
    assert type(again.corners[1]) is Point


def test_returns_overrides_the_annotation() -> None:
    @memoize(MemoryCache(), namespace="t:over", returns=list[Point])
    def points(n: int) -> Any:
        return [Point(i, i) for i in range(n)]

    points(2)
    assert [type(p) for p in points(2)] == [Point, Point]
    assert points.cache.type == list[Point]


def test_returns_none_opts_out_and_an_unstorable_result_is_served_uncached() -> None:
    calls: list[int] = []

    @memoize(MemoryCache(), namespace="t:none", returns=None)
    def origin(n: int) -> Point:
        calls.append(n)
        return Point(n, n)

    assert origin.cache.type is None
    # Untyped, an unregistered NamedTuple has no exact way back: never stored, never a list.
    assert [type(origin(1)) for _ in range(3)] == [Point] * 3
    assert len(calls) == 3 and origin.cache.stats().encode_errors == 3


def test_untyped_annotations_stay_untyped() -> None:
    @memoize(MemoryCache(), namespace="t:any")
    def anything(n: int) -> Any:
        return {"n": (n, n)}

    @memoize(MemoryCache(), namespace="t:plain")
    def plain(n):  # type: ignore[no-untyped-def]
        return {"n": (n, n)}

    for fn in (anything, plain):
        fn(1)
        assert fn(1) == {"n": (1, 1)} and fn.cache.type is None


def test_annotations_without_user_classes_stay_untyped_and_exact() -> None:
    import datetime

    when = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)

    @memoize(MemoryCache(), namespace="t:dict")
    def row(n: int) -> dict[str, Any]:
        return {"n": (n, n), "when": when}

    row(1)
    assert row(1) == {"n": (1, 1), "when": when} and row.cache.type is None
    assert row.cache_info().misses == 1


def test_annotation_with_a_serializer_without_typed_form_stays_untyped() -> None:
    @memoize(MemoryCache(), namespace="t:pickle", serializer=PickleSerializer(b"k"))
    def origin(n: int) -> Point:
        return Point(n, n)

    origin(1)
    assert type(origin(1)) is Point and origin.cache.type is None


def test_returns_errors_at_decoration_time() -> None:
    with pytest.raises(TypeError, match="returns cannot be given with a TypedCache"):
        memoize(TypedCache(MemoryCache()), namespace="t:e0", returns=Point)(lambda n: n)
    with pytest.raises(TypeError, match="for_type"):
        memoize(MemoryCache(), namespace="t:e", serializer=PickleSerializer(b"k"), returns=Point)(
            lambda n: n
        )


def test_a_result_of_another_type_than_annotated_is_served_not_stored() -> None:
    @memoize(MemoryCache(), namespace="t:liar")
    def liar(n: int) -> Point:
        return {"x": n}  # type: ignore[return-value]

    assert liar(1) == {"x": 1}
    assert liar.cache.stats().encode_errors == 1
    with pytest.raises(SerializationError):
        liar.cache.set("k", {"x": 1})  # type: ignore[arg-type]


# -- the positional key path ------------------------------------------------------------------


def test_positional_key_text_is_the_key_builders_text() -> None:
    @memoize(MemoryCache(), namespace="t:keys")
    def f(a: Any, b: Any = 0) -> int:
        return 1

    assert f._keys is not None
    for args in [(1, "x"), ("é", 2**80), (1,), (True, 1.0), ((1, 2), None)]:
        f(*args)
        assert f.cache_key(*args).endswith(f._keys.text(args, {}))
    # only exact str/int tuples are remembered: 1, True and 1.0 never alias
    assert set(f._memo) == {(1, "x"), ("é", 2**80), (1,)}


def test_typed_keys_separate_int_and_bool_through_the_memo() -> None:
    calls: list[Any] = []

    @memoize(MemoryCache(), namespace="t:typed", typed=True)
    def f(a: Any) -> Any:
        calls.append(a)
        return a

    assert [f(1), f(True), f(1), f(True)] == [1, True, 1, True]
    assert calls == [1, True]


def test_memo_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memoize_module, "_MEMO_MAX", 8)

    @memoize(MemoryCache(), namespace="t:bound")
    def f(a: int) -> int:
        return a

    for i in range(100):
        assert f(i) == i
    assert len(f._memo) <= 8


def test_key_text_is_identical_across_processes() -> None:
    code = (
        "from cache_core import memoize, MemoryCache\n"
        "f = memoize(MemoryCache(), namespace='t:proc')(lambda a, b: a)\n"
        "f(7, 'x'); print(f.cache_key(7, 'x'))\n"
    )
    keys = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed},
        ).stdout.strip()
        for seed in ("1", "2")
    }
    assert len(keys) == 1
