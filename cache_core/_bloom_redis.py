"""RedisBloomFilter: a bloom filter whose bits live in Redis, shared live by every process.

Byte-compatible with the local ``BloomFilter`` for the same parameters: positions come from the
same rule (``bit_positions``, on the C core when available), and ``to_local()`` /
``merge_local()`` move bits between the two through ``BloomFilter.payload()`` /
``from_payload()``. One round trip per key or per batch.

Layout (``kp`` = the RedisCache's ``prefix + ":"``, or nothing for a raw client)::

    {kp}__ccbf__:{<tag>}[:<name>]:meta           JSON parameters (checked by every opener)
    {kp}__ccbf__:{<tag>}[:<name>]:p:<i>          part i: bits [i * part_bits, (i+1) * part_bits)

Bit order: Redis numbers bits MSB-first within a byte, the local filter LSB-first (mask
``1 << (idx & 7)``). Bit ``idx`` is stored at Redis offset ``idx ^ 7`` (= ``(idx & ~7) | (7 -
(idx & 7))``), so the concatenated part strings *are* the local filter's payload, byte for byte.

Cluster: every key of one filter shares a hash tag (see ``_bloom_client``). Parts (default
2**26 bits = 8 MiB each, below Redis' 512 MB string limit) keep every SETBIT/BITFIELD
allocation and every GETRANGE small.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterable
from typing import Any, Final

from ._bloom import BloomFilter, BloomParams, bit_positions, check_keys_iterable, resolve_backend
from ._bloom_client import (
    MIB,
    PENDING_TTL_MS,
    BloomRedisTarget,
    check_name,
    key_head,
    resolve_target,
)
from ._hashing import Key
from ._redis import REDIS_ERRORS, wrap_redis_error
from ._validate import check_int
from .errors import CacheMiss

__all__ = ["DEFAULT_PART_BITS", "MAX_PART_BITS", "RedisBloomFilter"]

DEFAULT_PART_BITS: Final = 1 << 26  # 8 MiB per Redis string
MAX_PART_BITS: Final = 1 << 32  # Redis strings stop at 512 MB
_OPS_PER_COMMAND: Final = 4096  # BITFIELD sub-operations per command
_KEYS_PER_PIPELINE: Final = 8192  # keys per round trip in update()/contains_many()
_META_FORMAT: Final = 1


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


def _check_part_bits(part_bits: object) -> int:
    part_bits = check_int(part_bits, "part_bits")
    if not 8 <= part_bits <= MAX_PART_BITS or part_bits % 8:
        raise ValueError(f"part_bits must be a multiple of 8 in [8, 2**32], got {part_bits!r}")
    return part_bits


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
        target: BloomRedisTarget,
        name: str,
        capacity: int,
        error_rate: float = 0.01,
        *,
        seed: int = 0,
        backend: str | None = None,
        part_bits: int = DEFAULT_PART_BITS,
    ) -> None:
        place = resolve_target(target)
        self._name = check_name(name)
        params = BloomParams.for_capacity(capacity, error_rate, seed=seed)
        self._part_bits = _check_part_bits(part_bits)
        self._backend = resolve_backend(backend)
        self._client = place.client
        self._head = key_head(place, "__ccbf__", self._name)
        self._params = params
        self._meta: dict[str, Any] = {
            "format": _META_FORMAT,
            "capacity": params.capacity,
            "error_rate": params.error_rate,
            "seed": params.seed,
            "num_bits": params.num_bits,
            "num_hashes": params.num_hashes,
            "part_bits": self._part_bits,
        }
        self._num_bits = params.num_bits
        self._k = params.num_hashes
        self._seed = params.seed
        self._nparts = -(-params.num_bits // self._part_bits)
        self._meta_key = self._head + ":meta"
        self._part_keys = [f"{self._head}:p:{i}" for i in range(self._nparts)]
        self._claim()

    @classmethod
    def open(
        cls, target: BloomRedisTarget, name: str, *, backend: str | None = None
    ) -> RedisBloomFilter:
        """Open an existing filter with the parameters stored in Redis; CacheMiss if none."""
        place = resolve_target(target)
        head = key_head(place, "__ccbf__", check_name(name))
        try:
            raw = place.client.get(head + ":meta")
        except REDIS_ERRORS as exc:
            raise wrap_redis_error("GET", exc) from exc
        if raw is None:
            raise CacheMiss(f"no bloom filter named {name!r} in Redis")
        params = _parse_meta(raw, name)
        return cls(
            target,
            name,
            params["capacity"],
            params["error_rate"],
            seed=params["seed"],
            backend=backend,
            part_bits=params["part_bits"],
        )

    def _claim(self) -> None:
        """Store our parameters unless some are there already, and check they agree."""
        meta = json.dumps(self._meta, sort_keys=True).encode()
        try:
            pipe = self._client.pipeline(transaction=False)
            pipe.set(self._meta_key, meta, nx=True)
            pipe.get(self._meta_key)
            _, stored = pipe.execute()
        except REDIS_ERRORS as exc:
            raise wrap_redis_error("SET NX/GET", exc) from exc
        theirs = _parse_meta(stored, self._name) if stored is not None else self._meta
        if theirs != self._meta:
            diff = {k: (theirs.get(k), v) for k, v in self._meta.items() if theirs.get(k) != v}
            raise ValueError(
                f"bloom filter {self._name!r} exists in Redis with other parameters "
                f"(stored vs requested: {diff}); open it with RedisBloomFilter.open()"
            )

    # -- properties ---------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def params(self) -> BloomParams:
        """The filter's parameters: a local ``BloomFilter`` with these has the same bits."""
        return self._params

    @property
    def capacity(self) -> int:
        return self._params.capacity

    @property
    def error_rate(self) -> float:
        return self._params.error_rate

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
        return BloomFilter.from_payload(self._params, payload, backend=backend)

    def merge_local(self, bf: BloomFilter) -> None:
        """OR a local filter's bits into Redis (same num_bits, num_hashes and seed).

        Each part goes through a temporary key in the same slot (SETRANGE in 1 MiB pieces) and
        BITOP OR, so adds that other processes make meanwhile are never overwritten.
        """
        if not isinstance(bf, BloomFilter):
            raise TypeError(f"bf must be a BloomFilter, not {type(bf).__name__}")
        mine, theirs = self._params.layout, bf.params.layout
        if mine != theirs:
            raise ValueError(
                f"cannot merge: (num_bits, num_hashes, seed) differ, {mine} vs {theirs}"
            )
        payload = bf.payload()
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
                pipe.pexpire(tmp, PENDING_TTL_MS)  # a crash between here and UNLINK
                # execute_command: RedisCluster pipelines refuse .bitop(), though one slot is safe
                pipe.execute_command("BITOP", "OR", key, key, tmp)
                pipe.unlink(tmp)
                pipe.execute()
        except REDIS_ERRORS as exc:
            raise wrap_redis_error("SETRANGE/BITOP", exc) from exc

    @classmethod
    def from_local(
        cls,
        target: BloomRedisTarget,
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
