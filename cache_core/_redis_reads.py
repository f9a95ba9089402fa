"""The reads of ``RedisCache`` that also tell how long each hit has left (GET + PTTL).

``MultiLevelCache`` promotes an L2 hit into L1 for no longer than it has left in Redis, so it
reads through these: one pipelined round trip for a key or a batch (split per node on a
cluster). A key with a delete still owed to Redis (``_redis_pending``) is never reported.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import redis
from redis.cluster import RedisCluster

from ._redis_dispatch import Dispatcher

__all__ = ["TimedReads", "seconds_left"]


def seconds_left(pttl: int) -> float | None:
    """A PTTL reply in seconds: -1 no expiry (None), -2 gone (expired between the GET and the
    PTTL: ~0 left)."""
    if pttl == -1:
        return None
    return max(pttl, 0) / 1000.0


class TimedReads:
    """GET + PTTL reads of one cache: its client, dispatcher and owed deletes ``pending``."""

    def __init__(
        self,
        client: redis.Redis | RedisCluster,
        dispatcher: Dispatcher,
        pending: Mapping[str, int],
    ) -> None:
        self.client = client
        self.dispatcher = dispatcher
        self._pending = pending

    def one(self, rkey: str) -> tuple[bytes, float | None] | None:
        """``(value, seconds left or None)`` of the Redis key ``rkey``, or None on a miss."""

        def get_and_pttl() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            pipe.get(rkey)
            pipe.pttl(rkey)
            return pipe.execute()

        value, pttl = self.dispatcher.run_routed("GET/PTTL", (rkey,), get_and_pttl)
        if value is None:
            return None
        return value, seconds_left(pttl)

    def many(self, keys: list[str], rkeys: list[str]) -> dict[str, tuple[bytes, float | None]]:
        """The hits among ``keys`` (whose Redis keys are ``rkeys``), with their lifetimes."""

        def gets_and_pttls() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            for rkey in rkeys:
                pipe.get(rkey)
                pipe.pttl(rkey)
            return pipe.execute()

        # Snapshot before the call: the dispatcher may replay (and forget) the pending deletes
        # after reading values that the replay then removed.
        pending = set(self._pending) if self._pending else None
        replies = self.dispatcher.run_routed("GET/PTTL", rkeys, gets_and_pttls)
        found: dict[str, tuple[bytes, float | None]] = {}
        for i, key in enumerate(keys):
            value = replies[2 * i]
            if value is not None and not (pending and key in pending):
                found[key] = (value, seconds_left(replies[2 * i + 1]))
        return found
