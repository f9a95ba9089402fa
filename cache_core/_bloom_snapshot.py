"""BloomSnapshot, save_bloom, load_bloom: a local bloom filter published through Redis.

One process publishes its filter's ``to_bytes()``; the others load it and poll
``refresh_if_changed()``, which costs one GET while nothing changed. Reads stay local (~100 ns);
adds in other processes are not shared until the next publication (for that, see the
Redis-resident ``RedisBloomFilter``).

Layout (``kp`` = the RedisCache's ``prefix + ":"``, or nothing for a raw client)::

    {kp}__ccbs__:{<tag>}[:<name>]:ptr            "ccbs1 <version> <chunks> <size> <chunk_size>"
    {kp}__ccbs__:{<tag>}[:<name>]:v:<version>:<i>   chunk i of to_bytes(), <= chunk_size bytes

A new version's chunks are written first (with a TTL, so a writer that dies half-way leaves
nothing behind), then made persistent and the pointer switched in one pipeline; the previous
version's chunks expire ``old_version_ttl`` seconds later, so a reader that read the old pointer
can still finish. A 60 MB filter goes in 60 commands of 1 MiB, never one. Every key of one
snapshot shares a hash tag (see ``_bloom_client``).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterable
from typing import Final

from ._bloom import BloomFilter, check_keys_iterable, resolve_backend
from ._bloom_client import (
    MIB,
    PENDING_TTL_MS,
    BloomRedisTarget,
    check_name,
    key_head,
    resolve_target,
)
from ._hashing import Key, key_bytes
from ._redis import REDIS_ERRORS, wrap_redis_error
from ._validate import check_int, ttl_seconds
from .errors import CacheMiss

__all__ = ["MAX_LOCAL_ADDS", "BloomSnapshot", "load_bloom", "save_bloom"]

#: How many keys added to a BloomSnapshot locally are kept to re-apply after each refresh.
MAX_LOCAL_ADDS: Final = 1_000_000
log = logging.getLogger("cache_core")
_CHUNKS_PER_PIPELINE: Final = 8  # snapshot chunks per round trip when writing (8 MiB in flight)
_PTR_MAGIC: Final = "ccbs1"


def _parse_pointer(raw: bytes, name: str) -> tuple[str, int, int, int]:
    try:
        magic, version, chunks, size, chunk_size = raw.decode("ascii").split(" ")
        if magic != _PTR_MAGIC or not version.isalnum():
            raise ValueError(magic)
        parsed = (version, int(chunks), int(size), int(chunk_size))
    except ValueError as exc:
        raise ValueError(f"snapshot pointer of {name!r} is not valid: {raw[:80]!r}") from exc
    if parsed[1] < 1 or parsed[2] < 1 or parsed[3] < 1 or parsed[1] != -(-parsed[2] // parsed[3]):
        raise ValueError(f"snapshot pointer of {name!r} is inconsistent: {raw[:80]!r}")
    return parsed


class BloomSnapshot:
    """A local BloomFilter kept in step with a versioned snapshot in Redis.

    ``save(bf)`` publishes ``bf.to_bytes()`` in chunks under a new version and switches the
    pointer (readers never see half a version); ``load()`` reads the current version;
    ``refresh_if_changed()`` reloads only when the pointer moved (one GET otherwise). A
    truncated or corrupt snapshot raises ValueError and the current filter stays in place.

    The snapshot is itself usable as a bloom filter (``in``, ``contains_many``, ``add``,
    ``update`` act on the current local filter), so a ``ProtectedCache`` built on it follows
    every refresh. Keys added locally since the last load are re-added after a refresh, so a
    ``ProtectedCache.set`` is not forgotten when the next publication replaces the filter.
    """

    def __init__(
        self,
        target: BloomRedisTarget,
        name: str,
        *,
        chunk_size: int = MIB,
        backend: str | None = None,
        old_version_ttl: float = 60.0,
    ) -> None:
        place = resolve_target(target)
        self._client = place.client
        self._name = check_name(name)
        chunk_size = check_int(chunk_size, "chunk_size")
        if not 1 <= chunk_size <= 512 * MIB:
            raise ValueError(f"chunk_size must be in [1, 512 MiB], got {chunk_size!r}")
        self._chunk_size = chunk_size
        self._backend = None if backend is None else resolve_backend(backend)
        grace = ttl_seconds(old_version_ttl, None, "old_version_ttl")
        if grace is None:
            raise TypeError("old_version_ttl must be a number of seconds, not None")
        self._grace_ms = max(1, int(grace * 1000))
        self._head = key_head(place, "__ccbs__", self._name)
        self._ptr_key = self._head + ":ptr"
        # (filter, pointer bytes) swapped as one object: readers never see a mismatched pair.
        self._state: tuple[BloomFilter | None, bytes | None] = (None, None)
        self._local_adds: list[bytes] = []
        self._warned_full = False
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self._name

    @property
    def filter(self) -> BloomFilter | None:
        """The current local filter (None before the first load/save)."""
        return self._state[0]

    @property
    def version(self) -> str | None:
        """The version id of the current filter (None before the first load/save)."""
        ptr = self._state[1]
        return None if ptr is None else ptr.split(b" ")[1].decode()

    @property
    def pointer_key(self) -> str:
        return self._ptr_key

    def chunk_keys(self, version: str, chunks: int) -> list[str]:
        return [f"{self._head}:v:{version}:{i}" for i in range(chunks)]

    def __repr__(self) -> str:
        return f"<BloomSnapshot {self._name!r} version={self.version!r} filter={self.filter!r}>"

    # -- publishing ---------------------------------------------------------------------------

    def save(self, bf: BloomFilter | None = None) -> str:
        """Publish ``bf`` (default: the current filter) as the new version; return its id.

        ``bf`` becomes this snapshot's current filter.
        """
        if bf is None:
            bf = self.filter
            if bf is None:
                raise ValueError("nothing to save: pass bf, or load() first")
        elif not isinstance(bf, BloomFilter):
            raise TypeError(f"bf must be a BloomFilter, not {type(bf).__name__}")
        data = bf.to_bytes()
        version = uuid.uuid4().hex
        cs = self._chunk_size
        n = -(-len(data) // cs)
        keys = self.chunk_keys(version, n)
        pointer = f"{_PTR_MAGIC} {version} {n} {len(data)} {cs}".encode()
        try:
            for first in range(0, n, _CHUNKS_PER_PIPELINE):
                pipe = self._client.pipeline(transaction=False)
                for i in range(first, min(first + _CHUNKS_PER_PIPELINE, n)):
                    pipe.set(keys[i], data[i * cs : (i + 1) * cs], px=PENDING_TTL_MS)
                pipe.execute()
            pipe = self._client.pipeline(transaction=False)
            for key in keys:
                pipe.persist(key)
            pipe.set(self._ptr_key, pointer, get=True)
            old = pipe.execute()[-1]
        except REDIS_ERRORS as exc:
            raise wrap_redis_error("snapshot SET", exc) from exc
        with self._lock:
            self._state = (bf, pointer)
            self._local_adds = []
            self._warned_full = False
        if old is not None and old != pointer:
            self._retire(old)
        return version

    def _retire(self, old: bytes) -> None:
        """Let the previous version expire after the grace period (readers may be mid-load)."""
        try:
            version, n, _, _ = _parse_pointer(old, self._name)
        except ValueError:
            return  # not ours to interpret; nothing to clean
        try:
            pipe = self._client.pipeline(transaction=False)
            for key in self.chunk_keys(version, n):
                pipe.pexpire(key, self._grace_ms)
            pipe.execute()
        except REDIS_ERRORS as exc:
            raise wrap_redis_error("snapshot PEXPIRE", exc) from exc

    # -- reading ------------------------------------------------------------------------------

    def _get_pointer(self) -> bytes | None:
        try:
            return self._client.get(self._ptr_key)  # type: ignore[no-any-return]
        except REDIS_ERRORS as exc:
            raise wrap_redis_error("GET", exc) from exc

    def _fetch(self, pointer: bytes) -> tuple[BloomFilter, bytes]:
        """Read the version ``pointer`` names; follow the pointer once if it moved meanwhile."""
        for attempt in (0, 1):
            version, n, size, _ = _parse_pointer(pointer, self._name)
            try:
                pipe = self._client.pipeline(transaction=False)
                for key in self.chunk_keys(version, n):
                    pipe.get(key)
                chunks = pipe.execute()
            except REDIS_ERRORS as exc:
                raise wrap_redis_error("snapshot GET", exc) from exc
            if None in chunks:
                latest = self._get_pointer()
                if attempt == 0 and latest is not None and latest != pointer:
                    pointer = latest  # replaced and retired while we read: read the new one
                    continue
                raise ValueError(
                    f"snapshot {self._name!r} version {version} is incomplete: chunk "
                    f"{chunks.index(None)} of {n} is missing"
                )
            data = b"".join(chunks)
            if len(data) != size:
                raise ValueError(
                    f"snapshot {self._name!r} version {version} holds {len(data)} bytes, "
                    f"its pointer says {size} (truncated or corrupt)"
                )
            return BloomFilter.from_bytes(data, backend=self._backend), pointer
        raise AssertionError("unreachable")  # pragma: no cover

    def load(self) -> BloomFilter:
        """Load the current version (CacheMiss if none was ever saved) and make it current."""
        pointer = self._get_pointer()
        if pointer is None:
            raise CacheMiss(f"no bloom snapshot named {self._name!r} in Redis")
        bf, pointer = self._fetch(pointer)
        self._install(bf, pointer)
        return bf

    def refresh_if_changed(self) -> bool:
        """Reload if another version was published since ours: True if the filter changed.

        One GET while nothing changed. On a truncated/corrupt new version this raises
        ValueError and the current filter stays.
        """
        pointer = self._get_pointer()
        if pointer is None or pointer == self._state[1]:
            return False
        bf, pointer = self._fetch(pointer)
        self._install(bf, pointer)
        return True

    def _install(self, bf: BloomFilter, pointer: bytes) -> None:
        with self._lock:
            if self._local_adds:
                bf.update(self._local_adds)
            self._state = (bf, pointer)

    # -- the bloom filter interface (on the current local filter) -----------------------------

    def _current(self) -> BloomFilter:
        bf = self._state[0]
        if bf is None:
            raise RuntimeError(f"bloom snapshot {self._name!r} has no filter yet: call load()")
        return bf

    def __contains__(self, key: object) -> bool:
        return key in self._current()

    def contains_many(self, keys: Iterable[Key]) -> list[bool]:
        return self._current().contains_many(keys)

    def add(self, key: Key) -> None:
        data = key_bytes(key)
        with self._lock:
            self._current().add(data)
            self._remember_local([data])

    def update(self, keys: Iterable[Key]) -> None:
        check_keys_iterable(keys)
        data = [key_bytes(k) for k in keys]
        with self._lock:
            self._current().update(data)
            self._remember_local(data)

    def _remember_local(self, data: list[bytes]) -> None:
        """Keep local adds for re-applying after a refresh, up to MAX_LOCAL_ADDS (then log).

        A reader process that adds but never saves would otherwise grow this list forever;
        past the cap, keys added here survive a refresh only if someone publishes them.
        """
        room = MAX_LOCAL_ADDS - len(self._local_adds)
        if room >= len(data):
            self._local_adds.extend(data)
            return
        if room > 0:
            self._local_adds.extend(data[:room])
        if not self._warned_full:
            self._warned_full = True
            log.warning(
                "cache_core: bloom snapshot %r holds %d unsaved local adds; more are not kept "
                "across refreshes until save()",
                self._name,
                MAX_LOCAL_ADDS,
            )


def save_bloom(
    target: BloomRedisTarget, name: str, bf: BloomFilter, *, chunk_size: int = MIB
) -> str:
    """Publish ``bf`` as the new version of snapshot ``name``; return the version id."""
    return BloomSnapshot(target, name, chunk_size=chunk_size).save(bf)


def load_bloom(target: BloomRedisTarget, name: str, *, backend: str | None = None) -> BloomFilter:
    """Load the current version of snapshot ``name`` (CacheMiss if there is none)."""
    return BloomSnapshot(target, name, backend=backend).load()
