"""The C core's own guards: bad states, lengths and offsets return error codes, never touch memory
out of bounds. Run under AddressSanitizer + UBSan by `make sanitize`."""

from __future__ import annotations

from typing import Any

import pytest

from cache_core import _backend
from tests._bloom_helpers import NATIVE_ONLY


@pytest.fixture(params=NATIVE_ONLY, scope="module")
def core() -> tuple[Any, Any]:
    assert _backend.lib is not None, "C core not built"
    return _backend.ffi, _backend.lib


CC_EINVAL, CC_EKEYS = -1, -2


def _state(ffi: Any, nbits: int = 100, k: int = 3, nbytes: int | None = None) -> tuple[Any, Any]:
    nb = (nbits + 7) // 8 if nbytes is None else nbytes
    # Never allocate what a bad state claims: C must refuse it before touching the array.
    bits = ffi.new("uint8_t[]", min(max(nb, 1), 1 << 16))
    st = ffi.new("cc_bloom *")
    st.bits, st.nbytes, st.nbits, st.k, st.seed = bits, nb, nbits, k, 0
    lib = _backend.lib
    lib.cc_bloom_init(st)
    return st, bits


def test_bad_states_are_rejected(core: tuple[Any, Any]) -> None:
    ffi, lib = core
    good, _ = _state(ffi)
    assert lib.cc_bloom_init(good) == 0
    bad = [
        _state(ffi, nbits=0),
        _state(ffi, nbits=100, nbytes=12),  # nbytes must be exactly ceil(nbits / 8)
        _state(ffi, nbits=100, nbytes=1000),
        _state(ffi, k=0),
        _state(ffi, k=100_000),
        _state(ffi, nbits=2**41),
    ]
    null_bits, _ = _state(ffi)
    null_bits.bits = ffi.NULL
    bad.append((null_bits, None))
    out = ffi.new("uint8_t[]", 4)
    for st, _bits in [*bad, (ffi.NULL, None)]:
        assert lib.cc_bloom_add(st, b"k", 1) == CC_EINVAL
        assert lib.cc_bloom_contains(st, b"k", 1) == CC_EINVAL
        assert lib.cc_bloom_add_joined(st, b"a\0b", 3, 2) == CC_EINVAL
        assert lib.cc_bloom_contains_joined(st, b"a\0b", 3, 2, out, 4) == CC_EINVAL
        assert lib.cc_bloom_init(st) == CC_EINVAL


@pytest.mark.parametrize("recip", [0, 1, 2**64 - 1, 12345])
def test_wrong_reciprocal_stays_in_bounds(core: tuple[Any, Any], recip: int) -> None:
    """A state whose Barrett reciprocal init did not derive: batches refuse it; single-key calls
    (which skip that check for speed) compute wrong but in-bounds indexes (ASan watches)."""
    ffi, lib = core
    st, bits = _state(ffi, nbits=13, k=40)
    st.recip = recip
    out = ffi.new("uint8_t[]", 4)
    assert lib.cc_bloom_add_joined(st, b"a\0b", 3, 2) == CC_EINVAL
    assert lib.cc_bloom_contains_joined(st, b"a\0b", 3, 2, out, 4) == CC_EINVAL
    for i in range(200):
        key = f"key{i}".encode()
        assert lib.cc_bloom_add(st, key, len(key)) == 0
        assert lib.cc_bloom_contains(st, key, len(key)) == 1
    assert ffi.buffer(bits)[:][1] >> 5 == 0  # nothing written past bit 12
    assert lib.cc_bloom_init(st) == 0  # init re-derives it


def test_null_key_with_length(core: tuple[Any, Any]) -> None:
    ffi, lib = core
    st, _ = _state(ffi)
    assert lib.cc_bloom_add(st, ffi.NULL, 5) == CC_EINVAL
    assert lib.cc_bloom_contains(st, ffi.NULL, 5) == CC_EINVAL
    assert lib.cc_bloom_add(st, ffi.NULL, 0) == 0  # the empty key
    assert lib.cc_bloom_contains(st, ffi.NULL, 0) == 1


def test_joined_count_mismatch_writes_nothing(core: tuple[Any, Any]) -> None:
    ffi, lib = core
    st, bits = _state(ffi, nbits=4096, k=4)
    before = ffi.buffer(bits)[:]
    for buf, n in [(b"a\0b", 1), (b"a\0b", 3), (b"", 2), (b"\0", 1), (b"abc", 2)]:
        assert lib.cc_bloom_add_joined(st, buf, len(buf), n) == CC_EKEYS
    assert ffi.buffer(bits)[:] == before  # add checks the count before writing any bit
    out = ffi.new("uint8_t[]", 8)
    for buf, n in [(b"a\0b", 1), (b"a\0b", 3), (b"\0\0", 2), (b"abc", 4)]:
        assert lib.cc_bloom_contains_joined(st, buf, len(buf), n, out, 8) == CC_EKEYS
    # Output buffer too small for the announced key count.
    assert lib.cc_bloom_contains_joined(st, b"a\0b\0c", 5, 3, out, 2) == CC_EINVAL
    assert lib.cc_bloom_contains_joined(st, b"a", 1, 1, ffi.NULL, 1) == CC_EINVAL
    assert lib.cc_bloom_add_joined(st, b"", 0, 0) == 0
    assert lib.cc_bloom_add_joined(st, b"", 0, 1) == 1  # one empty key
    assert lib.cc_bloom_contains_joined(st, b"", 0, 1, out, 1) == 1 and out[0] == 1


def test_offsets_are_bounds_checked(core: tuple[Any, Any]) -> None:
    ffi, lib = core
    st, bits = _state(ffi, nbits=4096, k=4)
    out = ffi.new("uint8_t[]", 8)
    before = ffi.buffer(bits)[:]
    for ends in ([2, 1], [4], [1, 2**63], [3, 2]):
        arr = ffi.new("uint64_t[]", ends)
        assert lib.cc_bloom_add_offsets(st, b"abc", 3, arr, len(ends)) == CC_EKEYS
        assert lib.cc_bloom_contains_offsets(st, b"abc", 3, arr, len(ends), out, 8) == CC_EKEYS
    assert ffi.buffer(bits)[:] == before
    arr = ffi.new("uint64_t[]", [1, 1, 3])
    assert lib.cc_bloom_add_offsets(st, b"abc", 3, arr, 3) == 3
    assert lib.cc_bloom_contains_offsets(st, b"abc", 3, arr, 3, out, 3) == 3
    assert list(out)[:3] == [1, 1, 1]
    assert lib.cc_bloom_contains_offsets(st, b"abc", 3, arr, 3, out, 2) == CC_EINVAL
    assert lib.cc_bloom_add_offsets(st, b"abc", 3, ffi.NULL, 1) == CC_EINVAL


def test_whole_array_helpers(core: tuple[Any, Any]) -> None:
    ffi, lib = core
    a = ffi.new("uint8_t[]", [0xF0, 0x01, 0xFF, 0, 0, 0, 0, 0, 0x80, 0x3])
    b = ffi.new("uint8_t[]", [0x0F, 0x01, 0x00, 0, 0, 0, 0, 0, 0x80, 0x1])
    assert lib.cc_popcount(a, 10) == 4 + 1 + 8 + 1 + 2
    assert lib.cc_popcount(ffi.NULL, 3) == CC_EINVAL
    assert lib.cc_popcount(ffi.NULL, 0) == 0
    assert lib.cc_bits_or(a, b, 10) == 0
    assert list(a) == [0xFF, 0x01, 0xFF, 0, 0, 0, 0, 0, 0x80, 0x3]
    assert lib.cc_bits_and(a, b, 10) == 0
    assert list(a) == [0x0F, 0x01, 0x00, 0, 0, 0, 0, 0, 0x80, 0x1]
    assert lib.cc_bits_or(ffi.NULL, b, 1) == CC_EINVAL
    assert lib.cc_bits_and(a, ffi.NULL, 1) == CC_EINVAL
    assert lib.cc_noop3(ffi.NULL, b"", 0) == 0


def test_hash_of_null_is_defined(core: tuple[Any, Any]) -> None:
    ffi, lib = core
    r = lib.cc_hash128(ffi.NULL, 0, 0)
    assert (r.lo, r.hi) == (0, 0)  # murmur3 of the empty input with seed 0
    r = lib.cc_hash128(ffi.NULL, 4, 0)  # refused, not dereferenced
    assert (r.lo, r.hi) == (0, 0)
