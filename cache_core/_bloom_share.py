"""Sharing a bloom filter between the processes of a deployment, through Redis.

Two ways, both byte-compatible with the local ``BloomFilter`` for the same parameters:

* **snapshot** (``BloomSnapshot``, ``save_bloom`` / ``load_bloom``): one process publishes its
  filter's ``to_bytes()``; the others load it and poll ``refresh_if_changed()``, which costs one
  GET while nothing changed. Reads stay local (~100 ns); adds in other processes are not shared
  until the next publication.
* **live** (``RedisBloomFilter``): the bits live in Redis, every process adds and tests through
  it; one round trip per key or per batch. Positions come from the C core (``bit_positions``).

Snapshot layout (``kp`` = the RedisCache's ``prefix + ":"``, or nothing for a raw client)::

    {kp}__ccbs__:{<tag>}[:<name>]:ptr            "ccbs1 <version> <chunks> <size> <chunk_size>"
    {kp}__ccbs__:{<tag>}[:<name>]:v:<version>:<i>   chunk i of to_bytes(), <= chunk_size bytes

A new version's chunks are written first (with a TTL, so a writer that dies half-way leaves
nothing behind), then made persistent and the pointer switched in one pipeline; the previous
version's chunks expire ``old_version_ttl`` seconds later, so a reader that read the old pointer
can still finish. A 60 MB filter goes in 60 commands of 1 MiB, never one.

Live layout::

    {kp}__ccbf__:{<tag>}[:<name>]:meta           JSON parameters (checked by every opener)
    {kp}__ccbf__:{<tag>}[:<name>]:p:<i>          part i: bits [i * part_bits, (i+1) * part_bits)

Bit order: Redis numbers bits MSB-first within a byte, the local filter LSB-first (mask
``1 << (idx & 7)``). Bit ``idx`` is stored at Redis offset ``idx ^ 7`` (= ``(idx & ~7) | (7 -
(idx & 7))``), so the concatenated part strings *are* the local filter's payload, byte for byte.

Cluster: ``<tag>`` is the name (or its own ``{...}`` tag), so every key of one filter or snapshot
lives in one hash slot: a batch is one pipeline to one node, one round trip. The trade-off: a
filter's memory and traffic sit on one primary; spread load by using several filters (e.g. one
per entity type). Parts (default 2**26 bits = 8 MiB each, below Redis' 512 MB string limit) keep
every SETBIT/BITFIELD allocation and every GETRANGE small.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import threading
import uuid
import zlib
from collections.abc import Iterable
from typing import Any, Final

import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot

from ._bloom import (
    _CRC,
    _HEADER,
    FORMAT_VERSION,
    MAGIC,
    BloomFilter,
    _check_backend,
    _check_capacity,
    _check_error_rate,
    bit_positions,
    check_keys_iterable,
    optimal_params,
)
from ._hashing import Key, check_seed, key_bytes
from ._redis import REDIS_ERRORS, RedisCache, wrap_redis_error
from ._redis_keys import slot_tag
from ._validate import ttl_seconds
from .errors import CacheMiss

__all__ = ["BloomSnapshot", "RedisBloomFilter", "load_bloom", "save_bloom"]

MIB: Final = 1 << 20
#: How many keys added to a BloomSnapshot locally are kept to re-apply after each refresh.
MAX_LOCAL_ADDS: Final = 1_000_000
log = logging.getLogger("cache_core")
DEFAULT_PART_BITS: Final = 1 << 26  # 8 MiB per Redis string
MAX_PART_BITS: Final = 1 << 32  # Redis strings stop at 512 MB
_OPS_PER_COMMAND: Final = 4096  # BITFIELD sub-operations per command
_KEYS_PER_PIPELINE: Final = 8192  # keys per round trip in update()/contains_many()
_CHUNKS_PER_PIPELINE: Final = 8  # snapshot chunks per round trip when writing (8 MiB in flight)
_PENDING_TTL_MS: Final = 600_000  # chunks of a version not yet published
_META_FORMAT: Final = 1
_PTR_MAGIC: Final = "ccbs1"


class _Guarded:
    """A RedisCache's client whose network calls go through ``RedisCache.run``.

    So the shared filters obey the cache's circuit breaker (an open breaker fails them in
    microseconds instead of a socket timeout each) and replay its pending deletes first.
    Queueing commands on a pipeline does no I/O; only ``execute`` is guarded.
    """

    def __init__(self, cache: RedisCache) -> None:
        self._cache = cache
        self._client: Any = cache.client

    def pipeline(self, transaction: bool = False) -> _GuardedPipeline:
        return _GuardedPipeline(self._cache, self._client.pipeline(transaction=transaction))

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr) or name in _LOCAL_CLIENT_METHODS:
            return attr
        return functools.partial(self._cache.run, name.upper(), attr)


class _GuardedPipeline:
    """Queues like the client's pipeline, remembering each command's key for routing.

    On a cluster, ``execute`` asks (and charges) only the breaker of the node that holds the
    filter (its keys share one hash tag), as every other command of the cache does.
    """

    def __init__(self, cache: RedisCache, pipe: Any) -> None:
        self._cache = cache
        self._pipe = pipe
        self._route: list[Any] = []

    def execute(self) -> Any:
        route, self._route = self._route, []
        return self._cache.run_routed("pipeline", route or None, self._pipe.execute)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._pipe, name)
        if not callable(attr) or name.startswith("_"):
            return attr

        def queue(*args: Any, **kwargs: Any) -> Any:
            key = args[1] if name == "execute_command" and len(args) > 1 else None
            if name != "execute_command" and args:
                key = args[0]
            if isinstance(key, str | bytes):
                self._route.append(key)
            attr(*args, **kwargs)
            return self

        return queue


# Client methods that do no network I/O.
_LOCAL_CLIENT_METHODS: Final = frozenset({"get_connection_kwargs", "keyslot", "get_encoder"})


def _resolve(target: object) -> tuple[Any, str]:
    """(client, key prefix) of a RedisCache (its client and namespace) or of a raw client."""
    if isinstance(target, RedisCache):
        return _Guarded(target), target.redis_key_prefix
    if isinstance(target, redis.Redis | RedisCluster):
        if target.get_connection_kwargs().get("decode_responses"):
            raise ValueError("client must be built with decode_responses=False: bits are bytes")
        return target, ""
    raise TypeError(
        f"target must be a RedisCache, redis.Redis or RedisCluster, not {type(target).__name__}"
    )


def _is_cluster(client: Any) -> bool:
    return isinstance(client._client if isinstance(client, _Guarded) else client, RedisCluster)


def _check_name(name: object) -> str:
    if not isinstance(name, str):
        raise TypeError(f"name must be str, not {type(name).__name__}: {name!r:.80}")
    if not name:
        raise ValueError("name must be a non-empty str, got ''")
    return name


def _head(client: Any, kp: str, mark: str, name: str) -> str:
    """The common start of every Redis key of one filter/snapshot, with its hash tag.

    Every key is ``head + suffix``; Redis hashes the first ``{...}``, which lies in ``head``, so
    all of them share a slot. A prefix whose braces defeat that (``a{}``) is refused on Cluster.
    """
    if "{" in name or "}" in name:
        head = f"{kp}{mark}:{{{slot_tag(name)}}}:{name}"
    else:
        head = f"{kp}{mark}:{{{name}}}"
    if _is_cluster(client) and key_slot((head + ":a").encode()) != key_slot((head + ":b").encode()):
        raise ValueError(
            f"the keys of {name!r} under prefix {kp!r} would not share a Redis Cluster slot "
            "(the prefix has braces that are not a hash tag); change the prefix"
        )
    return head


def _filter_from_payload(
    payload: bytes, params: dict[str, Any], backend: str | None
) -> BloomFilter:
    """A local BloomFilter holding ``payload``, through from_bytes (so it is fully validated)."""
    header = _HEADER.pack(
        MAGIC,
        FORMAT_VERSION,
        0,
        params["capacity"],
        params["error_rate"],
        params["seed"],
        params["num_hashes"],
        params["num_bits"],
        len(payload),
    )
    crc = zlib.crc32(payload, zlib.crc32(header))
    return BloomFilter.from_bytes(b"".join((header, _CRC.pack(crc), payload)), backend=backend)


# ---------------------------------------------------------------------------------- live


class RedisBloomFilter:
    """A bloom filter whose bits live in Redis: every process sees every add at once.

    ``RedisBloomFilter(target, name, capacity, error_rate=0.01, *, seed=0)`` creates the filter
    or opens the existing one; the parameters are stored with it, and opening it with different
    ones raises ValueError (another process would compute other bit positions). ``target`` is a
    RedisCache (its client and prefix are used) or a raw ``redis.Redis`` / ``RedisCluster``.

    Same interface as BloomFilter's hot part: ``add``, ``update``, ``key in bf``,
    ``contains_many``. Bit positions are computed locally (C core, or ``backend="python"``) and
    set/tested with BITFIELD / BITFIELD_RO (Redis >= 6.2): one round trip per call (per 8192 keys
    for big batches). Redis errors raise BackendError. Bits are only ever set, so concurrent adds
    from many processes need no coordination. ``to_local()`` / ``merge_local()`` convert from and
    to a local BloomFilter byte for byte.
    """

    def __init__(
        self,
        target: Any,
        name: str,
        capacity: int,
        error_rate: float = 0.01,
        *,
        seed: int = 0,
        backend: str | None = None,
        part_bits: int = DEFAULT_PART_BITS,
    ) -> None:
        client, kp = _resolve(target)
        self._name = _check_name(name)
        capacity = _check_capacity(capacity)
        error_rate = _check_error_rate(error_rate)
        seed = check_seed(seed)
        if isinstance(part_bits, bool) or not isinstance(part_bits, int):
            raise TypeError(f"part_bits must be an int, not {type(part_bits).__name__}")
        if not 8 <= part_bits <= MAX_PART_BITS or part_bits % 8:
            raise ValueError(f"part_bits must be a multiple of 8 in [8, 2**32], got {part_bits!r}")
        self._backend = _check_backend(backend)
        num_bits, num_hashes = optimal_params(capacity, error_rate)
        self._client = client
        self._head = _head(client, kp, "__ccbf__", self._name)
        self._params: dict[str, Any] = {
            "format": _META_FORMAT,
            "capacity": capacity,
            "error_rate": error_rate,
            "seed": seed,
            "num_bits": num_bits,
            "num_hashes": num_hashes,
            "part_bits": part_bits,
        }
        self._num_bits = num_bits
        self._k = num_hashes
        self._seed = seed
        self._part_bits = part_bits
        self._nparts = -(-num_bits // part_bits)
        self._meta_key = self._head + ":meta"
        self._part_keys = [f"{self._head}:p:{i}" for i in range(self._nparts)]
        self._claim()

    @classmethod
    def open(cls, target: Any, name: str, *, backend: str | None = None) -> RedisBloomFilter:
        """Open an existing filter with the parameters stored in Redis; CacheMiss if none."""
        client, kp = _resolve(target)
        head = _head(client, kp, "__ccbf__", _check_name(name))
        try:
            raw = client.get(head + ":meta")
        except REDIS_ERRORS as exc:
            raise wrap_redis_error("GET", exc) from exc
        if raw is None:
            raise CacheMiss(f"no bloom filter named {name!r} in Redis")
        params = cls._parse_meta(raw, name)
        return cls(
            target,
            name,
            params["capacity"],
            params["error_rate"],
            seed=params["seed"],
            backend=backend,
            part_bits=params["part_bits"],
        )

    @staticmethod
    def _parse_meta(raw: bytes, name: str) -> dict[str, Any]:
        try:
            params = json.loads(raw)
            if not isinstance(params, dict) or params.get("format") != _META_FORMAT:
                raise ValueError("unknown format")
            return params
        except ValueError as exc:
            raise ValueError(
                f"Redis holds something else under the bloom filter {name!r}: {raw[:80]!r}"
            ) from exc

    def _claim(self) -> None:
        """Store our parameters unless some are there already, and check they agree."""
        meta = json.dumps(self._params, sort_keys=True).encode()
        try:
            pipe = self._client.pipeline(transaction=False)
            pipe.set(self._meta_key, meta, nx=True)
            pipe.get(self._meta_key)
            _, stored = pipe.execute()
        except REDIS_ERRORS as exc:
            raise wrap_redis_error("SET NX/GET", exc) from exc
        theirs = self._parse_meta(stored, self._name) if stored is not None else self._params
        if theirs != self._params:
            diff = {k: (theirs.get(k), v) for k, v in self._params.items() if theirs.get(k) != v}
            raise ValueError(
                f"bloom filter {self._name!r} exists in Redis with other parameters "
                f"(stored vs requested: {diff}); open it with RedisBloomFilter.open()"
            )

    # -- properties ---------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def capacity(self) -> int:
        return int(self._params["capacity"])

    @property
    def error_rate(self) -> float:
        return float(self._params["error_rate"])

    @property
    def seed(self) -> int:
        return self._seed

    @property
    def num_bits(self) -> int:
        return self._num_bits

    @property
    def num_hashes(self) -> int:
        return self._k

    @property
    def part_bits(self) -> int:
        return self._part_bits

    @property
    def backend(self) -> str:
        """Where bit positions are computed: "native" (C core) or "python"."""
        return self._backend

    @property
    def redis_keys(self) -> list[str]:
        """The Redis keys of this filter: the parameters, then each part."""
        return [self._meta_key, *self._part_keys]

    def __repr__(self) -> str:
        return (
            f"<RedisBloomFilter {self._name!r} capacity={self.capacity} "
            f"error_rate={self.error_rate!r} num_bits={self._num_bits} "
            f"num_hashes={self._k} parts={self._nparts}>"
        )

    # -- bits ---------------------------------------------------------------------------------

    def _positions(self, keys: list[Any]) -> list[int]:
        return bit_positions(keys, self._num_bits, self._k, self._seed, backend=self._backend)

    def _by_part(self, pos: list[int]) -> list[tuple[int, list[int], list[int]]]:
        """(part, indexes into ``pos``, Redis offsets in that part) for each part touched."""
        if self._nparts == 1:
            return [(0, list(range(len(pos))), [p ^ 7 for p in pos])]
        pb = self._part_bits
        groups: dict[int, tuple[list[int], list[int]]] = {}
        for t, p in enumerate(pos):
            part, off = divmod(p, pb)
            group = groups.get(part)
            if group is None:
                group = groups[part] = ([], [])
            group[0].append(t)
            group[1].append(off ^ 7)
        return [(part, ts, offs) for part, (ts, offs) in groups.items()]

    def add(self, key: Key) -> None:
        """Add one key: one round trip."""
        self.update([key])

    def update(self, keys: Iterable[Key]) -> None:
        """Add many keys: one round trip per 8192 keys."""
        check_keys_iterable(keys)
        seq = keys if type(keys) is list else list(keys)
        for start in range(0, len(seq), _KEYS_PER_PIPELINE):
            self._set_bits(self._positions(seq[start : start + _KEYS_PER_PIPELINE]))

    def _set_bits(self, pos: list[int]) -> None:
        if not pos:
            return
        try:
            pipe = self._client.pipeline(transaction=False)
            for part, _, offs in self._by_part(pos):
                key = self._part_keys[part]
                for s in range(0, len(offs), _OPS_PER_COMMAND):
                    args: list[Any] = []
                    for off in offs[s : s + _OPS_PER_COMMAND]:
                        args += ("SET", "u1", off, 1)
                    pipe.execute_command("BITFIELD", key, *args)
            pipe.execute()
        except REDIS_ERRORS as exc:
            raise wrap_redis_error("BITFIELD", exc) from exc

    def __contains__(self, key: object) -> bool:
        """Test one key: one round trip (one BITFIELD_RO when the filter has one part)."""
        if self._nparts == 1:
            pos = self._positions([key])
            args: list[Any] = []
            for p in pos:
                args += ("GET", "u1", p ^ 7)
            try:
                bits = self._client.execute_command(
                    "BITFIELD_RO", self._part_keys[0], *args, keys=[self._part_keys[0]]
                )
            except REDIS_ERRORS as exc:
                raise wrap_redis_error("BITFIELD_RO", exc) from exc
            return all(bits)
        return self.contains_many([key])[0]  # type: ignore[list-item]

    def contains_many(self, keys: Iterable[Key]) -> list[bool]:
        """Test many keys: one round trip per 8192 keys."""
        check_keys_iterable(keys)
        seq = keys if type(keys) is list else list(keys)
        out: list[bool] = []
        for start in range(0, len(seq), _KEYS_PER_PIPELINE):
            part = seq[start : start + _KEYS_PER_PIPELINE]
            bits = self._get_bits(self._positions(part))
            k = self._k
            out.extend(all(bits[i * k : i * k + k]) for i in range(len(part)))
        return out

    def _get_bits(self, pos: list[int]) -> list[int]:
        if not pos:
            return []
        plan = self._by_part(pos)
        try:
            pipe = self._client.pipeline(transaction=False)
            for part, _, offs in plan:
                key = self._part_keys[part]
                for s in range(0, len(offs), _OPS_PER_COMMAND):
                    args: list[Any] = []
                    for off in offs[s : s + _OPS_PER_COMMAND]:
                        args += ("GET", "u1", off)
                    pipe.execute_command("BITFIELD_RO", key, *args, keys=[key])
            replies = iter(pipe.execute())
        except REDIS_ERRORS as exc:
            raise wrap_redis_error("BITFIELD_RO", exc) from exc
        bits = [0] * len(pos)
        for _, ts, offs in plan:
            got: list[int] = []
            for _ in range(0, len(offs), _OPS_PER_COMMAND):
                got.extend(next(replies))
            for t, bit in zip(ts, got, strict=True):
                bits[t] = bit
        return bits

    @property
    def approx_count(self) -> int:
        """Estimate of the keys added (BITCOUNT of every part, one round trip)."""
        try:
            pipe = self._client.pipeline(transaction=False)
            for key in self._part_keys:
                pipe.bitcount(key)
            x = sum(pipe.execute())
        except REDIS_ERRORS as exc:
            raise wrap_redis_error("BITCOUNT", exc) from exc
        m, k = self._num_bits, self._k
        return round(-m / k * math.log1p(-min(x, m - 1) / m))

    # -- conversion ---------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The local BloomFilter's ``to_bytes()`` for the bits currently in Redis."""
        return self.to_local().to_bytes()

    def to_local(self, *, backend: str | None = None) -> BloomFilter:
        """A local BloomFilter holding the bits currently in Redis (read in 1 MiB GETRANGEs).

        Bits set beyond num_bits (written by something else) raise ValueError.
        """
        nbytes = (self._num_bits + 7) // 8
        part_bytes = self._part_bits // 8
        ranges: list[tuple[int, int, int]] = []  # (part, start, end) inclusive end for GETRANGE
        for part in range(self._nparts):
            size = min(part_bytes, nbytes - part * part_bytes)
            for s in range(0, size, MIB):
                ranges.append((part, s, min(s + MIB, size) - 1))
        try:
            pipe = self._client.pipeline(transaction=False)
            for part, s, e in ranges:
                pipe.getrange(self._part_keys[part], s, e)
            pieces = pipe.execute()
        except REDIS_ERRORS as exc:
            raise wrap_redis_error("GETRANGE", exc) from exc
        # SETBIT/BITFIELD only grow a string as far as its highest set bit: pad with zeros.
        payload = b"".join(
            piece.ljust(e - s + 1, b"\0") for (_, s, e), piece in zip(ranges, pieces, strict=True)
        )
        return _filter_from_payload(payload, self._params, backend)

    def merge_local(self, bf: BloomFilter) -> None:
        """OR a local filter's bits into Redis (same num_bits, num_hashes and seed).

        Each part goes through a temporary key in the same slot (SETRANGE in 1 MiB pieces) and
        BITOP OR, so adds that other processes make meanwhile are never overwritten.
        """
        if not isinstance(bf, BloomFilter):
            raise TypeError(f"bf must be a BloomFilter, not {type(bf).__name__}")
        mine = (self._num_bits, self._k, self._seed)
        theirs = (bf.num_bits, bf.num_hashes, bf.seed)
        if mine != theirs:
            raise ValueError(
                f"cannot merge: (num_bits, num_hashes, seed) differ, {mine} vs {theirs}"
            )
        payload = bf.to_bytes()[_HEADER.size + _CRC.size :]
        part_bytes = self._part_bits // 8
        tmp_head = f"{self._head}:tmp:{uuid.uuid4().hex}"
        try:
            for part, key in enumerate(self._part_keys):
                chunk = payload[part * part_bytes : (part + 1) * part_bytes]
                if not chunk.strip(b"\0"):
                    continue  # nothing to OR in
                tmp = f"{tmp_head}:{part}"
                pipe = self._client.pipeline(transaction=False)
                for s in range(0, len(chunk), MIB):
                    pipe.setrange(tmp, s, chunk[s : s + MIB])
                pipe.pexpire(tmp, _PENDING_TTL_MS)  # a crash between here and UNLINK
                # execute_command: RedisCluster pipelines refuse .bitop(), though one slot is safe
                pipe.execute_command("BITOP", "OR", key, key, tmp)
                pipe.unlink(tmp)
                pipe.execute()
        except REDIS_ERRORS as exc:
            raise wrap_redis_error("SETRANGE/BITOP", exc) from exc

    @classmethod
    def from_local(
        cls,
        target: Any,
        name: str,
        bf: BloomFilter,
        *,
        backend: str | None = None,
        part_bits: int = DEFAULT_PART_BITS,
    ) -> RedisBloomFilter:
        """Create (or open, when the parameters match) the filter ``name`` and OR ``bf`` into it."""
        if not isinstance(bf, BloomFilter):
            raise TypeError(f"bf must be a BloomFilter, not {type(bf).__name__}")
        rbf = cls(
            target,
            name,
            bf.capacity,
            bf.error_rate,
            seed=bf.seed,
            backend=backend,
            part_bits=part_bits,
        )
        rbf.merge_local(bf)
        return rbf

    def delete(self) -> bool:
        """Remove the filter from Redis (parameters and bits); True if it existed."""
        try:
            return bool(self._client.unlink(self._meta_key, *self._part_keys))
        except REDIS_ERRORS as exc:
            raise wrap_redis_error("UNLINK", exc) from exc


# ---------------------------------------------------------------------------------- snapshot


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
        target: Any,
        name: str,
        *,
        chunk_size: int = MIB,
        backend: str | None = None,
        old_version_ttl: float = 60.0,
    ) -> None:
        self._client, kp = _resolve(target)
        self._name = _check_name(name)
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
            raise TypeError(f"chunk_size must be an int, not {type(chunk_size).__name__}")
        if not 1 <= chunk_size <= 512 * MIB:
            raise ValueError(f"chunk_size must be in [1, 512 MiB], got {chunk_size!r}")
        self._chunk_size = chunk_size
        self._backend = None if backend is None else _check_backend(backend)
        grace = ttl_seconds(old_version_ttl, None, "old_version_ttl")
        if grace is None:
            raise TypeError("old_version_ttl must be a number of seconds, not None")
        self._grace_ms = max(1, int(grace * 1000))
        self._head = _head(self._client, kp, "__ccbs__", self._name)
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
                    pipe.set(keys[i], data[i * cs : (i + 1) * cs], px=_PENDING_TTL_MS)
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


def save_bloom(target: Any, name: str, bf: BloomFilter, *, chunk_size: int = MIB) -> str:
    """Publish ``bf`` as the new version of snapshot ``name``; return the version id."""
    return BloomSnapshot(target, name, chunk_size=chunk_size).save(bf)


def load_bloom(target: Any, name: str, *, backend: str | None = None) -> BloomFilter:
    """Load the current version of snapshot ``name`` (CacheMiss if there is none)."""
    return BloomSnapshot(target, name, backend=backend).load()
