"""cache_core.contrib.flask.RedisCache against Flask-Caching's backend contract, real Redis.

The generic cases follow Flask-Caching's own backend suite (tests/test_backend_cache.py) and
cachelib's ``BaseCache`` docstrings: return values, timeout 0 = never expire, ``get_many(*keys)``
as a list, ``inc`` on a missing key; then the app-level decorators through ``CACHE_TYPE``, and
what this backend adds (signed values, namespace-scoped clear, one loader call per cold key).
"""

from __future__ import annotations

import datetime as dt
import pickle
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("flask_caching")

from flask import Flask
from flask_caching import Cache

from cache_core.contrib.flask import RedisCache, signing_key
from tests.conftest import wait_for
from tests.redis_harness import RedisClusterHarness, RedisServer, free_port

CACHE_TYPE = "cache_core.contrib.flask.RedisCache"
KEY = b"flask tests signing key"


class Unpicklable:
    def __getstate__(self) -> Any:
        raise pickle.PickleError("refused")


@pytest.fixture
def c(redis_server: RedisServer, unique_prefix: str) -> Iterator[RedisCache]:
    cache = RedisCache(redis_server.url, signing_key=KEY, key_prefix=f"fl{unique_prefix}")
    yield cache
    cache.close()


@pytest.fixture
def raw(redis_server: RedisServer) -> Iterator[Any]:
    client = redis_server.client()
    yield client
    client.close()


def rkey(c: RedisCache, key: str) -> str:
    return c.store.redis.redis_key(key)


# -- the generic contract ----------------------------------------------------------------------


def test_set_get_and_get_dict(c: RedisCache) -> None:
    for i in range(3):
        assert c.set(str(i), i * i) is True
    assert [c.get(str(i)) for i in range(3)] == [0, 1, 4]
    assert c.set("foo", ["bar"]) is True
    assert c.get("foo") == ["bar"]
    assert c.get_dict("foo", "0", "nope") == {"foo": ["bar"], "0": 0, "nope": None}
    assert c.get("nope") is None


def test_get_many_returns_a_list_in_key_order(c: RedisCache) -> None:
    assert c.set("foo", ["bar"])
    assert c.set("spam", "eggs")
    assert c.get_many("foo", "spam") == [["bar"], "eggs"]
    assert c.get_many("spam", "missing", "foo") == ["eggs", None, ["bar"]]
    assert c.get_many() == []


def test_set_many_returns_the_keys_stored(c: RedisCache) -> None:
    assert c.set_many({"foo": "bar", "spam": ["eggs"]}) == ["foo", "spam"]
    assert c.get("foo") == "bar"
    assert c.get("spam") == ["eggs"]
    assert c.set_many({}) == []


def test_add_does_not_overwrite(c: RedisCache) -> None:
    assert c.add("foo", "bar") is True
    assert c.get("foo") == "bar"
    assert c.add("foo", "qux") is False
    assert c.get("foo") == "bar"


def test_add_on_an_expired_key(c: RedisCache) -> None:
    assert c.set("foo", "old", 0.15)
    assert wait_for(lambda: not c.has("foo"), timeout=5)
    assert c.add("foo", "new") is True
    assert c.get("foo") == "new"


def test_delete_and_delete_many(c: RedisCache) -> None:
    assert c.add("foo", "bar")
    assert c.delete("foo") is True
    assert c.delete("foo") is False
    assert c.get("foo") is None
    assert c.add("foo", "bar") and c.add("spam", "eggs")
    assert c.delete_many("foo", "spam", "never-there") == ["foo", "spam", "never-there"]
    assert c.get_many("foo", "spam") == [None, None]
    assert c.delete_many() == []


def test_inc_and_dec(c: RedisCache, raw: Any) -> None:
    assert c.set("foo", 1)
    assert c.inc("foo") == c.get("foo") == 2
    assert c.dec("foo") == c.get("foo") == 1
    assert c.inc("foo", 10) == 11
    assert raw.get(rkey(c, "foo")) == b"11"  # a Redis integer: INCRBY applies
    assert c.delete("foo")


def test_inc_on_a_missing_key_starts_from_zero(c: RedisCache, raw: Any) -> None:
    assert c.inc("new") == 1
    assert c.dec("new2", 3) == -3
    assert 299_000 < raw.pttl(rkey(c, "new")) <= 300_000  # the default timeout


def test_inc_is_atomic_under_threads(c: RedisCache) -> None:
    start = threading.Barrier(8)

    def bump() -> None:
        start.wait()
        for _ in range(50):
            c.inc("hits")

    threads = [threading.Thread(target=bump) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert c.get("hits") == 400


def test_true_false_none_and_bytes(c: RedisCache) -> None:
    assert c.set("t", True) and c.set("f", False) and c.set("n", None) and c.set("b", b"bar")
    assert c.get("t") is True
    assert c.get("f") is False
    assert c.get("b") == b"bar"
    assert c.get("n") is None
    assert c.has("n") is True  # a stored None is an entry (what cache_none relies on)


def test_has(c: RedisCache) -> None:
    assert c.has("foo") is False
    assert c.set("foo", "bar")
    assert c.has("foo") is True
    c.delete("foo")
    assert c.has("foo") is False


# -- timeouts ----------------------------------------------------------------------------------


def test_timeout_zero_never_expires(c: RedisCache, raw: Any) -> None:
    assert c.set("foo", "bar", 0)
    assert raw.pttl(rkey(c, "foo")) == -1
    assert c.add("added", "x", 0)
    assert raw.pttl(rkey(c, "added")) == -1
    assert c.set_many({"m": 1}, 0) == ["m"]
    assert raw.pttl(rkey(c, "m")) == -1


def test_timeouts_default_seconds_and_timedelta(c: RedisCache, raw: Any) -> None:
    c.set("default", 1)
    c.set("seconds", 1, 40)
    c.set("delta", 1, dt.timedelta(minutes=2))
    assert 299_000 < raw.pttl(rkey(c, "default")) <= 300_000
    assert 39_000 < raw.pttl(rkey(c, "seconds")) <= 40_000
    assert 119_000 < raw.pttl(rkey(c, "delta")) <= 120_000


def test_short_timeout_expires(c: RedisCache) -> None:
    assert c.set("baz", "qux", 0.2)
    assert c.get("baz") == "qux"
    assert wait_for(lambda: c.get("baz") is None, timeout=5)
    assert c.set_many({"a": 1, "b": 2}, 0.2) == ["a", "b"]
    assert wait_for(lambda: c.get_many("a", "b") == [None, None], timeout=5)


def test_negative_timeout_stores_nothing(c: RedisCache) -> None:
    assert c.set("k", "old")
    assert c.set("k", "new", -1) is True
    assert c.get("k") is None
    assert c.add("k2", "v", -1) is True
    assert c.has("k2") is False


def test_default_timeout_zero_means_forever(redis_server: RedisServer, raw: Any) -> None:
    c = RedisCache(redis_server.url, signing_key=KEY, key_prefix="flforever", default_timeout=0)
    c.set("k", 1)
    assert raw.pttl(rkey(c, "k")) == -1
    c.close()


# -- errors ------------------------------------------------------------------------------------


def test_unpicklable_values_raise_pickle_error(c: RedisCache) -> None:
    for call in (
        lambda: c.set("u", Unpicklable()),
        lambda: c.add("u", Unpicklable()),
        lambda: c.set_many({"u": Unpicklable()}),
    ):
        with pytest.raises(pickle.PickleError):
            call()
    assert c.has("u") is False


def test_backend_failures_answer_as_the_contract_says() -> None:
    dead = RedisCache(
        f"redis://127.0.0.1:{free_port()}/0", signing_key=KEY, key_prefix="fldead", breaker=False
    )
    assert dead.get("k") is None
    assert dead.get_many("a", "b") == [None, None]
    assert dead.set("k", 1) is False
    assert dead.add("k", 1) is False
    assert dead.set_many({"a": 1}) == []
    assert dead.inc("k") is None
    assert dead.has("k") is False
    with pytest.raises(RuntimeError, match="Failed to delete keys"):
        dead.delete_many("a")
    tolerant = RedisCache(
        f"redis://127.0.0.1:{free_port()}/0",
        signing_key=KEY,
        key_prefix="fldead2",
        breaker=False,
        ignore_delete_many_errors=True,
    )
    assert tolerant.delete_many("a") == []


def test_a_signing_key_is_required() -> None:
    with pytest.raises(ValueError, match="signing_key"):
        RedisCache("redis://127.0.0.1:1/0")
    with pytest.raises(ValueError, match="SECRET_KEY"):
        signing_key("")
    assert signing_key("a") != signing_key("b")


def test_foreign_or_differently_signed_bytes_are_never_unpickled(
    c: RedisCache, raw: Any, redis_server: RedisServer
) -> None:
    raw.set(rkey(c, "evil"), pickle.dumps({"planted": True}))
    assert c.get("evil") is None
    c.set("k", {"a": 1})
    other = RedisCache(redis_server.url, signing_key=b"another", key_prefix=c.key_prefix)
    assert other.get("k") is None
    assert c.get("k") == {"a": 1}
    other.close()


def test_clear_removes_only_its_prefix(redis_server: RedisServer, raw: Any) -> None:
    mine = RedisCache(redis_server.url, signing_key=KEY, key_prefix="flclear-a")
    other = RedisCache(redis_server.url, signing_key=KEY, key_prefix="flclear-b")
    mine.set_many({"k1": 1, "k2": 2})
    other.set("k1", "theirs")
    raw.set("foreign", b"x")
    assert mine.clear() is True
    assert mine.get_many("k1", "k2") == [None, None]
    assert other.get("k1") == "theirs"
    assert raw.get("foreign") == b"x"
    mine.close()
    other.close()


# -- get_or_set --------------------------------------------------------------------------------


def test_get_or_set_64_threads_one_call(c: RedisCache) -> None:
    calls = 0
    calls_lock = threading.Lock()
    start = threading.Barrier(64)
    results: list[Any] = [None] * 64

    def load() -> str:
        nonlocal calls
        with calls_lock:
            calls += 1
        time.sleep(0.05)  # the 50 ms query
        return "page"

    def request(i: int) -> None:
        start.wait()
        results[i] = c.get_or_set("cold", load, 60)

    threads = [threading.Thread(target=request, args=(i,)) for i in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == 1
    assert results == ["page"] * 64
    assert c.get_or_set("cold", lambda: "other") == "page"


# -- through Flask-Caching ---------------------------------------------------------------------


def make_app(url: str, prefix: str, **config: Any) -> tuple[Flask, Cache]:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="flask-app-secret",
        CACHE_TYPE=CACHE_TYPE,
        CACHE_REDIS_URL=url,
        CACHE_KEY_PREFIX=prefix,
        CACHE_DEFAULT_TIMEOUT=60,
        **config,
    )
    return app, Cache(app)


def test_cache_type_builds_this_backend(redis_server: RedisServer, unique_prefix: str) -> None:
    app, cache = make_app(
        redis_server.url, f"flapp{unique_prefix}", CACHE_OPTIONS={"l1": {"maxsize": 10}}
    )
    with app.app_context():
        backend = app.extensions["cache"][cache]
        assert isinstance(backend, RedisCache)
        assert backend.store.l1 is not None
        assert backend.key_prefix == f"flapp{unique_prefix}"
        assert cache.set("k", {"v": 1})
        assert cache.get("k") == {"v": 1}
        assert backend.default_timeout == 60


def test_cached_and_memoize_views(redis_server: RedisServer, unique_prefix: str) -> None:
    app, cache = make_app(redis_server.url, f"flview{unique_prefix}")
    calls = {"page": 0, "square": 0}

    @app.route("/page")
    @cache.cached(timeout=30)
    def page() -> str:
        calls["page"] += 1
        return f"rendered {calls['page']}"

    @cache.memoize(timeout=30)
    def square(n: int) -> int:
        calls["square"] += 1
        return n * n

    client = app.test_client()
    assert client.get("/page").data == b"rendered 1"
    assert client.get("/page").data == b"rendered 1"
    with app.app_context():
        assert [square(3), square(3), square(4)] == [9, 9, 16]
        cache.delete_memoized(square, 3)
        assert square(3) == 9
        assert cache.clear()
    assert client.get("/page").data == b"rendered 2"
    assert calls == {"page": 2, "square": 3}


def test_factory_needs_a_secret(redis_server: RedisServer) -> None:
    app = Flask(__name__)
    app.config.update(CACHE_TYPE=CACHE_TYPE, CACHE_REDIS_URL=redis_server.url)
    with pytest.raises(ValueError, match="SECRET_KEY"):
        Cache(app)


@pytest.mark.cluster
def test_on_a_cluster(redis_cluster: RedisClusterHarness, unique_prefix: str) -> None:
    c = RedisCache(
        redis_cluster.url, signing_key=KEY, key_prefix=f"flcl{unique_prefix}", cluster=True
    )
    keys = {f"key{i}": i for i in range(30)}
    assert c.set_many(keys) == list(keys)
    assert c.get_many(*keys) == list(keys.values())
    assert c.inc("key3", 10) == 13
    assert c.inc("fresh") == 1
    assert c.delete_many("key1", "key2") == ["key1", "key2"]
    assert c.clear() is True
    assert c.get_many(*keys) == [None] * 30
    c.close()
