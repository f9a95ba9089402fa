"""BloomFilter: the public class, its parameters, serialization and set operations.

The bit array and the per-key paths live in two small subclasses, one per backend
(``_bloom_native`` on the C core, ``_bloom_python`` on mmh3 + bitarray). ``BloomFilter(...)``
returns an instance of one of them, so ``key in bf`` dispatches straight to the backend's method
with no forwarding layer: on the native single-key path a Python-level hop costs about as much as
the C work itself.

The parameters (``BloomParams``) and the serialized format live in ``_bloom_params``; a filter
is fully described by ``bf.params`` and ``bf.payload()``, and ``BloomFilter.from_payload``
rebuilds one from them (what filters whose bits live elsewhere, in Redis, use).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, ClassVar, Final

from ._backend import NATIVE, NATIVE_AVAILABLE, PURE_PYTHON_FORCED, native_unavailable_reason
from ._bloom_params import (
    HEADER_SIZE,
    MAX_BITS,
    MAX_HASHES,
    BloomParams,
    check_payload,
    decode_filter,
    encode_filter,
    optimal_params,
)
from ._hashing import Key, check_seed

__all__ = [
    "HEADER_SIZE",
    "BloomFilter",
    "BloomParams",
    "bit_positions",
    "check_keys_iterable",
    "optimal_params",
    "resolve_backend",
]

_BACKENDS: Final = ("native", "python")


def resolve_backend(backend: object) -> str:
    """Resolve a ``backend`` argument to "native" or "python" (None: native when available);
    ValueError naming ``backend`` for anything else or for an unavailable C core."""
    if backend is None:
        return "native" if NATIVE else "python"
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be 'native', 'python' or None, got {backend!r:.80}")
    if backend == "native" and not (NATIVE_AVAILABLE and not PURE_PYTHON_FORCED):
        raise ValueError(f"backend='native' is unavailable: {native_unavailable_reason()}")
    return str(backend)


def _impl_class(backend: object) -> type[BloomFilter]:
    # Imported here: both modules subclass BloomFilter, so they import this one.
    if resolve_backend(backend) == "native":
        from ._bloom_native import NativeBloomFilter

        return NativeBloomFilter
    from ._bloom_python import PythonBloomFilter

    return PythonBloomFilter


def _check_int_in(value: object, name: str, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not 1 <= value <= high:
        raise ValueError(f"{name} must be in [1, {high}], got {value}")
    return value


def bit_positions(
    keys: Iterable[Key], num_bits: int, num_hashes: int, seed: int, *, backend: str | None = None
) -> list[int]:
    """The bit indexes a filter with these parameters sets for ``keys``, flat: key i's k indexes
    are at ``[i*k, i*k + k)``, in add() order.

    For filters whose bits live elsewhere (a Redis string): the same rule as BloomFilter, on the
    C core when available, without allocating a bit array. Keys are checked like add()'s.
    """
    check_keys_iterable(keys)
    _check_int_in(num_bits, "num_bits", MAX_BITS)
    _check_int_in(num_hashes, "num_hashes", MAX_HASHES)
    seed = check_seed(seed)
    seq = keys if type(keys) is list else list(keys)
    if resolve_backend(backend) == "native":
        from ._bloom_native import positions
    else:
        from ._bloom_python import positions
    return positions(seq, num_bits, num_hashes, seed)


def check_keys_iterable(keys: object) -> None:
    """Reject a lone str/bytes passed where an iterable of keys is expected (update("abc") would
    otherwise add "a", "b" and "c")."""
    if isinstance(keys, str | bytes | bytearray | memoryview):
        raise TypeError(f"keys must be an iterable of keys, not a single {type(keys).__name__}")


class BloomFilter:
    """A bloom filter over str (hashed as UTF-8) and bytes-like keys; thread-safe.

    ``BloomFilter(capacity, error_rate)`` sizes the filter for ``capacity`` keys at a false
    positive rate of ``error_rate`` and returns a backend-specific subclass instance: the C core
    when available (``backend=None``), or ``backend="native"`` / ``"python"`` explicitly. Both
    backends set the same bits for the same keys, so ``to_bytes()`` is byte-identical and either
    backend loads the other's bytes.
    """

    __slots__ = (
        "__weakref__",
        "_capacity",
        "_error_rate",
        "_num_bits",
        "_num_hashes",
        "_params",
        "_seed",
    )

    backend: ClassVar[str]
    """"native" or "python": the implementation of this instance."""

    _params: BloomParams
    # The fields of _params again, as plain slots: the pure-Python hot path reads them per key.
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
        self._setup(BloomParams.for_capacity(capacity, error_rate, seed=seed), None)

    def _setup(self, params: BloomParams, payload: bytes | None) -> None:
        """Take ``params`` and allocate the bit array (zeroed, or a copy of a checked payload)."""
        self._params = params
        self._capacity = params.capacity
        self._error_rate = params.error_rate
        self._seed = params.seed
        self._num_bits = params.num_bits
        self._num_hashes = params.num_hashes
        self._alloc(payload)

    @classmethod
    def _loaded(cls, params: BloomParams, payload: bytes) -> BloomFilter:
        """A new instance of this (backend) class holding ``payload``: the constructor for
        filters that come from stored bits. Only the class itself sets up its new object."""
        obj = object.__new__(cls)
        cls._setup(obj, params, payload)
        return obj

    # ------------------------------------------------------------------ backend interface

    def _alloc(self, payload: bytes | None) -> None:
        """Allocate the bit array: zeroed, or a copy of ``payload`` (already validated)."""
        raise NotImplementedError

    def payload(self) -> bytes:
        """A copy of the bit array: ``params.payload_size`` bytes, bit i at byte i >> 3 under
        mask 1 << (i & 7), padding bits zero; the part of ``to_bytes()`` after the header."""
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
    def params(self) -> BloomParams:
        """All five parameters as one frozen value (what ``from_payload`` takes back)."""
        return self._params

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
        return encode_filter(self._params, self.payload())

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
        params, payload = decode_filter(data)
        return impl.from_payload(params, payload, backend=impl.backend)

    @classmethod
    def from_payload(
        cls,
        params: BloomParams,
        payload: bytes | bytearray | memoryview,
        *,
        backend: str | None = None,
    ) -> BloomFilter:
        """A filter with parameters ``params`` and bit array ``payload`` (as ``payload()``
        returns it), on ``backend`` (None: native when available).

        ``params`` must be a ``BloomParams`` (TypeError naming it); ``payload`` must be
        bytes-like of ``params.payload_size`` bytes with its padding bits zero (TypeError /
        ValueError naming it). The payload is copied.
        """
        impl = _impl_class(backend)
        if impl is not cls:
            return impl.from_payload(params, payload, backend=impl.backend)
        if not isinstance(params, BloomParams):
            raise TypeError(f"params must be a BloomParams, not {type(params).__name__}")
        return cls._loaded(params, check_payload(params, payload))

    # ------------------------------------------------------------------ set operations

    def _check_compatible(self, other: BloomFilter, op: str) -> None:
        mine = (self._num_bits, self._num_hashes, self._seed)
        theirs = other.params.layout
        if mine != theirs:
            raise ValueError(
                f"cannot combine bloom filters with {op}: (num_bits, num_hashes, seed) differ, "
                f"{mine} vs {theirs}"
            )

    def _combine_inplace(self, other: object, op: str) -> BloomFilter | Any:
        if not isinstance(other, BloomFilter):
            return NotImplemented
        self._check_compatible(other, "|=" if op == "or" else "&=")
        self._merge(other, op)
        return self

    def __or__(self, other: object) -> BloomFilter:
        """Union: a new filter holding the keys of both (same num_bits, num_hashes and seed)."""
        if not isinstance(other, BloomFilter):
            return NotImplemented
        self._check_compatible(other, "|")
        result = self.copy()
        result |= other
        return result

    def __and__(self, other: object) -> BloomFilter:
        """Intersection of the bit arrays: a superset of the keys in both, never a false negative
        for a key added to both; its false positive rate is at most that of either operand."""
        if not isinstance(other, BloomFilter):
            return NotImplemented
        self._check_compatible(other, "&")
        result = self.copy()
        result &= other
        return result

    def __ior__(self, other: object) -> BloomFilter:
        return self._combine_inplace(other, "or")

    def __iand__(self, other: object) -> BloomFilter:
        return self._combine_inplace(other, "and")

    def __eq__(self, other: object) -> bool:
        """Same parameters and same bits; the backend does not matter."""
        if not isinstance(other, BloomFilter):
            return NotImplemented
        return self._params == other.params and self.payload() == other.payload()

    __hash__ = None  # type: ignore[assignment]  # mutable

    def copy(self) -> BloomFilter:
        """An independent filter with the same parameters, bits and backend."""
        return self._loaded(self._params, self.payload())

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


def _from_bytes_for_pickle(data: bytes, backend: str) -> BloomFilter:
    # Unpickling where the C core is missing still works: fall back instead of failing.
    if backend == "native" and not NATIVE:
        backend = "python"
    return BloomFilter.from_bytes(data, backend=backend)
