"""Pure-Python bloom backend on mmh3 + bitarray: the reference the C core must match bit for bit.

mmh3.hash64(..., x64arch=True, signed=False) returns the two 64-bit halves of hash128 (h1, h2)
without building a 128-bit int; bitarray(endian="little") puts bit i at byte i >> 3 under mask
1 << (i & 7), the layout to_bytes() promises.
"""

from __future__ import annotations

from collections.abc import Iterable

import mmh3
from bitarray import bitarray

from ._bloom import BloomFilter, check_keys_iterable
from ._hashing import Key, key_bytes

__all__ = ["PythonBloomFilter", "positions"]

_M64 = (1 << 64) - 1
_hash64 = mmh3.hash64


class PythonBloomFilter(BloomFilter):
    """BloomFilter on mmh3 + bitarray; the GIL serializes bit writes, so it is thread-safe."""

    __slots__ = ("_bits",)
    backend = "python"

    _bits: bitarray

    def _alloc(self, payload: bytes | None) -> None:
        if payload is None:
            bits = bitarray(self._num_bits, endian="little")
            bits.setall(0)
        else:
            bits = bitarray(endian="little")
            bits.frombytes(payload)
            del bits[self._num_bits :]
        self._bits = bits

    def payload(self) -> bytes:
        # bitarray pads the last byte with zeros, as the format requires.
        return self._bits.tobytes()

    def _popcount(self) -> int:
        return int(self._bits.count())

    def _merge(self, other: BloomFilter, op: str) -> None:
        theirs = bitarray(endian="little")
        theirs.frombytes(other.payload())
        del theirs[self._num_bits :]
        if op == "or":
            self._bits |= theirs
        else:
            self._bits &= theirs

    def _indexes(self, key: object) -> list[int]:
        h1, h2 = _hash64(key_bytes(key), self._seed, x64arch=True, signed=False)
        m = self._num_bits
        return [((h1 + i * h2) & _M64) % m for i in range(self._num_hashes)]

    def add(self, key: Key) -> None:
        bits = self._bits
        for idx in self._indexes(key):
            bits[idx] = 1

    def update(self, keys: Iterable[Key]) -> None:
        check_keys_iterable(keys)
        bits = self._bits
        for key in keys:
            for idx in self._indexes(key):
                bits[idx] = 1

    def __contains__(self, key: object) -> bool:
        bits = self._bits
        return all(bits[idx] for idx in self._indexes(key))

    def contains_many(self, keys: Iterable[Key]) -> list[bool]:
        check_keys_iterable(keys)
        contains = self.__contains__
        return [contains(key) for key in keys]


def positions(keys: list[object], num_bits: int, num_hashes: int, seed: int) -> list[int]:
    """The k bit indexes of each key, flat (key i's at [i*k, i*k + k)): the reference rule."""
    out: list[int] = []
    for key in keys:
        h1, h2 = _hash64(key_bytes(key), seed, x64arch=True, signed=False)
        out.extend(((h1 + i * h2) & _M64) % num_bits for i in range(num_hashes))
    return out
