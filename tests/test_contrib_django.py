"""cache_core.contrib.django.RedisCache against Django's documented cache semantics, real Redis.

The cases follow Django's own backend suite (tests/cache/tests.py) and BaseCache's docstrings:
timeouts (None / 0 / default / sub-second), add on an expired key, touch with None, incr on a
missing key, a stored None, versions, key warnings, set_many failures, clear scoped to a
namespace, get_or_set with a callable; and what this backend adds: one loader call for a
64-thread stampede, integers that Redis increments, signed pickles, the L1, a Cluster.
"""

from __future__ import annotations

import asyncio
import pickle
import re
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("django")

from django.conf import settings

if not settings.configured:
    settings.configure(
        SECRET_KEY="cache-core-tests-" + "s" * 40,
        CACHES={"default": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}},
        USE_TZ=True,
    )
    import django

    django.setup()

from django.core.cache import CacheKeyWarning, caches
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from cache_core import BackendError, CacheMiss, CircuitOpenError, PickleSerializer
from cache_core.contrib.django import RedisCache, signing_key
from tests.conftest import wait_for
from tests.redis_harness import RedisClusterHarness, RedisServer, free_port

BACKEND = "cache_core.contrib.django.RedisCache"


class Unpicklable:
    def __getstate__(self) -> Any:
        raise pickle.PickleError("refused")


def make(url: str, prefix: str, **params: Any) -> RedisCache:
    return RedisCache(url, {"KEY_PREFIX": prefix, **params})


@pytest.fixture
def cache(redis_server: RedisServer, unique_prefix: str) -> RedisCache:
    return make(redis_server.url, f"dj{unique_prefix}")


@pytest.fixture
def raw(redis_server: RedisServer) -> Iterator[Any]:
    client = redis_server.client()
    yield client
    client.close()


def redis_key(cache: RedisCache, key: str, version: int | None = None) -> str:
    return cache.store.redis.redis_key(cache.make_key(key, version=version))


# -- basics ------------------------------------------------------------------------------------


def test_values_of_many_types_round_trip(cache: RedisCache) -> None:
    values = {
        "string": "this is a string",
        "int": 42,
        "negative": -7,
        "bool": True,
        "float": 1.5,
        "big": 2**70,
        "list": [1, 2, 3],
        "tuple": (1, 2),
        "dict": {"A": 1, "B": [2]},
        "bytes": b"\x00\xff",
        "class": Unpicklable,
    }
    for key, value in values.items():
        cache.set(key, value)
    for key, value in values.items():
        got = cache.get(key)
        assert got == value and type(got) is type(value), key


def test_missing_key_returns_the_default(cache: RedisCache) -> None:
    assert cache.get("nope") is None
    assert cache.get("nope", "bang!") == "bang!"


def test_a_stored_none_counts_as_present(cache: RedisCache) -> None:
    cache.set("null", None)
    assert cache.get("null", "default") is None
    assert cache.has_key("null") is True
    assert "null" in cache
    assert cache.get_many(["null"]) == {"null": None}


def test_add_only_when_absent(cache: RedisCache) -> None:
    assert cache.add("k", "value") is True
    assert cache.add("k", "newvalue") is False
    assert cache.get("k") == "value"


def test_add_on_an_expired_key_succeeds(cache: RedisCache) -> None:
    cache.set("k", "old", 0.15)
    assert wait_for(lambda: not cache.has_key("k"), timeout=5)
    assert cache.add("k", "new") is True
    assert cache.get("k") == "new"


def test_delete_reports_whether_something_was_removed(cache: RedisCache) -> None:
    cache.set_many({"k1": "spam", "k2": "eggs"})
    assert cache.delete("k1") is True
    assert cache.delete("k1") is False
    assert cache.get("k1") is None
    assert cache.get("k2") == "eggs"


def test_non_ascii_keys_and_values(cache: RedisCache) -> None:
    stuff = {"Iñtërnâtiônàlizætiøn": "Iñtërnâtiônàlizætiøn2", "清": {"x": "ü"}}
    for key, value in stuff.items():
        cache.set(key, value)
        assert cache.get(key) == value
        assert cache.delete(key) is True
        assert cache.add(key, value) is True
    cache.delete_many(list(stuff))
    assert cache.set_many(stuff) == []
    assert cache.get_many(list(stuff)) == stuff


# -- timeouts ----------------------------------------------------------------------------------


def test_default_timeout_applies(cache: RedisCache, raw: Any) -> None:
    cache.set("k", "v")
    assert 299_000 < raw.pttl(redis_key(cache, "k")) <= 300_000


def test_configured_timeout_and_none_timeout(redis_server: RedisServer, raw: Any) -> None:
    short = make(redis_server.url, "djshort", TIMEOUT=60)
    forever = make(redis_server.url, "djforever", TIMEOUT=None)
    short.set("k", 1)
    forever.set("k", 1)
    assert 59_000 < raw.pttl(redis_key(short, "k")) <= 60_000
    assert raw.pttl(redis_key(forever, "k")) == -1


def test_none_timeout_never_expires(cache: RedisCache, raw: Any) -> None:
    cache.set("k1", "eggs", None)
    assert cache.add("k2", "ham", None) is True
    assert cache.add("k1", "new eggs", None) is False
    cache.set_many({"k3": "sausage"}, None)
    for key in ("k1", "k2", "k3"):
        assert raw.pttl(redis_key(cache, key)) == -1
    assert cache.get("k1") == "eggs"


def test_zero_timeout_does_not_cache(cache: RedisCache) -> None:
    cache.set("k1", "old")
    cache.set("k1", "eggs", 0)
    assert cache.get("k1") is None  # the older value is gone too
    assert cache.add("k2", "ham", 0) is True
    assert cache.get("k2") is None
    assert cache.set_many({"k3": "sausage", "k4": "lobster"}, 0) == []
    assert cache.get_many(["k3", "k4"]) == {}
    cache.set("k5", "kept")
    assert cache.add("k5", "other", 0) is False
    assert cache.get("k5") == "kept"


def test_negative_timeout_is_like_zero(cache: RedisCache) -> None:
    assert cache.get_backend_timeout(-5) == 0
    assert cache.get_backend_timeout(None) is None
    assert cache.get_backend_timeout(10) == 10
    cache.set("k", "v", -1)
    assert cache.get("k") is None


def test_sub_second_and_float_timeouts(cache: RedisCache) -> None:
    cache.set("k1", "spam", 100.2)
    assert cache.get("k1") == "spam"
    cache.set("short", "gone soon", 0.2)
    assert cache.get("short") == "gone soon"
    assert wait_for(lambda: cache.get("short") is None, timeout=5)
    assert cache.has_key("short") is False


def test_long_timeout(cache: RedisCache) -> None:
    month = 60 * 60 * 24 * 30 + 1
    cache.set("k1", "eggs", month)
    assert cache.add("k2", "ham", month) is True
    cache.set_many({"k3": "sausage"}, month)
    assert cache.get_many(["k1", "k2", "k3"]) == {"k1": "eggs", "k2": "ham", "k3": "sausage"}


def test_set_many_with_a_timeout_expires(cache: RedisCache) -> None:
    cache.set_many({"k1": "spam", "k2": "eggs"}, 0.2)
    assert cache.get_many(["k1", "k2"]) == {"k1": "spam", "k2": "eggs"}
    assert wait_for(lambda: cache.get_many(["k1", "k2"]) == {}, timeout=5)


# -- touch -------------------------------------------------------------------------------------


def test_touch_sets_a_new_expiry(cache: RedisCache, raw: Any) -> None:
    cache.set("k", "v", 1)
    assert cache.touch("k", 40) is True
    assert 39_000 < raw.pttl(redis_key(cache, "k")) <= 40_000
    assert cache.touch("k") is True  # DEFAULT_TIMEOUT: 300 s
    assert 299_000 < raw.pttl(redis_key(cache, "k")) <= 300_000
    assert cache.touch("nonexistent") is False


def test_touch_with_none_removes_the_expiry(cache: RedisCache, raw: Any) -> None:
    cache.set("k", "belgian fries", 0.3)
    assert cache.touch("k", None) is True
    assert raw.pttl(redis_key(cache, "k")) == -1
    assert cache.touch("k", None) is True  # already persistent: still True (the key exists)
    cache.set("short", "x", 0.2)
    assert cache.touch("short", 0.05) is True
    assert wait_for(lambda: not cache.has_key("short"), timeout=5)
    assert cache.get("k") == "belgian fries"


def test_touch_with_zero_expires_now(cache: RedisCache) -> None:
    cache.set("k", "v", 5)
    assert cache.touch("k", 0) is True
    assert cache.get("k") is None
    assert cache.touch("k", 0) is False


# -- incr / decr -------------------------------------------------------------------------------


def test_incr_and_decr(cache: RedisCache, raw: Any) -> None:
    cache.set("answer", 41)
    assert cache.incr("answer") == 42
    assert cache.get("answer") == 42
    assert cache.incr("answer", 10) == 52
    assert cache.incr("answer", -10) == 42
    assert cache.decr("answer") == 41
    assert cache.decr("answer", -1) == 42
    assert raw.get(redis_key(cache, "answer")) == b"42"  # a Redis integer: INCRBY applies


def test_incr_on_a_missing_key_raises_value_error(cache: RedisCache) -> None:
    for op, delta in ((cache.incr, 1), (cache.incr, -1), (cache.decr, 1)):
        with pytest.raises(ValueError, match="not found"):
            op("does_not_exist", delta)
    assert cache.has_key("does_not_exist") is False


def test_incr_of_a_non_number_raises_type_error(cache: RedisCache) -> None:
    cache.set("null", None)
    with pytest.raises(TypeError):
        cache.incr("null")
    with pytest.raises(TypeError):
        cache.decr("null")
    assert cache.get("null", "default") is None


def test_incr_of_other_numbers_and_past_64_bits(cache: RedisCache) -> None:
    cache.set("f", 1.5)
    assert cache.incr("f") == 2.5
    cache.set("big", 2**63 - 1)
    assert cache.incr("big") == 2**63
    assert cache.get("big") == 2**63
    assert cache.decr("big") == 2**63 - 1
    assert cache.incr("big", 2**64) == 2**63 - 1 + 2**64


def test_incr_keeps_the_expiry(cache: RedisCache, raw: Any) -> None:
    cache.set("n", 1, 30)
    cache.incr("n")
    assert 29_000 < raw.pttl(redis_key(cache, "n")) <= 30_000
    cache.set("f", 1.0, 30)
    cache.incr("f")  # compare-and-set path
    assert 29_000 < raw.pttl(redis_key(cache, "f")) <= 30_000


def test_concurrent_incr_loses_no_update(cache: RedisCache) -> None:
    cache.set("hits", 0)
    cache.set("fhits", 0.0)
    start = threading.Barrier(8)

    def bump() -> None:
        start.wait()
        for _ in range(50):
            cache.incr("hits")
            cache.incr("fhits")

    threads = [threading.Thread(target=bump) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cache.get("hits") == 400
    assert cache.get("fhits") == 400.0


def test_a_counter_from_get_or_set_can_be_incremented(cache: RedisCache, raw: Any) -> None:
    assert cache.get_or_set("counter", 0) == 0
    assert raw.get(redis_key(cache, "counter")) == b"0"
    assert cache.incr("counter") == 1
    assert cache.get_or_set("counter", 100) == 1


# -- batches -----------------------------------------------------------------------------------


def test_get_many(cache: RedisCache) -> None:
    assert cache.set_many({"a": "a", "b": "b", "c": "c", "d": "d"}) == []
    assert cache.get_many(["a", "c", "d"]) == {"a": "a", "c": "c", "d": "d"}
    assert cache.get_many(["a", "b", "e"]) == {"a": "a", "b": "b"}
    assert cache.get_many(iter(["a", "b", "e"])) == {"a": "a", "b": "b"}
    cache.set_many({"x": None, "y": 1})
    assert cache.get_many(["x", "y"]) == {"x": None, "y": 1}
    assert cache.get_many([]) == {}


def test_set_many_empty_and_delete_many(cache: RedisCache) -> None:
    assert cache.set_many({}) == []
    cache.set_many({"k1": "spam", "k2": "eggs", "k3": "ham"})
    assert cache.delete_many(["k1", "k2"]) is None
    assert cache.delete_many([]) is None
    assert cache.get_many(["k1", "k2", "k3"]) == {"k3": "ham"}


def test_set_many_returns_the_keys_it_could_not_store() -> None:
    dead = make(f"redis://127.0.0.1:{free_port()}/0", "djdead", OPTIONS={"BREAKER": False})
    assert sorted(dead.set_many({"a": 1, "b": "x"})) == ["a", "b"]


def test_unpicklable_values_raise_pickle_error(cache: RedisCache) -> None:
    for call in (
        lambda: cache.set("u", Unpicklable()),
        lambda: cache.add("u", Unpicklable()),
        lambda: cache.set_many({"u": Unpicklable()}),
        lambda: cache.get_or_set("u", Unpicklable),
        lambda: cache.set("u", Unpicklable(), 0),
    ):
        with pytest.raises(pickle.PickleError):
            call()
    assert cache.has_key("u") is False


# -- keys and versions -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (
            "key with spaces and 清",
            "Cache key contains characters that will cause errors if used with memcached: %r",
        ),
        (
            "a" * 250 + "清",
            "Cache key will cause errors if used with memcached: %r (longer than 250)",
        ),
    ],
)
def test_keys_memcached_would_refuse_warn_and_still_work(
    cache: RedisCache, key: str, message: str
) -> None:
    cache.key_func = lambda key, *args: key  # the raw key reaches the validation, as in Django
    calls: list[tuple[str, tuple[Any, ...]]] = [
        ("add", (key, 1)),
        ("get", (key,)),
        ("set", (key, 1)),
        ("incr", (key,)),
        ("decr", (key,)),
        ("touch", (key,)),
        ("has_key", (key,)),
        ("get_many", ([key, "b"],)),
        ("set_many", ({key: 1, "b": 2},)),
        ("get_or_set", (key, 5)),
        ("delete", (key,)),
        ("delete_many", ([key, "b"],)),
    ]
    for name, args in calls:
        with pytest.warns(CacheKeyWarning) as record:
            getattr(cache, name)(*args)
        assert str(record[0].message) == message % key, name


def test_a_250_character_key_is_fine(cache: RedisCache) -> None:
    key = "k" * (250 - len(cache.make_key("")))
    assert len(cache.make_key(key)) == 250
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheKeyWarning)
        cache.set(key, "v")
        assert cache.get(key) == "v"
        cache.set(key, 1)
        assert cache.incr(key) == 2


def test_versions_are_separate_entries(redis_server: RedisServer, unique_prefix: str) -> None:
    v1 = make(redis_server.url, f"djv{unique_prefix}")
    v2 = make(redis_server.url, f"djv{unique_prefix}", VERSION=2)
    v1.set("answer", 42)
    assert v1.get("answer", version=1) == 42
    assert v1.get("answer", version=2) is None
    assert v2.get("answer") is None
    assert v2.get("answer", version=1) == 42
    v2.set("answer", 37)
    assert v1.get("answer", version=2) == 37
    assert v1.incr("answer", version=2) == 38
    assert v2.get("answer") == 38
    assert v1.has_key("answer", version=3) is False
    assert v1.delete("answer", version=2) is True
    assert v1.get("answer") == 42
    assert v1.get_or_set("answer", 1979, version=2) == 1979
    assert v2.get_many(["answer"]) == {"answer": 1979}


def test_incr_version_moves_the_value(cache: RedisCache) -> None:
    cache.set("answer", 42, version=2)
    assert cache.incr_version("answer", version=2) == 3
    assert cache.get("answer", version=2) is None
    assert cache.get("answer", version=3) == 42
    assert cache.decr_version("answer", version=3) == 2
    assert cache.get("answer", version=2) == 42
    cache.set("null", None)
    assert cache.incr_version("null") == 2
    with pytest.raises(ValueError):
        cache.incr_version("does_not_exist")


def custom_key_func(key: str, key_prefix: str, version: int) -> str:
    return "CUSTOM-" + "-".join([key_prefix, str(version), key])


def test_key_function_by_callable_or_dotted_path(
    redis_server: RedisServer, unique_prefix: str, raw: Any
) -> None:
    prefix = f"djk{unique_prefix}"
    plain = make(redis_server.url, prefix)
    by_callable = make(redis_server.url, prefix, KEY_FUNCTION=custom_key_func)
    by_path = make(
        redis_server.url, prefix, KEY_FUNCTION="tests.test_contrib_django.custom_key_func"
    )
    plain.set("answer1", 42)
    assert by_callable.get("answer1") is None
    by_callable.set("answer2", 42)
    assert plain.get("answer2") is None
    assert by_path.get("answer2") == 42
    assert raw.exists(f"{prefix}:CUSTOM-{prefix}-1-answer2") == 1


def test_get_or_set_needs_a_default(cache: RedisCache) -> None:
    msg = "get_or_set() missing 1 required positional argument: 'default'"
    with pytest.raises(TypeError, match=re.escape(msg)):
        cache.get_or_set("brian")  # type: ignore[call-arg]


# -- clear -------------------------------------------------------------------------------------


def test_clear_removes_only_its_own_namespace(
    redis_server: RedisServer, unique_prefix: str, raw: Any
) -> None:
    mine = make(redis_server.url, f"djc{unique_prefix}a")
    other = make(redis_server.url, f"djc{unique_prefix}b")
    unprefixed = make(redis_server.url, "", OPTIONS={"NAMESPACE": f"djc{unique_prefix}n"})
    mine.set_many({"k1": 1, "k2": "two"})
    mine.set("k3", "v3", version=7)
    other.set("k1", "theirs")
    unprefixed.set("k1", "also theirs")
    raw.set("foreign", b"not a cache entry")
    mine.clear()
    assert mine.get_many(["k1", "k2"]) == {}
    assert mine.get("k3", version=7) is None
    assert other.get("k1") == "theirs"
    assert unprefixed.get("k1") == "also theirs"
    assert raw.get("foreign") == b"not a cache entry"


def test_an_empty_key_prefix_gets_a_namespace_of_its_own(redis_server: RedisServer) -> None:
    plain = RedisCache(redis_server.url, {})
    assert plain.store.redis.prefix == "django"
    assert plain.make_key("k") == ":1:k"


# -- get_or_set --------------------------------------------------------------------------------


def test_get_or_set_with_values_and_callables(cache: RedisCache) -> None:
    assert cache.get("projector") is None
    assert cache.get_or_set("projector", 42) == 42
    assert cache.get("projector") == 42
    assert cache.get_or_set("projector", 43) == 42
    assert cache.get_or_set("null", None) is None
    assert cache.get("null", "default") is None  # the None was stored
    assert cache.get_or_set("mykey", lambda: "value") == "value"
    assert cache.get_or_set("mykey", "other") == "value"
    assert cache.get_or_set("null2", lambda: None) is None
    assert cache.has_key("null2") is True


def test_get_or_set_uses_the_timeout(cache: RedisCache, raw: Any) -> None:
    assert cache.get_or_set("forever", "v", None) == "v"
    assert raw.pttl(redis_key(cache, "forever")) == -1
    assert cache.get_or_set("short", "v", 0.2) == "v"
    assert wait_for(lambda: not cache.has_key("short"), timeout=5)
    calls: list[int] = []
    assert cache.get_or_set("zero", lambda: calls.append(1) or "computed", 0) == "computed"
    assert cache.has_key("zero") is False
    cache.set("zero", "cached")
    assert cache.get_or_set("zero", lambda: calls.append(1) or "computed", 0) == "cached"
    assert calls == [1]


def test_get_or_set_propagates_the_callable_error(cache: RedisCache) -> None:
    def boom() -> str:
        raise RuntimeError("database down")

    with pytest.raises(RuntimeError, match="database down"):
        cache.get_or_set("k", boom)
    assert cache.has_key("k") is False


def run_stampede(cache: RedisCache, key: str, threads: int = 64) -> tuple[int, list[Any]]:
    calls = 0
    calls_lock = threading.Lock()
    start = threading.Barrier(threads)
    results: list[Any] = [None] * threads

    def load() -> dict[str, int]:
        nonlocal calls
        with calls_lock:
            calls += 1
        time.sleep(0.05)  # the 50 ms "query" that the stampede would repeat
        return {"rows": 7}

    def request(i: int) -> None:
        start.wait()
        results[i] = cache.get_or_set(key, load, 60)

    workers = [threading.Thread(target=request, args=(i,)) for i in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    return calls, results


def test_64_threads_on_a_cold_key_call_the_default_once(cache: RedisCache) -> None:
    calls, results = run_stampede(cache, "cold")
    assert calls == 1
    assert results == [{"rows": 7}] * 64
    assert len({id(r) for r in results}) == 64  # each request gets its own copy


def test_64_threads_through_djangos_per_thread_backends_call_once(
    redis_server: RedisServer, unique_prefix: str
) -> None:
    conf = {
        "default": {
            "BACKEND": BACKEND,
            "LOCATION": redis_server.url,
            "KEY_PREFIX": f"djt{unique_prefix}",
        }
    }
    with override_settings(CACHES=conf):
        seen: list[Any] = []
        seen_lock = threading.Lock()

        def backend() -> None:
            with seen_lock:
                seen.append(caches["default"])

        others = [threading.Thread(target=backend) for _ in range(2)]
        for t in others:
            t.start()
        for t in others:
            t.join()
        assert seen[0] is not seen[1]  # Django builds one backend object per thread
        assert seen[0].store is seen[1].store  # that share one store
        calls, _ = run_stampede(caches["default"], "cold")
    assert calls == 1


# -- what the backend adds ---------------------------------------------------------------------


def test_values_are_signed_and_foreign_bytes_never_unpickled(
    cache: RedisCache, raw: Any, redis_server: RedisServer
) -> None:
    class Exploit:
        def __reduce__(self) -> Any:
            return (sys.exit, ("unpickled!",))

    raw.set(redis_key(cache, "evil"), pickle.dumps(Exploit()))
    assert cache.get("evil", "default") == "default"
    cache.set("k", {"a": 1})
    other_secret = make(
        redis_server.url, cache.key_prefix, OPTIONS={"SIGNING_KEY": "another secret"}
    )
    assert other_secret.get("k", "default") == "default"
    assert cache.get("k") == {"a": 1}


def test_signing_key_is_derived_from_secret_key() -> None:
    assert signing_key("a") == signing_key("a") != signing_key("b")
    assert signing_key("a") != b"a"
    with pytest.raises(ImproperlyConfigured):
        signing_key("")


def test_configurations_with_different_serializers_do_not_share_a_store(
    redis_server: RedisServer,
) -> None:
    a = make(redis_server.url, "djser", OPTIONS={"SERIALIZER": PickleSerializer(b"key a")})
    b = make(redis_server.url, "djser", OPTIONS={"SERIALIZER": PickleSerializer(b"key b")})
    assert a.store is not b.store
    a.set("k", "signed with a")
    assert b.get("k", "default") == "default"
    with override_settings(SECRET_KEY="another site secret " + "z" * 30):
        rotated = make(redis_server.url, "djser")
    assert rotated.store is not make(redis_server.url, "djser").store


def test_unknown_options_are_refused(redis_server: RedisServer) -> None:
    with pytest.raises(ImproperlyConfigured, match="L2"):
        RedisCache(redis_server.url, {"KEY_PREFIX": "djbad", "OPTIONS": {"L2": True}})
    with pytest.raises(ImproperlyConfigured, match="several Redis URLs"):
        RedisCache(f"{redis_server.url};{redis_server.url}", {"KEY_PREFIX": "djbad2"})


def test_redis_client_options_are_passed_through(redis_server: RedisServer) -> None:
    cache = make(redis_server.url, "djopts", OPTIONS={"socket_timeout": 0.9})
    assert cache.store.redis.client.get_connection_kwargs()["socket_timeout"] == 0.9


def test_l1_serves_hits_and_forgets_local_changes(
    redis_server: RedisServer, unique_prefix: str, raw: Any
) -> None:
    cache = make(
        redis_server.url, f"djl{unique_prefix}", OPTIONS={"L1": {"MAXSIZE": 100, "TTL": 30}}
    )
    cache.set("n", 1)
    assert cache.get("n") == 1
    raw.set(redis_key(cache, "n"), b"99")  # another process's write: L1 keeps serving ours
    assert cache.get("n") == 1
    assert cache.store.bytes.stats().l1_hits >= 1
    cache.set_many({"m1": 7, "m2": "text"})
    assert cache.get_many(["m1", "m2", "m3"]) == {"m1": 7, "m2": "text"}  # L1 after the write
    assert cache.get_or_set("m1", 0) == 7
    assert cache.incr("n") == 100  # in Redis; this process's L1 copy is dropped
    assert cache.get("n") == 100
    cache.delete("n")
    assert cache.get("n") is None
    assert cache.add("n", 5) is True
    assert cache.get("n") == 5
    cache.touch("n", 0)
    assert cache.get("n") is None


def test_breaker_fails_fast_when_redis_is_down() -> None:
    dead = make(
        f"redis://127.0.0.1:{free_port()}/0",
        "djbreaker",
        OPTIONS={"BREAKER": {"FAILURE_THRESHOLD": 2, "RESET_TIMEOUT": 60}},
    )
    for _ in range(2):
        with pytest.raises(BackendError):  # the connection error, wrapped
            dead.get("k")
    with pytest.raises(CircuitOpenError):
        dead.get("k")
    assert dead.get_or_set("k", "computed") == "computed"  # served by the callable


def test_async_methods(cache: RedisCache) -> None:
    async def scenario() -> list[Any]:
        await cache.aset("k", "v")
        await cache.aset_many({"a": 1, "b": 2})
        return [
            await cache.aget("k"),
            await cache.aget_many(["a", "b", "c"]),
            await cache.ahas_key("a"),
            await cache.aincr("a", 5),
            await cache.adecr("b"),
            await cache.aget_or_set("fresh", lambda: "made"),
            await cache.aadd("k", "other"),
            await cache.atouch("k", None),
            await cache.adelete("k"),
            await cache.adelete_many(["a", "b"]),
        ]

    assert asyncio.run(scenario()) == [
        "v",
        {"a": 1, "b": 2},
        True,
        6,
        1,
        "made",
        False,
        True,
        True,
        None,
    ]


def test_close_keeps_the_shared_connections_usable(cache: RedisCache) -> None:
    cache.set("k", "v")
    cache.close()
    assert cache.get("k") == "v"


def test_importing_cache_core_imports_no_framework() -> None:
    code = (
        "import sys, cache_core, cache_core.contrib; "
        "roots = {m.split('.')[0] for m in sys.modules}; "
        "bad = roots & {'django', 'flask', 'flask_caching'}; "
        "sys.exit(str(bad) if bad else 0)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- Cluster -----------------------------------------------------------------------------------


@pytest.mark.cluster
def test_on_a_cluster(redis_cluster: RedisClusterHarness, unique_prefix: str) -> None:
    cache = make(redis_cluster.url, f"djcl{unique_prefix}", OPTIONS={"CLUSTER": True})
    keys = {f"key{i}": i for i in range(30)}  # spread over the slots of every primary
    assert cache.set_many(keys) == []
    assert cache.get_many(list(keys)) == keys
    assert cache.incr("key3", 10) == 13
    assert cache.add("key3", 0) is False
    assert cache.touch("key4", None) is True
    cache.set("null", None)
    assert cache.has_key("null") is True
    calls, results = run_stampede(cache, "cold", threads=16)
    assert calls == 1 and results == [{"rows": 7}] * 16
    cache.delete_many(["key1", "key2"])
    assert cache.get_many(["key1", "key2"]) == {}
    cache.clear()
    assert cache.get_many(list(keys)) == {}
    with pytest.raises(ValueError):
        cache.incr("key5")


def test_missing_keys_raise_cache_miss_in_the_store(cache: RedisCache) -> None:
    with pytest.raises(CacheMiss):
        cache.store.incr(cache.make_key("nope"), 1)
