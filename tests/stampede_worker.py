"""A worker process for the cross-process stampede tests (run with ``python -m``).

Usage: python -m tests.stampede_worker URL PREFIX THREADS LOADER_SECONDS MODE
MODE "lock": TypedCache(distributed_lock=True); "nolock": singleflight only; "hang": the loader
signals it started and then blocks forever (the test kills this process); "dogpile":
dogpile.cache's redis backend with distributed_lock=True, for the benchmark's comparison.
Each loader call INCRs PREFIX:calls in Redis; the worker prints one JSON line of results.
"""

from __future__ import annotations

import json
import sys
import threading
import time

import redis

from cache_core import RedisCache, TypedCache


def main() -> None:
    url, prefix, threads, loader_s, mode = sys.argv[1:6]
    n = int(threads)
    admin = redis.Redis.from_url(url)
    cache = RedisCache.from_url(url, prefix=prefix)  # the default 0.25 s socket timeout
    typed: TypedCache[dict[str, int]] = TypedCache(
        cache, distributed_lock=(mode != "nolock"), lock_timeout=3.0
    )

    def loader() -> dict[str, int]:
        calls = admin.incr(f"{prefix}:calls")
        if mode == "hang":
            admin.set(f"{prefix}:hanging", b"1")
            threading.Event().wait()
        time.sleep(float(loader_s))
        return {"loaded_by_call": int(calls)}

    get_or_set = lambda: typed.get_or_set("hot", loader, ttl=60)  # noqa: E731
    if mode == "dogpile":
        from dogpile.cache import make_region

        region = make_region().configure(
            "dogpile.cache.redis",
            expiration_time=60,
            arguments={
                "url": url,
                "distributed_lock": True,
                "lock_timeout": 3,
                "redis_expiration_time": 60,
                "thread_local_lock": False,
            },
        )
        get_or_set = lambda: region.get_or_create(f"{prefix}:dogpile", loader)  # noqa: E731

    results: list[dict[str, int]] = []
    ends: list[float] = []
    go = threading.Event()

    def caller() -> None:
        go.wait()
        results.append(get_or_set())
        ends.append(time.time())

    workers = [threading.Thread(target=caller) for _ in range(n)]
    for w in workers:
        w.start()
    cache.client.ping()  # a warm connection, as in a running app; the timing starts below
    admin.incr(f"{prefix}:ready")
    admin.blpop([f"{prefix}:go"], timeout=30)  # released by the test, all processes at once
    start = time.time()
    go.set()
    for w in workers:
        w.join()
    print(json.dumps({"start": start, "ends": ends, "results": results}), flush=True)


if __name__ == "__main__":
    main()
