"""Loads for benchmarks/test_bench_consistency.py: one process that reads keys through a cache.

Run as ``python -m benchmarks.race_worker PORT PREFIX CONFIG KEYS SEED``: for each key, a thread
calls the read-through with a loader that reads ``db:<key>`` from Redis (the "database"), marks
``read:<key>``, then takes 20-200 ms before returning what it read. Prints one JSON line: what
each caller got.
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from typing import Any

import redis

from benchmarks.race_common import build


def main(port: int, prefix: str, config: str, keys: list[str], seed: int) -> None:
    client = redis.Redis(host="127.0.0.1", port=port, max_connections=2000)
    rng = random.Random(seed)
    delays = {key: rng.uniform(0.02, 0.2) for key in keys}
    read = build(client, prefix, config)
    got: dict[str, Any] = {}

    def one(key: str) -> None:
        def load() -> str:
            value = (client.get(f"db:{key}") or b"?").decode()
            client.set(f"read:{key}", b"1")
            time.sleep(delays[key])  # the database query's duration (simulated)
            return value

        got[key] = read(key, load)

    threads = [threading.Thread(target=one, args=(key,)) for key in keys]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    print(json.dumps(got), flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4].split(","), int(sys.argv[5]))
