"""A bounded threaded soak with exact end-state checks and a memory-growth check (issue 8).

16 threads run a mixed workload (get / set / delete / mget / mset / get_or_set) for a few
seconds, each operation going at random to one of two typed caches:
``TypedCache(MultiLevelCache(MemoryCache(), RedisCache(...)))`` and ``TypedCache(MemoryCache())``.

* Every thread owns a disjoint range of keys and keeps a private model of them. Nobody else
  writes them, so every read of an owned key must match the model exactly, at any moment, and
  so must the final state (read through the cache and, for the multi-level cache, from L2).
* A shared range of hot keys is read by everybody through ``get_or_set``, and now and then
  invalidated (deleted) by somebody: per key, loader calls ≤ invalidations + 1.
* No operation may raise.

The body runs four times in one process on the same caches (the key space is bounded, so the
caches reach a steady state): resident memory and traced allocations must stop growing after
the second repetition.
"""

from __future__ import annotations

import gc
import os
import random
import threading
import time
import tracemalloc
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis

from cache_core import MemoryCache, MultiLevelCache, RedisCache, TypedCache

THREADS = 16
OWNED = 12  # keys per thread per target
HOT = 6
REP_SECONDS = 2.5
MAX_OPS = 20_000  # per thread per repetition: the time bound is the one that normally ends it
REPS = 4
RSS_TOLERANCE = 5 * 1024 * 1024
TRACED_TOLERANCE = 256 * 1024


@dataclass
class Target:
    """One typed cache under soak, with the shared counters for its hot keys."""

    name: str
    typed: TypedCache[Any]
    l2_view: TypedCache[Any] | None = None  # reads L2 directly (multi-level only)
    lock: threading.Lock = field(default_factory=threading.Lock)
    loads: Counter[str] = field(default_factory=Counter)
    invalidations: Counter[str] = field(default_factory=Counter)

    def hot_loader(self, key: str) -> Any:
        def load() -> Any:
            with self.lock:
                self.loads[key] += 1
            return ["hot", key]

        return load


class Worker:
    """One soak thread: a private model of its owned keys in every target."""

    def __init__(self, index: int, targets: list[Target]) -> None:
        self.index = index
        self.targets = targets
        self.rng = random.Random(index)
        self.seq = 0
        # target name -> owned key -> value it must hold (None: absent)
        self.model: dict[str, dict[str, Any]] = {
            t.name: {f"own:{index}:{i}": None for i in range(OWNED)} for t in targets
        }
        self.own_loads: Counter[str] = Counter()
        self.own_deletes: Counter[str] = Counter()
        self.ops = 0

    def value(self) -> list[Any]:
        self.seq += 1
        return ["v", self.index, self.seq]

    def step(self) -> None:
        target = self.rng.choice(self.targets)
        typed, model = target.typed, self.model[target.name]
        key = self.rng.choice(list(model))
        hot = f"hot:{self.rng.randrange(HOT)}"
        op = self.rng.random()
        if op < 0.25:
            want = model[key]
            got = typed.get(key, None)
            assert got == want, f"{target.name} get({key}) = {got!r}, model {want!r}"
            got_hot = typed.get_or_set(hot, target.hot_loader(hot))
            assert got_hot == ["hot", hot]
        elif op < 0.45:
            value = self.value()
            typed.set(key, value, ttl=self.rng.choice([None, 300]))
            model[key] = value
        elif op < 0.55:
            removed = typed.delete(key)
            assert removed is (model[key] is not None), f"{target.name} delete({key})"
            model[key] = None
            self.own_deletes[f"{target.name}/{key}"] += 1
        elif op < 0.7:
            keys = [*self.rng.sample(list(model), 4), hot]
            got = typed.mget(keys)
            for k in keys[:4]:
                assert got.get(k) == model[k], f"{target.name} mget {k}: {got.get(k)!r}"
            assert got.get(hot, ["hot", hot]) == ["hot", hot]
        elif op < 0.8:
            items = {k: self.value() for k in self.rng.sample(list(model), 3)}
            typed.mset(items)
            model.update(items)
        elif op < 0.98:
            fresh = self.value()
            calls = []

            def load() -> Any:
                calls.append(1)
                return fresh

            got = typed.get_or_set(key, load)
            if model[key] is None:
                assert got == fresh and calls == [1], f"{target.name} get_or_set({key}) miss"
                model[key] = fresh
                self.own_loads[f"{target.name}/{key}"] += 1
            else:
                assert got == model[key] and calls == [], f"{target.name} get_or_set({key}) hit"
        else:
            with target.lock:
                target.invalidations[hot] += 1  # counted before it can cause a reload
            typed.delete(hot)
        self.ops += 1

    def run(self, barrier: threading.Barrier, errors: list[BaseException]) -> None:
        try:
            barrier.wait(10)
            deadline = time.monotonic() + REP_SECONDS
            for _ in range(MAX_OPS):
                if time.monotonic() >= deadline:
                    break
                self.step()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _soak_once(targets: list[Target], workers: list[Worker]) -> int:
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(workers))
    before = sum(w.ops for w in workers)
    threads = [
        threading.Thread(target=w.run, args=(barrier, errors), name=f"soak-{w.index}")
        for w in workers
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(REP_SECONDS + 60)
    assert not any(t.is_alive() for t in threads), "a soak thread hung"
    if errors:
        raise AssertionError(f"{len(errors)} soak thread(s) failed: {errors[:3]!r}") from errors[0]
    _check_final_state(targets, workers)
    return sum(w.ops for w in workers) - before


def _check_final_state(targets: list[Target], workers: list[Worker]) -> None:
    for target in targets:
        views = [target.typed] + ([target.l2_view] if target.l2_view is not None else [])
        for worker in workers:
            model = worker.model[target.name]
            for view in views:
                assert view.mget(list(model)) == {k: v for k, v in model.items() if v is not None}
            for key, want in model.items():
                assert target.typed.get(key, None) == want
                # get_or_set loads an owned key only after it was absent: at start or deleted.
                name = f"{target.name}/{key}"
                assert worker.own_loads[name] <= worker.own_deletes[name] + 1, name
        for j in range(HOT):
            key = f"hot:{j}"
            assert target.loads[key] <= target.invalidations[key] + 1, (
                f"{target.name} {key}: {target.loads[key]} loads for "
                f"{target.invalidations[key]} invalidations"
            )
        assert sum(target.loads.values()) >= HOT  # the hot keys really were loaded


@pytest.mark.slow
def test_soak_invariants_and_memory(redis_client: redis.Redis, unique_prefix: str) -> None:
    l2 = RedisCache(redis_client, prefix=unique_prefix)
    targets = [
        Target(
            "multilevel",
            TypedCache(MultiLevelCache(MemoryCache(), l2, l1_ttl=30)),
            l2_view=TypedCache(l2),
        ),
        Target("memory", TypedCache(MemoryCache())),
    ]
    workers = [Worker(i, targets) for i in range(THREADS)]
    rss: list[int] = []
    traced: list[int] = []
    ops: list[int] = []
    tracemalloc.start()
    try:
        for _ in range(REPS):
            ops.append(_soak_once(targets, workers))
            gc.collect()
            traced.append(tracemalloc.get_traced_memory()[0])
            rss.append(_rss())
    finally:
        tracemalloc.stop()
    report = (
        f"ops per rep {ops}, rss MB {[round(r / 2**20, 1) for r in rss]}, "
        f"traced KB {[t // 1024 for t in traced]}"
    )
    print(report)
    # Every rep did real work in every thread (the bound is time, not a stuck barrier).
    assert min(ops) >= THREADS * 50, report
    assert all(w.ops >= 50 * REPS for w in workers), [w.ops for w in workers]
    assert rss[-1] - rss[1] < RSS_TOLERANCE, report
    assert traced[-1] - traced[1] < TRACED_TOLERANCE, report
