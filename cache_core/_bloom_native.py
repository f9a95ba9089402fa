"""Bloom backend on the C core (cache_core._native, cffi out-of-line API mode).

Hot-path decisions, each measured (see BENCHMARKS.md):
- One ``cc_bloom`` state struct per filter, allocated once: a single-key call passes three
  arguments (state, bytes, length) and does no Python work besides encoding a str.
- Batches cross into C once per 8192 keys: NUL-joined into one bytes object (C counts the NULs
  and refuses a batch that does not split into exactly n keys, before writing anything), else,
  when some key contains NUL, a buffer plus an array of end offsets.
- cffi releases the GIL around each call; the C side sets bits with relaxed atomic ORs, so
  concurrent adds from threads never lose bits.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import accumulate
from typing import Any

from ._backend import ffi, lib
from ._bloom import BloomFilter, check_keys_iterable
from ._hashing import Key, key_bytes

__all__ = ["NativeBloomFilter", "positions"]

# Module globals: a global load is cheaper than two attribute loads on every call.
_add = lib.cc_bloom_add
_contains = lib.cc_bloom_contains
_add_joined = lib.cc_bloom_add_joined
_contains_joined = lib.cc_bloom_contains_joined
_add_offsets = lib.cc_bloom_add_offsets
_contains_offsets = lib.cc_bloom_contains_offsets
_new = ffi.new
_from_buffer = ffi.from_buffer
_EKEYS = lib.CC_EKEYS
_positions = lib.cc_bloom_positions
_CHUNK = 8192  # keys per C call in big batches


def _joined(keys: list[Any]) -> bytes:
    """NUL-join a batch for one C call; the C side counts the NULs and reports a mismatch.

    All-str batches (the common case) cost one join and one encode for the whole batch.
    """
    try:
        return "\0".join(keys).encode()
    except TypeError:
        pass  # not all str
    except UnicodeEncodeError:
        pass  # a lone surrogate: key_bytes below raises the ValueError that names it
    try:
        return b"\0".join(keys)  # all bytes-like
    except (TypeError, BufferError):
        return b"\0".join([key_bytes(k) for k in keys])  # mixed; raises for bad keys


def _offsets(keys: list[Any]) -> tuple[bytes, Any]:
    """Concatenated keys plus their end offsets: the path for batches where a key holds NUL."""
    parts = [key_bytes(k) for k in keys]
    return b"".join(parts), _new("uint64_t[]", list(accumulate(map(len, parts))))


class NativeBloomFilter(BloomFilter):
    """BloomFilter on the C core."""

    __slots__ = ("_bits", "_nbytes", "_state")
    backend = "native"

    _bits: Any  # cdata uint8_t[nbytes], owned here; _state.bits points into it
    _nbytes: int
    _state: Any  # cdata cc_bloom *

    def _alloc(self, payload: bytes | None) -> None:
        nbytes = (self._num_bits + 7) // 8
        bits = _new("uint8_t[]", nbytes)  # zeroed
        if payload is not None:
            if len(payload) != nbytes:
                raise ValueError(f"payload has {len(payload)} bytes, expected {nbytes}")
            ffi.memmove(bits, payload, nbytes)
        state = _new("cc_bloom *")
        state.bits = bits
        state.nbytes = nbytes
        state.nbits = self._num_bits
        state.k = self._num_hashes
        state.seed = self._seed
        # Derives the Barrett reciprocal and validates; every C entry point re-checks the state.
        if lib.cc_bloom_init(state) != 0:
            raise ValueError(
                f"invalid bloom parameters num_bits={self._num_bits} num_hashes={self._num_hashes}"
            )
        self._bits, self._nbytes, self._state = bits, nbytes, state

    def payload(self) -> bytes:
        return ffi.buffer(self._bits, self._nbytes)[:]  # type: ignore[no-any-return]

    def _popcount(self) -> int:
        return int(lib.cc_popcount(self._bits, self._nbytes))

    def _merge(self, other: BloomFilter, op: str) -> None:
        # A copy of the other's bits, even from a native filter: set operations are O(m) anyway
        # and rare, and a filter never lends its bit array out.
        src = ffi.from_buffer("uint8_t[]", other.payload())
        fn = lib.cc_bits_or if op == "or" else lib.cc_bits_and
        if fn(self._bits, src, self._nbytes) != 0:
            raise RuntimeError("cache_core C core rejected a set operation")

    def add(self, key: Key) -> None:
        if type(key) is str:
            try:
                data = key.encode()
            except UnicodeEncodeError:
                data = key_bytes(key)  # raises ValueError naming the key
        elif type(key) is bytes:
            data = key
        else:
            data = key_bytes(key)
        if _add(self._state, data, len(data)):
            raise RuntimeError("cache_core C core rejected add()")

    def __contains__(self, key: object) -> bool:
        if type(key) is str:
            try:
                data = key.encode()
            except UnicodeEncodeError:
                data = key_bytes(key)
        elif type(key) is bytes:
            data = key
        else:
            data = key_bytes(key)
        return _contains(self._state, data, len(data)) == 1  # type: ignore[no-any-return]

    def update(self, keys: Iterable[Key]) -> None:
        check_keys_iterable(keys)
        seq = keys if type(keys) is list else list(keys)
        n = len(seq)
        if n <= _CHUNK:
            self._update(seq)
            return
        # Big batches go in slices: each joined buffer stays in cache while C reads it
        # (1M-key build: join 17 ms in 8k slices vs 29 ms whole, same C work).
        for start in range(0, n, _CHUNK):
            self._update(seq[start : start + _CHUNK])

    def _update(self, seq: list[Any]) -> None:
        n = len(seq)
        if not n:
            return
        buf = _joined(seq)
        rc = _add_joined(self._state, buf, len(buf), n)  # checks the count before any write
        if rc == _EKEYS:  # some key contains NUL
            buf, ends = _offsets(seq)
            rc = _add_offsets(self._state, buf, len(buf), ends, n)
        if rc != n:
            raise RuntimeError(f"cache_core C core rejected update() (code {rc})")

    def contains_many(self, keys: Iterable[Key]) -> list[bool]:
        check_keys_iterable(keys)
        seq = keys if type(keys) is list else list(keys)
        n = len(seq)
        out = bytearray(n)
        out_ptr = _from_buffer("uint8_t[]", out)
        for start in range(0, n, _CHUNK):
            part = seq[start : start + _CHUNK] if n > _CHUNK else seq
            m = len(part)
            buf = _joined(part)
            rc = _contains_joined(self._state, buf, len(buf), m, out_ptr + start, m)
            if rc == _EKEYS:  # some key contains NUL
                buf, ends = _offsets(part)
                rc = _contains_offsets(self._state, buf, len(buf), ends, m, out_ptr + start, m)
            if rc != m:
                raise RuntimeError(f"cache_core C core rejected contains_many() (code {rc})")
        # C wrote only 0/1 bytes: viewed as C _Bool, tolist() builds the bools in C (8 ns/key,
        # half of ffi.unpack's cost).
        return memoryview(out).cast("?").tolist()  # type: ignore[return-value]


def positions(keys: list[Any], num_bits: int, num_hashes: int, seed: int) -> list[int]:
    """The k bit indexes of each key, flat (key i's at [i*k, i*k + k)), from the C core.

    One C call per batch (keys as a buffer plus end offsets, so keys may hold NUL bytes); the
    parameters are validated again in C, which refuses rather than writes out of bounds.
    """
    n = len(keys)
    if not n:
        return []
    buf, ends = _offsets(keys)
    total = n * num_hashes
    out = _new("uint64_t[]", total)
    rc = _positions(num_bits, num_hashes, seed, buf, len(buf), ends, n, out, total)
    if rc != n:
        raise ValueError(
            f"cache_core C core rejected positions(num_bits={num_bits}, "
            f"num_hashes={num_hashes}) (code {rc})"
        )
    return ffi.unpack(out, total)  # type: ignore[no-any-return]
