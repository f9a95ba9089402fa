"""@memoize: forms, read-through, management methods, counts, methods policy, failures."""

from __future__ import annotations

import dataclasses
import functools
import gc
import inspect
import itertools
import threading
import weakref
from collections.abc import Iterator
from typing import Any

import pytest

from cache_core import (
    CacheInfo,
    JSONSerializer,
    Memoized,
    MemoryCache,
    PickleSerializer,
    RedisCache,
    TypedCache,
    memoize,
)
from cache_core._default import reset_default_cache
from tests.conftest import FakeClock, wait_for
from tests.redis_harness import RedisServer


class Calls:
    """Counts calls exactly under threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.n = 0

    def __call__(self) -> int:
        with self._lock:
            self.n += 1
            return self.n


@pytest.fixture
def fresh_default(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("CACHE_CORE_URL", raising=False)
    reset_default_cache()
    yield
    reset_default_cache()


# -- forms and metadata -------------------------------------------------------------------------


_form_calls = Calls()


@memoize
def _bare(x: int) -> int:
    """Doc of _bare."""
    _form_calls()
    return x * 2


@memoize()
def _empty(x: int) -> int:
    _form_calls()
    return x * 3


def test_bare_empty_and_configured_forms(fresh_default: None) -> None:
    calls = _form_calls
    calls.n = 0
    a, b = _bare, _empty
    a.cache_clear()
    b.cache_clear()

    @memoize(MemoryCache(), ttl=60, namespace="c")
    def c(x: int) -> int:
        calls()
        return x * 4

    assert [a(1), a(1), b(1), b(1), c(1), c(1)] == [2, 2, 3, 3, 4, 4]
    assert calls.n == 3
    assert isinstance(a, Memoized)
    assert a.__name__ == "_bare" and a.__doc__ == "Doc of _bare."
    assert a.__qualname__ == "_bare"
    assert a.__wrapped__(5) == 10
    assert inspect.signature(a) == inspect.signature(a.__wrapped__)
    assert a.namespace == f"{__name__}:{a.__qualname__}"
    assert c.cache_key(1).startswith("c:k1:")


def test_default_cache_is_resolved_at_the_first_call(
    fresh_default: None, monkeypatch: pytest.MonkeyPatch, redis_server: RedisServer
) -> None:
    @memoize(namespace="lazy-default")
    def f(x: int) -> int:
        return x + 1

    monkeypatch.setenv("CACHE_CORE_URL", redis_server.url)  # set after decoration
    monkeypatch.setenv("CACHE_CORE_PREFIX", "memo-lazy")
    assert f(1) == 2
    assert isinstance(f.cache.cache, RedisCache)
    with redis_server.client() as client:
        assert client.exists("memo-lazy:" + f.cache_key(1)) == 1


def test_byte_cache_is_wrapped_with_the_given_serializer() -> None:
    ser = PickleSerializer(key=b"secret")

    @memoize(
        MemoryCache(),
        serializer=ser,
        namespace="test_byte_cache_is_wrapped_with_the_given_serializer.f",
    )
    def f(x: int) -> set[int]:
        return {x}

    assert f.cache.serializer is ser
    assert f(1) == {1} and f(1) == {1}


def test_typed_cache_is_used_as_is() -> None:
    typed: TypedCache[Any] = TypedCache(MemoryCache())

    @memoize(typed, namespace="test_typed_cache_is_used_as_is.f")
    def f(x: int) -> int:
        return x

    assert f.cache is typed
    f(1)
    assert typed.get(f.cache_key(1)) == 1


def test_memoized_function_types_check_as_the_original() -> None:
    @memoize(MemoryCache(), namespace="test_memoized_function_types_check_as_the_original.f")
    def f(x: int, y: str = "a") -> str:
        return y * x

    out: str = f(2, y="b")
    assert out == "bb"


# -- bad uses raise at decoration time ----------------------------------------------------------


async def _async_fn() -> int:
    return 1


async def _async_gen() -> Any:
    yield 1


def _gen() -> Any:
    yield 1


@pytest.mark.parametrize("fn", [_async_fn, _async_gen, _gen])
def test_async_and_generator_functions_are_refused(fn: Any) -> None:
    with pytest.raises(TypeError, match=r"async|generator"):
        memoize(fn)
    with pytest.raises(TypeError, match=r"async|generator"):
        memoize(MemoryCache())(fn)
    wrapped = functools.wraps(fn)(lambda *a: fn(*a))  # a sync wrapper around one
    with pytest.raises(TypeError, match=r"async|generator"):
        memoize(MemoryCache())(wrapped)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"ttl": 0}, ValueError, "ttl"),
        ({"ttl": -1}, ValueError, "ttl"),
        ({"ttl": float("nan")}, ValueError, "ttl"),
        ({"ttl": "10"}, TypeError, "ttl"),
        ({"ttl": True}, TypeError, "ttl"),
        ({"namespace": 5}, TypeError, "namespace"),
        ({"namespace": ""}, ValueError, "namespace"),
        ({"namespace": "\ud800"}, ValueError, "namespace"),
        ({"key": "user_id"}, TypeError, "key"),
        ({"typed": "yes"}, TypeError, "typed"),
        ({"generation_interval": -1}, ValueError, "generation_interval"),
        ({"serializer": object()}, TypeError, "serializer"),
    ],
)
def test_bad_options_raise_at_decoration(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    def f(x: int) -> int:
        return x

    kwargs.setdefault("namespace", "test_bad_options_raise_at_decoration.f")
    with pytest.raises(error, match=match):
        memoize(MemoryCache(), **kwargs)(f)


def test_bad_first_arguments() -> None:
    with pytest.raises(TypeError, match="first argument"):
        memoize(42)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="callable"):
        memoize(MemoryCache())(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="serializer"):
        memoize(TypedCache(MemoryCache()), serializer=JSONSerializer())
    with pytest.raises(TypeError, match="serializer"):
        memoize(TypedCache(MemoryCache()), serializer=JSONSerializer())(lambda: 1)


# -- read-through, typed, counts ----------------------------------------------------------------


def test_bound_arguments_share_an_entry(byte_cache: Any) -> None:
    calls = Calls()

    @memoize(byte_cache, namespace="test_bound_arguments_share_an_entry.f")
    def f(a: int, b: int = 2) -> list[int]:
        calls()
        return [a, b]

    assert f(1, 2) == f(1, b=2) == f(a=1, b=2) == f(1) == [1, 2]
    assert calls.n == 1
    assert f.cache_info() == CacheInfo(hits=3, misses=1, errors=0)


def test_unhashable_arguments(byte_cache: Any) -> None:
    calls = Calls()

    @memoize(byte_cache, namespace="test_unhashable_arguments.total")
    def total(items: list[int], weights: dict[str, float], tags: set[str]) -> float:
        calls()
        return sum(items) * sum(weights.values()) + len(tags)

    assert total([1, 2], {"a": 1.0, "b": 2.0}, {"x", "y"}) == 11.0
    assert total([1, 2], {"b": 2.0, "a": 1.0}, {"y", "x"}) == 11.0
    assert calls.n == 1
    assert total([2, 1], {"a": 1.0, "b": 2.0}, {"x", "y"}) == 11.0
    assert calls.n == 2


def test_typed_separates_equal_values_of_different_types() -> None:
    loose_calls, typed_calls = Calls(), Calls()

    @memoize(MemoryCache(), namespace="test_typed_separates_equal_values_of_different_types.loose")
    def loose(x: Any) -> int:
        return loose_calls()

    @memoize(
        MemoryCache(),
        typed=True,
        namespace="test_typed_separates_equal_values_of_different_types.strict",
    )
    def strict(x: Any) -> int:
        return typed_calls()

    for value in (1, 1.0, True):
        loose(value)
        strict(value)
    assert loose_calls.n == 1
    assert typed_calls.n == 3


def test_cached_none_is_a_hit() -> None:
    calls = Calls()

    @memoize(MemoryCache(), namespace="test_cached_none_is_a_hit.find")
    def find(x: int) -> None:
        calls()

    assert find(1) is None and find(1) is None
    assert calls.n == 1


def test_exceptions_are_not_cached_and_counted() -> None:
    calls = Calls()

    @memoize(MemoryCache(), namespace="test_exceptions_are_not_cached_and_counted.boom")
    def boom(x: int) -> int:
        calls()
        raise ValueError("no")

    for _ in range(2):
        with pytest.raises(ValueError, match="no"):
            boom(1)
    assert calls.n == 2
    assert boom.cache_info() == CacheInfo(hits=0, misses=2, errors=2)


def test_64_threads_one_call(byte_cache: Any) -> None:
    calls = Calls()
    barrier = threading.Barrier(64)
    results: list[Any] = []

    @memoize(byte_cache, ttl=60, namespace="test_64_threads_one_call.load")
    def load(user_id: int) -> dict[str, Any]:
        calls()
        # Hold the load open until the other 63 callers are queued on it.
        assert wait_for(lambda: load.cache.waiting(load.cache_key(user_id)) == 63)
        return {"id": user_id}

    def worker() -> None:
        barrier.wait()
        results.append(load(7))

    threads = [threading.Thread(target=worker) for _ in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls.n == 1
    assert results == [{"id": 7}] * 64
    assert len({id(r) for r in results}) == 64  # every caller got its own copy
    assert load.cache_info() == CacheInfo(hits=63, misses=1, errors=0)


def test_cache_info_is_exact_under_threads() -> None:
    @memoize(MemoryCache(), namespace="test_cache_info_is_exact_under_threads.f")
    def f(x: int) -> int:
        return x

    barrier = threading.Barrier(8)

    def worker(offset: int) -> None:
        barrier.wait()
        for i in range(500):
            f((i + offset) % 50)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    info = f.cache_info()
    assert info.hits + info.misses == 4000
    assert info.misses == 50  # 50 distinct keys, each loaded once (singleflight)


# -- invalidate, refresh, cache_clear -----------------------------------------------------------


def test_invalidate_is_scoped_to_one_call_of_one_function(byte_cache: Any) -> None:
    f_calls, g_calls = Calls(), Calls()

    @memoize(byte_cache, namespace="test_invalidate_is_scoped_to_one_call_of_one_function.f")
    def f(x: int, y: int = 0) -> int:
        return f_calls()

    @memoize(byte_cache, namespace="test_invalidate_is_scoped_to_one_call_of_one_function.g")
    def g(x: int) -> int:
        return g_calls()

    f(1), f(2), g(1)
    assert f.invalidate(x=1, y=0) is True  # the entry f(1) made
    assert f.invalidate(1) is False
    f(1), f(2), g(1)
    assert (f_calls.n, g_calls.n) == (3, 1)


def test_refresh_reloads_and_stores(byte_cache: Any) -> None:
    calls = Calls()

    @memoize(byte_cache, namespace="test_refresh_reloads_and_stores.version")
    def version(x: int) -> int:
        return calls()

    assert version(1) == 1
    assert version.refresh(1) == 2
    assert version(1) == 2
    assert calls.n == 2


def test_cache_clear_is_scoped_to_one_function(byte_cache: Any) -> None:
    f_calls, g_calls = Calls(), Calls()

    @memoize(byte_cache, namespace="test_cache_clear_is_scoped_to_one_function.f")
    def f(x: int) -> int:
        return f_calls()

    @memoize(byte_cache, namespace="test_cache_clear_is_scoped_to_one_function.g")
    def g(x: int) -> int:
        return g_calls()

    f(1), f(2), g(1)
    old_key = f.cache_key(1)
    f.cache_clear()
    assert f.cache_key(1) != old_key
    f(1), f(2), g(1)
    assert (f_calls.n, g_calls.n) == (4, 1)
    f(1)
    assert f_calls.n == 4


def test_cache_clear_reaches_other_wrappers_within_the_interval(
    byte_cache: Any, clock: FakeClock
) -> None:
    """Two wrappers of one namespace (think: two processes) agree on the generation."""
    calls = Calls()

    def make() -> Memoized[[int], int]:
        @memoize(byte_cache, namespace="shared-ns", generation_interval=5, timer=clock)
        def f(x: int) -> int:
            return calls()

        return f

    here, there = make(), make()
    assert here(1) == there(1) == 1
    here.cache_clear()
    if not getattr(byte_cache, "invalidation", False):
        # Within the interval: still the old generation (with invalidation the token's
        # invalidation ends the interval early, see test_invalidation).
        assert there(1) == 1
    clock.advance(5)
    assert there(1) == 2  # re-read the token: cleared
    assert here(1) == 2  # and both wrappers share the new generation's entry
    assert calls.n == 2


def test_generation_interval_zero_reads_every_call(byte_cache: Any) -> None:
    calls = Calls()

    def make() -> Memoized[[int], int]:
        @memoize(byte_cache, namespace="ns0", generation_interval=0)
        def f(x: int) -> int:
            return calls()

        return f

    here, there = make(), make()
    here(1)
    there(1)
    there.cache_clear()
    here(1)
    assert calls.n == 2


# -- methods ------------------------------------------------------------------------------------


class Repo:
    """Identified by a stable id: instances with different ids never share results."""

    loads = Calls()

    def __init__(self, repo_id: int) -> None:
        self.repo_id = repo_id

    def __cache_key__(self) -> int:
        return self.repo_id

    @memoize(MemoryCache(), namespace="test_generation_interval_zero_reads_every_call.lookup")
    def lookup(self, x: int) -> list[int]:
        Repo.loads()
        return [self.repo_id, x]

    @classmethod
    @memoize(MemoryCache(), namespace="test_generation_interval_zero_reads_every_call.kind")
    def kind(cls, x: int) -> str:
        Repo.loads()
        return f"{cls.__name__}:{x}"

    @memoize(MemoryCache(), namespace="test_generation_interval_zero_reads_every_call.kind2")
    @classmethod
    def kind2(cls, x: int) -> str:
        Repo.loads()
        return f"{cls.__name__}:{x}"

    @staticmethod
    @memoize(MemoryCache(), namespace="test_generation_interval_zero_reads_every_call.pure")
    def pure(x: int) -> int:
        Repo.loads()
        return x * 2

    @memoize(MemoryCache(), namespace="test_generation_interval_zero_reads_every_call.pure2")
    @staticmethod
    def pure2(x: int) -> int:
        Repo.loads()
        return x * 3


class SubRepo(Repo):
    pass


def test_methods_are_keyed_by_cache_key_of_the_instance() -> None:
    start = Repo.loads.n
    a, a2, b = Repo(1), Repo(1), Repo(2)
    assert a.lookup(5) == [1, 5]
    assert b.lookup(5) == [2, 5]  # not a's result (dogpile #213)
    assert a2.lookup(5) == [1, 5]  # same identity: shared, across instances and processes
    assert Repo.lookup(a, 5) == [1, 5]
    assert Repo.loads.n - start == 2
    assert a.lookup.invalidate(5) is True
    assert a.lookup(5) == [1, 5]
    assert a.lookup.refresh(5) == [1, 5]
    assert Repo.loads.n - start == 4
    assert a.lookup.cache_key(5) == Repo.lookup.cache_key(a, 5)
    assert a.lookup.cache_info() == Repo.lookup.cache_info()


def test_classmethods_and_staticmethods() -> None:
    start = Repo.loads.n
    assert Repo.kind(1) == "Repo:1" and Repo(9).kind(1) == "Repo:1"
    assert SubRepo.kind(1) == "SubRepo:1"  # keyed by the class, not shared
    assert Repo.kind2(1) == "Repo:1" and SubRepo.kind2(1) == "SubRepo:1"
    assert Repo.pure(2) == 4 and Repo(1).pure(2) == 4
    assert Repo.pure2(2) == 6 and Repo(3).pure2(2) == 6
    assert Repo.loads.n - start == 6


def test_method_without_identity_fails_clearly_on_first_call() -> None:
    class Plain:
        @memoize(
            MemoryCache(), namespace="test_method_without_identity_fails_clearly_on_first_call.get"
        )
        def get(self, x: int) -> int:
            return x

    with pytest.raises(TypeError, match=r"argument 'self' of type .*Plain.*__cache_key__"):
        Plain().get(1)


def test_method_with_key_function() -> None:
    calls = Calls()

    class Account:
        def __init__(self, number: str) -> None:
            self.number = number

        @memoize(
            MemoryCache(),
            key=lambda self, month: (self.number, month),
            namespace="test_method_with_key_function.balance",
        )
        def balance(self, month: int) -> int:
            calls()
            return month * 10

    assert Account("A").balance(1) == Account("A").balance(1) == 10
    Account("B").balance(1)
    assert calls.n == 2


def test_dataclass_instances_are_keyed_by_their_fields() -> None:
    calls = Calls()

    @dataclasses.dataclass(frozen=True)
    class Region:
        code: str

        @memoize(
            MemoryCache(), namespace="test_dataclass_instances_are_keyed_by_their_fields.population"
        )
        def population(self) -> int:
            calls()
            return len(self.code)

    assert Region("eu").population() == Region("eu").population() == 2
    assert Region("apac").population() == 4
    assert calls.n == 2


@pytest.mark.parametrize("concurrent", [False, True])
def test_instances_are_garbage_collected(concurrent: bool) -> None:
    class Item:
        def __init__(self, n: int) -> None:
            self.n = n

        def __cache_key__(self) -> int:
            return self.n

        @memoize(MemoryCache(), namespace="test_instances_are_garbage_collected.double")
        def double(self, fail: bool = False) -> int:
            if fail:
                raise ValueError("fail")
            return self.n * 2

    item = Item(3)
    ref = weakref.ref(item)
    if concurrent:
        threads = [threading.Thread(target=item.double) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert item.double() == 6
    item.double.invalidate()
    item.double.refresh()
    with pytest.raises(ValueError):
        item.double(fail=True)
    del item
    gc.collect()
    assert ref() is None


# -- key= ---------------------------------------------------------------------------------------


def test_key_function_replaces_argument_encoding() -> None:
    calls = Calls()

    class Conn:
        def __init__(self, dsn: str) -> None:
            self.dsn = dsn

    @memoize(
        MemoryCache(),
        key=lambda conn, table: (conn.dsn, table),
        namespace="test_key_function_replaces_argument_encoding.count",
    )
    def count(conn: Conn, table: str) -> int:
        calls()
        return len(table)

    assert count(Conn("db1"), "users") == count(Conn("db1"), "users") == 5
    count(Conn("db2"), "users")
    assert calls.n == 2
    with pytest.raises(TypeError, match="cannot be encoded stably"):
        memoize(MemoryCache(), key=lambda conn, table: conn, namespace="count2")(count.__wrapped__)(
            Conn("x"), "t"
        )


def test_unencodable_argument_without_key_raises_naming_it() -> None:
    @memoize(MemoryCache(), namespace="test_unencodable_argument_without_key_raises_naming_it.f")
    def f(lock: Any) -> int:
        return 1

    with pytest.raises(TypeError, match=r"argument 'lock' of type .*lock.* key="):
        f(threading.Lock())
    assert f.cache_info() == CacheInfo(0, 0, 0)


# -- failures: fail-open ------------------------------------------------------------------------


def test_backend_outage_never_fails_a_call(fault_server: RedisServer) -> None:
    calls = Calls()
    cache = RedisCache.from_url(fault_server.url, prefix="memo-out")

    @memoize(cache, generation_interval=0, namespace="test_backend_outage_never_fails_a_call.f")
    def f(x: int) -> int:
        calls()
        return x * 2

    assert f(1) == 2 and f(1) == 2
    assert calls.n == 1
    fault_server.stop()
    try:
        assert f(1) == 2  # the generation read and the value read both fail: answered anyway
        assert f(2) == 4
        assert calls.n == 3
        assert f.refresh(3) == 6
    finally:
        fault_server.start()
        cache.close()


def test_generation_read_failure_keeps_the_last_generation(fault_server: RedisServer) -> None:
    clock = FakeClock()
    cache = RedisCache.from_url(fault_server.url, prefix="memo-gen")

    @memoize(
        cache,
        generation_interval=1,
        timer=clock,
        namespace="test_generation_read_failure_keeps_the_last_generation.f",
    )
    def f(x: int) -> int:
        return x

    f(1)
    f.cache_clear()
    key = f.cache_key(1)
    fault_server.stop()
    try:
        clock.advance(2)
        assert f.cache_key(1) == key
    finally:
        fault_server.start()
        cache.close()


def test_counts_are_independent_per_function() -> None:
    counter = itertools.count()

    @memoize(MemoryCache(), namespace="test_counts_are_independent_per_function.f")
    def f(x: int) -> int:
        return next(counter)

    @memoize(MemoryCache(), namespace="test_counts_are_independent_per_function.g")
    def g(x: int) -> int:
        return next(counter)

    f(1), f(1), g(1)
    assert f.cache_info() == (1, 1, 0)
    assert g.cache_info() == (0, 1, 0)


def test_callable_without_a_signature_needs_key() -> None:
    with pytest.raises(TypeError, match=r"signature of max.*key="):
        memoize(MemoryCache())(max)
    best = memoize(MemoryCache(), key=lambda *args: args)(max)
    assert best(1, 3, 2) == 3 and best(1, 3, 2) == 3
    assert best.cache_info() == (1, 1, 0)


def test_stampede_options_pass_through_to_the_typed_layer(redis_client: Any) -> None:
    @memoize(
        RedisCache(redis_client, prefix="mo"),
        ttl=100,
        distributed_lock=True,
        lock_timeout=3,
        early_refresh=2.0,
        stale_ttl=30,
        stale_if_error=False,
        ttl_jitter=0.0,
        namespace="test_stampede_options_pass_through.f",
    )
    def f(x: int) -> int:
        return x * 2

    opts = f.cache.options
    assert (opts.distributed_lock, opts.lock_timeout, opts.early_refresh) == (True, 3.0, 2.0)
    assert (opts.stale_ttl, opts.stale_if_error, opts.ttl_jitter) == (30.0, False, 0.0)
    assert f(21) == 42
    key = f.cache_key(21)
    assert 129_000 < redis_client.pttl("mo:" + key) <= 130_000  # ttl + stale window, no jitter


def test_stampede_options_are_validated_at_decoration() -> None:
    with pytest.raises(ValueError, match="distributed_lock"):

        @memoize(
            MemoryCache(),
            distributed_lock=True,
            namespace="test_stampede_options_are_validated_at_decoration.f",
        )
        def f(x: int) -> int:
            return x

    with pytest.raises(ValueError, match="ttl_jitter"):

        @memoize(
            MemoryCache(),
            ttl_jitter=2,
            namespace="test_stampede_options_are_validated_at_decoration.g",
        )
        def g(x: int) -> int:
            return x
