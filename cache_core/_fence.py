"""Fences: a store of a loaded value loses to every write that came after the load started.

The memcache lease technique ("Scaling Memcache at Facebook", NSDI 2013, §3.2.1), on Redis:

* Before a read-through runs its loader, it takes the key's **fence token**: a companion key
  ``{kp}__cc_fence__:{<tag>}:<key>`` (same Cluster slot as the value) holding a random token.
  If the fence exists, its token is shared (every concurrent loader loaded after it was made);
  if not, the reader creates it with a lifetime of ``FENCE_TTL_MS``. One round trip per load.
* **Every write** (``set``, ``mset``, ``delete``, ``mdelete``, the replay of a failed write)
  removes the fence in the same Lua script as the write itself, so no store can slip between
  the two.
* The loader's **store is conditional**: a Lua script sets the value only if the fence still
  holds the token the loader took, and then drops the fence (a concurrent loader that shared
  the token has its store refused: harmless, the value is there). A write since the token was
  taken removed the fence, so the store is refused and the value loaded before the write is
  never stored after it. A fence that expired (a load
  slower than ``FENCE_TTL_MS``) also refuses: every failure mode refuses, none accepts. A store
  that reaches Redis late (delayed on its connection, queued in a paused server) is checked
  when it executes, so a late command cannot resurrect an old value either.

Reads never touch fences: the hit path is unchanged. The in-process ``MemoryFences`` table gives
``MemoryCache`` the same rule between threads.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Final

from cachetools import TTLCache

from ._redis_keys import slot_tag

__all__ = [
    "DELETE_FENCED",
    "FENCE_MARK",
    "FENCE_TTL",
    "FENCE_TTL_MS",
    "MemoryFences",
    "SET_MANY_IF_FENCE",
    "SET_MANY_FENCED",
    "TAKE_FENCE",
    "fence_key",
    "new_token",
]

FENCE_MARK: Final = "__cc_fence__:"
#: How long a fence lives: a load that takes longer is served but never stored.
FENCE_TTL: Final = 120.0
FENCE_TTL_MS: Final = int(FENCE_TTL * 1000)

# KEYS = fences (one or many). ARGV[1] a new random token base, ARGV[2] the lifetime (ms) of
# a fence it creates. Returns each fence's token: the one there, else base .. ":" .. i, created.
TAKE_FENCE: Final = """
local tokens = {}
for i = 1, #KEYS do
    local token = redis.call('GET', KEYS[i])
    if not token then
        token = ARGV[1] .. ':' .. i
        redis.call('SET', KEYS[i], token, 'PX', ARGV[2])
    end
    tokens[i] = token
end
return tokens
"""

# A delete: KEYS = value keys then their fences (n each). Returns how many values existed.
DELETE_FENCED: Final = """
local n = #KEYS / 2
local removed = 0
for i = 1, n do
    removed = removed + redis.call('UNLINK', KEYS[i])
    redis.call('DEL', KEYS[n + i])
end
return removed
"""

# Writes (one key or many; ``set`` is n = 1): KEYS = value keys then their fences (n each);
# ARGV = value, px per key (px 0: no expiry).
SET_MANY_FENCED: Final = """
local n = #KEYS / 2
for i = 1, n do
    redis.call('DEL', KEYS[n + i])
    local px = tonumber(ARGV[2 * i])
    if px > 0 then
        redis.call('SET', KEYS[i], ARGV[2 * i - 1], 'PX', px)
    else
        redis.call('SET', KEYS[i], ARGV[2 * i - 1])
    end
end
return n
"""


# Stores of loaded values (one key or many; ``set_fenced`` is n = 1): KEYS = value keys then
# their fences (n each); ARGV = token, value, px per key. Returns the 1-based indexes stored.
SET_MANY_IF_FENCE: Final = """
local n = #KEYS / 2
local stored = {}
for i = 1, n do
    if redis.call('GET', KEYS[n + i]) == ARGV[3 * i - 2] then
        local px = tonumber(ARGV[3 * i])
        if px > 0 then
            redis.call('SET', KEYS[i], ARGV[3 * i - 1], 'PX', px)
        else
            redis.call('SET', KEYS[i], ARGV[3 * i - 1])
        end
        redis.call('DEL', KEYS[n + i])
        stored[#stored + 1] = i
    end
end
return stored
"""


def fence_key(kp: str, key: str) -> str:
    """The fence of ``key`` under the key prefix ``kp`` (in the value's slot when possible)."""
    return f"{kp}{FENCE_MARK}{{{slot_tag(kp + key)}}}:{key}"


def new_token() -> str:
    """A random fence token (from the OS, so a forked child never repeats its parent's)."""
    return os.urandom(9).hex()


class MemoryFences:
    """The fence rule for one in-process cache: tokens per key, dropped by every write.

    Bounded: at most ``maxsize`` fences, each living ``FENCE_TTL``. An evicted or expired fence
    refuses its store, like an expired fence in Redis.
    """

    def __init__(self, maxsize: int, timer: Callable[[], float]) -> None:
        self._lock = threading.Lock()
        self._tokens: TTLCache[str, str] = TTLCache(maxsize, FENCE_TTL, timer=timer)

    def take(self, key: str) -> str:
        with self._lock:
            token = self._tokens.get(key)
            if token is None:
                token = self._tokens[key] = new_token()
            return token

    def holds(self, key: str, token: str) -> bool:
        """Whether ``token`` is still the key's fence; call with the cache's store lock held."""
        with self._lock:
            return self._tokens.get(key) == token

    def drop(self, key: str) -> None:
        with self._lock:
            self._tokens.pop(key, None)

    def drop_all(self) -> None:
        with self._lock:
            self._tokens.clear()
