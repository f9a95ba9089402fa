"""Server-assisted L1 invalidation against a real redis-server (CLIENT TRACKING BCAST, RESP2).

Caches in one process with separate L1s stand in for separate processes: each only learns of
another's writes through Redis, exactly as a process would. The tests wait on events (the
cache's ``on_invalidate`` callback, run after L1 dropped the keys), not on sleeps.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from cache_core import BackendError, MemoryCache, MultiLevelCache, RedisCache
from cache_core._invalidation import listener_for
from tests.conftest import wait_for
from tests.redis_harness import HOST, REDIS_CLI, RedisServer


class Heard:
    """An ``on_invalidate`` callback that tests can wait on."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.batches: list[list[str] | None] = []

    def __call__(self, keys: list[str] | None) -> None:
        with self.cond:
            self.batches.append(keys)
            self.cond.notify_all()

    @property
    def n(self) -> int:
        with self.cond:
            return len(self.batches)

    def wait(self, key: str | None, since: int = 0, timeout: float = 5.0) -> bool:
        """Wait for an invalidation of ``key`` (None: a flush) among the batches from ``since``."""

        def seen() -> bool:
            batches = self.batches[since:]
            return any(b is None if key is None else b and key in b for b in batches)

        with self.cond:
            return self.cond.wait_for(seen, timeout)


class HoldingL2:
    """A real RedisCache whose single-key read can be held between the GET and the promotion."""

    def __init__(self, inner: RedisCache) -> None:
        self.inner = inner
        self.hold: threading.Event | None = None
        self.read_done = threading.Event()

    def get_with_ttl(self, key: str) -> Any:
        hit = self.inner.get_with_ttl(key)
        self.read_done.set()
        if self.hold is not None:
            assert self.hold.wait(5), "test never released the reader"
        return hit

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    # A client of its own per test: listeners are per client and prefix.
    c = redis_server.client()
    yield c
    c.close()


def multilevel(l2: Any, **kwargs: Any) -> tuple[MultiLevelCache, MemoryCache, Heard]:
    l1 = MemoryCache()
    cache = MultiLevelCache(l1, l2, l1_ttl=kwargs.pop("l1_ttl", 600), **kwargs)
    heard = Heard()
    cache.on_invalidate(heard)
    assert wait_for(lambda: cache.l1_trusted), "listener never subscribed"
    return cache, l1, heard


def cli(port: int, *args: str) -> str:
    out = subprocess.run(
        [REDIS_CLI, "-h", HOST, "-p", str(port), *args], check=True, capture_output=True, timeout=10
    )
    return out.stdout.decode().strip()


def test_on_by_default_over_redis_and_off_on_request(client: redis.Redis) -> None:
    l2 = RedisCache(client, prefix="inv-default")
    cache, _, _ = multilevel(l2)
    assert cache.invalidation
    off = MultiLevelCache(MemoryCache(), l2, l1_ttl=5, invalidation=False)
    assert not off.invalidation and off.l1_trusted
    over_memory = MultiLevelCache(MemoryCache(), MemoryCache(), l1_ttl=5)
    assert not over_memory.invalidation
    cache.close()


def test_one_listener_per_client_and_prefix(client: redis.Redis) -> None:
    a, _, _ = multilevel(RedisCache(client, prefix="inv-share"))
    b, _, _ = multilevel(RedisCache(client, prefix="inv-share"))
    other, _, _ = multilevel(RedisCache(client, prefix="inv-other"))
    listener = listener_for(client, "inv-share:")
    assert a.l2.invalidation_listener() is b.l2.invalidation_listener() is listener
    assert other.l2.invalidation_listener() is not listener
    assert listener.connects == 1
    for cache in (a, b, other):
        cache.close()
    assert wait_for(lambda: not listener.connected)


def test_a_redis_cli_write_drops_the_key_from_l1(
    client: redis.Redis, redis_server: RedisServer
) -> None:
    cache, l1, heard = multilevel(RedisCache(client, prefix="inv-cli"))
    client.set("inv-cli:k", b"v1")
    assert heard.wait("k")  # its own invalidation, or it could drop the promotion below
    assert cache.get("k") == b"v1"
    assert l1.get("k") == b"v1"
    n = heard.n
    cli(redis_server.port, "SET", "inv-cli:k", "v2")
    assert heard.wait("k", n)
    assert l1.get("k", None) is None
    assert cache.get("k") == b"v2"
    n = heard.n
    cli(redis_server.port, "DEL", "inv-cli:k")
    assert heard.wait("k", n) and wait_for(lambda: cache.get("k", None) is None)
    cache.close()


def test_a_write_through_another_cache_in_this_process_is_heard(client: redis.Redis) -> None:
    l2 = RedisCache(client, prefix="inv-peer")
    reader, reader_l1, heard = multilevel(l2)
    writer, _, _ = multilevel(l2)
    writer.set("k", b"v1")
    assert heard.wait("k")
    assert reader.get("k") == b"v1" and reader_l1.get("k") == b"v1"
    n = heard.n
    writer.set("k", b"v2")
    assert heard.wait("k", n)
    assert reader.get("k") == b"v2"
    writer.mdelete(["k"])
    assert wait_for(lambda: reader.get("k", None) is None)
    reader.close()
    writer.close()


def test_own_writes_stay_in_l1_but_a_foreign_write_right_after_still_drops_them(
    client: redis.Redis,
) -> None:
    """Our write's invalidation is recognised (kept in L1); the next one, foreign, is not."""
    cache, l1, heard = multilevel(RedisCache(client, prefix="inv-own"))
    for i in range(20):
        n = heard.n
        cache.set("k", b"mine%d" % i)
        client.set("inv-own:k", b"theirs%d" % i)  # runs after ours: must win in L1
        assert heard.wait("k", n) and wait_for(lambda n=n: heard.n >= n + 2)
        assert l1.get("k", None) is None
        assert cache.get("k") == b"theirs%d" % i
    n = heard.n
    cache.set("k", b"last")
    assert heard.wait("k", n)
    assert l1.get("k") == b"last"  # our own write's invalidation did not drop it
    cache.close()


class WriteHookL2:
    """A real RedisCache that runs a hook just before each ``set`` goes to Redis."""

    def __init__(self, inner: RedisCache) -> None:
        self.inner = inner
        self.before_set: Any = None

    def set(self, key: str, value: bytes, ttl: Any = None) -> None:
        if self.before_set is not None:
            self.before_set()
        self.inner.set(key, value, ttl=ttl)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_foreign_write_heard_while_our_write_is_in_flight_drops_the_older_value(
    client: redis.Redis,
) -> None:
    """The foreign invalidation is taken for ours (ours runs later and wins), yet L1 must not
    keep serving the value older than both while our write is on its way."""
    l2 = WriteHookL2(RedisCache(client, prefix="inv-inflight"))
    cache, l1, heard = multilevel(l2)
    client.set("inv-inflight:k", b"v0")
    assert heard.wait("k")
    assert cache.get("k") == b"v0" and l1.get("k") == b"v0"
    seen_in_window: list[Any] = []

    def foreign_write_first() -> None:
        n = heard.n
        client.set("inv-inflight:k", b"theirs")  # runs before ours
        assert heard.wait("k", n)
        seen_in_window.append(cache.get("k"))  # what another thread would read right now

    l2.before_set = foreign_write_first
    cache.set("k", b"mine")
    l2.before_set = None
    assert seen_in_window == [b"theirs"]
    assert cache.get("k") == b"mine"  # ours ran last
    cache.close()


def test_flushdb_flushes_every_l1(fault_server: RedisServer) -> None:
    client = fault_server.client()
    cache, l1, heard = multilevel(RedisCache(client, prefix="inv-flush"))
    cache.mset({"a": b"1", "b": b"2"})
    client.set("inv-flush:c", b"3")
    assert cache.get("c") == b"3"
    cli(fault_server.port, "FLUSHDB")
    assert heard.wait(None)
    assert l1.mget(["a", "b", "c"]) == {}
    assert cache.mget(["a", "b", "c"]) == {}
    cache.close()
    client.close()


def test_an_l2_read_racing_an_invalidation_never_installs_the_old_value(
    client: redis.Redis,
) -> None:
    """The read's GET runs before the write, its promotion after the invalidation: dropped."""
    l2 = HoldingL2(RedisCache(client, prefix="inv-race"))
    cache, l1, heard = multilevel(l2)
    client.set("inv-race:k", b"old")
    assert heard.wait("k")
    n = heard.n
    l2.hold = threading.Event()
    got: list[Any] = []
    reader = threading.Thread(target=lambda: got.append(cache.get("k")))
    reader.start()
    assert l2.read_done.wait(5)  # the GET answered "old"; the promotion has not happened yet
    client.set("inv-race:k", b"new")  # a foreign write...
    assert heard.wait("k", n)  # ...whose invalidation the listener delivered meanwhile
    l2.hold.set()
    reader.join(5)
    assert got == [b"old"]  # the reader itself saw the value current when it read
    assert l1.get("k", None) is None  # but L1 did not keep it
    l2.hold = None
    assert cache.get("k") == b"new"
    cache.close()


def test_a_listener_killed_with_a_write_in_the_same_instant_loses_nothing(
    fault_server: RedisServer,
) -> None:
    """CLIENT KILL and the write in one MULTI: the write's invalidation can never be sent.

    The listener acts when its thread sees the socket close: microseconds later, or up to the
    interpreter's switch interval (5 ms) when other threads hold the GIL. In this test the
    reader is the killer itself, so it waits for that, then must not see the old value.
    """
    client = fault_server.client(protocol=2)
    cache, l1, heard = multilevel(RedisCache(client, prefix="inv-kill"))
    listener = cache.l2.invalidation_listener()
    for i in range(5):
        n = heard.n
        client.set("inv-kill:k", b"v%d" % i)
        assert heard.wait("k", n)
        assert cache.get("k") == b"v%d" % i and l1.get("k", None) == b"v%d" % i
        connects = listener.connects
        pipe = client.pipeline(transaction=True)
        pipe.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        pipe.set("inv-kill:k", b"v%d" % (i + 1))
        pipe.execute()
        # Once the listener noticed (here: it is back, resubscribed), L1 holds nothing older.
        assert wait_for(lambda c=connects: listener.connects > c and cache.l1_trusted)
        assert l1.get("k", None) is None
        assert cache.get("k") == b"v%d" % (i + 1)
    cache.close()
    client.close()


def test_a_killed_listener_then_a_foreign_write_serves_the_new_value(
    fault_server: RedisServer,
) -> None:
    """The issue's sequence, with redis-cli: kill, then write, then read; 0 stale reads."""
    client = fault_server.client()
    cache, _, _ = multilevel(RedisCache(client, prefix="inv-kill2"))
    stale = 0
    for i in range(5):
        client.set("inv-kill2:k", b"v%d" % i)
        assert cache.get("k") == b"v%d" % i
        cli(fault_server.port, "CLIENT", "KILL", "TYPE", "pubsub")
        cli(fault_server.port, "SET", "inv-kill2:k", f"v{i + 1}")
        stale += cache.get("k") != b"v%d" % (i + 1)
        assert wait_for(lambda: cache.l1_trusted)
    assert stale == 0
    cache.close()
    client.close()


def test_a_listener_whose_pings_go_unanswered_counts_as_disconnected(
    fault_server: RedisServer,
) -> None:
    l2 = RedisCache.from_url(fault_server.url, prefix="inv-ping")  # 0.25 s timeouts
    listener = listener_for(l2.client, "inv-ping:")
    listener.health_interval = 0.2
    cache, l1, _ = multilevel(l2)
    cache.set("k", b"v")
    assert l1.get("k") == b"v"
    fault_server.pause()  # the socket stays open and silent: only the pings can tell
    try:
        assert wait_for(lambda: not cache.l1_trusted, 3)
        # Bypassed: the read goes to Redis, which cannot answer; L1 is the answer of last
        # resort (stale-if-error), as it would be without invalidation.
        assert cache.get("k") == b"v"
    finally:
        fault_server.resume()
    assert wait_for(lambda: cache.l1_trusted, 5)
    assert l1.get("k", None) is None  # flushed on the way back: invalidations may be lost

    def reads_v() -> bool:
        try:  # the breaker, opened by the pause's timeout, lets a probe through in <= 0.9 s
            return bool(cache.get("k") == b"v")
        except BackendError:
            return False

    assert wait_for(reads_v, 3)
    cache.close()
    l2.close()


def test_while_redis_is_down_l1_answers_only_as_a_last_resort(fault_server: RedisServer) -> None:
    l2 = RedisCache.from_url(fault_server.url, prefix="inv-down")
    cache, l1, _ = multilevel(l2)
    cache.set("k", b"v1")  # our own write stays in L1 (its invalidation is recognised)
    assert l1.get("k") == b"v1"
    fault_server.stop()
    assert wait_for(lambda: not cache.l1_trusted)
    assert cache.get("k") == b"v1"  # Redis cannot answer: L1 does
    fault_server.start()  # an empty server (no persistence): v1 is gone from Redis
    assert wait_for(lambda: cache.l1_trusted, 5)
    assert l1.get("k", None) is None  # flushed when the listener came back
    assert cache.get("k", None) is None
    cache.set("k", b"v2")
    assert cache.get("k") == b"v2"
    cache.close()
    l2.close()


def test_a_listener_up_with_redis_answering_never_serves_l1_while_down(
    fault_server: RedisServer,
) -> None:
    """Listener down, Redis up: reads go to Redis even for keys L1 still holds."""
    client = fault_server.client()
    cache, l1, _ = multilevel(RedisCache(client, prefix="inv-bypass"))
    cache.set("k", b"v1")
    assert l1.get("k") == b"v1"
    listener = cache.l2.invalidation_listener()
    connects = listener.connects
    pipe = client.pipeline(transaction=True)
    pipe.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    pipe.set("inv-bypass:k", b"v2")
    pipe.execute()
    assert wait_for(lambda: not cache.l1_trusted or listener.connects > connects)
    assert cache.get("k") == b"v2"
    cache.close()
    client.close()


def test_memoize_cache_clear_reaches_another_process_without_the_interval(
    client: redis.Redis,
) -> None:
    from cache_core import memoize

    calls: list[str] = []

    def make(who: str) -> Any:
        cache, _, heard = multilevel(RedisCache(client, prefix="inv-memo"))

        @memoize(cache, namespace="inv-memo-f", generation_interval=3600)
        def f(x: int) -> int:
            calls.append(who)
            return x * 2

        return f, cache, heard

    fa, ca, _ = make("a")
    fb, cb, heard_b = make("b")
    assert fa(1) == 2 and fb(1) == 2 and calls == ["a"]
    fa.cache_clear()
    assert heard_b.wait("inv-memo-f:gen")
    assert fb(1) == 2 and calls == ["a", "b"]  # b saw the clear at once, not after an hour
    fb.invalidate(1)
    assert fa(1) == 2 and calls == ["a", "b", "a"]
    ca.close()
    cb.close()


# ----------------------------------------------------------------------------- Redis Cluster


def _move_empty_slot(ports: list[int], slot: int, owner: int, dst: int) -> None:
    """Reshard one slot that holds no keys from ``owner`` to ``dst`` (the real protocol)."""
    nodes = {p: redis.Redis(host=HOST, port=p) for p in ports}
    try:
        ids = {p: c.execute_command("CLUSTER", "MYID").decode() for p, c in nodes.items()}
        nodes[dst].execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[owner])
        nodes[owner].execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[dst])
        for p in [dst, owner, *[p for p in ports if p not in (dst, owner)]]:
            nodes[p].execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[dst])
    finally:
        for c in nodes.values():
            c.close()


@pytest.mark.cluster
def test_cluster_writes_on_every_primary_are_heard(cluster_client: Any) -> None:
    cache, l1, heard = multilevel(RedisCache(cluster_client, prefix="inv-cl"))
    keys = [f"k{i}" for i in range(12)]  # spread over the three primaries
    n = heard.n
    cache.mset({k: b"v1" for k in keys})
    assert all(heard.wait(k, n) for k in keys)  # our own writes come back from every node
    assert cache.mget(keys) == {k: b"v1" for k in keys}
    assert l1.mget(keys) == {k: b"v1" for k in keys}
    n = heard.n
    for k in keys:
        cluster_client.set(f"inv-cl:{k}", b"v2")
    assert all(heard.wait(k, n) for k in keys)
    assert cache.mget(keys) == {k: b"v2" for k in keys}
    cache.close()


@pytest.mark.cluster
def test_cluster_topology_change_flushes_l1_and_resubscribes(
    cluster_client: Any, redis_cluster: Any
) -> None:
    from redis.cluster import key_slot

    cache, l1, heard = multilevel(RedisCache(cluster_client, prefix="inv-topo"))
    listener = cache.l2.invalidation_listener()
    listener.health_interval = 0.1
    n = heard.n
    cache.set("k", b"v")
    assert heard.wait("k", n)
    assert cache.get("k") == b"v" and l1.get("k") == b"v"
    ports = list(redis_cluster.ports)
    slot = (key_slot(b"inv-topo:k") + 1) % 16384
    assert cluster_client.cluster_countkeysinslot(slot) == 0
    before = cluster_client.execute_command("CLUSTER SLOTS")
    home = next(v["primary"][1] for r, v in before.items() if r[0] <= slot <= r[1])
    other = next(p for p in ports if p != home)
    changes = listener.topology_changes
    n = heard.n
    _move_empty_slot(ports, slot, home, other)
    try:
        assert wait_for(lambda: listener.topology_changes > changes, 10)
        assert heard.wait(None, n)  # L1 flushed: a new owner's writes were not heard before
        assert l1.get("k", None) is None
        assert wait_for(lambda: cache.l1_trusted, 5)
        n = heard.n
        cluster_client.set("inv-topo:k", b"v2")  # still heard after the resubscription
        assert heard.wait("k", n)
        assert cache.get("k") == b"v2"
    finally:
        _move_empty_slot(ports, slot, other, home)
        assert wait_for(lambda: listener.topology_changes > changes + 1, 10)
    cache.close()
