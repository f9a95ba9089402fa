"""The public parameters/payload API: BloomParams, bf.params, bf.payload(), from_payload."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from cache_core import BloomFilter
from cache_core._bloom import HEADER_SIZE, BloomParams, optimal_params
from cache_core._bloom_params import check_payload, decode_filter, encode_filter
from tests._bloom_helpers import BACKENDS, native_usable, other_backend


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def filled(backend: str, capacity: int = 500, seed: int = 7) -> BloomFilter:
    bf = BloomFilter(capacity, 0.01, seed=seed, backend=backend)
    bf.update(f"k{i}" for i in range(capacity // 2))
    return bf


def test_params_are_the_filters_parameters(backend: str) -> None:
    bf = filled(backend)
    params = bf.params
    assert params == BloomParams.for_capacity(500, 0.01, seed=7)
    assert (params.capacity, params.error_rate, params.seed) == (500, 0.01, 7)
    assert (params.num_bits, params.num_hashes) == (bf.num_bits, bf.num_hashes)
    assert (params.num_bits, params.num_hashes) == optimal_params(500, 0.01)
    assert params.payload_size == (bf.num_bits + 7) // 8
    assert params.layout == (bf.num_bits, bf.num_hashes, 7)
    assert hash(params) == hash(BloomParams.for_capacity(500, 0.01, seed=7))
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.seed = 1  # type: ignore[misc]


def test_payload_is_a_copy_of_the_bit_array(backend: str) -> None:
    bf = filled(backend)
    payload = bf.payload()
    assert type(payload) is bytes
    assert payload == bf.to_bytes()[HEADER_SIZE:]
    assert len(payload) == bf.params.payload_size
    bf.update(f"more{i}" for i in range(500))
    assert payload != bf.payload()  # taken before: unchanged


def test_from_payload_round_trips_across_backends(backend: str) -> None:
    bf = filled(backend)
    targets = (backend, other_backend(backend)) if native_usable() else ("python",)
    for target in targets:
        clone = BloomFilter.from_payload(bf.params, bf.payload(), backend=target)
        assert clone.backend == target
        assert clone == bf
        assert clone.to_bytes() == bf.to_bytes()
        assert all(f"k{i}" in clone for i in range(250))
        clone.add("only-in-clone")
        assert "only-in-clone" not in bf  # independent bits


def test_from_payload_accepts_any_bytes_like(backend: str) -> None:
    bf = filled(backend)
    for data in (bytearray(bf.payload()), memoryview(bf.payload())):
        assert BloomFilter.from_payload(bf.params, data, backend=backend) == bf


def test_from_payload_on_a_backend_class_follows_the_backend_argument(backend: str) -> None:
    bf = filled(backend)
    impl = type(bf)
    loaded = impl.from_payload(bf.params, bf.payload(), backend="python")
    assert loaded.backend == "python"
    assert loaded == bf


def test_from_payload_rejects_bad_input(backend: str) -> None:
    bf = filled(backend)
    params, payload = bf.params, bf.payload()
    not_params: Any = (500, 0.01, 7, bf.num_bits, bf.num_hashes)
    with pytest.raises(TypeError, match="params must be a BloomParams"):
        BloomFilter.from_payload(not_params, payload, backend=backend)
    for not_bytes in ("0" * len(payload), None, list(payload)):
        with pytest.raises(TypeError, match="payload must be bytes-like"):
            BloomFilter.from_payload(params, not_bytes, backend=backend)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"payload of .* bytes does not hold"):
        BloomFilter.from_payload(params, payload[:-1], backend=backend)
    with pytest.raises(ValueError, match=r"payload of .* bytes does not hold"):
        BloomFilter.from_payload(params, payload + b"\0", backend=backend)
    assert params.num_bits % 8
    with pytest.raises(ValueError, match="payload has bits set beyond num_bits"):
        BloomFilter.from_payload(params, payload[:-1] + b"\xff", backend=backend)
    with pytest.raises(ValueError, match="backend must be"):
        BloomFilter.from_payload(params, payload, backend="rust")


@pytest.mark.parametrize(
    ("field", "value", "error", "message"),
    [
        ("capacity", "500", TypeError, "capacity must be an int"),
        ("capacity", True, TypeError, "capacity must be an int"),
        ("capacity", 0, ValueError, "capacity=0 out of range"),
        ("error_rate", 1, TypeError, "error_rate must be a float"),
        ("error_rate", 1.0, ValueError, "error_rate=1.0 out of range"),
        ("error_rate", float("nan"), ValueError, "error_rate=nan out of range"),
        ("seed", 1.5, TypeError, "seed must be an int"),
        ("seed", -1, ValueError, "seed must be in"),
        ("seed", 2**32, ValueError, "seed must be in"),
        ("num_bits", None, TypeError, "num_bits must be an int"),
        ("num_bits", 0, ValueError, "num_bits 0 outside"),
        ("num_bits", 2**40 + 1, ValueError, "num_bits .* outside"),
        ("num_bits", 100, ValueError, "do not match"),
        ("num_hashes", 2.0, TypeError, "num_hashes must be an int"),
        ("num_hashes", 0, ValueError, "num_hashes 0 outside"),
        ("num_hashes", 5000, ValueError, "num_hashes 5000 outside"),
        ("num_hashes", 1, ValueError, "do not match"),
    ],
)
def test_params_validate_every_field(
    field: str, value: object, error: type[Exception], message: str
) -> None:
    fields = dataclasses.asdict(BloomParams.for_capacity(500, 0.01, seed=7))
    fields[field] = value
    with pytest.raises(error, match=message):
        BloomParams(**fields)


def test_params_allow_one_unit_of_slack() -> None:
    # Another platform's libm may round log() differently: stored parameters may be off by one.
    m, k = optimal_params(500, 0.01)
    for bits, hashes in ((m + 1, k), (m - 1, k), (m, k + 1), (m, k - 1)):
        params = BloomParams(500, 0.01, 0, bits, hashes)
        bf = BloomFilter.from_payload(params, bytes(params.payload_size))
        assert bf.num_bits == bits and bf.num_hashes == hashes


def test_for_capacity_checks_its_arguments() -> None:
    with pytest.raises(TypeError, match="capacity must be an int"):
        BloomParams.for_capacity(1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="capacity must be > 0"):
        BloomParams.for_capacity(-3)
    with pytest.raises(TypeError, match="error_rate must be a float"):
        BloomParams.for_capacity(10, "0.1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="error_rate must be in"):
        BloomParams.for_capacity(10, 0.0)
    with pytest.raises(ValueError, match="seed"):
        BloomParams.for_capacity(10, seed=-1)
    with pytest.raises(ValueError, match="more than the limit"):
        BloomParams.for_capacity(10**13, 1e-9)


def test_encode_and_decode_are_to_bytes_and_from_bytes(backend: str) -> None:
    bf = filled(backend)
    blob = encode_filter(bf.params, bf.payload())
    assert blob == bf.to_bytes()
    assert decode_filter(blob) == (bf.params, bf.payload())
    assert decode_filter(memoryview(blob)) == (bf.params, bf.payload())
    with pytest.raises(ValueError, match="not a valid cache_core BloomFilter"):
        decode_filter(blob[:-1])
    with pytest.raises(TypeError, match="data must be bytes-like"):
        decode_filter("blob")  # type: ignore[arg-type]


def test_check_payload_names_the_payload() -> None:
    params = BloomParams.for_capacity(100)
    assert check_payload(params, bytearray(params.payload_size)) == bytes(params.payload_size)
    with pytest.raises(TypeError, match="payload"):
        check_payload(params, [0] * params.payload_size)
    with pytest.raises(ValueError, match="payload"):
        check_payload(params, b"")
