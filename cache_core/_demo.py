"""``python -m cache_core demo``: each protection pattern, shown with measured counts.

Runs on the embedded default (MemoryCache) or, with ``--url redis://...``, on Redis. Every
scenario prints what it measured; nothing is hard-coded.
"""

from __future__ import annotations

import argparse
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from ._memory import MemoryCache
from ._multilevel import MultiLevelCache
from ._redis import RedisCache
from ._typed import TypedCache

__all__ = ["main"]

Scenario = Callable[["DemoContext"], None]


class DemoContext:
    """The byte caches a scenario may use, each in a fresh namespace of its own."""

    def __init__(self, url: str | None) -> None:
        self.url = url
        self.run_id = uuid.uuid4().hex[:8]
        self._owned: list[Any] = []

    def byte_cache(self, name: str) -> Any:
        if self.url is None:
            return MemoryCache(maxsize=100_000)
        cache = RedisCache.from_url(self.url, prefix=f"cache_core_demo:{self.run_id}:{name}")
        self._owned.append(cache)
        return cache

    def close(self) -> None:
        for cache in self._owned:
            try:
                cache.clear()
            finally:
                cache.close()


def _burst(n: int, fn: Callable[[], object]) -> float:
    """Run ``fn`` in ``n`` threads released together; seconds from release to the last return."""
    barrier = threading.Barrier(n)
    starts: list[float] = []
    ends: list[float] = []

    def run() -> None:
        barrier.wait()
        starts.append(time.perf_counter())
        fn()
        ends.append(time.perf_counter())

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return max(ends) - min(starts)


class _Database:
    """A stand-in for a database call: sleeps ``delay`` seconds and counts its calls."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self, value: Any = None) -> Any:
        with self._lock:
            self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        return value


def _stampede_once(ctx: DemoContext, use_get_or_set: bool) -> tuple[int, float]:
    name = "stampede-with" if use_get_or_set else "stampede-without"
    typed: TypedCache[dict[str, Any]] = TypedCache(ctx.byte_cache(name))
    db = _Database(delay=0.05)
    user = {"id": 1, "name": "Ada"}

    def request() -> None:
        if use_get_or_set:
            typed.get_or_set("user:1", lambda: db(user), ttl=60)
        elif typed.get("user:1", None) is None:
            typed.set("user:1", db(user), ttl=60)

    wall = _burst(64, request)
    return db.calls, wall


def stampede(ctx: DemoContext) -> None:
    """64 concurrent requests for one cold key, a 50 ms database call."""
    print("\n== stampede: 64 concurrent requests for one cold key (loader takes 50 ms)")
    for label, use_get_or_set in (("get, then load + set", False), ("get_or_set", True)):
        calls, wall = _stampede_once(ctx, use_get_or_set)
        print(f"   {label:<22} loader calls: {calls:>3}   wall: {wall * 1000:6.1f} ms")


def multilevel(ctx: DemoContext) -> None:
    """1000 reads of 10 hot keys through an in-process L1 over a shared L2."""
    print("\n== multi-level: 1000 reads of 10 hot keys, L1 (in-process) over L2 (shared)")
    l2 = ctx.byte_cache("l2")
    multi = MultiLevelCache(MemoryCache(maxsize=1000), l2, l1_ttl=30)
    typed: TypedCache[int] = TypedCache(multi)
    l2_typed: TypedCache[int] = TypedCache(l2)
    for i in range(10):
        l2_typed.set(f"item:{i}", i, ttl=300)  # written by "another process": only L2 has it
    start = time.perf_counter()
    for n in range(1000):
        typed.get(f"item:{n % 10}")
    wall = time.perf_counter() - start
    stats = multi.stats()
    print(
        f"   L1 hits: {stats.l1_hits}   L2 hits (promoted to L1): {stats.l2_hits}   "
        f"misses: {stats.misses}   mean read: {wall / 1000 * 1e6:.1f} µs"
    )


class _VirtualClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _avalanche_run(jitter: float, beta: float | None, seed: int) -> tuple[list[int], int]:
    """Loader calls per 100 ms bucket, and readers that found no value, around the mass expiry.

    10k keys are written at t = 0 with a 10 s TTL; from t = 8.8 s to 10.2 s every key is read once
    per 100 ms bucket, at a random moment within it.
    """
    import random

    clock = _VirtualClock()
    rng = random.Random(seed)
    typed: TypedCache[int] = TypedCache(
        MemoryCache(maxsize=20_000, timer=clock),
        ttl_jitter=jitter,
        early_refresh=beta,
        clock=clock,
        random=rng.random,
    )
    calls = [0]

    def load() -> int:
        calls[0] += 1
        clock.now += 0.05  # the database call takes 50 ms (XFetch measures it as Δ)
        return 1

    keys = [f"item:{i}" for i in range(10_000)]
    for key in keys:  # the warm-up: every key written at t = 0
        clock.now = 0.0
        typed.get_or_set(key, load, ttl=10)
    warm_misses = typed.stats().misses
    buckets: list[int] = []
    for b in range(88, 102):
        before = calls[0]
        order = keys[:]
        rng.shuffle(order)
        for key in order:
            clock.now = b * 0.1 + rng.random() * 0.1
            typed.get_or_set(key, load, ttl=10)
        buckets.append(calls[0] - before)
    return buckets, typed.stats().misses - warm_misses


def avalanche(ctx: DemoContext) -> None:
    """Mass expiry: 10k keys written together, then steady traffic; loader calls over time."""
    print(
        "\n== avalanche: 10k keys warmed at once (TTL 10 s); each read every 100 ms, t = 8.8-10.2 s"
    )
    print("   (virtual time on an in-process cache: instant and repeatable)")
    runs = {
        "no protection": (0.0, None),
        "ttl_jitter=0.1": (0.1, None),
        "early_refresh=1 (XFetch)": (0.0, 1.0),
        "early_refresh=4 (XFetch)": (0.0, 4.0),
        "ttl_jitter=0.1 + early_refresh=4": (0.1, 4.0),
    }
    for label, (jitter, beta) in runs.items():
        buckets, blocked = _avalanche_run(jitter, beta, seed=42)
        mean = sum(buckets) / len(buckets)
        peak = max(buckets)
        print(
            f"   {label:<34} loads: {sum(buckets):>5}  peak per 100 ms: {peak:>5}  "
            f"peak-to-mean: {peak / mean if mean else 0.0:5.1f}  readers who missed: {blocked:>5}"
        )


def memoize_scenario(ctx: DemoContext) -> None:
    """@memoize: 64 concurrent calls for one cold key, then hits, invalidate and cache_clear."""
    from ._memoize import memoize  # here, so the other scenarios do not depend on it

    print("\n== memoize: 64 concurrent calls of get_user(7) (loader takes 50 ms)")
    db = _Database(delay=0.05)

    @memoize(ctx.byte_cache("memoize"), ttl=60, namespace="demo:get_user")
    def get_user(user_id: int, *, fields: tuple[str, ...] = ("id", "name")) -> dict[str, Any]:
        user: dict[str, Any] = db({"id": user_id, "name": "Ada", "fields": list(fields)})
        return user

    wall = _burst(64, lambda: get_user(7))
    print(f"   loader calls: {db.calls}   wall: {wall * 1000:.1f} ms   {get_user.cache_info()}")
    get_user(user_id=7, fields=("id", "name"))  # the same bound arguments: the same entry
    print(f"   get_user(user_id=7, fields=('id', 'name')): loader calls: {db.calls}")
    print(f"   key: {get_user.cache_key(7)}")
    get_user.invalidate(7)
    get_user(7)
    print(f"   after invalidate(7):  loader calls: {db.calls}")
    get_user.cache_clear()
    get_user(7)
    print(f"   after cache_clear():  loader calls: {db.calls}   {get_user.cache_info()}")


class _EveryKey:
    """A "bloom filter" that holds every key: ProtectedCache with negative caching only."""

    def __contains__(self, key: object) -> bool:
        return True

    def add(self, key: object) -> None:
        pass

    def update(self, keys: object) -> None:
        pass

    def contains_many(self, keys: Any) -> list[bool]:
        return [True for _ in keys]


def penetration(ctx: DemoContext) -> None:
    """10k requests for ids that do not exist: no guard, negative caching only, bloom guard."""
    import random

    from ._bloom import BloomFilter  # here, so the other scenarios do not depend on them
    from ._protected import ProtectedCache

    print("\n== penetration: 10k requests for 2k distinct ids that do not exist (10k ids do)")
    existing = [f"user:{i}" for i in range(10_000)]
    rng = random.Random(6)
    requests = [f"user:{1_000_000 + rng.randrange(2_000)}" for _ in range(10_000)]
    bloom = BloomFilter(10_000, 0.01)
    bloom.update(existing)  # filled from the database's ids
    modes: dict[str, Any] = {"no guard": None, "negative caching only": _EveryKey()}
    modes["bloom guard + negative caching"] = bloom
    for n, (label, guard_bloom) in enumerate(modes.items()):
        typed: TypedCache[Any] = TypedCache(ctx.byte_cache(f"penetration-{n}"))
        db = _Database()
        start = time.perf_counter()
        if guard_bloom is None:
            for key in requests:  # the original design: a miss goes to the database, always
                if typed.get(key, None) is None:
                    value = db(None)
                    if value is not None:
                        typed.set(key, value)
            extra = ""
        else:
            guard: ProtectedCache[Any] = ProtectedCache(typed, guard_bloom, null_ttl=300)
            for key in requests:
                guard.get_or_set(key, db)
            s = guard.stats()
            extra = f"   rejected: {s.rejected:>5}   tombstone hits: {s.negative_hits:>5}"
        wall = time.perf_counter() - start
        print(f"   {label:<31} database calls: {db.calls:>5}{extra}   wall: {wall * 1000:6.0f} ms")


SCENARIOS: dict[str, Scenario] = {
    "stampede": stampede,
    "multilevel": multilevel,
    "avalanche": avalanche,
    "memoize": memoize_scenario,
    "penetration": penetration,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cache_core", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the demo scenarios")
    demo.add_argument("--url", help="run on Redis at this URL (redis://host:port/db)")
    demo.add_argument(
        "--only", choices=sorted(SCENARIOS), action="append", help="run only these scenarios"
    )
    args = parser.parse_args(argv)
    ctx = DemoContext(args.url)
    where = args.url or "the embedded MemoryCache"
    print(f"cache_core demo on {where}")
    try:
        for name, scenario in SCENARIOS.items():
            if args.only and name not in args.only:
                continue
            scenario(ctx)
    finally:
        ctx.close()
    return 0
