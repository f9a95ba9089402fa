"""The write paths of ``RedisCache``: every write drops the key's fence, stores of loaded values
hold their fence token (see ``_fence``), batches go in one round trip per chunk.

On one server each batch is a Lua script per chunk of up to 1000 keys, so redis-py packs and
parses one command instead of one per key (the warming path). On a cluster the keys span slots:
a non-transactional pipeline, which redis-py splits per node keeping each node's commands in
order; a key's fence shares its slot, so the fence's DEL reaches Redis before the value's write.

``RedisWrites`` takes checked keys and values (``RedisCache`` validates them); every command
goes through the cache's ``Dispatcher``. A write or delete that fails because Redis is
unreachable is remembered in the cache's ``PendingDeletes`` (its error is still raised) and
replayed before the next command; a write that lands supersedes the deletes owed before it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar

import redis
from redis.cluster import RedisCluster

from ._breaker import is_outage
from ._fence import (
    DELETE_FENCED,
    FENCE_TTL_MS,
    SET_MANY_FENCED,
    SET_MANY_IF_FENCE,
    TAKE_FENCE,
    fence_key,
    new_token,
)
from ._redis_dispatch import Dispatcher
from ._redis_keys import fence_shares_slot
from ._redis_pending import PendingDeletes
from ._sentinel import SentinelGuard
from ._validate import ttl_ms
from .errors import BackendError, CircuitOpenError

__all__ = ["CHUNK", "FencedRow", "RedisWrites", "Row"]

#: Keys per script call on a single server.
CHUNK: Final = 1000

#: (key, value, PX milliseconds or None)
Row = tuple[str, bytes, int | None]
#: (key, value, PX milliseconds or 0, fence token)
FencedRow = tuple[str, bytes, int, str]
_R = TypeVar("_R")


class RedisWrites:
    """The fenced write paths of one cache: its client, key prefix ``kp`` and dispatcher."""

    def __init__(
        self,
        client: redis.Redis | RedisCluster,
        kp: str,
        dispatcher: Dispatcher,
        pending: PendingDeletes,
        guard: SentinelGuard | None = None,
    ) -> None:
        self.client = client
        self.kp = kp
        self.cluster = isinstance(client, RedisCluster)
        self.dispatcher = dispatcher
        self.pending = pending
        self.guard = guard
        self._take_fence = client.register_script(TAKE_FENCE)
        self._delete_fenced = client.register_script(DELETE_FENCED)
        self._set_many_fenced = client.register_script(SET_MANY_FENCED)
        self._set_many_if_fence = client.register_script(SET_MANY_IF_FENCE)

    def fence_of(self, key: str) -> str | None:
        """The Redis key of ``key``'s fence, in the value's slot; None on a cluster when the
        key's braces are not a hash tag (it is then stored unfenced)."""
        if self.cluster and not fence_shares_slot(self.kp + key):
            return None
        return fence_key(self.kp, key)

    # -- writes that fail during an outage (see _redis_pending) --------------------------------

    def _tracked(
        self, keys: list[str], supersedes: bool, write: Callable[..., _R], *args: Any
    ) -> _R:
        """``write(*args)``; an outage makes ``keys`` owed deletes, and a write that lands
        (``supersedes``) cancels the deletes of ``keys`` owed before it started."""
        pending = self.pending
        upto = pending.seq
        try:
            result = write(*args)
        except BackendError as exc:
            if is_outage(exc.__cause__) or isinstance(exc, CircuitOpenError):
                pending.remember(keys)
            raise
        if supersedes and pending.keys:
            pending.forget(keys, upto)
        return result

    def replay_pending(self) -> None:
        """The dispatcher's hook: UNLINK the owed keys (fences dropped too), then forget them."""
        guard = self.guard
        unlink = self.unlink_many
        if guard is not None:  # behind Sentinel: confirmed by the replicas too
            self.pending.replay(lambda batch: guard.write(unlink, (batch,), {}))
        else:
            self.pending.replay(unlink)

    def set_one(self, key: str, data: bytes, px: int | None) -> None:
        """SET the value and drop the key's fence, atomically (a Lua script)."""
        self._tracked([key], True, self._set_one, key, data, px)

    def set_many(self, rows: list[Row]) -> None:
        """SET each row and drop its fence, in one round trip per chunk (or per node)."""
        if rows:
            self._tracked([r[0] for r in rows], True, self._set_many, rows)

    def delete_one(self, key: str) -> bool:
        """UNLINK the value and DEL its fence; whether the value existed."""
        return self._tracked([key], False, self._delete_one, key)

    def delete_many(self, keys: list[str]) -> int:
        """UNLINK distinct keys with their fences (split per slot); how many existed."""
        return self._tracked(keys, False, self._delete_many, keys)

    # -- one key -----------------------------------------------------------------------------

    def _delete_many(self, keys: list[str]) -> int:
        route = [self.kp + k for k in keys]
        return self.dispatcher.run_routed("UNLINK", route, self.unlink_many, keys)

    def _set_one(self, key: str, data: bytes, px: int | None) -> None:
        rkey = self.kp + key
        fence = self.fence_of(key)
        run = self.dispatcher.run
        if fence is not None:
            run("SET", self._set_many_fenced, [rkey, fence], [data, px or 0])
        else:
            run("SET", self.client.set, rkey, data, px=px)

    def _delete_one(self, key: str) -> bool:
        rkey = self.kp + key
        fence = self.fence_of(key)
        run = self.dispatcher.run
        if fence is not None:
            return bool(run("UNLINK", self._delete_fenced, [rkey, fence]))
        return bool(run("UNLINK", self.client.unlink, rkey))

    def fence(self, key: str) -> str | None:
        """Take the fence token of ``key`` (None: the key cannot be fenced)."""
        fence = self.fence_of(key)
        if fence is None:
            return None
        (token,) = self.dispatcher.run(
            "FENCE", self._take_fence, [fence], [new_token(), FENCE_TTL_MS]
        )
        return token.decode() if isinstance(token, bytes) else str(token)

    def set_fenced(self, key: str, data: bytes, px: int | None, token: str) -> bool:
        """Store ``data`` only if ``token`` still holds the key's fence; whether it was stored."""
        keys = [self.kp + key, fence_key(self.kp, key)]
        return bool(
            self.dispatcher.run("SET", self._set_many_if_fence, keys, [token, data, px or 0])
        )

    # -- batches -----------------------------------------------------------------------------

    def _set_many(self, rows: list[Row]) -> None:
        kp = self.kp
        if self.cluster:

            def pipelined() -> None:
                pipe = self.client.pipeline(transaction=False)
                for key, value, px in rows:
                    rkey = kp + key
                    if fence_shares_slot(rkey):
                        pipe.delete(fence_key(kp, key))
                    pipe.set(rkey, value, px=px)
                pipe.execute()

            self.dispatcher.run_routed("MSET", [kp + r[0] for r in rows], pipelined)
            return
        for start in range(0, len(rows), CHUNK):
            chunk = rows[start : start + CHUNK]
            args: list[Any] = []
            for _, value, px in chunk:
                args.append(value)
                args.append(px or 0)
            keys = [kp + r[0] for r in chunk] + [fence_key(kp, r[0]) for r in chunk]
            self.dispatcher.run("MSET", self._set_many_fenced, keys, args)

    def unlink_many(self, keys: list[str]) -> int:
        """UNLINK values and DEL their fences (fence first on a cluster); count the values.

        Runs *inside* a dispatched call (``mdelete``, the replay of pending deletes): one script
        per chunk on a single server; on a cluster a pipeline split per node, each fence ordered
        before its value (same slot, so same node and same connection).
        """
        kp = self.kp
        if not self.cluster:
            removed = 0
            for start in range(0, len(keys), CHUNK):
                chunk = keys[start : start + CHUNK]
                script_keys = [kp + k for k in chunk] + [fence_key(kp, k) for k in chunk]
                removed += int(self._delete_fenced(script_keys))
            return removed
        pipe = self.client.pipeline(transaction=False)
        counted: list[bool] = []
        for key in keys:
            rkey = kp + key
            if fence_shares_slot(rkey):
                pipe.delete(fence_key(kp, key))
                counted.append(False)
            pipe.unlink(rkey)
            counted.append(True)
        replies = pipe.execute()
        return sum(int(r) for r, value in zip(replies, counted, strict=True) if value)

    def fence_many(self, keys: list[str]) -> dict[str, str | None]:
        """``fence`` for distinct keys: key -> token, or None (unfenceable).

        One script per chunk on a single server (the warmer's path); on a cluster the fences
        span slots: a pipeline of SET NX + GET per key, which redis-py splits per node.
        """
        fenced = [k for k in keys if self.fence_of(k) is not None]
        route = [fence_key(self.kp, k) for k in fenced]
        found: list[Any] = []
        if fenced and self.cluster:

            def take() -> list[Any]:
                # In order on the key's node: a new token, or the one a loader already holds.
                pipe = self.client.pipeline(transaction=False)
                for fence in route:
                    pipe.set(fence, new_token(), nx=True, px=FENCE_TTL_MS)
                    pipe.get(fence)
                return pipe.execute()[1::2]

            found = self.dispatcher.run_routed("FENCE", route, take)
        else:  # a single server (or behind Sentinel); nothing to do when nothing is fenced
            for start in range(0, len(route), CHUNK):
                chunk = route[start : start + CHUNK]
                found += self.dispatcher.run(
                    "FENCE", self._take_fence, chunk, [new_token(), FENCE_TTL_MS]
                )
        tokens: dict[str, str | None] = dict.fromkeys(keys)
        for key, token in zip(fenced, found, strict=True):
            tokens[key] = token.decode() if isinstance(token, bytes) else None
        return tokens

    def mset_fenced(
        self, entries: Mapping[str, tuple[bytes, float | None]], tokens: Mapping[str, str]
    ) -> frozenset[str]:
        """Store checked entries, each only if its fence still holds its token in ``tokens``
        (no token: not stored); the keys stored.

        One script per chunk on a single server; on a cluster a pipeline of one EVAL per key
        (redis-py splits it per node).
        """
        rows: list[FencedRow] = [
            (key, value, 0 if seconds is None else ttl_ms(seconds), tokens[key])
            for key, (value, seconds) in entries.items()
            if isinstance(tokens.get(key), str)
        ]
        if not rows:
            return frozenset()
        kp = self.kp
        return frozenset(
            self.dispatcher.run_routed("SET", [kp + r[0] for r in rows], self._store, rows)
        )

    def _store(self, rows: list[FencedRow]) -> set[str]:
        kp = self.kp
        if self.cluster:
            pipe = self.client.pipeline(transaction=False)
            for key, value, px, token in rows:
                pipe.execute_command(
                    "EVAL", SET_MANY_IF_FENCE, 2, kp + key, fence_key(kp, key), token, value, px
                )
            replies = pipe.execute()
            return {row[0] for row, ok in zip(rows, replies, strict=True) if ok}
        stored: set[str] = set()
        for start in range(0, len(rows), CHUNK):
            chunk = rows[start : start + CHUNK]
            keys = [kp + r[0] for r in chunk] + [fence_key(kp, r[0]) for r in chunk]
            args: list[Any] = []
            for _, value, px, token in chunk:
                args += [token, value, px]
            stored.update(chunk[int(i) - 1][0] for i in self._set_many_if_fence(keys, args))
        return stored
