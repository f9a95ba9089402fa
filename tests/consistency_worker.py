"""A child process that loads a key while the test's process updates it (tests/test_consistency).

The "database" is a Redis key both processes read, so the child's loader reads the value as it
was when its load began; the parent updates it and writes the cache between the read and the
child's store.
"""

from __future__ import annotations

import sys
from typing import Any

import redis

from cache_core import RedisCache, TypedCache, memoize


def main(port: int, prefix: str, config: str, read_marker: str, go_marker: str) -> None:
    client = redis.Redis(host="127.0.0.1", port=port)
    cache = RedisCache(client, prefix=prefix)
    options: dict[str, Any] = {}
    if config == "distributed_lock":
        options["distributed_lock"] = True
    typed: TypedCache[Any] = TypedCache(cache, ttl_jitter=0.0, **options)

    def load() -> Any:
        value = client.get("db:k")  # the "database" read, before the update
        client.set(read_marker, b"1")
        # Wait (bounded) for the parent to update the database and the cache.
        client.blpop([go_marker], timeout=10)
        return value.decode() if value is not None else None

    if config == "memoize":

        @memoize(cache, ttl=60, namespace="consistency")
        def fetch(row: int) -> Any:
            return load()

        result = fetch(1)
    else:
        result = typed.get_or_set("k", load, ttl=60)
    print(result, flush=True)
    client.close()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5])
