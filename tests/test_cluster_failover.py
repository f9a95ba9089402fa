"""Redis Cluster failures cost only the failed node's keys; slot migration is not an outage.

On a real 3 primaries + 3 replicas cluster (``tests.redis_harness.ReplicatedClusterHarness``):
a SIGKILLed primary under load, and a reshard under load with hash-tagged multi-key commands
and lease locks. The figures these tests measure loosely are benchmarked in
``benchmarks/cluster_failover.py`` (BENCHMARKS.md).
"""

from __future__ import annotations

import contextlib
import threading
import time

import pytest
import redis
from redis.exceptions import ClusterError, TryAgainError

from cache_core import BackendError, CircuitBreaker, RedisCache, TypedCache
from cache_core._breaker import is_outage, is_routing
from tests.cluster_load import (
    GetOrSetLoad,
    first_slots,
    owner_ports,
    promoted_replica,
    reshard,
    tags_in_slots,
    wait_promoted,
)
from tests.redis_harness import ReplicatedClusterHarness


def test_routing_errors_are_not_outages() -> None:
    for exc in (
        TryAgainError("TRYAGAIN"),
        ClusterError("TTL exhausted."),
        redis.exceptions.MovedError("3999 127.0.0.1:6381"),
        redis.exceptions.AskError("3999 127.0.0.1:6381"),
    ):
        assert is_routing(exc) and not is_outage(exc), exc
    assert is_outage(redis.exceptions.ClusterDownError("CLUSTERDOWN"))
    assert not is_routing(redis.exceptions.ClusterDownError("CLUSTERDOWN"))
    b = CircuitBreaker(failure_threshold=1)
    b.record_failure(ClusterError("TTL exhausted."))
    assert b.state == "closed"


def test_breakers_are_per_node(replicated_cluster: ReplicatedClusterHarness) -> None:
    with RedisCache.from_url(replicated_cluster.url, prefix="pn") as cache:
        for i in range(30):
            cache.set(f"k{i}", b"v")
        breakers = cache.node_breakers
        assert sorted(int(n.rsplit(":", 1)[1]) for n in breakers) == replicated_cluster.primaries()
        assert all(b.state == "closed" for b in breakers.values())


@pytest.mark.slow
def test_sigkill_one_primary_costs_only_its_keys(
    replicated_cluster: ReplicatedClusterHarness, unique_prefix: str
) -> None:
    harness = replicated_cluster
    victim = harness.primaries()[0]
    replica = promoted_replica(harness, victim)
    owners = owner_ports(harness)
    cache = RedisCache.from_url(harness.url, prefix=unique_prefix)
    try:
        keys = [f"k{i}" for i in range(300)]
        on_victim = {k for k in keys if owners[cache.client.keyslot(cache.redis_key(k))] == victim}  # type: ignore[union-attr]
        assert 0 < len(on_victim) < len(keys)
        typed: TypedCache[str] = TypedCache(cache)
        load = GetOrSetLoad(typed, keys, threads=4)
        load.warm()
        load.start()
        time.sleep(0.3)  # load running before the kill (not a synchronization)
        harness.server(victim).kill()
        killed_at = time.monotonic()
        promoted_at = wait_promoted(harness, replica)
        # Keep the load on for a while after the promotion.
        time.sleep(1.5)
        report = load.stop()
        breakers = {n: (b.state, b.opened_count) for n, b in cache.node_breakers.items()}
        stats = typed.stats()
    finally:
        cache.close()
        harness.restore()
    assert report.errors == [], report.errors[:3]
    others = [(t, k) for t, k in report.loads if k not in on_victim]
    assert others == [], (
        f"{len(others)} loader calls for keys on healthy primaries, at "
        f"{[round(t - killed_at, 2) for t, _ in others[:10]]} s after the kill; "
        f"breakers {breakers}; {stats}"
    )
    victim_loads = [t for t, k in report.loads if k in on_victim]
    back_after = (max(victim_loads) - promoted_at) if victim_loads else 0.0
    print(
        f"\nkill->promotion {promoted_at - killed_at:.2f}s, calls {report.calls}, "
        f"victim-key loader calls {len(victim_loads)}, last one {back_after:+.2f}s after promotion"
    )
    assert back_after < 1.5, f"the dead node's keys were loaded until {back_after:.2f}s after"
    assert len(victim_loads) < report.calls


@pytest.mark.slow
def test_reshard_under_load_is_routing_not_outage(
    replicated_cluster: ReplicatedClusterHarness, unique_prefix: str
) -> None:
    harness = replicated_cluster
    src, dst = harness.primaries()[:2]
    moving = first_slots(harness, src, 400)
    tags = tags_in_slots(moving, per_slot=1)
    cache = RedisCache.from_url(harness.url, prefix=unique_prefix)
    typed: TypedCache[str] = TypedCache(cache, distributed_lock=True)
    errors: list[BaseException] = []
    calls = [0]
    stop = threading.Event()
    lock = threading.Lock()
    for tag in tags:
        cache.mset({f"{{{tag}}}:a": b"1", f"{{{tag}}}:b": b"2"})

    def multi_key(seed: int) -> None:
        i = seed
        while not stop.is_set():
            tag = tags[i % len(tags)]
            i += 7
            try:
                found = cache.mget([f"{{{tag}}}:a", f"{{{tag}}}:b"])
                assert found == {f"{{{tag}}}:a": b"1", f"{{{tag}}}:b": b"2"}, found
                # a lease lock (3-key scripts) on a key of a migrating slot
                typed.get_or_set(f"{{{tag}}}:c{i % 5}", lambda: "loaded")
                cache.delete(f"{{{tag}}}:c{i % 5}")
            except BaseException as exc:
                with lock:
                    errors.append(exc)
            with lock:
                calls[0] += 1

    workers = [threading.Thread(target=multi_key, args=(s,), daemon=True) for s in range(4)]
    for t in workers:
        t.start()
    try:
        took = reshard(harness, src, dst, len(moving))
    finally:
        stop.set()
        for t in workers:
            t.join(30)
        openings = cache.breaker_openings
        retries = cache.routing_retries
        cache.close()
    print(
        f"\nresharded {len(moving)} slots in {took:.1f}s under {calls[0]} calls, "
        f"{retries} routing retries, {openings} breaker openings"
    )
    assert errors == [], errors[:3]
    assert openings == 0
    assert calls[0] > 0
    assert owner_ports(harness)[min(moving)] == dst


def test_plain_client_against_a_cluster_node_warns_once(
    replicated_cluster: ReplicatedClusterHarness, caplog: pytest.LogCaptureFixture
) -> None:
    port = replicated_cluster.primaries()[0]
    with redis.Redis(port=port, host="127.0.0.1") as client:
        cache = RedisCache(client, prefix="plain")
        with caplog.at_level("WARNING", logger="cache_core"):
            for i in range(40):
                with contextlib.suppress(BackendError):
                    cache.set(f"k{i}", b"v")
        warnings = [r for r in caplog.records if "MOVED" in r.getMessage()]
        assert len(warnings) == 1
        assert "redis+cluster://" in warnings[0].getMessage()


def test_cluster_url_with_a_dead_seed_first(
    replicated_cluster: ReplicatedClusterHarness,
) -> None:
    from tests.redis_harness import free_port

    dead = free_port()
    live = replicated_cluster.primaries()[0]
    url = f"redis+cluster://127.0.0.1:{dead},127.0.0.1:{live}/"
    with RedisCache.from_url(url, prefix="seed") as cache:
        assert cache.is_cluster
        cache.set("x", b"1")
        assert cache.get("x") == b"1"


def test_a_half_migrated_slot_is_retried_never_an_outage(
    replicated_cluster: ReplicatedClusterHarness, unique_prefix: str
) -> None:
    """MGET on a slot whose keys are half moved gets TRYAGAIN until the move completes."""
    harness = replicated_cluster
    rows = harness.nodes()
    ids = {int(str(r["port"])): str(r["id"]) for r in rows}
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=60)
    cache = RedisCache.from_url(harness.url, prefix=unique_prefix, breaker=breaker)
    a, b = cache.redis_key("{mig}:a"), cache.redis_key("{mig}:b")
    slot = cache.client.keyslot(a)  # type: ignore[union-attr]
    src = owner_ports(harness)[slot]
    dst = next(p for p in harness.primaries() if p != src)
    cache.mset({"{mig}:a": b"1", "{mig}:b": b"2"})
    source, target = harness.server(src).client(), harness.server(dst).client()
    try:
        target.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", ids[src])
        source.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", ids[dst])
        source.execute_command("MIGRATE", "127.0.0.1", dst, "", 0, 5000, "KEYS", a)
        # Stuck half-way: after retrying, the caller gets a BackendError, and no breaker opens.
        with pytest.raises(BackendError, match=r"TTL exhausted|TRYAGAIN"):
            cache.mget(["{mig}:a", "{mig}:b"])
        assert cache.breaker_openings == 0
        assert all(br.state == "closed" for br in cache.node_breakers.values())
        retries_stuck = cache.routing_retries
        assert retries_stuck > 0

        moved = threading.Event()

        def finish() -> None:
            moved.wait(5)
            source.execute_command("MIGRATE", "127.0.0.1", dst, "", 0, 5000, "KEYS", b)
            for port in harness.primaries():
                with harness.server(port).client() as c:
                    c.execute_command("CLUSTER SETSLOT", slot, "NODE", ids[dst])

        finisher = threading.Thread(target=finish)
        finisher.start()
        moved.set()  # the move completes while the next MGET is retrying
        assert cache.mget(["{mig}:a", "{mig}:b"]) == {"{mig}:a": b"1", "{mig}:b": b"2"}
        finisher.join(10)
        assert cache.breaker_openings == 0
    finally:
        source.close()
        target.close()
        cache.close()
        harness.restore()


def test_lease_locks_and_shared_blooms_follow_their_own_node(
    replicated_cluster: ReplicatedClusterHarness, unique_prefix: str
) -> None:
    """An open breaker on one primary stops only the locks and filters whose slot it owns."""
    from redis.cluster import key_slot
    from redis.exceptions import ConnectionError as RedisConnectionError

    from cache_core import CircuitOpenError, RedisBloomFilter

    owners = owner_ports(replicated_cluster)
    tags: dict[int, str] = {}
    i = 0
    while len(tags) < 2:
        tag = f"n{i}"
        i += 1
        tags.setdefault(owners[key_slot(tag.encode())], tag)
    (down_port, down), (_, up) = sorted(tags.items())
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=60)
    with RedisCache.from_url(
        replicated_cluster.url, prefix=unique_prefix, breaker=breaker
    ) as cache:
        cache.set(f"{{{down}}}:seed", b"1")
        node = next(b for n, b in cache.node_breakers.items() if n.endswith(f":{down_port}"))
        node.record_failure(RedisConnectionError("simulated outage of one primary"))
        assert node.state == "open"

        typed: TypedCache[str] = TypedCache(cache, distributed_lock=True)
        assert typed.get_or_set(f"{{{up}}}:x", lambda: "stored") == "stored"
        assert cache.get(f"{{{up}}}:x")  # stored through the healthy node, lock and all
        assert typed.get_or_set(f"{{{down}}}:x", lambda: "loaded") == "loaded"
        with pytest.raises(CircuitOpenError):
            cache.get(f"{{{down}}}:x")

        healthy = RedisBloomFilter(cache, up, capacity=1000)
        healthy.add("a")
        assert "a" in healthy
        with pytest.raises(CircuitOpenError):
            RedisBloomFilter(cache, down, capacity=1000).add("a")
        assert cache.breaker_openings == 1  # the simulated one; nothing else opened
