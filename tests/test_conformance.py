"""One conformance suite for every byte cache: the whole Cache / BatchCache contract.

Each backend is built by a factory ``make(default_ttl=None)`` and comes with ``advance(s)``,
which moves time forward: a fake clock for the in-process cache, real (short) time for Redis,
whose expiry runs on the server's own clock.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from cache_core import (
    MAX_TTL,
    BatchCache,
    Cache,
    CacheError,
    CacheMiss,
)
from tests.conftest import ByteCacheFactory, FakeClock


@dataclass
class Backend:
    name: str
    make: Callable[..., Any]
    advance: Callable[[float], None]
    # Shortest TTL the backend can honour reliably in a test (Redis expiry has ms resolution
    # and is checked lazily on access, so ~50 ms is safe on a busy machine).
    short_ttl: float


def _sleep(seconds: float) -> None:
    # Redis expires keys by its own clock; there is no event to wait for, only time.
    time.sleep(seconds)


@pytest.fixture
def backend(byte_cache_kind: str, make_byte_cache: ByteCacheFactory, unique_prefix: str) -> Backend:
    """Each kind of byte cache; every ``make()`` of one test builds a view of one namespace."""
    kind = byte_cache_kind
    if kind == "memory":
        clock = FakeClock()
        return Backend(
            kind, lambda **kw: make_byte_cache(kind, timer=clock, **kw), clock.advance, 0.05
        )
    return Backend(
        kind,
        lambda **kw: make_byte_cache(kind, prefix=unique_prefix, maxsize=1000, **kw),
        _sleep,
        short_ttl=0.05,
    )


@pytest.fixture
def cache(backend: Backend) -> Any:
    return backend.make()


def test_implements_both_protocols(cache: Any) -> None:
    assert isinstance(cache, Cache)
    assert isinstance(cache, BatchCache)


def test_get_miss_raises_cachemiss_which_is_a_keyerror(cache: Any) -> None:
    with pytest.raises(CacheMiss) as info:
        cache.get("absent")
    assert isinstance(info.value, KeyError)
    assert isinstance(info.value, CacheError)


def test_get_default_on_miss(cache: Any) -> None:
    sentinel = object()
    assert cache.get("absent", sentinel) is sentinel
    assert cache.get("absent", None) is None
    assert cache.get("absent", default=b"") == b""


def test_set_get_roundtrip_and_overwrite(cache: Any) -> None:
    cache.set("k", b"v1")
    assert cache.get("k") == b"v1"
    cache.set("k", b"v2")
    assert cache.get("k") == b"v2"
    assert cache.get("k", None) == b"v2"


@pytest.mark.parametrize("value", [bytearray(b"ba"), memoryview(b"mv"), b"", b"\x00\xff" * 100])
def test_bytes_like_values_come_back_as_bytes(cache: Any, value: Any) -> None:
    cache.set("k", value)
    got = cache.get("k")
    assert type(got) is bytes
    assert got == bytes(value)


def test_stored_value_is_a_copy(cache: Any) -> None:
    buf = bytearray(b"before")
    cache.set("k", buf)
    buf[:] = b"after!"
    assert cache.get("k") == b"before"


def test_unicode_keys(cache: Any) -> None:
    for key in ["ключ", "键", "🔑", "a b", "a:b:c", "*", "[x]"]:
        cache.set(key, key.encode())
    for key in ["ключ", "键", "🔑", "a b", "a:b:c", "*", "[x]"]:
        assert cache.get(key) == key.encode()


def test_delete(cache: Any) -> None:
    cache.set("k", b"v")
    assert cache.delete("k") is True
    assert cache.delete("k") is False
    assert cache.get("k", None) is None


def test_exists(cache: Any) -> None:
    assert cache.exists("k") is False
    cache.set("k", b"")
    assert cache.exists("k") is True
    cache.delete("k")
    assert cache.exists("k") is False


def test_ttl_expiry(backend: Backend) -> None:
    cache = backend.make()
    cache.set("short", b"v", ttl=backend.short_ttl)
    cache.set("long", b"v", ttl=60)
    cache.set("forever", b"v")
    assert cache.get("short") == b"v"
    backend.advance(backend.short_ttl * 3)
    assert cache.get("short", None) is None
    assert cache.exists("short") is False
    assert cache.get("long") == b"v"
    assert cache.get("forever") == b"v"


def test_timedelta_ttl(backend: Backend) -> None:
    cache = backend.make()
    cache.set("k", b"v", ttl=timedelta(seconds=backend.short_ttl))
    assert cache.get("k") == b"v"
    backend.advance(backend.short_ttl * 3)
    assert cache.get("k", None) is None


def test_default_ttl_applies_and_explicit_ttl_overrides(backend: Backend) -> None:
    cache = backend.make(default_ttl=backend.short_ttl)
    cache.set("default", b"v")
    cache.set("explicit", b"v", ttl=60)
    cache.mset({"m": b"v"})
    backend.advance(backend.short_ttl * 3)
    assert cache.get("default", None) is None
    assert cache.get("m", None) is None
    assert cache.get("explicit") == b"v"


def test_mget_returns_hits_only(cache: Any) -> None:
    cache.set("a", b"1")
    cache.set("b", b"2")
    assert cache.mget(["a", "b", "c"]) == {"a": b"1", "b": b"2"}
    assert cache.mget([]) == {}
    assert cache.mget(iter(["a", "a"])) == {"a": b"1"}


def test_mget_many_keys(cache: Any) -> None:
    items = {f"key:{i}": str(i).encode() for i in range(300)}
    cache.mset(items)
    got = cache.mget([*items, "missing"])
    assert got == items


def test_mset_with_ttl(backend: Backend) -> None:
    cache = backend.make()
    cache.mset({"a": b"1", "b": bytearray(b"2")}, ttl=backend.short_ttl)
    cache.mset({"c": b"3"}, ttl=60)
    assert cache.mget(["a", "b", "c"]) == {"a": b"1", "b": b"2", "c": b"3"}
    backend.advance(backend.short_ttl * 3)
    assert cache.mget(["a", "b", "c"]) == {"c": b"3"}


def test_mset_empty_is_a_noop(cache: Any) -> None:
    cache.mset({})
    cache.mset({}, ttl=5)
    assert cache.mget(["a"]) == {}


def test_mdelete_counts_removed(cache: Any) -> None:
    cache.mset({f"k{i}": b"v" for i in range(10)})
    assert cache.mdelete(["k0", "k1", "k1", "nope"]) == 2
    assert cache.mdelete([]) == 0
    assert cache.mget(["k0", "k1", "k2"]) == {"k2": b"v"}


def test_clear_returns_count_and_empties(cache: Any) -> None:
    cache.mset({f"k{i}": b"v" for i in range(25)})
    assert cache.clear() == 25
    assert cache.mget([f"k{i}" for i in range(25)]) == {}
    assert cache.clear() == 0


# -- bad input: rejected with TypeError / ValueError, before any I/O ----------------------------


BAD_KEYS: list[tuple[Any, type[Exception]]] = [
    (1, TypeError),
    (None, TypeError),
    (b"bytes", TypeError),
    (("t",), TypeError),
    ("", ValueError),
    ("\ud800", ValueError),  # a lone surrogate has no UTF-8 form
    ("caf\udce9", ValueError),
    ("__cc", ValueError),  # the library's reserved space: a key starting with __cc ...
    ("__cc_lock__:x", ValueError),
    ("app:__ccbf__", ValueError),  # ... or holding a :__cc segment
    ("a:b:__cc", ValueError),
]


@pytest.mark.parametrize(("key", "error"), BAD_KEYS)
def test_bad_keys(cache: Any, key: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="key"):
        cache.get(key)
    with pytest.raises(error, match="key"):
        cache.get(key, None)
    with pytest.raises(error, match="key"):
        cache.set(key, b"v")
    with pytest.raises(error, match="key"):
        cache.delete(key)
    with pytest.raises(error, match="key"):
        cache.exists(key)
    with pytest.raises(error, match="key"):
        cache.mget(["ok", key])
    with pytest.raises(error, match="key"):
        cache.mset({"ok": b"v", key: b"v"})
    with pytest.raises(error, match="key"):
        cache.mdelete(["ok", key])
    assert cache.get("ok", None) is None  # the valid half of a rejected batch was not written


@pytest.mark.parametrize("key", ["a__cc", "x:y__cc", "__c", "_:_cc", "é:__c", "cc__cc"])
def test_keys_near_the_reserved_space_are_ordinary(cache: Any, key: str) -> None:
    cache.set(key, b"v")
    assert cache.get(key) == b"v"
    assert cache.mget([key]) == {key: b"v"}
    assert cache.clear() >= 1  # an entry like any other: clear() removes it
    assert cache.exists(key) is False


def test_keys_argument_must_be_an_iterable_of_str(cache: Any) -> None:
    with pytest.raises(TypeError, match="keys"):
        cache.mget("abc")
    with pytest.raises(TypeError, match="keys"):
        cache.mdelete(b"abc")
    with pytest.raises(TypeError, match="keys"):
        cache.mget(5)
    with pytest.raises(TypeError, match="items"):
        cache.mset([("a", b"v")])


@pytest.mark.parametrize("value", ["str", 1, None, [b"x"], object()])
def test_bad_values(cache: Any, value: Any) -> None:
    with pytest.raises(TypeError, match="value"):
        cache.set("k", value)
    with pytest.raises(TypeError, match="value"):
        cache.mset({"k": value})
    assert cache.exists("k") is False


@pytest.mark.parametrize(
    ("ttl", "error"),
    [
        (0, ValueError),
        (-1, ValueError),
        (0.0, ValueError),
        (math.nan, ValueError),
        (math.inf, ValueError),
        (-math.inf, ValueError),
        (timedelta(0), ValueError),
        (timedelta(seconds=-5), ValueError),
        (MAX_TTL + 1, ValueError),  # past the documented maximum that every backend accepts
        (10**20, ValueError),
        (2**63, ValueError),
        (10**400, ValueError),  # too large even for float()
        (1e300, ValueError),
        (timedelta(days=365 * 101), ValueError),
        ("5", TypeError),
        (True, TypeError),
        ([5], TypeError),
    ],
)
def test_bad_ttls(backend: Backend, ttl: Any, error: type[Exception]) -> None:
    cache = backend.make()
    with pytest.raises(error, match="ttl"):
        cache.set("k", b"v", ttl=ttl)
    with pytest.raises(error, match="ttl"):
        cache.mset({"k": b"v"}, ttl=ttl)
    with pytest.raises(error, match="default_ttl"):
        backend.make(default_ttl=ttl)
    assert cache.exists("k") is False


def test_the_maximum_ttl_is_accepted(backend: Backend) -> None:
    cache = backend.make(default_ttl=MAX_TTL)
    cache.set("max", b"v", ttl=MAX_TTL)
    cache.set("max-int", b"v", ttl=int(MAX_TTL))
    cache.mset({"m1": b"v"}, ttl=timedelta(seconds=MAX_TTL))
    cache.set("default", b"v")
    assert cache.mget(["max", "max-int", "m1", "default"]) == dict.fromkeys(
        ["max", "max-int", "m1", "default"], b"v"
    )


def test_falsy_values_are_hits(cache: Any) -> None:
    cache.set("empty", b"")
    assert cache.get("empty") == b""
    assert cache.get("empty", None) == b""
    assert cache.mget(["empty"]) == {"empty": b""}


def test_mset_with_ttls_gives_each_key_its_own_ttl(backend: Backend) -> None:
    cache = backend.make()
    cache.mset_with_ttls({"short": (b"1", backend.short_ttl), "long": (bytearray(b"2"), 60)})
    assert cache.mget(["short", "long"]) == {"short": b"1", "long": b"2"}
    backend.advance(backend.short_ttl * 3)
    assert cache.mget(["short", "long"]) == {"long": b"2"}
    cache.mset_with_ttls({})


@pytest.mark.parametrize(
    ("entries", "error", "match"),
    [
        ([("k", (b"v", 5))], TypeError, "entries"),
        ({"k": b"v"}, TypeError, "tuple"),
        ({"k": (b"v",)}, TypeError, "tuple"),
        ({"k": ("text", 5)}, TypeError, "value"),
        ({"": (b"v", 5)}, ValueError, "key"),
        ({1: (b"v", 5)}, TypeError, "key"),
        ({"k": (b"v", -1)}, ValueError, "ttl"),
        ({"k": (b"v", "5")}, TypeError, "ttl"),
    ],
)
def test_mset_with_ttls_bad_input(
    cache: Any, entries: Any, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        cache.mset_with_ttls(entries)
    assert cache.get("k", None) is None
