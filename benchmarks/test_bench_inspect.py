"""``python -m cache_core inspect`` on 1M keys with ``--sample 10000`` (issue 17: under 2 s).

The keys are written by a Lua script in chunks of 100k (about a second in all), half of them as
typed JSON entries with a TTL, and a shared bloom filter and a held lease lock are added, so the
library-key pass has something to find. Timed: the whole report (sampling pass + library-key
pass over the full keyspace), in-process and through the command line (interpreter start
included).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from typing import Any

import pytest
import redis

from benchmarks.conftest import _RESULTS, Comparison
from cache_core import RedisBloomFilter, RedisCache
from cache_core._inspect import SAMPLED_LIBRARY_BUDGET, inspect_redis
from cache_core._lease_lock import LeaseLockFactory

pytestmark = pytest.mark.benchmark(group="inspect")

KEYS = 1_000_000
CHUNK = 100_000
_FILL = """
local value = ARGV[2]
for i = tonumber(ARGV[3]), tonumber(ARGV[4]) do
    if i % 2 == 0 then
        redis.call('SET', ARGV[1] .. i, value, 'EX', 3600)
    else
        redis.call('SET', ARGV[1] .. i, value)
    end
end
"""


def test_inspect_one_million_keys_sample_10000(benchmark: Any, redis_client: redis.Redis) -> None:
    fill = redis_client.register_script(_FILL)
    value = b"\xcc\x01\x00j" + b'{"id": 42, "name": "Ada Lovelace"}'
    for start in range(0, KEYS, CHUNK):
        fill(args=["big:user:", value, start, start + CHUNK - 1])
    assert redis_client.dbsize() == KEYS
    cache = RedisCache(redis_client, prefix="big")
    RedisBloomFilter(cache, "ids", 100_000).update([f"id:{i}" for i in range(1000)])
    assert LeaseLockFactory(cache).lock("user:1", 60).try_acquire()

    walls: list[float] = []

    def run() -> Any:
        t0 = time.perf_counter()
        # as the command line runs it: --sample bounds the library-key pass to 1 s by default
        report = inspect_redis(
            redis_client, "big", sample=10_000, library_budget=SAMPLED_LIBRARY_BUDGET
        )
        walls.append(time.perf_counter() - t0)
        return report

    report = benchmark.pedantic(run, rounds=5, iterations=1)
    assert report.keys_seen == 10_000
    cli: list[float] = []
    for _ in range(3):
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "cache_core", "inspect", "--url",
             redis_client.connection_pool.connection_kwargs.get("url", "")
             or f"redis://127.0.0.1:{redis_client.connection_pool.connection_kwargs['port']}/0",
             "--prefix", "big", "--sample", "10000", "--quiet"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        cli.append(time.perf_counter() - t0)
    result = Comparison(
        "inspect 1M keys --sample 10000 (wall)",
        "in-process",
        {
            "in-process": statistics.median(walls) * 1e9,
            "command line": statistics.median(cli) * 1e9,
        },
        {"in-process": 1.0, "command line": statistics.median(cli) / statistics.median(walls)},
        target="< 2 s",
        notes=[
            f"estimated keys {report.keys_estimated:,} (true {KEYS:,}), "
            f"scan coverage {report.scan_coverage:.2%}",
            f"library-key pass covered {report.library_coverage:.0%} of the keyspace "
            f"(locks found {len(report.locks)}/1, bloom filters {len(report.blooms)}/1)",
        ],
    )
    _RESULTS.append(result)
    redis_client.flushdb()
