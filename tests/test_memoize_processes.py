"""memoize across processes: shared results through Redis, and the demo scenario."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import redis

from tests.redis_harness import RedisServer

ROOT = Path(__file__).resolve().parent.parent

# The function's arguments include a set and a dict of str: their iteration order depends on
# the hash seed, so only a canonical encoding gives both processes the same key.
SCRIPT = """
import json, sys
import redis
from cache_core import RedisCache, memoize

url, prefix = sys.argv[1], sys.argv[2]
client = redis.Redis.from_url(url)

@memoize(RedisCache(client, prefix=prefix), namespace="shared:report", ttl=60)
def report(tags, weights, limit=10):
    client.incr(prefix + ":calls")  # counted in Redis: visible to both processes
    return {"tags": sorted(tags), "total": sum(weights.values()), "limit": limit}

tags = {"alpha", "beta", "gamma", "delta", "epsilon"}
weights = {"w" + str(i): i for i in range(20)}
print(json.dumps({"value": report(tags, weights), "info": report.cache_info()._asdict(),
                  "key": report.cache_key(tags, weights), "set_order": list(tags)}))
"""


def _run(url: str, prefix: str, seed: str) -> dict[str, object]:
    env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, url, prefix],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def test_two_processes_with_different_hash_seeds_share_results(
    redis_server: RedisServer, redis_client: redis.Redis, unique_prefix: str
) -> None:
    first = _run(redis_server.url, unique_prefix, "1")
    second = _run(redis_server.url, unique_prefix, "2")
    assert first["set_order"] != second["set_order"]  # the seeds really differ
    assert first["key"] == second["key"]
    assert first["value"] == second["value"]
    assert first["info"] == {"hits": 0, "misses": 1, "errors": 0}
    assert second["info"] == {"hits": 1, "misses": 0, "errors": 0}
    assert redis_client.get(f"{unique_prefix}:calls") == b"1"


def test_demo_scenario(redis_server: RedisServer) -> None:
    for extra in ([], ["--url", redis_server.url]):
        env = {k: v for k, v in os.environ.items() if k != "CACHE_CORE_URL"}
        out = subprocess.run(
            [sys.executable, "-m", "cache_core", "demo", "--only", "memoize", *extra],
            capture_output=True,
            text=True,
            env={**env, "PYTHONPATH": str(ROOT)},
            timeout=120,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        assert "loader calls: 1   wall:" in out.stdout
        assert "CacheInfo(hits=63, misses=1, errors=0)" in out.stdout
        assert "after invalidate(7):  loader calls: 2" in out.stdout
        assert "after cache_clear():  loader calls: 3" in out.stdout
