"""Failover figures of issue 15 on real processes, at the issue's full size.

    .venv/bin/python -m benchmarks.cluster_failover [--only kill,reshard,planned,crash,cost]
        [--threads 16] [--keys 1000] [--slots 2000] [--runs 1]

Starts its own 3 primaries + 3 replicas cluster (node timeout 1000 ms, full coverage no) and
its own Sentinel setup (1 primary, 1 replica, 1 sentinel) in a temporary directory, runs:

- kill: SIGKILL one primary under ``--threads`` threads of ``TypedCache.get_or_set`` over
  ``MultiLevelCache(MemoryCache, RedisCache)`` with ``distributed_lock`` and ``stale_ttl``:
  loader calls for keys on the healthy primaries (target 0), breaker openings on healthy
  primaries (target 0), and when the dead node's keys were last loaded relative to the
  promotion of its replica (target <= 1 s);
- reshard: ``redis-cli --cluster reshard`` of ``--slots`` slots under load with hash-tagged
  MGETs and lease-locked get_or_set (target: 0 breaker openings, 0 caller errors);
- planned: ``SENTINEL FAILOVER`` under writes (target: 0 acknowledged deletes undone, 0
  acknowledged sets lost);
- crash: SIGKILL of the primary behind Sentinel (target: back within 1 s of the switch);
- cost: a cluster GET hit with per-node breakers vs none, and set/get behind Sentinel (WAIT)
  vs a plain URL on the same primary (interleaved medians).

Prints one line per figure and a JSON summary. Results go to BENCHMARKS.md by hand.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from cache_core import BackendError, MemoryCache, MultiLevelCache, RedisCache, TypedCache
from tests.cluster_load import (
    GetOrSetLoad,
    Writers,
    first_slots,
    owner_ports,
    promoted_replica,
    reshard,
    tags_in_slots,
    wait_promoted,
)
from tests.conftest import wait_for
from tests.redis_harness import HOST, ReplicatedClusterHarness, SentinelHarness


def _typed(cache: RedisCache) -> TypedCache[str]:
    ml = MultiLevelCache(MemoryCache(), cache, l1_ttl=0.5)
    return TypedCache(ml, distributed_lock=True, stale_ttl=60)


def run_kill(harness: ReplicatedClusterHarness, threads: int, nkeys: int) -> dict[str, Any]:
    victim = harness.primaries()[0]
    replica = promoted_replica(harness, victim)
    owners = owner_ports(harness)
    cache = RedisCache.from_url(harness.url, prefix=f"kill{random.randrange(10**9)}")
    client: Any = cache.client
    keys = [f"k{i}" for i in range(nkeys)]
    on_victim = {k for k in keys if owners[client.keyslot(cache.redis_key(k))] == victim}
    load = GetOrSetLoad(_typed(cache), keys, threads=threads)
    load.warm()
    load.start()
    time.sleep(1.0)
    harness.server(victim).kill()
    killed = time.monotonic()
    promoted = wait_promoted(harness, replica)
    time.sleep(3.0)
    report = load.stop()
    healthy_openings = sum(
        b.opened_count for name, b in cache.node_breakers.items() if not name.endswith(f":{victim}")
    )
    cache.close()
    harness.restore()
    victim_loads = [t for t, k in report.loads if k in on_victim]
    return {
        "calls": report.calls,
        "caller errors": len(report.errors),
        "kill -> promotion s": round(promoted - killed, 2),
        "loader calls, healthy primaries' keys (target 0)": sum(
            1 for _, k in report.loads if k not in on_victim
        ),
        "breaker openings on healthy primaries (target 0)": healthy_openings,
        "loader calls, dead primary's keys": len(victim_loads),
        "dead node's keys last loaded, s after promotion (target <= 1)": round(
            max(victim_loads) - promoted, 2
        )
        if victim_loads
        else None,
    }


def run_reshard(harness: ReplicatedClusterHarness, threads: int, slots: int) -> dict[str, Any]:
    src, dst = harness.primaries()[:2]
    owned = len([s for s, p in owner_ports(harness).items() if p == src])
    moving = first_slots(harness, src, min(slots, owned))
    tags = tags_in_slots(moving)
    cache = RedisCache.from_url(harness.url, prefix=f"rs{random.randrange(10**9)}")
    typed = _typed(cache)
    for start in range(0, len(tags), 500):
        cache.mset({f"{{{t}}}:{x}": b"1" for t in tags[start : start + 500] for x in "ab"})
    errors: list[str] = []
    calls = [0]
    stop = threading.Event()
    lock = threading.Lock()

    def work(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            tag = rng.choice(tags)
            try:
                if len(cache.mget([f"{{{tag}}}:a", f"{{{tag}}}:b"])) != 2:
                    raise AssertionError("a key went missing")
                key = f"{{{tag}}}:c{rng.randrange(5)}"
                typed.get_or_set(key, lambda: "loaded", ttl=0.2)
            except (BackendError, AssertionError) as exc:
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}")
            with lock:
                calls[0] += 1

    workers = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(threads)]
    for w in workers:
        w.start()
    took = reshard(harness, src, dst, len(moving))
    stop.set()
    for w in workers:
        w.join(30)
    result = {
        "slots moved": len(moving),
        "seconds": round(took, 1),
        "calls": calls[0],
        "caller errors (target 0)": len(errors),
        "breaker openings (target 0)": cache.breaker_openings,
        "routing retries": cache.routing_retries,
        "first errors": errors[:3],
    }
    cache.close()
    return result


def run_planned(harness: SentinelHarness) -> dict[str, Any]:
    old = harness.master_port()
    cache = RedisCache.from_url(harness.url, prefix=f"pl{random.randrange(10**9)}")
    writers = Writers(cache, per_thread=20000)
    with harness.server_on(old).client() as admin:  # type: ignore[arg-type]
        writers.prepare(admin)
    writers.start()
    wait_for(lambda: len(writers.acked_deletes) > 500, 10)
    with harness.sentinel() as s:
        s.execute_command("SENTINEL FAILOVER", harness.SERVICE)
    asked = time.monotonic()
    wait_for(lambda: harness.master_port() not in (None, old), 15)
    switched = time.monotonic()
    new = harness.master_port()
    count = len(writers.acked_deletes)
    wait_for(lambda: len(writers.acked_deletes) > count + 1000, 15)
    writers.finish()
    cache.exists("x")
    with harness.server_on(new).client() as primary:  # type: ignore[arg-type]
        undone = sum(1 for k in writers.acked_deletes if primary.exists(cache.redis_key(k)))
        lost = sum(1 for k in writers.acked_sets if primary.get(cache.redis_key(k)) != b"new")
    window = [t - asked for t, _ in writers.failures]
    cache.close()
    server = harness.server_on(old)  # type: ignore[arg-type]
    with server.client() as c:
        c.execute_command("REPLICAOF", HOST, new)
    harness.restore()
    return {
        "acknowledged deletes": len(writers.acked_deletes),
        "acknowledged deletes undone (target 0)": undone,
        "acknowledged sets": len(writers.acked_sets),
        "acknowledged sets lost (target 0)": lost,
        "failover asked -> switch seen s": round(switched - asked, 2),
        "writes refused from/to s": [round(window[0], 2), round(window[-1], 2)] if window else None,
    }


def run_crash(harness: SentinelHarness, threads: int) -> dict[str, Any]:
    old = harness.master_port()
    cache = RedisCache.from_url(harness.url, prefix=f"cr{random.randrange(10**9)}")
    successes: list[float] = []
    failures: list[float] = []
    stop = threading.Event()

    def probe(t: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            try:
                cache.set(f"p{t}:{i % 50}", b"x")
                cache.get(f"p{t}:{i % 50}")
                successes.append(time.monotonic())
            except BackendError:
                failures.append(time.monotonic())
                stop.wait(0.005)  # a client backs off instead of spinning on a failing call

    workers = [threading.Thread(target=probe, args=(t,), daemon=True) for t in range(threads)]
    for w in workers:
        w.start()
    wait_for(lambda: len(successes) > 100, 10)
    harness.server_on(old).kill()  # type: ignore[arg-type]
    killed = time.monotonic()
    wait_for(lambda: harness.master_port() not in (None, old), 30)
    switched = time.monotonic()
    wait_for(lambda: any(t > switched for t in successes), 10)
    stop.set()
    for w in workers:
        w.join(10)
    first_failure = min(t for t in failures if t > killed)  # calls in flight may still succeed
    back = min(t for t in successes if t > first_failure)
    new = harness.master_port()
    cache.close()
    server = harness.server_on(old)  # type: ignore[arg-type]
    server.extra = ("--replicaof", HOST, str(new))
    server.start()
    harness.restore()
    return {
        "kill -> switch s": round(switched - killed, 2),
        "switch -> first success s (target <= 1)": round(back - switched, 2),
    }


def _interleaved(fns: dict[str, Any], rounds: int = 30, inner: int = 100) -> dict[str, float]:
    """Median microseconds per call of each fn, rounds alternating their order."""
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(rounds):
        order = list(fns) if r % 2 else list(reversed(list(fns)))
        for name in order:
            start = time.perf_counter()
            for _ in range(inner):
                fns[name]()
            samples[name].append((time.perf_counter() - start) / inner * 1e6)
    return {name: round(statistics.median(v), 1) for name, v in samples.items()}


def run_cost_cluster(harness: ReplicatedClusterHarness) -> dict[str, Any]:
    """A cluster GET hit with per-node breakers vs without a breaker vs raw redis-py."""
    from redis.cluster import RedisCluster

    port = harness.primaries()[0]
    node_breakers = RedisCache.from_url(harness.url, prefix="cost")
    no_breaker = RedisCache.from_url(harness.url, prefix="cost", breaker=None)
    raw = RedisCluster(host=HOST, port=port)
    node_breakers.set("k", b"v")
    result = _interleaved(
        {
            "raw RedisCluster.get us": lambda: raw.get("cost:k"),
            "RedisCache.get, no breaker us": lambda: no_breaker.get("k"),
            "RedisCache.get, per-node breakers us": lambda: node_breakers.get("k"),
        }
    )
    raw.close()
    node_breakers.close()
    no_breaker.close()
    return result


def run_cost_sentinel(harness: SentinelHarness) -> dict[str, Any]:
    """set/get through redis+sentinel:// (WAIT for the replica) vs redis:// on the same primary."""
    sentinel = RedisCache.from_url(harness.url, prefix="cost")
    plain = RedisCache.from_url(f"redis://{HOST}:{harness.master_port()}/0", prefix="cost")
    plain.set("k", b"v")
    result = _interleaved(
        {
            "redis:// set us": lambda: plain.set("k", b"v"),
            "redis+sentinel:// set us": lambda: sentinel.set("k", b"v"),
            "redis:// get us": lambda: plain.get("k"),
            "redis+sentinel:// get us": lambda: sentinel.get("k"),
        }
    )
    sentinel.close()
    plain.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="kill,reshard,planned,crash,cost")
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--slots", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    only = set(args.only.split(","))
    results: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if only & {"kill", "reshard", "cost"}:
            cluster = ReplicatedClusterHarness(Path(tmp) / "cluster").start()
            try:
                for _ in range(args.runs):
                    if "kill" in only:
                        r = run_kill(cluster, args.threads, args.keys)
                        results.setdefault("kill", []).append(r)
                        print("kill", json.dumps(r), flush=True)
                    if "reshard" in only:
                        r = run_reshard(cluster, args.threads, args.slots)
                        results.setdefault("reshard", []).append(r)
                        print("reshard", json.dumps(r), flush=True)
                    if "cost" in only:
                        r = run_cost_cluster(cluster)
                        results.setdefault("cost cluster", []).append(r)
                        print("cost cluster", json.dumps(r), flush=True)
            finally:
                cluster.stop()
        if only & {"planned", "crash", "cost"}:
            sentinel = SentinelHarness(Path(tmp) / "sentinel").start()
            try:
                for _ in range(args.runs):
                    if "planned" in only:
                        r = run_planned(sentinel)
                        results.setdefault("planned", []).append(r)
                        print("planned", json.dumps(r), flush=True)
                    if "crash" in only:
                        r = run_crash(sentinel, args.threads)
                        results.setdefault("crash", []).append(r)
                        print("crash", json.dumps(r), flush=True)
                    if "cost" in only:
                        r = run_cost_sentinel(sentinel)
                        results.setdefault("cost sentinel", []).append(r)
                        print("cost sentinel", json.dumps(r), flush=True)
            finally:
                sentinel.stop()
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
