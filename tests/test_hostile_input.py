"""Inputs a hostile (or unlucky) user gives: each either works as documented or is refused
before any I/O, never returns another caller's data, and never makes the library do unbounded
work. Nested prefixes, closures and lambdas under ``@memoize``, argument keys, TTL and key
limits across every layer.
"""

from __future__ import annotations

import decimal
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.cluster import RedisCluster

from cache_core import (
    MAX_TTL,
    BloomFilter,
    BloomSnapshot,
    CacheWarmer,
    MemoryCache,
    MultiLevelCache,
    ProtectedCache,
    RedisBloomFilter,
    RedisCache,
    TypedCache,
    memoize,
)
from cache_core._keys import MAX_DEPTH, KeyBuilder

# -- 1. nested prefixes: clear() of a parent never touches any cache's library keys ------------


@pytest.fixture(params=["redis", "cluster"])
def client(request: pytest.FixtureRequest) -> Iterator[redis.Redis | RedisCluster]:
    name = "redis_client" if request.param == "redis" else "cluster_client"
    yield request.getfixturevalue(name)


def test_parent_clear_keeps_a_child_caches_library_keys(client: Any, unique_prefix: str) -> None:
    app = RedisCache(client, prefix=unique_prefix)
    sessions = RedisCache(client, prefix=f"{unique_prefix}:sessions")
    bloom = RedisBloomFilter(sessions, "users", capacity=1000)
    guard: ProtectedCache[Any] = ProtectedCache(TypedCache(sessions), bloom)
    guard.set("u1", {"name": "bob"})
    snapshot = BloomSnapshot(sessions, "snap")
    local = BloomFilter(100)
    local.add("x")
    snapshot.save(local)
    app.set("own", b"1")
    lock = TypedCache(sessions, distributed_lock=True)
    lease_seen = threading.Event()

    def slow_load() -> str:
        # While the lease lock of "held" exists, the parent clears: the lock must survive.
        assert any(b"__cc_lock__" in k for k in client.scan_iter(match=f"{unique_prefix}:*"))
        lease_seen.set()
        app.clear()
        return "loaded"

    assert lock.get_or_set("held", slow_load) == "loaded"
    assert lease_seen.is_set()

    # Entries of both caches are gone (prefixes nest like folders) ...
    assert app.exists("own") is False
    assert sessions.exists("u1") is False
    # ... but the library's keys of the child are intact: the filter still holds u1, the
    # snapshot still loads, and an existing user still "exists".
    assert "u1" in bloom
    assert snapshot.load() == local
    loads: list[str] = []
    assert guard.get_or_set("u1", lambda: loads.append("u1") or {"name": "bob"}) == {"name": "bob"}
    assert loads == ["u1"]
    # The parent's scan_keys reports entries only, never a library key of any cache.
    sessions.set("u2", b"2")
    # ("held" is not there: the clear came after its load began, so its store was refused.)
    assert sorted(app.scan_keys()) == ["sessions:u1", "sessions:u2"]
    assert all("__cc" not in k for k in app.scan_keys())


def test_warmer_refresh_of_a_parent_skips_child_library_keys(redis_client: Any) -> None:
    parent = TypedCache(RedisCache(redis_client, prefix="wp"))
    child = RedisCache(redis_client, prefix="wp:child")
    RedisBloomFilter(child, "f", capacity=100).add("k")
    parent.set("child:k", "old")
    seen: list[list[str]] = []

    def load(keys: list[str]) -> dict[str, str]:
        seen.append(keys)
        return {k: "new" for k in keys}

    report = CacheWarmer(parent, load).refresh()
    assert seen == [["child:k"]] and report.loaded == 1
    assert parent.get("child:k") == "new"


@pytest.mark.parametrize("prefix", ["__cc", "app:__ccx", "a:b:__cc", "bad\udc80"])
def test_prefix_in_the_reserved_space_is_refused(redis_client: Any, prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        RedisCache(redis_client, prefix=prefix)


# -- 2. memoize: closures and lambdas must name their namespace ---------------------------------


def test_closures_from_one_factory_are_refused_without_namespace() -> None:
    cache = MemoryCache()

    def make_getter(table: str) -> Callable[[int], str]:
        @memoize(cache, ttl=60)
        def get(row_id: int) -> str:
            return f"{table}#{row_id}"

        return get

    with pytest.raises(TypeError, match=r"<locals>.*namespace="):
        make_getter("users")
    with pytest.raises(TypeError, match=r"<lambda>.*namespace="):
        memoize(cache)(lambda x: x * 2)


def test_closures_with_a_namespace_never_share_results() -> None:
    cache = MemoryCache()

    def make_getter(table: str) -> Callable[[int], str]:
        @memoize(cache, ttl=60, namespace=f"rows:{table}")
        def get(row_id: int) -> str:
            return f"{table}#{row_id}"

        return get

    assert make_getter("users")(1) == "users#1"
    assert make_getter("orders")(1) == "orders#1"
    double = memoize(cache, namespace="double")(lambda x: x * 2)
    square = memoize(cache, namespace="square")(lambda x: x * x)
    assert (double(3), square(3), double(3), square(3)) == (6, 9, 6, 9)


class Outer:
    class Inner:
        @memoize(MemoryCache(), key=lambda self, x: x)
        def method(self, x: int) -> int:
            return x + 1


def _module_level(x: int) -> int:
    return x


def test_module_level_functions_methods_and_nested_classes_keep_their_default() -> None:
    assert Outer.Inner().method(1) == 2
    assert Outer.Inner.method.namespace == f"{__name__}:Outer.Inner.method"
    wrapped = memoize(MemoryCache())(_module_level)
    assert wrapped.namespace == f"{__name__}:_module_level"


@pytest.mark.parametrize("namespace", ["__cc", "app:__ccx"])
def test_reserved_namespace_is_refused(namespace: str) -> None:
    with pytest.raises(ValueError, match="namespace"):
        memoize(MemoryCache(), namespace=namespace)(_module_level)


def test_arguments_that_spell_the_reserved_mark_still_work(redis_client: Any) -> None:
    calls: list[str] = []

    @memoize(RedisCache(redis_client, prefix="mr"), namespace="echo")
    def echo(text: str) -> str:
        calls.append(text)
        return text

    for text in ["__cc", ":__cc", "a:__cc_lock__", "__cc" * 3]:
        assert echo(text) == text
        assert echo(text) == text
    assert len(calls) == 4  # each stored and then hit, none refused as a reserved key


# -- 3. bounded work to key any argument --------------------------------------------------------


def _key_of(value: object) -> tuple[str, float]:
    def f(x: object) -> None:
        pass

    started = time.thread_time()  # CPU time of this thread: what the library spent, not waits
    text = KeyBuilder(f).text((value,), {})
    return text, time.thread_time() - started


HUGE = st.one_of(
    st.integers(-30_000_000, 30_000_000).map(lambda e: decimal.Decimal(f"1e{e}")),
    st.tuples(st.integers(1, 10**6), st.integers(-(10**8), 10**8)).map(
        lambda p: decimal.Decimal(f"{p[0]}e{p[1]}")
    ),
    st.integers(1, 1_000_000).map(lambda digits: 7 * 10**digits),  # ints of up to a million digits
    st.integers(1, 1_000_000).map(lambda n: "x" * n),
    st.integers(1, 10_000).map(lambda depth: _nest(depth)),
)


def _nest(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(HUGE)
def test_any_argument_keys_in_bounded_time(value: object) -> None:
    try:
        _text, spent = _key_of(value)
    except TypeError as exc:  # only nesting past MAX_DEPTH is refused
        assert f"more than {MAX_DEPTH} levels" in str(exc)
        return
    assert spent < 0.010, f"{spent * 1000:.1f} ms of CPU to key one argument"


def test_nesting_past_the_documented_depth_is_a_type_error() -> None:
    _key_of(_nest(MAX_DEPTH - 1))  # within the limit: fine
    with pytest.raises(TypeError, match=f"more than {MAX_DEPTH} levels"):
        _key_of(_nest(10_000))
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(TypeError, match="contains itself"):
        _key_of(loop)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (decimal.Decimal("1e3"), decimal.Decimal("1000")),
        (decimal.Decimal("1e3"), 1000),
        (decimal.Decimal("0.5"), 0.5),
        (decimal.Decimal("1e20000000"), decimal.Decimal("10e19999999")),
        (decimal.Decimal("1" + "0" * 5000 + "e-5000"), 1),
        (decimal.Decimal("-2.50e-9000000"), decimal.Decimal("-25e-9000001")),
        (decimal.Decimal("0e999999"), 0),
    ],
)
def test_equal_values_still_share_a_key(a: object, b: object) -> None:
    assert a == b
    assert _key_of(a)[0] == _key_of(b)[0]


def test_unequal_huge_decimals_do_not_share_a_key() -> None:
    assert _key_of(decimal.Decimal("1e20000000"))[0] != _key_of(decimal.Decimal("1e20000001"))[0]
    assert _key_of(decimal.Decimal("1e20000000"))[0] != _key_of(decimal.Decimal("-1e20000000"))[0]


# -- 5. TTLs and keys every layer refuses before any I/O ----------------------------------------

TOO_LONG = [MAX_TTL * 2, 10**20, 1e300, 2**63, timedelta(days=365 * 200)]


class CountingClient(redis.Redis):
    """A real client that counts the commands it sends (to prove a refusal did no I/O)."""

    sent = 0

    def execute_command(self, *args: Any, **options: Any) -> Any:
        type(self).sent += 1
        return super().execute_command(*args, **options)


@pytest.fixture
def counted(redis_server: Any) -> Iterator[RedisCache]:
    client = CountingClient(host="127.0.0.1", port=redis_server.port)
    CountingClient.sent = 0
    yield RedisCache(client, prefix="counted")
    client.close()


@pytest.mark.parametrize("ttl", TOO_LONG, ids=str)
def test_too_long_ttls_are_refused_everywhere_before_io(counted: RedisCache, ttl: Any) -> None:
    typed: TypedCache[Any] = TypedCache(counted)
    multi = MultiLevelCache(MemoryCache(), counted, l1_ttl=5)
    loads: list[int] = []
    attempts: list[Callable[[], object]] = [
        lambda: counted.set("k", b"v", ttl=ttl),
        lambda: counted.mset({"k": b"v"}, ttl=ttl),
        lambda: MemoryCache().set("k", b"v", ttl=ttl),
        lambda: multi.set("k", b"v", ttl=ttl),
        lambda: MultiLevelCache(MemoryCache(), counted, l1_ttl=ttl),
        lambda: typed.set("k", 1, ttl=ttl),
        lambda: typed.get_or_set("k", lambda: loads.append(1), ttl=ttl),
        lambda: TypedCache(counted, stale_ttl=ttl),
        lambda: memoize(counted, ttl=ttl, namespace="m")(_module_level),
        lambda: CacheWarmer(typed, lambda ks: {k: 1 for k in ks}).warm(["a"], ttl=ttl),
        lambda: ProtectedCache(typed, BloomFilter(10), null_ttl=ttl),
        lambda: RedisCache(counted.client, default_ttl=ttl),
    ]
    for attempt in attempts:
        with pytest.raises(ValueError, match=r"ttl.*at most|at most"):
            attempt()
    assert loads == []
    assert CountingClient.sent == 0


@pytest.mark.parametrize("key", ["\ud800", "a:\udfff", "__cc", "x:__cc_lock__:y"])
def test_bad_keys_are_value_errors_in_the_typed_layer_before_io(
    counted: RedisCache, key: str
) -> None:
    typed: TypedCache[Any] = TypedCache(MultiLevelCache(MemoryCache(), counted, l1_ttl=5))
    loads: list[int] = []
    with pytest.raises(ValueError, match="key"):
        typed.get_or_set(key, lambda: loads.append(1))
    with pytest.raises(ValueError, match="key"):
        typed.get(key)
    with pytest.raises(ValueError, match="key"):
        typed.set(key, 1)
    with pytest.raises(ValueError, match="key"):
        TypedCache(MemoryCache()).get_or_set(key, lambda: loads.append(1))
    assert loads == []
    assert CountingClient.sent == 0
