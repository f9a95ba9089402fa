"""Bloom filter and hashing benchmarks: native vs pure-Python backend, rbloom as outside reference.

1M keys ``user:{i}``, capacity 1M, error rate 1%. Tiny operations are timed as a loop of 1000
inside the timed function (per-op time = reported time / 1000; the loop costs the same for every
contender); batch operations run 1000-key batches (ns/key = reported time / keys per call). The
``cffi-floor`` rows call an empty 3-argument C function (cc_noop3) through the same cffi module.
Run: ``make bench BENCH_ARGS="-k bloom"`` or
``.venv/bin/python -m pytest benchmarks/test_bench_bloom.py --benchmark-only``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import mmh3
import pytest

from cache_core import BloomFilter, _backend, hash128

rbloom = pytest.importorskip("rbloom")

N = 1_000_000
ERROR_RATE = 0.01
KEYS = [f"user:{i}" for i in range(N)]
LOOP = KEYS[::1000]  # 1000 present keys spread over the filter, for the per-op loops
BATCH = 1000
BATCHES = [KEYS[i : i + BATCH] for i in range(0, 100 * BATCH * 10, BATCH * 10)]  # 100 batches

NATIVE = pytest.mark.skipif(not _backend.NATIVE, reason="C core not built")


@pytest.fixture(scope="module")
def filters() -> dict[str, Any]:
    """The three full filters, built once per module."""
    built: dict[str, Any] = {}
    if _backend.NATIVE:
        built["native"] = BloomFilter(N, ERROR_RATE, backend="native")
        built["native"].update(KEYS)
    built["python"] = BloomFilter(N, ERROR_RATE, backend="python")
    built["python"].update(KEYS)
    built["rbloom"] = rbloom.Bloom(N, ERROR_RATE)
    built["rbloom"].update(KEYS)
    return built


def _per_op(benchmark: Any, fn: Callable[[], object], ops: int, rounds: int = 20) -> None:
    benchmark.extra_info["ops_per_call"] = ops
    benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=2)


# ---------------------------------------------------------------------- single key


@pytest.mark.benchmark(group="bloom-single-in (1000 str lookups per call)")
@pytest.mark.parametrize("impl", [pytest.param("native", marks=NATIVE), "python", "rbloom"])
def test_single_in(benchmark: Any, filters: dict[str, Any], impl: str) -> None:
    bf = filters[impl]

    def run() -> int:
        hits = 0
        for key in LOOP:
            if key in bf:
                hits += 1
        return hits

    assert run() == len(LOOP)
    _per_op(benchmark, run, len(LOOP), rounds=50 if impl != "python" else 10)


@pytest.mark.benchmark(group="bloom-single-add (1000 str adds per call)")
@pytest.mark.parametrize("impl", [pytest.param("native", marks=NATIVE), "python", "rbloom"])
def test_single_add(benchmark: Any, filters: dict[str, Any], impl: str) -> None:
    add = filters[impl].add

    def run() -> None:
        for key in LOOP:  # already present: same bits, same work, filter unchanged
            add(key)

    _per_op(benchmark, run, len(LOOP), rounds=50 if impl != "python" else 10)


@NATIVE
@pytest.mark.benchmark(group="bloom-single-in (1000 str lookups per call)")
def test_single_cffi_floor(benchmark: Any, filters: dict[str, Any]) -> None:
    """An empty 3-argument cffi call per key (state, bytes, length): the floor for `in`/add."""
    noop = _backend.lib.cc_noop3
    state = filters["native"]._state
    encoded = [k.encode() for k in LOOP]

    def run() -> None:
        for data in encoded:
            noop(state, data, len(data))

    _per_op(benchmark, run, len(LOOP), rounds=50)


@pytest.mark.benchmark(group="bloom-single-in (1000 str lookups per call)")
def test_single_loop_floor(benchmark: Any) -> None:
    """The loop itself plus str.encode: what every row above pays besides its own call."""

    def run() -> None:
        for key in LOOP:
            key.encode()

    _per_op(benchmark, run, len(LOOP), rounds=50)


# ---------------------------------------------------------------------- batches


def _batch_rounds(impl: str) -> int:
    return 3 if impl == "python" else 20


@pytest.mark.benchmark(group="bloom-batch-in (100 x 1000-key batches per call)")
@pytest.mark.parametrize("impl", [pytest.param("native", marks=NATIVE), "python", "rbloom"])
def test_batch_contains(benchmark: Any, filters: dict[str, Any], impl: str) -> None:
    bf = filters[impl]
    if impl == "rbloom":  # rbloom has no per-key batch lookup: a list comprehension is its best

        def run() -> None:
            for batch in BATCHES:
                [k in bf for k in batch]

    else:
        contains_many = bf.contains_many

        def run() -> None:
            for batch in BATCHES:
                contains_many(batch)

    assert all(bf.contains_many(BATCHES[0])) if impl != "rbloom" else all(k in bf for k in KEYS[:9])
    _per_op(benchmark, run, len(BATCHES) * BATCH, rounds=_batch_rounds(impl))


@pytest.mark.benchmark(group="bloom-batch-update (100 x 1000-key batches per call)")
@pytest.mark.parametrize("impl", [pytest.param("native", marks=NATIVE), "python", "rbloom"])
def test_batch_update(benchmark: Any, filters: dict[str, Any], impl: str) -> None:
    update = filters[impl].update

    def run() -> None:
        for batch in BATCHES:
            update(batch)

    _per_op(benchmark, run, len(BATCHES) * BATCH, rounds=_batch_rounds(impl))


@pytest.mark.benchmark(group="bloom-build-1M (fresh filter + update of 1M keys)")
@pytest.mark.parametrize("impl", [pytest.param("native", marks=NATIVE), "python", "rbloom"])
def test_build_1m(benchmark: Any, impl: str) -> None:
    def run() -> object:
        if impl == "rbloom":
            bf: Any = rbloom.Bloom(N, ERROR_RATE)
        else:
            bf = BloomFilter(N, ERROR_RATE, backend=impl)
        bf.update(KEYS)
        return bf

    benchmark.extra_info["ops_per_call"] = N
    benchmark.pedantic(run, rounds=1 if impl == "python" else 10, iterations=1)


# ---------------------------------------------------------------------- hashing


@pytest.mark.benchmark(group="hash128 (1000 str keys per call)")
@pytest.mark.parametrize("impl", ["cache_core", "mmh3"])
def test_hash128(benchmark: Any, impl: str) -> None:
    if impl == "mmh3":

        def run() -> None:
            for key in LOOP:
                mmh3.hash128(key, 0, x64arch=True, signed=False)

    else:

        def run() -> None:
            for key in LOOP:
                hash128(key)

    _per_op(benchmark, run, len(LOOP), rounds=50)
