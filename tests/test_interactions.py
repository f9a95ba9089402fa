"""Where features meet: fences with the L1 and its invalidation, Sentinel's confirmed writes,
and the framework backends' own writes (found in a review after the merges of issues 13-18)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import redis

from cache_core import BackendError, MemoryCache, MultiLevelCache, RedisCache, TypedCache
from cache_core._breaker import CircuitBreaker


def _open(breaker: CircuitBreaker) -> None:
    for _ in range(breaker.failure_threshold):
        breaker.record_failure(redis.ConnectionError("down"))


@pytest.mark.parametrize("invalidation", [False, True])
def test_refused_l2_fenced_store_overwrites_newer_own_write_in_l1(
    redis_client: redis.Redis, unique_prefix: str, invalidation: bool
) -> None:
    """Was a bug (b): a load fenced before an outage; this process writes during the outage; the
    load's fenced store then fails on L2 and MultiLevelCache puts the OLDER loaded value in L1
    over the newer write, which this process then serves."""
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=60)
    l2 = RedisCache(redis_client, prefix=unique_prefix, breaker=breaker)
    ml = MultiLevelCache(MemoryCache(), l2, l1_ttl=60, invalidation=invalidation)
    token = ml.fence("k")  # the load starts (Redis up)
    _open(breaker)  # Redis goes away
    with pytest.raises(BackendError):
        ml.set("k", b"new")  # the update's cache write (fails, L1 takes it)
    assert ml.get("k") == b"new"
    with pytest.raises(BackendError):
        ml.set_fenced("k", b"old", 60, token)  # the load (read before the update) is stored
    assert ml.get("k") == b"new", "L1 now serves the value loaded before this process's write"


def test_typed_get_or_set_overtaken_by_outage_write_serves_old(
    redis_client: redis.Redis, unique_prefix: str
) -> None:
    """The same case through TypedCache.get_or_set (invalidation=False, the simplest setup)."""
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=60)
    l2 = RedisCache(redis_client, prefix=unique_prefix, breaker=breaker)
    ml = MultiLevelCache(MemoryCache(), l2, l1_ttl=60, invalidation=False)
    typed: TypedCache[str] = TypedCache(ml, ttl_jitter=0)
    loading, release = threading.Event(), threading.Event()
    db = {"k": "old"}

    def loader() -> str:
        value = db["k"]
        loading.set()
        assert release.wait(5)
        return value

    out: list[str] = []
    t = threading.Thread(target=lambda: out.append(typed.get_or_set("k", loader, 60)))
    t.start()
    assert loading.wait(5)
    _open(breaker)
    db["k"] = "new"
    with pytest.raises(BackendError):
        typed.set("k", "new", 60)
    release.set()
    t.join(5)
    assert typed.get("k") == "new"


def _store(url: str, ns: str) -> Any:
    from cache_core import PickleSerializer
    from cache_core.contrib._store import Store, StoreConfig

    return Store(
        StoreConfig(
            urls=(url,),
            namespace=ns,
            serializer=PickleSerializer(b"k" * 32),
            distributed_lock=False,
        )
    )


@pytest.mark.parametrize("write", ["add", "incr"])
def test_contrib_add_and_incr_do_not_drop_the_fence(
    redis_server, unique_prefix: str, write: str
) -> None:
    """Was a bug (a, contrib): Store.add (Django/Flask add) and Store.incr (Flask inc with create)
    write the key without dropping its fence, so a get_or_set load in flight overwrites them."""
    store = _store(redis_server.url, unique_prefix)
    try:
        loading, release = threading.Event(), threading.Event()

        def loader() -> int:
            loading.set()
            assert release.wait(5)
            return 0  # e.g. "count from the database", read before the add/incr below

        t = threading.Thread(target=store.get_or_set, args=("k", loader, 60))
        t.start()
        assert loading.wait(5)
        if write == "add":
            assert store.add("k", 5, 60) is True
        else:
            assert store.incr("k", 5, create=True, ttl=60) == 5
        release.set()
        t.join(5)
        assert store.get("k", None) == 5, "the load's fenced store overwrote a later write"
    finally:
        store.close()


def test_bcast_coalesces_invalidations_so_a_foreign_write_is_taken_for_ours(
    redis_server, unique_prefix: str
) -> None:
    """Was a bug (b, own-write tracking): BCAST tracking sends one invalidation per key per pass
    iteration (keys collected in a rax, deduplicated). Two writes of one key by this cache in one
    iteration leave one entry of the L1 coherence's own_writes unconsumed; the NEXT foreign write's
    invalidation is then taken for ours and L1 keeps our value while Redis holds the foreign one."""
    import time

    admin = redis_server.client()
    rkey = f"{unique_prefix}:k"
    l2 = RedisCache(redis_server.client(), prefix=unique_prefix)
    ml = MultiLevelCache(MemoryCache(), l2, l1_ttl=60)
    assert ml.l1_trusted
    # warm two pooled connections and load the scripts, so both writes below block on the pause
    ws = [threading.Thread(target=l2.set, args=(f"warm{i}", b"x", 60)) for i in range(4)]
    for t in ws:
        t.start()
    for t in ws:
        t.join(5)
    time.sleep(0.2)
    admin.execute_command("CLIENT", "PAUSE", 1500, "WRITE")
    ts = [threading.Thread(target=ml.set, args=("k", v, 60)) for v in (b"v1", b"v2")]
    for t in ts:
        t.start()
        time.sleep(0.3)
    for t in ts:
        t.join(5)
    time.sleep(0.3)
    pending = {k: list(v) for k, v in ml._coherence.own_writes.items()}
    print("own writes left after both writes' invalidation(s):", pending)
    assert ml.get("k") == admin.get(rkey)  # a read promotes Redis' value into L1
    admin.set(rkey, b"foreign")  # another process writes, later
    time.sleep(0.3)  # its invalidation arrives (ms)
    assert ml.get("k") == b"foreign", f"L1 kept this process's older value (pending {pending})"
    ml.close()


def test_sentinel_writes_that_skip_wait(sentinel_setup, unique_prefix: str) -> None:
    """Was a bug (c): run_routed confirms writes with WAIT only for ops named in _WRITE_OPS
    ({"SET","UNLINK","MSET","FENCE"}); clear() ("SCAN/UNLINK") and the contrib Store's
    add ("SET NX"), incr ("INCRBY"/"CAS") and touch ("TOUCH") write data unconfirmed."""
    from cache_core import PickleSerializer
    from cache_core.contrib._store import Store, StoreConfig

    store = Store(
        StoreConfig(
            urls=(sentinel_setup.steady_url,),
            namespace=unique_prefix,
            serializer=PickleSerializer(b"k" * 32),
            distributed_lock=False,
        )
    )
    try:
        guard = store.redis.sentinel
        assert guard is not None
        calls: list[str] = []
        orig = guard.write

        def spy(fn, args, kwargs):
            calls.append(getattr(fn, "__name__", type(fn).__name__))
            return orig(fn, args, kwargs)

        guard.write = spy
        store.set("a", "x", 60)
        assert len(calls) == 1, calls  # set: confirmed
        unconfirmed = {}
        for name, op in [
            ("add", lambda: store.add("b", "y", 60)),
            ("incr", lambda: store.incr("c", 1, create=True, ttl=60)),
            ("touch", lambda: store.touch("a", 30)),
            ("clear", lambda: store.redis.clear()),
        ]:
            before = len(calls)
            op()
            if len(calls) == before:
                unconfirmed[name] = True
        assert not unconfirmed, (
            f"data writes not confirmed by WAIT behind Sentinel: {sorted(unconfirmed)}"
        )
    finally:
        store.close()


def test_refused_l2_fenced_store_after_failed_delete_serves_deleted_value(
    redis_client: redis.Redis, unique_prefix: str
) -> None:
    """Was a bug (b), delete variant: delete during the outage (remembered as an invalidation), then
    the failed fenced store of a value loaded before it fills L1, which serves it."""
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=60)
    l2 = RedisCache(redis_client, prefix=unique_prefix, breaker=breaker)
    ml = MultiLevelCache(MemoryCache(), l2, l1_ttl=60, invalidation=False)
    ml.set("k", b"old", 60)
    token = ml.fence("k")
    _open(breaker)
    with pytest.raises(BackendError):
        ml.delete("k")
    assert l2.pending_deletes == 1
    with pytest.raises(BackendError):
        ml.mset_fenced({"k": (b"old", 60)}, {"k": token})  # the warmer's path
    with pytest.raises(BackendError):  # L2 cannot answer, and L1 must not hold the deleted value
        ml.get("k", None)
    assert ml.l1.get("k", None) is None
