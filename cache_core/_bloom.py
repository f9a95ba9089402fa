"""BloomFilter: the public class, its parameters, serialization and set operations.

The bit array and the per-key paths live in two small subclasses, one per backend
(``_bloom_native`` on the C core, ``_bloom_python`` on mmh3 + bitarray). ``BloomFilter(...)``
returns an instance of one of them, so ``key in bf`` dispatches straight to the backend's method
with no forwarding layer: on the native single-key path a Python-level hop costs about as much as
the C work itself.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Iterable
from typing import Any, ClassVar, Final

from ._backend import NATIVE, NATIVE_AVAILABLE, PURE_PYTHON_FORCED, native_unavailable_reason
from ._hashing import Key, check_seed

__all__ = ["BloomFilter", "bit_positions", "check_keys_iterable", "optimal_params"]

MAX_BITS: Final = 2**40
"""Upper bound on num_bits (128 GiB of bits): guards allocation and from_bytes headers."""
MAX_HASHES: Final = 4096
"""Upper bound on num_hashes; error_rate down to 5e-324 needs about 1075."""

MAGIC: Final = b"CCBF"
FORMAT_VERSION: Final = 1
# magic, version, flags, capacity, error_rate, seed, num_hashes, num_bits, payload length; then a
# CRC32 of these bytes + the payload. Little-endian, no padding.
_HEADER: Final = struct.Struct("<4sHHQdIIQQ")
_CRC: Final = struct.Struct("<I")
HEADER_SIZE: Final = _HEADER.size + _CRC.size

_LN2: Final = math.log(2)
_BACKENDS: Final = ("native", "python")


def optimal_params(capacity: int, error_rate: float) -> tuple[int, int]:
    """Return (num_bits, num_hashes) for ``capacity`` keys at ``error_rate``.

    m = ceil(-n ln p / (ln 2)^2), k = max(1, round(m/n ln 2)). Computed once, in Python, for both
    backends, so they always agree on m and k.
    """
    m = math.ceil(-capacity * math.log(error_rate) / (_LN2 * _LN2))
    k = max(1, round(m / capacity * _LN2))
    return m, k


def _check_capacity(capacity: object) -> int:
    if isinstance(capacity, bool) or not isinstance(capacity, int):
        raise TypeError(f"capacity must be an int, got {type(capacity).__name__}: {capacity!r:.80}")
    if capacity <= 0:
        raise ValueError(f"capacity must be > 0, got {capacity}")
    return int(capacity)


def _check_error_rate(error_rate: object) -> float:
    if isinstance(error_rate, bool) or not isinstance(error_rate, int | float):
        raise TypeError(
            f"error_rate must be a float, got {type(error_rate).__name__}: {error_rate!r:.80}"
        )
    rate = float(error_rate)
    if not 0.0 < rate < 1.0:  # also False for NaN
        raise ValueError(f"error_rate must be in (0, 1), got {error_rate!r}")
    return rate


def _check_backend(backend: object) -> str:
    """Resolve ``backend`` to "native" or "python"."""
    if backend is None:
        return "native" if NATIVE else "python"
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be 'native', 'python' or None, got {backend!r:.80}")
    if backend == "native" and not (NATIVE_AVAILABLE and not PURE_PYTHON_FORCED):
        raise ValueError(f"backend='native' is unavailable: {native_unavailable_reason()}")
    return str(backend)


def _impl_class(backend: object) -> type[BloomFilter]:
    # Imported here: both modules subclass BloomFilter, so they import this one.
    if _check_backend(backend) == "native":
        from ._bloom_native import NativeBloomFilter

        return NativeBloomFilter
    from ._bloom_python import PythonBloomFilter

    return PythonBloomFilter


def bit_positions(
    keys: Iterable[Key], num_bits: int, num_hashes: int, seed: int, *, backend: str | None = None
) -> list[int]:
    """The bit indexes a filter with these parameters sets for ``keys``, flat: key i's k indexes
    are at ``[i*k, i*k + k)``, in add() order.

    For filters whose bits live elsewhere (a Redis string): the same rule as BloomFilter, on the
    C core when available, without allocating a bit array. Keys are checked like add()'s.
    """
    check_keys_iterable(keys)
    if isinstance(num_bits, bool) or not isinstance(num_bits, int):
        raise TypeError(f"num_bits must be an int, got {type(num_bits).__name__}")
    if not 1 <= num_bits <= MAX_BITS:
        raise ValueError(f"num_bits must be in [1, {MAX_BITS}], got {num_bits}")
    if isinstance(num_hashes, bool) or not isinstance(num_hashes, int):
        raise TypeError(f"num_hashes must be an int, got {type(num_hashes).__name__}")
    if not 1 <= num_hashes <= MAX_HASHES:
        raise ValueError(f"num_hashes must be in [1, {MAX_HASHES}], got {num_hashes}")
    seed = check_seed(seed)
    seq = keys if type(keys) is list else list(keys)
    if _check_backend(backend) == "native":
        from ._bloom_native import positions
    else:
        from ._bloom_python import positions
    return positions(seq, num_bits, num_hashes, seed)


def check_keys_iterable(keys: object) -> None:
    """Reject a lone str/bytes passed where an iterable of keys is expected (update("abc") would
    otherwise add "a", "b" and "c")."""
    if isinstance(keys, str | bytes | bytearray | memoryview):
        raise TypeError(f"keys must be an iterable of keys, not a single {type(keys).__name__}")


def _bad(reason: str) -> ValueError:
    return ValueError(f"data is not a valid cache_core BloomFilter: {reason}")


class BloomFilter:
    """A bloom filter over str (hashed as UTF-8) and bytes-like keys; thread-safe.

    ``BloomFilter(capacity, error_rate)`` sizes the filter for ``capacity`` keys at a false
    positive rate of ``error_rate`` and returns a backend-specific subclass instance: the C core
    when available (``backend=None``), or ``backend="native"`` / ``"python"`` explicitly. Both
    backends set the same bits for the same keys, so ``to_bytes()`` is byte-identical and either
    backend loads the other's bytes.
    """

    __slots__ = ("__weakref__", "_capacity", "_error_rate", "_num_bits", "_num_hashes", "_seed")

    backend: ClassVar[str]
    """"native" or "python": the implementation of this instance."""

    _capacity: int
    _error_rate: float
    _seed: int
    _num_bits: int
    _num_hashes: int

    def __new__(
        cls,
        capacity: int,
        error_rate: float = 0.01,
        *,
        seed: int = 0,
        backend: str | None = None,
    ) -> BloomFilter:
        impl = _impl_class(backend) if cls is BloomFilter else cls
        return object.__new__(impl)

    def __init__(
        self,
        capacity: int,
        error_rate: float = 0.01,
        *,
        seed: int = 0,
        backend: str | None = None,
    ) -> None:
        capacity = _check_capacity(capacity)
        error_rate = _check_error_rate(error_rate)
        seed = check_seed(seed)
        num_bits, num_hashes = optimal_params(capacity, error_rate)
        if num_bits > MAX_BITS:
            raise ValueError(
                f"capacity={capacity} at error_rate={error_rate} needs {num_bits} bits, "
                f"more than the limit of {MAX_BITS}"
            )
        self._set_params(capacity, error_rate, seed, num_bits, num_hashes)
        self._alloc(None)

    def _set_params(
        self, capacity: int, error_rate: float, seed: int, num_bits: int, num_hashes: int
    ) -> None:
        self._capacity = capacity
        self._error_rate = error_rate
        self._seed = seed
        self._num_bits = num_bits
        self._num_hashes = num_hashes

    # ------------------------------------------------------------------ backend interface

    def _alloc(self, payload: bytes | None) -> None:
        """Allocate the bit array: zeroed, or a copy of ``payload`` (already validated)."""
        raise NotImplementedError

    def _payload(self) -> bytes:
        """The bit array as ceil(m/8) bytes, bit i at byte i >> 3, mask 1 << (i & 7)."""
        raise NotImplementedError

    def _popcount(self) -> int:
        raise NotImplementedError

    def _merge(self, other: BloomFilter, op: str) -> None:
        """In place: self.bits = self.bits OP other.bits, OP being "or" or "and"."""
        raise NotImplementedError

    def add(self, key: Key) -> None:
        """Add one key (str is hashed as UTF-8; bytes-like as its bytes)."""
        raise NotImplementedError

    def update(self, keys: Iterable[Key]) -> None:
        """Add many keys; on the C core, in one call (much faster per key than add())."""
        raise NotImplementedError

    def __contains__(self, key: object) -> bool:
        raise NotImplementedError

    def contains_many(self, keys: Iterable[Key]) -> list[bool]:
        """Test many keys at once; on the C core, in one call."""
        raise NotImplementedError

    # ------------------------------------------------------------------ properties

    @property
    def capacity(self) -> int:
        """The number of keys the filter was sized for."""
        return self._capacity

    @property
    def error_rate(self) -> float:
        """The target false positive rate at capacity."""
        return self._error_rate

    @property
    def seed(self) -> int:
        """The murmur3 seed: filters combine only with filters of the same seed."""
        return self._seed

    @property
    def num_bits(self) -> int:
        """m, the size of the bit array."""
        return self._num_bits

    @property
    def num_hashes(self) -> int:
        """k, the number of bits set per key."""
        return self._num_hashes

    @property
    def approx_count(self) -> int:
        """Estimate of the number of distinct keys added: -m/k ln(1 - X/m), X = bits set.

        A saturated filter (X == m) has no finite estimate; it reports the estimate for
        X = m - 1, the largest finite one, rather than raising.
        """
        m, k = self._num_bits, self._num_hashes
        x = min(self._popcount(), m - 1)
        return round(-m / k * math.log1p(-x / m))

    # ------------------------------------------------------------------ serialization

    def to_bytes(self) -> bytes:
        """Serialize: a versioned, checksummed header, then the bit array (ceil(m/8) bytes)."""
        payload = self._payload()
        header = _HEADER.pack(
            MAGIC,
            FORMAT_VERSION,
            0,
            self._capacity,
            self._error_rate,
            self._seed,
            self._num_hashes,
            self._num_bits,
            len(payload),
        )
        crc = zlib.crc32(payload, zlib.crc32(header))
        return b"".join((header, _CRC.pack(crc), payload))

    @classmethod
    def from_bytes(
        cls, data: bytes | bytearray | memoryview, *, backend: str | None = None
    ) -> BloomFilter:
        """Load a filter written by to_bytes() of either backend.

        Everything is checked before anything is allocated (sizes against the data actually
        present, parameters against each other, the checksum), so truncated, corrupt or foreign
        bytes raise ValueError and never reach the C core.
        """
        if isinstance(data, str) or not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"data must be bytes-like, got {type(data).__name__}")
        impl = _impl_class(backend)
        view = memoryview(data).cast("B") if isinstance(data, memoryview) else data
        if len(view) < HEADER_SIZE:
            raise _bad(f"{len(view)} bytes is shorter than the {HEADER_SIZE}-byte header")
        magic, version, flags, capacity, error_rate, seed, num_hashes, num_bits, plen = (
            _HEADER.unpack_from(view)
        )
        if magic != MAGIC:
            raise _bad(f"bad magic {bytes(magic)!r}, expected {MAGIC!r}")
        if version != FORMAT_VERSION:
            raise _bad(f"unsupported format version {version} (this build reads {FORMAT_VERSION})")
        if flags != 0:
            raise _bad(f"unknown flags {flags:#x}")
        if plen != len(view) - HEADER_SIZE:
            raise _bad(f"header declares {plen} payload bytes, {len(view) - HEADER_SIZE} present")
        (crc,) = _CRC.unpack_from(view, _HEADER.size)
        payload = bytes(view[HEADER_SIZE:])
        if zlib.crc32(payload, zlib.crc32(view[: _HEADER.size])) != crc:
            raise _bad("checksum mismatch")
        # The checksum only proves the bytes are intact, not that a writer was sane.
        _check_loaded_params(capacity, error_rate, num_bits, num_hashes, plen)
        if num_bits & 7 and payload[-1] >> (num_bits & 7):
            raise _bad("bits set beyond num_bits in the last byte")
        obj = object.__new__(impl)
        obj._set_params(capacity, error_rate, seed, num_bits, num_hashes)
        obj._alloc(payload)
        return obj

    # ------------------------------------------------------------------ set operations

    def _check_compatible(self, other: BloomFilter, op: str) -> None:
        mine = (self._num_bits, self._num_hashes, self._seed)
        theirs = (other._num_bits, other._num_hashes, other._seed)
        if mine != theirs:
            raise ValueError(
                f"cannot combine bloom filters with {op}: (num_bits, num_hashes, seed) differ, "
                f"{mine} vs {theirs}"
            )

    def _combined(self, other: object, op: str) -> BloomFilter | Any:
        if not isinstance(other, BloomFilter):
            return NotImplemented
        self._check_compatible(other, "|" if op == "or" else "&")
        result = self.copy()
        result._merge(other, op)
        return result

    def _combine_inplace(self, other: object, op: str) -> BloomFilter | Any:
        if not isinstance(other, BloomFilter):
            return NotImplemented
        self._check_compatible(other, "|=" if op == "or" else "&=")
        self._merge(other, op)
        return self

    def __or__(self, other: object) -> BloomFilter:
        """Union: a new filter holding the keys of both (same num_bits, num_hashes and seed)."""
        return self._combined(other, "or")

    def __and__(self, other: object) -> BloomFilter:
        """Intersection of the bit arrays: a superset of the keys in both, never a false negative
        for a key added to both; its false positive rate is at most that of either operand."""
        return self._combined(other, "and")

    def __ior__(self, other: object) -> BloomFilter:
        return self._combine_inplace(other, "or")

    def __iand__(self, other: object) -> BloomFilter:
        return self._combine_inplace(other, "and")

    def _params(self) -> tuple[int, float, int, int, int]:
        return (self._capacity, self._error_rate, self._seed, self._num_bits, self._num_hashes)

    def __eq__(self, other: object) -> bool:
        """Same parameters and same bits; the backend does not matter."""
        if not isinstance(other, BloomFilter):
            return NotImplemented
        return self._params() == other._params() and self._payload() == other._payload()

    __hash__ = None  # type: ignore[assignment]  # mutable

    def copy(self) -> BloomFilter:
        """An independent filter with the same parameters, bits and backend."""
        obj = object.__new__(type(self))
        obj._set_params(*self._params())
        obj._alloc(self._payload())
        return obj

    __copy__ = copy

    def __deepcopy__(self, memo: dict[int, object]) -> BloomFilter:
        return self.copy()

    def __reduce__(self) -> tuple[Any, ...]:
        return (_from_bytes_for_pickle, (self.to_bytes(), self.backend))

    def __repr__(self) -> str:
        return (
            f"<BloomFilter backend={self.backend!r} capacity={self._capacity} "
            f"error_rate={self._error_rate!r} seed={self._seed} num_bits={self._num_bits} "
            f"num_hashes={self._num_hashes} approx_count={self.approx_count}>"
        )


def _check_loaded_params(
    capacity: int, error_rate: float, num_bits: int, num_hashes: int, plen: int
) -> None:
    if not 1 <= num_bits <= MAX_BITS:
        raise _bad(f"num_bits {num_bits} outside [1, {MAX_BITS}]")
    if not 1 <= num_hashes <= MAX_HASHES:
        raise _bad(f"num_hashes {num_hashes} outside [1, {MAX_HASHES}]")
    if plen != (num_bits + 7) // 8:
        raise _bad(f"payload of {plen} bytes does not hold num_bits={num_bits}")
    if capacity < 1 or not 0.0 < error_rate < 1.0:
        raise _bad(f"capacity={capacity}, error_rate={error_rate!r} out of range")
    want_bits, want_hashes = optimal_params(capacity, error_rate)
    # Allow one unit of slack: another platform's libm may round log() differently.
    if abs(want_bits - num_bits) > 1 or abs(want_hashes - num_hashes) > 1:
        raise _bad(
            f"num_bits={num_bits}, num_hashes={num_hashes} do not match capacity={capacity}, "
            f"error_rate={error_rate!r} (expected {want_bits}, {want_hashes})"
        )


def _from_bytes_for_pickle(data: bytes, backend: str) -> BloomFilter:
    # Unpickling where the C core is missing still works: fall back instead of failing.
    if backend == "native" and not NATIVE:
        backend = "python"
    return BloomFilter.from_bytes(data, backend=backend)
