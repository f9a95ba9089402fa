"""The typed layer's seams (issue 12): ReadThroughOptions, the injected lease-lock source, the
negative-caching hook (get_or_absent), and the codec, each through its public surface."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
import redis

from cache_core import (
    MemoryCache,
    MultiLevelCache,
    ReadThroughOptions,
    RedisCache,
    SerializationError,
    TypedCache,
    memoize,
)
from cache_core._protocols import LeaseLockSource
from tests.conftest import wait_for

# -- ReadThroughOptions -----------------------------------------------------------------------


def test_options_defaults_and_normalisation() -> None:
    opts = ReadThroughOptions()
    assert opts == ReadThroughOptions(False, 10.0, None, None, True, 0.1)
    assert not opts.wants_meta
    opts = ReadThroughOptions(lock_timeout=timedelta(seconds=3), stale_ttl=timedelta(minutes=1))  # type: ignore[arg-type]
    assert (opts.lock_timeout, opts.stale_ttl) == (3.0, 60.0)
    assert opts.wants_meta
    assert ReadThroughOptions(early_refresh=1).early_refresh == 1.0


@pytest.mark.parametrize(
    ("kwargs", "error", "names"),
    [
        ({"distributed_lock": 1}, TypeError, "distributed_lock"),
        ({"stale_if_error": "yes"}, TypeError, "stale_if_error"),
        ({"lock_timeout": None}, TypeError, "lock_timeout"),
        ({"lock_timeout": 0}, ValueError, "lock_timeout"),
        ({"lock_timeout": "10"}, TypeError, "lock_timeout"),
        ({"early_refresh": True}, TypeError, "early_refresh"),
        ({"early_refresh": 0.0}, ValueError, "early_refresh"),
        ({"early_refresh": float("inf")}, ValueError, "early_refresh"),
        ({"stale_ttl": -1}, ValueError, "stale_ttl"),
        ({"stale_ttl": "1"}, TypeError, "stale_ttl"),
        ({"ttl_jitter": 1.0}, ValueError, "ttl_jitter"),
        ({"ttl_jitter": None}, TypeError, "ttl_jitter"),
    ],
)
def test_bad_options_name_the_option(
    kwargs: dict[str, Any], error: type[Exception], names: str
) -> None:
    with pytest.raises(error, match=names):
        ReadThroughOptions(**kwargs)
    with pytest.raises(error, match=names):
        TypedCache(MemoryCache(), **kwargs)


def test_overridden_replaces_only_what_is_given_and_validates() -> None:
    base = ReadThroughOptions(early_refresh=1.0, stale_ttl=30)
    assert base.overridden() is base
    assert base.overridden(early_refresh=None).early_refresh is None  # None turns it off
    assert base.overridden(stale_ttl=None).stale_ttl is None
    changed = base.overridden(ttl_jitter=0.0, stale_if_error=False)
    assert (changed.ttl_jitter, changed.stale_if_error, changed.stale_ttl) == (0.0, False, 30.0)
    with pytest.raises(ValueError, match="ttl_jitter"):
        base.overridden(ttl_jitter=2.0)


def test_options_object_or_keywords_not_both() -> None:
    opts = ReadThroughOptions(ttl_jitter=0.0, stale_ttl=5)
    typed: TypedCache[int] = TypedCache(MemoryCache(), options=opts)
    assert typed.options is opts
    with pytest.raises(TypeError, match="not both"):
        TypedCache(MemoryCache(), options=opts, ttl_jitter=0.2)
    with pytest.raises(TypeError, match="options must be a ReadThroughOptions"):
        TypedCache(MemoryCache(), options={"ttl_jitter": 0.0})  # type: ignore[arg-type]


def test_memoize_passes_one_options_object() -> None:
    @memoize(MemoryCache(), namespace="seams.opts", early_refresh=2.0, ttl_jitter=0.0)
    def f(x: int) -> int:
        return x

    assert f.cache.options == ReadThroughOptions(early_refresh=2.0, ttl_jitter=0.0)
    assert f(3) == 3
    with pytest.raises(TypeError, match="ttl_jitter cannot be given with a TypedCache"):
        memoize(TypedCache(MemoryCache()), ttl_jitter=0.0)
    with pytest.raises(ValueError, match="early_refresh"):
        memoize(MemoryCache(), early_refresh=-1.0)


# -- the lease-lock source is injected, and built only when used -------------------------------


def test_lock_source_is_a_protocol_not_a_class(
    redis_client: redis.Redis, unique_prefix: str
) -> None:
    l2 = RedisCache(redis_client, prefix=unique_prefix)
    assert isinstance(l2, LeaseLockSource)
    assert isinstance(MultiLevelCache(MemoryCache(), l2, l1_ttl=5), LeaseLockSource)
    assert not isinstance(MemoryCache(), LeaseLockSource)
    over_memory = MultiLevelCache(MemoryCache(), MemoryCache(), l1_ttl=5)
    assert over_memory.lease_locks() is None
    with pytest.raises(ValueError, match="distributed_lock=True needs"):
        TypedCache(over_memory, distributed_lock=True)
    with pytest.raises(ValueError, match="distributed_lock=True needs"):
        TypedCache(MemoryCache()).get_or_set("k", lambda: 1, distributed_lock=True)


def test_lock_scripts_are_built_only_for_a_lease(
    redis_client: redis.Redis, unique_prefix: str
) -> None:
    class CountingSource(RedisCache):
        calls = 0

        def lease_locks(self) -> Any:
            CountingSource.calls += 1
            return super().lease_locks()

    cache = CountingSource(redis_client, prefix=unique_prefix)
    plain: TypedCache[int] = TypedCache(cache)
    assert plain.get_or_set("a", lambda: 1) == 1
    assert CountingSource.calls == 0  # no lease wanted: no lock factory, no scripts
    assert plain.get_or_set("b", lambda: 2, distributed_lock=True) == 2
    assert CountingSource.calls >= 1
    locked: TypedCache[int] = TypedCache(cache, distributed_lock=True)
    assert locked.get_or_set("c", lambda: 3) == 3


# -- the negative-caching hook ----------------------------------------------------------------


def test_get_or_absent_stores_a_tombstone_and_answers_from_it() -> None:
    typed: TypedCache[int] = TypedCache(MemoryCache())
    calls: list[str] = []
    events: list[str] = []

    def nothing() -> int | None:
        calls.append("load")
        return None

    assert typed.get_or_absent("k", nothing, null_ttl=30, observe=events.append) is None
    assert events == ["miss", "load", "absent"]
    events.clear()
    assert typed.get_or_absent("k", nothing, null_ttl=30, observe=events.append) is None
    assert events == ["tombstone"]
    assert calls == ["load"]
    assert typed.codec.is_tombstone(typed.cache.get("k"))
    with pytest.raises(SerializationError, match="tombstone"):
        typed.get("k")  # a tombstone is not a value
    typed.set("k", 5)  # a write replaces it
    events.clear()
    assert typed.get_or_absent("k", nothing, null_ttl=30, observe=events.append) == 5
    assert events == ["hit"]
    assert calls == ["load"]
    assert typed.get_or_absent("other", lambda: 7, null_ttl=30) == 7  # no observer needed


def test_get_or_absent_reports_a_raising_loader_before_it_raises() -> None:
    typed: TypedCache[int] = TypedCache(MemoryCache())
    events: list[str] = []

    def broken() -> int | None:
        raise RuntimeError("db down")

    with pytest.raises(RuntimeError, match="db down"):
        typed.get_or_absent("k", broken, null_ttl=30, observe=events.append)
    assert events == ["miss", "load"]
    assert not typed.cache.exists("k")  # an error is never negative-cached


def test_get_or_absent_one_load_for_concurrent_callers() -> None:
    typed: TypedCache[int] = TypedCache(MemoryCache())
    entered = threading.Event()
    release = threading.Event()
    calls: list[int] = []

    def slow_nothing() -> int | None:
        calls.append(1)
        entered.set()
        assert release.wait(5)
        return None

    answers: list[Any] = []
    threads = [
        threading.Thread(
            target=lambda: answers.append(typed.get_or_absent("k", slow_nothing, null_ttl=30))
        )
        for _ in range(8)
    ]
    threads[0].start()
    assert entered.wait(5)
    for t in threads[1:]:
        t.start()
    assert wait_for(lambda: typed.waiting("k") == 7)
    release.set()
    for t in threads:
        t.join(5)
    assert len(calls) == 1
    assert answers == [None] * 8


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"key": "", "fn": lambda: 1, "null_ttl": 1}, ValueError),
        ({"key": 1, "fn": lambda: 1, "null_ttl": 1}, TypeError),
        ({"key": "k", "fn": 1, "null_ttl": 1}, TypeError),
        ({"key": "k", "fn": lambda: 1, "null_ttl": None}, TypeError),
        ({"key": "k", "fn": lambda: 1, "null_ttl": 0}, ValueError),
        ({"key": "k", "fn": lambda: 1, "null_ttl": 1, "ttl": -1}, ValueError),
    ],
)
def test_get_or_absent_bad_input(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        TypedCache(MemoryCache()).get_or_absent(**kwargs)


# -- the codec ---------------------------------------------------------------------------------


def test_codec_round_trip_and_envelope() -> None:
    typed: TypedCache[Any] = TypedCache(MemoryCache(), ttl_jitter=0.0)
    codec = typed.codec
    data = codec.encode("k", {"a": [1, 2]}, typed.options, logical=None)
    assert data[:4] == codec.prefix
    assert codec.decode(data) == {"a": [1, 2]}
    assert codec.fresh(data) == ({"a": [1, 2]}, data)
    assert codec.fresh(None) is None
    assert codec.fresh(codec.tombstone) is None
    assert codec.ttls(10.0, typed.options) == (10.0, 10.0)
    stale = ReadThroughOptions(stale_ttl=5, ttl_jitter=0.0)
    assert codec.ttls(10.0, stale) == (10.0, 15.0)
    meta = codec.encode("k", 1, stale, logical=10.0, delta=0.5)
    assert meta[:4] != codec.prefix and codec.entry(meta).delta == 0.5
    with pytest.raises(SerializationError):
        codec.decode(b"not an envelope")


def test_per_call_overrides_are_checked_every_time_even_when_remembered() -> None:
    typed: TypedCache[int] = TypedCache(MemoryCache())
    assert typed.get_or_set("k", lambda: 1, distributed_lock=False, ttl_jitter=0) == 1
    # equal to the remembered values (0 == False, 1 == True) but of the wrong type
    with pytest.raises(TypeError, match="distributed_lock"):
        typed.get_or_set("k", lambda: 1, distributed_lock=0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="ttl_jitter"):
        typed.get_or_set("k", lambda: 1, ttl_jitter=False)
    with pytest.raises(TypeError, match="stale_ttl"):
        typed.get_or_set("k", lambda: 1, stale_ttl=[1])  # unhashable: validated, not remembered
    base = ReadThroughOptions()
    assert base.overridden(ttl_jitter=0.0) is base.overridden(ttl_jitter=0.0)


def test_argument_checks_want_callables_not_just_attributes() -> None:
    class Shaped:
        dumps = 1
        loads = 2

    with pytest.raises(TypeError, match="serializer must have dumps"):
        TypedCache(MemoryCache(), serializer=Shaped())  # type: ignore[arg-type]

    class HalfCache:
        def get(self, key: str, default: Any = None) -> Any: ...

        def set(self, key: str, value: bytes, ttl: Any = None) -> None: ...

        def delete(self, key: str) -> bool: ...

        exists = clear = None

    with pytest.raises(TypeError, match="HalfCache lacks exists, clear"):
        TypedCache(HalfCache())  # type: ignore[arg-type]


def test_a_failed_typed_cache_leaves_the_byte_cache_metrics_alone() -> None:
    levels = MultiLevelCache(MemoryCache(), MemoryCache(), l1_ttl=5)
    with pytest.raises(ValueError, match="distributed_lock"):
        TypedCache(levels, distributed_lock=True)
    assert not levels.metrics.covered
    TypedCache(levels)
    assert levels.metrics.covered


def test_a_multilevel_level_needs_callable_batch_methods() -> None:
    class NoBatch:
        def get(self, key: str, default: Any = None) -> Any: ...

        def set(self, key: str, value: bytes, ttl: Any = None) -> None: ...

        def delete(self, key: str) -> bool: ...

        def exists(self, key: str) -> bool: ...

        def clear(self) -> int: ...

        mget = mset = mdelete = None

    with pytest.raises(
        TypeError, match=r"l1 must be a byte cache .*NoBatch lacks mget, mset, mdelete"
    ):
        MultiLevelCache(NoBatch(), MemoryCache(), l1_ttl=5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"l2 must be a byte cache .*NoBatch lacks mget"):
        MultiLevelCache(MemoryCache(), NoBatch(), l1_ttl=5)  # type: ignore[arg-type]
