"""Thread-safety by model: hypothesis state machines run the byte caches against a dict.

The model is ``key -> (value, absolute expiry)`` on the same ``FakeClock`` the caches use; an
entry is alive while ``now < expiry`` (cachetools' rule). TTLs and clock steps are multiples of
0.25 s, exact in binary floating point, so entries expire exactly on the boundaries the model
computes and those boundaries are exercised too.

For ``MultiLevelCache`` the model is the L2 truth. Rules that write or delete *directly in L2*
play another process: L1 may then serve the previous value, but only until the L1 bound runs
out (``min(now + l1_ttl, the old L2 expiry)``), which the model tracks as "allowed stale". After
this cache's own write, delete or clear of a key, nothing stale is allowed for it, and an L1
entry must never outlive the L2 entry it mirrors.
"""

from __future__ import annotations

import itertools
import math
from datetime import timedelta
from typing import Any

import redis
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from cache_core import CacheMiss, MemoryCache, MultiLevelCache, RedisCache
from tests.conftest import FakeClock

KEYS = st.sampled_from(["a", "b", "c", "d", "e", "ключ"])
VALUES = st.binary(max_size=6)
KEY_LISTS = st.lists(KEYS, max_size=6)  # duplicates on purpose
ITEMS = st.dictionaries(KEYS, VALUES, max_size=5)
TTLS = st.sampled_from([None, 0.25, 0.5, 1.0, 2.0, 5.0, timedelta(seconds=1.5)])
STEPS = st.sampled_from([0.25, 0.5, 1.0, 1.75, 3.0])
L1_TTL = 1.0
# Redis runs on its own clock: TTLs long enough that nothing expires during one example.
REDIS_TTLS = st.sampled_from([None, 60.0, timedelta(minutes=5)])

FAST = settings(max_examples=100, stateful_step_count=50, deadline=None)
REDIS = settings(max_examples=12, stateful_step_count=25, deadline=None)


def _seconds(ttl: float | timedelta | None) -> float | None:
    return ttl.total_seconds() if isinstance(ttl, timedelta) else ttl


class DictModel:
    """``key -> (value, expiry)`` with the cache's expiry rule, on an injectable clock."""

    def __init__(self, now: Any) -> None:
        self.now = now
        self.data: dict[str, tuple[bytes, float]] = {}

    def put(self, key: str, value: bytes, ttl: float | timedelta | None) -> None:
        seconds = _seconds(ttl)
        self.data[key] = (value, math.inf if seconds is None else self.now() + seconds)

    def alive(self, key: str) -> bytes | None:
        entry = self.data.get(key)
        if entry is None or not self.now() < entry[1]:
            return None
        return entry[0]

    def left(self, key: str) -> float | None:
        entry = self.data.get(key)
        assert entry is not None
        return None if entry[1] == math.inf else entry[1] - self.now()

    def remove_alive(self, key: str) -> bool:
        alive = self.alive(key) is not None
        self.data.pop(key, None)
        return alive

    def live_items(self) -> dict[str, bytes]:
        return {k: v for k in list(self.data) if (v := self.alive(k)) is not None}


# ------------------------------------------------------------------------------ MemoryCache


class MemoryCacheMachine(RuleBasedStateMachine):
    """``MemoryCache`` on a fake clock against the dict model (no eviction: maxsize is large)."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.cache = MemoryCache(maxsize=1000, timer=self.clock)
        self.model = DictModel(self.clock)
        self.ops = 0

    @rule(key=KEYS, value=VALUES, ttl=TTLS)
    def set(self, key: str, value: bytes, ttl: Any) -> None:
        self.cache.set(key, value, ttl=ttl)
        self.model.put(key, value, ttl)

    @rule(key=KEYS)
    def get(self, key: str) -> None:
        want = self.model.alive(key)
        assert self.cache.get(key, None) == want
        if want is None:
            try:
                self.cache.get(key)
            except CacheMiss:
                pass
            else:
                raise AssertionError(f"get({key!r}) did not raise CacheMiss on a miss")

    @rule(key=KEYS)
    def delete(self, key: str) -> None:
        assert self.cache.delete(key) is self.model.remove_alive(key)

    @rule(key=KEYS)
    def exists(self, key: str) -> None:
        assert self.cache.exists(key) is (self.model.alive(key) is not None)

    @rule(keys=KEY_LISTS)
    def mget(self, keys: list[str]) -> None:
        live = self.model.live_items()
        assert self.cache.mget(keys) == {k: live[k] for k in keys if k in live}

    @rule(items=ITEMS, ttl=TTLS)
    def mset(self, items: dict[str, bytes], ttl: Any) -> None:
        self.cache.mset(items, ttl=ttl)
        for key, value in items.items():
            self.model.put(key, value, ttl)

    @rule(keys=KEY_LISTS)
    def mdelete(self, keys: list[str]) -> None:
        want = sum(self.model.remove_alive(k) for k in dict.fromkeys(keys))
        assert self.cache.mdelete(keys) == want

    @rule()
    def clear(self) -> None:
        want = len(self.model.live_items())
        self.model.data.clear()
        assert self.cache.clear() == want

    @rule(step=STEPS)
    def advance(self, step: float) -> None:
        self.clock.advance(step)

    @invariant()
    def same_size(self) -> None:
        assert len(self.cache) == len(self.model.live_items())


TestMemoryCacheModel = MemoryCacheMachine.TestCase
TestMemoryCacheModel.settings = FAST


# ------------------------------------------------------------------------------ MultiLevelCache


class MultiLevelMachine(RuleBasedStateMachine):
    """``MultiLevelCache`` against the L2 model, with another process writing L2 directly."""

    ttls: Any = TTLS
    l1_ttl = L1_TTL

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.l1, self.l2 = self.make_levels()
        self.cache = MultiLevelCache(self.l1, self.l2, l1_ttl=self.l1_ttl)
        self.model = DictModel(self.clock)
        # key -> [(value, until)]: what L1 may still serve after an outside write to L2.
        self.stale: dict[str, list[tuple[bytes, float]]] = {}

    def make_levels(self) -> tuple[Any, Any]:
        return MemoryCache(maxsize=1000, timer=self.clock), MemoryCache(
            maxsize=1000, timer=self.clock
        )

    # -- helpers -----------------------------------------------------------------------------

    def stale_values(self, key: str) -> set[bytes]:
        now = self.clock()
        return {v for v, until in self.stale.get(key, ()) if now < until}

    def allowed(self, key: str) -> set[bytes]:
        ok = self.stale_values(key)
        value = self.model.alive(key)
        if value is not None:
            ok.add(value)
        return ok

    def own_write(self, keys: Any) -> None:
        for key in keys:
            self.stale.pop(key, None)

    def outside_change(self, key: str) -> None:
        old = self.model.alive(key)
        if old is not None:
            left = self.model.left(key)
            bound = self.l1_ttl if left is None else min(self.l1_ttl, left)
            self.stale.setdefault(key, []).append((old, self.clock() + bound))

    # -- rules through the multi-level cache -------------------------------------------------

    @rule(key=KEYS, value=VALUES, data=st.data())
    def set(self, key: str, value: bytes, data: st.DataObject) -> None:
        ttl = data.draw(self.ttls)
        self.cache.set(key, value, ttl=ttl)
        self.model.put(key, value, ttl)
        self.own_write([key])

    @rule(key=KEYS)
    def get(self, key: str) -> None:
        got = self.cache.get(key, None)
        if got is None:
            assert self.model.alive(key) is None, f"L2 holds {key!r} but get missed"
        else:
            assert got in self.allowed(key), (
                f"get({key!r}) served {got!r}; allowed {self.allowed(key)!r}"
            )

    @rule(key=KEYS)
    def delete(self, key: str) -> None:
        stale_possible = bool(self.allowed(key) - {self.model.alive(key)})
        want = self.model.remove_alive(key)
        got = self.cache.delete(key)
        assert got is want or (stale_possible and got)
        self.own_write([key])
        assert self.cache.get(key, None) is None, f"{key!r} readable after delete"

    @rule(key=KEYS)
    def exists(self, key: str) -> None:
        if self.cache.exists(key):
            assert self.allowed(key), f"exists({key!r}) for a key that is gone"
        else:
            assert self.model.alive(key) is None

    @rule(keys=KEY_LISTS)
    def mget(self, keys: list[str]) -> None:
        got = self.cache.mget(keys)
        assert set(got) <= set(keys)
        for key in dict.fromkeys(keys):
            if key in got:
                assert got[key] in self.allowed(key), f"mget served {got[key]!r} for {key!r}"
            else:
                assert self.model.alive(key) is None, f"L2 holds {key!r} but mget missed"

    @rule(items=ITEMS, data=st.data())
    def mset(self, items: dict[str, bytes], data: st.DataObject) -> None:
        ttl = data.draw(self.ttls)
        self.cache.mset(items, ttl=ttl)
        for key, value in items.items():
            self.model.put(key, value, ttl)
        self.own_write(items)

    @rule(keys=KEY_LISTS)
    def mdelete(self, keys: list[str]) -> None:
        unique = list(dict.fromkeys(keys))
        stale_keys = sum(bool(self.allowed(k) - {self.model.alive(k)}) for k in unique)
        want = sum(self.model.remove_alive(k) for k in unique)
        got = self.cache.mdelete(keys)
        assert want <= got <= want + stale_keys
        self.own_write(unique)
        assert self.cache.mget(unique) == {}

    @rule()
    def clear(self) -> None:
        want = len(self.model.live_items())
        self.model.data.clear()
        assert self.cache.clear() == want
        self.stale.clear()

    # -- another process, writing L2 behind this cache's back --------------------------------

    @rule(key=KEYS, value=VALUES, data=st.data())
    def outside_set(self, key: str, value: bytes, data: st.DataObject) -> None:
        ttl = data.draw(self.ttls)
        self.outside_change(key)
        self.l2.set(key, value, ttl=ttl)
        self.model.put(key, value, ttl)

    @rule(key=KEYS)
    def outside_delete(self, key: str) -> None:
        self.outside_change(key)
        self.l2.delete(key)
        self.model.remove_alive(key)

    # -- time --------------------------------------------------------------------------------

    @rule(step=STEPS)
    def advance(self, step: float) -> None:
        self.clock.advance(step)

    @invariant()
    def l1_never_outlives_l2(self) -> None:
        """Every L1 entry is allowed, and one mirroring L2 expires no later than L2's."""
        for key, (value, left) in self.l1.mget_with_ttl(KEYS_ALL).items():
            assert value in self.allowed(key), f"L1 holds {value!r} for {key!r}"
            if value == self.model.alive(key) and value not in self.stale_values(key):
                l2_left = self.model.left(key)
                assert left is not None, f"L1 entry for {key!r} has no expiry"
                assert left <= self.l1_ttl
                if l2_left is not None:
                    assert left <= l2_left, f"L1 {key!r} outlives L2: {left} > {l2_left}"


KEYS_ALL = ["a", "b", "c", "d", "e", "ключ"]

TestMultiLevelModel = MultiLevelMachine.TestCase
TestMultiLevelModel.settings = FAST


# ------------------------------------------------------------------------------ over Redis

_redis_prefixes = itertools.count()


def test_multilevel_over_redis_model(redis_client: redis.Redis) -> None:
    """The same machine over a real Redis L2: no time steps (Redis expires on its own clock)."""

    class OverRedis(MultiLevelMachine):
        ttls = REDIS_TTLS

        def make_levels(self) -> tuple[Any, Any]:
            l2 = RedisCache(redis_client, prefix=f"sm{next(_redis_prefixes)}")
            return MemoryCache(maxsize=1000), l2

        @initialize()
        def empty(self) -> None:
            assert self.l2.clear() == 0

        @rule(step=STEPS)
        def advance(self, step: float) -> None:  # Redis time is real: never advanced here
            pass

        @invariant()
        def l1_never_outlives_l2(self) -> None:
            for key, (value, left) in self.l1.mget_with_ttl(KEYS_ALL).items():
                assert value in self.allowed(key), f"L1 holds {value!r} for {key!r}"
                assert left is not None and left <= self.l1_ttl

    run_state_machine_as_test(OverRedis, settings=REDIS)
