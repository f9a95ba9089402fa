"""BloomParams and the serialized format: what fixes a filter's bit positions, and its bytes.

``BloomParams`` is the frozen, validated set of five numbers a filter is made of (``capacity``,
``error_rate``, ``seed``, ``num_bits``, ``num_hashes``). Two filters with equal parameters set
the same bits for the same keys, whatever their backend or where their bits live (a local bit
array, a Redis string). ``encode_filter`` / ``decode_filter`` write and read the serialized form
(a versioned, checksummed header, then the payload) that ``BloomFilter.to_bytes()`` /
``from_bytes()`` use; ``check_payload`` is the payload half of that validation.

The payload is the bit array as ``ceil(num_bits / 8)`` bytes, bit ``i`` at byte ``i >> 3`` under
mask ``1 << (i & 7)``, the padding bits of the last byte zero.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass
from typing import Final

from ._hashing import check_seed
from ._validate import check_int

__all__ = [
    "FORMAT_VERSION",
    "HEADER_SIZE",
    "MAGIC",
    "MAX_BITS",
    "MAX_HASHES",
    "BloomParams",
    "check_payload",
    "decode_filter",
    "encode_filter",
    "optimal_params",
]

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
"""Bytes before the payload in ``to_bytes()`` output: the header and its CRC32."""

_LN2: Final = math.log(2)


def optimal_params(capacity: int, error_rate: float) -> tuple[int, int]:
    """Return (num_bits, num_hashes) for ``capacity`` keys at ``error_rate``.

    m = ceil(-n ln p / (ln 2)^2), k = max(1, round(m/n ln 2)). Computed once, in Python, for both
    backends, so they always agree on m and k.
    """
    m = math.ceil(-capacity * math.log(error_rate) / (_LN2 * _LN2))
    k = max(1, round(m / capacity * _LN2))
    return m, k


def _check_capacity(capacity: object) -> int:
    capacity = check_int(capacity, "capacity")
    if capacity <= 0:
        raise ValueError(f"capacity must be > 0, got {capacity}")
    return capacity


def _check_error_rate(error_rate: object) -> float:
    if isinstance(error_rate, bool) or not isinstance(error_rate, int | float):
        raise TypeError(
            f"error_rate must be a float, got {type(error_rate).__name__}: {error_rate!r:.80}"
        )
    rate = float(error_rate)
    if not 0.0 < rate < 1.0:  # also False for NaN
        raise ValueError(f"error_rate must be in (0, 1), got {error_rate!r}")
    return rate


@dataclass(frozen=True, slots=True)
class BloomParams:
    """The parameters of a bloom filter; validated on construction, immutable, comparable.

    ``BloomParams.for_capacity(capacity, error_rate, seed=...)`` derives ``num_bits`` and
    ``num_hashes`` as ``BloomFilter(...)`` does. Built directly (from stored parameters), every
    field is checked: ints / a float (TypeError naming the field), ranges (ValueError naming
    it), and ``num_bits`` / ``num_hashes`` must be what ``capacity`` and ``error_rate`` give,
    give or take one (another platform's libm may round ``log()`` differently).
    """

    capacity: int
    error_rate: float
    seed: int
    num_bits: int
    num_hashes: int

    def __post_init__(self) -> None:
        for name in ("capacity", "seed", "num_bits", "num_hashes"):
            check_int(getattr(self, name), name)
        error_rate = self.error_rate
        if isinstance(error_rate, bool) or not isinstance(error_rate, float):
            raise TypeError(f"error_rate must be a float, not {type(error_rate).__name__}")
        check_seed(self.seed)
        if self.capacity < 1:
            raise ValueError(f"capacity={self.capacity} out of range (must be >= 1)")
        if not 0.0 < error_rate < 1.0:
            raise ValueError(f"error_rate={error_rate!r} out of range (must be in (0, 1))")
        if not 1 <= self.num_bits <= MAX_BITS:
            raise ValueError(f"num_bits {self.num_bits} outside [1, {MAX_BITS}]")
        if not 1 <= self.num_hashes <= MAX_HASHES:
            raise ValueError(f"num_hashes {self.num_hashes} outside [1, {MAX_HASHES}]")
        want_bits, want_hashes = optimal_params(self.capacity, error_rate)
        if abs(want_bits - self.num_bits) > 1 or abs(want_hashes - self.num_hashes) > 1:
            raise ValueError(
                f"num_bits={self.num_bits}, num_hashes={self.num_hashes} do not match "
                f"capacity={self.capacity}, error_rate={error_rate!r} "
                f"(expected {want_bits}, {want_hashes})"
            )

    @classmethod
    def for_capacity(cls, capacity: int, error_rate: float = 0.01, *, seed: int = 0) -> BloomParams:
        """The parameters of a filter sized for ``capacity`` keys at ``error_rate``."""
        capacity = _check_capacity(capacity)
        error_rate = _check_error_rate(error_rate)
        seed = check_seed(seed)
        num_bits, num_hashes = optimal_params(capacity, error_rate)
        if num_bits > MAX_BITS:
            raise ValueError(
                f"capacity={capacity} at error_rate={error_rate} needs {num_bits} bits, "
                f"more than the limit of {MAX_BITS}"
            )
        return cls(capacity, error_rate, seed, num_bits, num_hashes)

    @property
    def payload_size(self) -> int:
        """The payload's length in bytes: ceil(num_bits / 8)."""
        return (self.num_bits + 7) // 8

    @property
    def layout(self) -> tuple[int, int, int]:
        """(num_bits, num_hashes, seed): what must agree for two filters to combine."""
        return (self.num_bits, self.num_hashes, self.seed)


def check_payload(params: BloomParams, payload: object) -> bytes:
    """``payload`` as bytes if it is a valid bit array for ``params``, else TypeError /
    ValueError naming ``payload``: its length must be ``params.payload_size`` and the padding
    bits of its last byte zero."""
    if isinstance(payload, str) or not isinstance(payload, bytes | bytearray | memoryview):
        raise TypeError(f"payload must be bytes-like, not {type(payload).__name__}")
    data = payload if type(payload) is bytes else bytes(payload)
    if len(data) != params.payload_size:
        raise ValueError(
            f"payload of {len(data)} bytes does not hold num_bits={params.num_bits} "
            f"({params.payload_size} bytes)"
        )
    tail = params.num_bits & 7
    if tail and data[-1] >> tail:
        raise ValueError("payload has bits set beyond num_bits in the last byte")
    return data


def encode_filter(params: BloomParams, payload: bytes) -> bytes:
    """The serialized filter: header, CRC32 of header + payload, then ``payload`` (which the
    caller has checked against ``params``)."""
    header = _HEADER.pack(
        MAGIC,
        FORMAT_VERSION,
        0,
        params.capacity,
        params.error_rate,
        params.seed,
        params.num_hashes,
        params.num_bits,
        len(payload),
    )
    crc = zlib.crc32(payload, zlib.crc32(header))
    return b"".join((header, _CRC.pack(crc), payload))


def _bad(reason: str) -> ValueError:
    return ValueError(f"data is not a valid cache_core BloomFilter: {reason}")


def decode_filter(data: bytes | bytearray | memoryview) -> tuple[BloomParams, bytes]:
    """(parameters, payload) of a serialized filter, everything checked first.

    Sizes are checked against the data actually present, then the checksum, then the
    parameters against each other and the payload against them, so truncated, corrupt or
    foreign bytes raise ValueError ("data is not a valid cache_core BloomFilter: ...") before
    anything is allocated from what they declare.
    """
    if isinstance(data, str) or not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"data must be bytes-like, got {type(data).__name__}")
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
    try:
        params = BloomParams(capacity, error_rate, seed, num_bits, num_hashes)
        return params, check_payload(params, payload)
    except ValueError as exc:
        raise _bad(str(exc)) from None
