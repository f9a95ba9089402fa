"""One worker process of the outage benchmark (benchmarks/test_bench_consistency.py).

``python -m benchmarks.outage_worker URL DIR INDEX``: reads ``k`` through a TypedCache over a
``RedisCache.from_url`` cache with default settings, as fast as it can (a 1 ms think time), until
``DIR/stop`` exists. Worker 0 is the writer: once ``DIR/paused`` exists it sets ``k`` to "new"
(which fails: Redis is paused). Prints one JSON line: the wall-clock times at which it read the
old value, and at which a read of Redis succeeded again after failing.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from cache_core import BackendError, RedisCache, TypedCache


def main(url: str, folder: Path, index: int) -> None:
    cache = RedisCache.from_url(url, prefix="outage")
    typed: TypedCache[str] = TypedCache(cache, ttl_jitter=0.0)
    old_reads: list[float] = []
    back: list[float] = []  # times a read of Redis succeeded after one that failed
    failing = False
    write_error = ""
    wrote = False
    while not (folder / "stop").exists():
        if index == 0 and not wrote and (folder / "paused").exists():
            wrote = True
            try:
                typed.set("k", "new", ttl=60)
            except BackendError as exc:
                write_error = type(exc).__name__
        value = typed.get_or_set("k", lambda: "new", ttl=60)  # the database holds "new"
        now = time.time()
        if value == "old":
            old_reads.append(now)
        try:
            cache.exists("probe")
        except BackendError:
            failing = True
        else:
            if failing:
                back.append(now)
            failing = False
        time.sleep(0.001)
    result: dict[str, Any] = {
        "index": index,
        "old_reads": old_reads,
        "back": back,
        "write_error": write_error,
        "probe_delay": cache.breaker.probe_delay if cache.breaker else None,
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]))
