"""Serialization: byte-identical across backends, and from_bytes never trusts its input."""

from __future__ import annotations

import os
import random
import struct
import subprocess
import sys
import textwrap
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cache_core import BloomFilter, _bloom
from tests._bloom_helpers import BACKENDS, native_usable

HEADER = struct.Struct("<4sHHQdIIQQ")


@pytest.fixture(params=BACKENDS, scope="module")
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _sample(backend: str) -> bytes:
    bf = BloomFilter(500, 0.01, seed=3, backend=backend)
    bf.update(f"k{i}" for i in range(300))
    return bf.to_bytes()


def _resign(header_fields: tuple[object, ...], payload: bytes) -> bytes:
    """Build a blob with a *valid* checksum, to reach the checks behind the CRC."""
    header = HEADER.pack(*header_fields)
    crc = zlib.crc32(payload, zlib.crc32(header))
    return header + struct.pack("<I", crc) + payload


# ---------------------------------------------------------------------- byte identity

keys_strategy = st.lists(st.binary(max_size=24) | st.text(max_size=12), max_size=80)


@settings(max_examples=120, deadline=None)
@given(
    keys=keys_strategy,
    capacity=st.integers(1, 3000),
    error_rate=st.floats(1e-6, 0.5),
    seed=st.integers(0, 2**32 - 1),
)
def test_backends_are_byte_identical(
    keys: list[str | bytes], capacity: int, error_rate: float, seed: int
) -> None:
    if not native_usable():
        pytest.skip("needs the C core")
    native = BloomFilter(capacity, error_rate, seed=seed, backend="native")
    python = BloomFilter(capacity, error_rate, seed=seed, backend="python")
    half = len(keys) // 2
    for key in keys[:half]:
        native.add(key)
        python.add(key)
    native.update(keys[half:])  # batch path on one side, single-key on the other
    for key in keys[half:]:
        python.add(key)
    blob = native.to_bytes()
    assert blob == python.to_bytes()
    assert native == python
    for loader in ("native", "python"):
        loaded = BloomFilter.from_bytes(blob, backend=loader)
        assert loaded.backend == loader
        assert loaded == native and loaded.to_bytes() == blob
        assert loaded.contains_many(keys) == [True] * len(keys)
    assert native.contains_many(keys) == python.contains_many(keys)
    assert native.approx_count == python.approx_count


def test_roundtrip_and_format(backend: str) -> None:
    bf = BloomFilter(1000, 0.02, seed=9, backend=backend)
    bf.update(["a", "b"])
    blob = bf.to_bytes()
    fields = HEADER.unpack_from(blob)
    assert fields == (b"CCBF", 1, 0, 1000, 0.02, 9, bf.num_hashes, bf.num_bits, 1018)
    assert len(blob) == HEADER.size + 4 + (bf.num_bits + 7) // 8
    # Unused high bits of the last byte are zero (num_bits = 8142 -> 6 bits used in byte 1017).
    assert blob[-1] >> (bf.num_bits & 7) == 0
    for data in (blob, bytearray(blob), memoryview(blob)):
        assert BloomFilter.from_bytes(data) == bf


def test_saturated_filter_keeps_padding_zero(backend: str) -> None:
    bf = BloomFilter(3, 0.2, backend=backend)  # 11 bits
    bf.update(str(i) for i in range(1000))
    assert bf.num_bits % 8
    blob = bf.to_bytes()
    assert blob[-1] == (1 << (bf.num_bits % 8)) - 1
    assert BloomFilter.from_bytes(blob, backend=backend) == bf


# ---------------------------------------------------------------------- rejection


def test_from_bytes_type_errors() -> None:
    for data in ("CCBF", None, 1, [1, 2]):
        with pytest.raises(TypeError, match="data must be bytes-like"):
            BloomFilter.from_bytes(data)  # type: ignore[arg-type]


def test_truncated(backend: str) -> None:
    blob = _sample(backend)
    for n in [*range(0, 60), len(blob) // 2, len(blob) - 1]:
        with pytest.raises(ValueError, match="not a valid cache_core BloomFilter"):
            BloomFilter.from_bytes(blob[:n], backend=backend)
    with pytest.raises(ValueError, match="payload bytes"):
        BloomFilter.from_bytes(blob + b"\0", backend=backend)


def test_every_single_byte_mutation_is_rejected(backend: str) -> None:
    blob = _sample(backend)
    for i in range(len(blob)):
        mutated = bytearray(blob)
        mutated[i] ^= 1 << (i % 8)
        with pytest.raises(ValueError, match="not a valid cache_core BloomFilter"):
            BloomFilter.from_bytes(bytes(mutated), backend=backend)


def test_foreign_and_random_blobs(backend: str) -> None:
    rng = random.Random(1)
    foreign = [b"", b"CCBF", b"\x89PNG\r\n\x1a\n" + bytes(100), b'{"bits": []}' * 10]
    foreign += [rng.randbytes(rng.randrange(200)) for _ in range(300)]
    for blob in foreign:
        with pytest.raises(ValueError, match="not a valid cache_core BloomFilter"):
            BloomFilter.from_bytes(blob, backend=backend)


def _fields(blob: bytes) -> list[object]:
    return list(HEADER.unpack_from(blob))


@pytest.mark.parametrize(
    ("index", "value", "message"),
    [
        (0, b"XXXX", "bad magic"),
        (1, 2, "unsupported format version 2"),
        (1, 0, "unsupported format version 0"),
        (2, 1, "unknown flags"),
        (3, 0, "out of range"),
        (4, 0.0, "out of range"),
        (4, 1.0, "out of range"),
        (4, float("nan"), "out of range"),
        (6, 0, "num_hashes 0 outside"),
        (6, 2**32 - 1, "num_hashes 4294967295 outside"),
        (6, 3, "do not match"),
        (7, 0, "num_bits 0 outside"),
        (7, 2**62, "num_bits 4611686018427387904 outside"),
        (7, 2**40 + 1, "outside"),
        (3, 2**63, "do not match"),
    ],
)
def test_header_checks_behind_a_valid_checksum(
    backend: str, index: int, value: object, message: str
) -> None:
    blob = _sample(backend)
    fields = _fields(blob)
    fields[index] = value
    forged = _resign(tuple(fields), blob[HEADER.size + 4 :])
    with pytest.raises(ValueError, match=message):
        BloomFilter.from_bytes(forged, backend=backend)


def test_huge_declared_sizes_do_not_allocate(backend: str) -> None:
    blob = _sample(backend)
    fields = _fields(blob)
    # A consistent header for a 1 TiB-bit filter, but without its payload.
    capacity, rate = 10**11, 0.01
    m, k = _bloom.optimal_params(capacity, rate)
    fields[3:9] = [capacity, rate, 0, k, m, (m + 7) // 8]
    with pytest.raises(ValueError, match="payload bytes"):
        BloomFilter.from_bytes(_resign(tuple(fields), b""), backend=backend)
    # Payload length consistent with the data present but not with num_bits.
    fields[8] = 10
    with pytest.raises(ValueError, match=r"outside|does not hold"):
        BloomFilter.from_bytes(_resign(tuple(fields), bytes(10)), backend=backend)


def test_padding_bits_must_be_zero(backend: str) -> None:
    blob = bytearray(_sample(backend))
    fields = _fields(bytes(blob))
    payload = bytearray(blob[HEADER.size + 4 :])
    assert int(fields[7]) % 8  # type: ignore[call-overload]
    payload[-1] |= 0x80
    with pytest.raises(ValueError, match="beyond num_bits"):
        BloomFilter.from_bytes(_resign(tuple(fields), bytes(payload)), backend=backend)


# ---------------------------------------------------------------------- fuzz in a subprocess

FUZZ_SCRIPT = textwrap.dedent(
    """
    import random, struct, sys, zlib
    from cache_core import BloomFilter

    backend, count, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(seed)
    H = struct.Struct("<4sHHQdIIQQ")
    bases = []
    for cap, rate, nkeys in [(1, 0.5, 3), (10, 0.1, 5), (333, 0.01, 200), (64, 0.001, 64)]:
        bf = BloomFilter(cap, rate, seed=rng.randrange(2**32), backend=backend)
        bf.update(rng.randbytes(rng.randrange(1, 12)) for _ in range(nkeys))
        bases.append(bf.to_bytes())

    def resign(blob):
        # Recompute the CRC so the mutation reaches the checks behind it.
        if len(blob) < H.size:
            return blob
        crc = zlib.crc32(blob[H.size + 4:], zlib.crc32(blob[:H.size]))
        return blob[:H.size] + struct.pack("<I", crc) + blob[H.size + 4:]

    accepted = rejected = 0
    for i in range(count):
        blob = bytearray(rng.choice(bases))
        kind = i % 5
        if kind == 0:
            blob = blob[: rng.randrange(len(blob) + 1)]
        elif kind in (1, 2):
            for _ in range(rng.randrange(1, 6)):
                if blob:
                    blob[rng.randrange(len(blob))] = rng.randrange(256)
        elif kind == 3:
            blob = rng.randbytes(rng.randrange(120))
        else:
            # Random header field values: the paths a forged blob can take.
            fields = list(H.unpack_from(blob))
            j = rng.randrange(1, 9)
            fields[j] = (
                rng.choice([0.0, 1.0, -1.0, float("nan"), float("inf"), rng.random()])
                if j == 4 else rng.choice([0, 1, 2**rng.randrange(64) - 1, rng.randrange(2**16)])
            )
            try:
                blob = bytearray(H.pack(*fields)) + blob[H.size:]
            except struct.error:
                continue
        if kind in (2, 4):
            blob = resign(bytes(blob))
        try:
            bf = BloomFilter.from_bytes(bytes(blob), backend=backend)
        except ValueError:
            rejected += 1
            continue
        # Accepted: it must be a working filter that serializes back to the same bytes.
        accepted += 1
        assert bf.to_bytes() == bytes(blob)
        bf.add(b"probe")
        assert b"probe" in bf
        bf.contains_many([b"a", "b", b"\\0"])
    print(f"accepted={accepted} rejected={rejected}")
    """
)


@pytest.mark.slow
def test_mutation_fuzz_never_crashes(backend: str) -> None:
    """A few thousand corrupt blobs per backend, in a child process: a segfault fails the test."""
    proc = subprocess.run(
        [sys.executable, "-c", FUZZ_SCRIPT, backend, "4000", "20240611"],
        capture_output=True,
        text=True,
        timeout=240,
        env=os.environ.copy(),
    )
    assert proc.returncode == 0, f"fuzz child died ({proc.returncode}):\n{proc.stderr[-3000:]}"
    assert "rejected=" in proc.stdout


@pytest.mark.parametrize(("capacity", "error_rate"), [(10_000_000, 0.01), (3, 0.999), (7, 1e-12)])
def test_byte_identity_at_size_extremes(capacity: int, error_rate: float) -> None:
    """The C core reduces mod m without dividing (Barrett): check it against Python's % on a
    12 MB filter (m = 95,850,584) and on tiny ones."""
    if not native_usable():
        pytest.skip("needs the C core")
    keys = [f"k{i}" for i in range(2000)]
    native = BloomFilter(capacity, error_rate, seed=12345, backend="native")
    python = BloomFilter(capacity, error_rate, seed=12345, backend="python")
    native.update(keys)
    for key in keys:
        python.add(key)
    assert native.to_bytes() == python.to_bytes()
