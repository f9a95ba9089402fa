"""A cross-process lease lock on Redis, with followers woken when the holder finishes.

One lock per cache key, for the read-through of a cold key across a fleet of processes:

* acquire: ``SET lock token NX PX lease`` with a random token (and clear the wake-up list of
  a previous round, in the same script); the token starts with the acquire time in hex
  milliseconds (``<ms>-<random>``), which is how ``python -m cache_core inspect`` tells a lock's
  age;
* release: a Lua compare-and-delete, so a holder whose lease ran out never deletes the lock of
  the next holder; the same script pushes one wake-up token per registered follower;
* followers register (a counter, in the same script that checks the lock is still held) and
  block in ``BLPOP`` on the wake-up list, not in a sleep loop: all of them wake within a round
  trip of the release (dogpile's polling followers wake 130-180 ms late here). The list and the
  counter expire with the lease.

The lease bounds everything: a holder that crashed (SIGKILL) stops blocking the key when its
lease runs out, and a follower gives up waiting at the same point and loads the value itself.

Cluster: the lock and the list share a hash tag (the value key's own slot when it can be
expressed as a tag), so the scripts touch a single slot.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any, Final, Protocol, TypeVar, runtime_checkable

import redis
from redis.cluster import RedisCluster
from redis.exceptions import TimeoutError as RedisTimeoutError

from ._redis_keys import slot_tag
from .errors import BackendError

__all__ = ["LeaseLock", "LeaseLockFactory", "RedisCommands", "stamped_token"]

_R = TypeVar("_R")
# KEYS[1] lock, KEYS[2] wake-up list, KEYS[3] follower count; ARGV[1] token, ARGV[2] lease ms
_ACQUIRE: Final = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
    redis.call('DEL', KEYS[2], KEYS[3])
    return 1
end
return 0
"""

_RELEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('DEL', KEYS[1])
    local n = tonumber(redis.call('GET', KEYS[3]) or '0')
    redis.call('DEL', KEYS[3])
    if n > 0 then
        for i = 1, n do redis.call('RPUSH', KEYS[2], '1') end
        redis.call('PEXPIRE', KEYS[2], ARGV[2])
    end
    return 1
end
return 0
"""

# Register as a follower and report whether the lock is still held, atomically: a release
# after this point pushes a token for us, and a release before it is seen here.
_FOLLOW: Final = """
redis.call('INCR', KEYS[3])
redis.call('PEXPIRE', KEYS[3], ARGV[1])
return redis.call('EXISTS', KEYS[1])
"""

_EXTEND: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_LOCK_MARK: Final = "__cc_lock__:"
_DONE_MARK: Final = "__cc_done__:"
_WAITERS_MARK: Final = "__cc_waiters__:"


def stamped_token() -> str:
    """A lock token: wall-clock milliseconds of its making, in hex, then 96 random bits."""
    return f"{int(time.time() * 1000):x}-{secrets.token_hex(12)}"


@runtime_checkable
class RedisCommands(Protocol):
    """What the lease locks need of the cache they serve (``RedisCache``): its client, its key
    prefix, and the path its commands take (breaker, routing, ``BackendError``)."""

    @property
    def client(self) -> redis.Redis | RedisCluster: ...

    @property
    def redis_key_prefix(self) -> str: ...

    def run(self, op: str, fn: Callable[..., _R], *args: Any, **kwargs: Any) -> _R: ...

    def run_blocking(self, op: str, fn: Callable[..., _R], *args: Any, **kwargs: Any) -> _R: ...


class LeaseLockFactory:
    """Builds lease locks for the keys of one RedisCache (its client, its prefix, its breaker).

    Every command goes through ``RedisCache.run``: errors arrive as ``BackendError`` and an
    open circuit breaker stops lock traffic too. The locks it builds call its command methods
    (``acquire``, ``release``, ``extend``, ``follow``, ``exists``, ``block``).
    """

    def __init__(self, cache: RedisCommands) -> None:
        if not isinstance(cache, RedisCommands):
            raise TypeError(f"cache must be a RedisCache, not {type(cache).__name__}")
        client: Any = cache.client
        self.cache = cache
        self.client = client
        self.key_prefix = cache.redis_key_prefix
        self._acquire = client.register_script(_ACQUIRE)
        self._release = client.register_script(_RELEASE)
        self._extend = client.register_script(_EXTEND)
        self._follow = client.register_script(_FOLLOW)
        timeout = client.get_connection_kwargs().get("socket_timeout")
        # BLPOP must return before the socket times out, or redis-py reports an error. Redis
        # (hz 10) notices a blocking timeout on its next tick, up to ~100 ms late: keep that
        # much, plus a margin, below the socket timeout.
        self._max_block = 1.0 if timeout is None else max(0.01, float(timeout) - 0.15)

    @property
    def max_block(self) -> float:
        """The longest single BLPOP, in seconds: well inside the client's socket timeout."""
        return self._max_block

    def lock(self, key: str, lease: float) -> LeaseLock:
        # The tag puts the lock in the value's slot; the key itself keeps locks of different
        # keys apart even when they share a tag (a prefix like "{app}", keys like "x{7}").
        kp = self.key_prefix
        tag = slot_tag(kp + key)
        return LeaseLock(
            self,
            f"{kp}{_LOCK_MARK}{{{tag}}}:{key}",
            f"{kp}{_DONE_MARK}{{{tag}}}:{key}",
            f"{kp}{_WAITERS_MARK}{{{tag}}}:{key}",
            lease,
        )

    # -- the commands of a lock: ``keys`` are its (lock, done list, waiters count) --------------

    def acquire(self, keys: list[str], token: str, lease_ms: int) -> bool:
        """Take the lock with ``token`` for ``lease_ms`` if it is free (and reset the round)."""
        return bool(self.cache.run("lock acquire", self._acquire, keys, [token, lease_ms]))

    def release(self, keys: list[str], token: str, lease_ms: int) -> bool:
        """Delete the lock if ``token`` still holds it, and wake the followers."""
        return bool(self.cache.run("lock release", self._release, keys, [token, lease_ms]))

    def extend(self, lock_key: str, token: str, lease_ms: int) -> bool:
        """Push the lease out to ``lease_ms`` from now if ``token`` still holds the lock."""
        return bool(self.cache.run("lock extend", self._extend, [lock_key], [token, lease_ms]))

    def follow(self, keys: list[str], lease_ms: int) -> bool:
        """Register as a follower; whether the lock is still held (else: look again now)."""
        return bool(self.cache.run("lock follow", self._follow, keys, [lease_ms]))

    def exists(self, lock_key: str) -> bool:
        """Whether the lock is held by anyone."""
        return bool(self.cache.run("lock exists", self.client.exists, lock_key))

    def block(self, done_key: str, timeout: float) -> bool:
        """One BLPOP on the wake-up list, for at most ``min(timeout, max_block)`` seconds;
        whether a release woke us. A late answer past the socket timeout (a late tick on a very
        short ``socket_timeout``: the connection was dropped) is a plain "not woken"."""
        try:
            return bool(
                self.cache.run_blocking(
                    "lock wait",
                    self.client.blpop,
                    [done_key],
                    timeout=min(timeout, self._max_block),
                )
            )
        except BackendError as exc:
            if not isinstance(exc.__cause__, RedisTimeoutError):
                raise
            return False


class LeaseLock:
    """The lease lock of one key; every Redis failure surfaces as ``BackendError``."""

    __slots__ = ("done_key", "factory", "lease", "lock_key", "token", "waiters_key")

    def __init__(
        self,
        factory: LeaseLockFactory,
        lock_key: str,
        done_key: str,
        waiters_key: str,
        lease: float,
    ) -> None:
        self.factory = factory
        self.lock_key = lock_key
        self.done_key = done_key
        self.waiters_key = waiters_key
        self.lease = lease
        self.token = stamped_token()

    @property
    def _lease_ms(self) -> int:
        return max(1, int(self.lease * 1000))

    @property
    def _keys(self) -> list[str]:
        return [self.lock_key, self.done_key, self.waiters_key]

    def try_acquire(self) -> bool:
        self.token = stamped_token()  # the acquire time, for inspect (issue 17)
        return self.factory.acquire(self._keys, self.token, self._lease_ms)

    def release(self) -> bool:
        """Delete the lock if it is still ours, and wake the followers; False if it was not."""
        return self.factory.release(self._keys, self.token, self._lease_ms)

    def extend(self, lease: float | None = None) -> bool:
        """Push the lease out to ``lease`` seconds from now, if the lock is still ours."""
        ms = self._lease_ms if lease is None else max(1, int(lease * 1000))
        return self.factory.extend(self.lock_key, self.token, ms)

    def is_locked(self) -> bool:
        return self.factory.exists(self.lock_key)

    def wait(self, timeout: float) -> bool:
        """Block until the holder releases (True) or ``timeout`` seconds pass (False)."""
        deadline = time.monotonic() + timeout
        if not self.factory.follow(self._keys, self._lease_ms):
            return True  # released (or expired) before we registered: look again now
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            # Short BLPOPs: redis-py must not hit its socket timeout while we block.
            if self.factory.block(self.done_key, left):
                return True
            if not self.is_locked():
                return True  # the holder's lease ran out without a release: look again
