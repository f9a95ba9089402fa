"""hash128 must equal mmh3.hash128(data, seed, x64arch=True, signed=False), on both cores."""

from __future__ import annotations

from collections.abc import Callable

import mmh3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cache_core
from cache_core import _hashing
from tests._bloom_helpers import BACKENDS

SEEDS = [0, 1, 42, 0x9747B28C, 2**31, 2**32 - 1]


def _reference(data: bytes | str, seed: int) -> int:
    return int(mmh3.hash128(data, seed, x64arch=True, signed=False))


@pytest.fixture(params=BACKENDS, scope="module")
def impl(request: pytest.FixtureRequest) -> Callable[[bytes, int], int]:
    """The raw implementation (after key encoding) of one core."""
    if request.param == "native":
        return _hashing._hash128_native
    return _hashing._hash128_python


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200), seed=st.sampled_from(SEEDS) | st.integers(0, 2**32 - 1))
def test_bytes_match_mmh3(impl: Callable[[bytes, int], int], data: bytes, seed: int) -> None:
    assert impl(data, seed) == _reference(data, seed)


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=100), seed=st.sampled_from(SEEDS))
def test_str_hashed_as_utf8(text: str, seed: int) -> None:
    # st.text() never produces lone surrogates, so mmh3 can take the str itself.
    assert cache_core.hash128(text, seed) == _reference(text, seed)
    assert cache_core.hash128(text, seed) == _reference(text.encode(), seed)


@pytest.mark.parametrize("text", ["", "a", "é", "日本語", "\U0001f600 emoji", "𝄞" * 17, "\0nul\0"])
def test_non_bmp_and_edge_strings(impl: Callable[[bytes, int], int], text: str) -> None:
    for seed in SEEDS:
        assert impl(text.encode(), seed) == _reference(text, seed)


def test_every_tail_length(impl: Callable[[bytes, int], int]) -> None:
    """Lengths 0..64 walk every branch of the tail switch and the block loop."""
    data = bytes(range(256))
    for n in range(65):
        for seed in (0, 2**32 - 1):
            assert impl(data[:n], seed) == _reference(data[:n], seed)


def test_halves_are_h1_low_h2_high() -> None:
    """The bloom index rule reads h1 from the low 64 bits: that is mmh3.hash64's first value."""
    v = cache_core.hash128(b"user:1", 7)
    h1, h2 = mmh3.hash64(b"user:1", 7, x64arch=True, signed=False)
    assert (v & (2**64 - 1), v >> 64) == (h1, h2)


def test_default_seed_and_bytes_like() -> None:
    expected = _reference(b"abc", 0)
    assert cache_core.hash128(b"abc") == expected
    assert cache_core.hash128(bytearray(b"abc")) == expected
    assert cache_core.hash128(memoryview(b"xabcx")[1:4]) == expected


def test_lone_surrogate_rejected_without_crash() -> None:
    # mmh3 itself segfaults on this str; hash128 must encode first and raise.
    with pytest.raises(ValueError, match="data"):
        cache_core.hash128("bad \ud800 surrogate")


@pytest.mark.parametrize("seed", [-1, 2**32, 2**64])
def test_seed_out_of_range(seed: int) -> None:
    with pytest.raises(ValueError, match="seed"):
        cache_core.hash128(b"x", seed)


@pytest.mark.parametrize("seed", [1.0, "1", None, True])
def test_seed_wrong_type(seed: object) -> None:
    with pytest.raises(TypeError, match="seed"):
        cache_core.hash128(b"x", seed)  # type: ignore[arg-type]


@pytest.mark.parametrize("data", [1, None, [b"x"], 1.5])
def test_data_wrong_type(data: object) -> None:
    with pytest.raises(TypeError, match="data"):
        cache_core.hash128(data)  # type: ignore[arg-type]


def test_public_hash128_uses_active_core() -> None:
    expected = _hashing._hash128_native if cache_core.NATIVE else _hashing._hash128_python
    assert _hashing._hash128_impl is expected
