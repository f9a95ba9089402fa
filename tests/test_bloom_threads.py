"""Concurrent adds into one filter lose no keys (cffi drops the GIL; C uses atomic OR)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from cache_core import BloomFilter
from tests._bloom_helpers import BACKENDS

THREADS = 8
PER_THREAD = {"native": 50_000, "python": 10_000}  # the GIL makes the Python backend ~serial


@pytest.fixture(params=BACKENDS, scope="module")
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _run_threads(work: Callable[[int], None]) -> None:
    barrier = threading.Barrier(THREADS)
    errors: list[BaseException] = []

    def target(t: int) -> None:
        try:
            barrier.wait()
            work(t)
        except BaseException as exc:  # surface failures from worker threads
            errors.append(exc)

    threads = [threading.Thread(target=target, args=(t,)) for t in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors


def _keys(t: int, n: int) -> list[str]:
    return [f"t{t}:user:{i}" for i in range(n)]


@pytest.mark.parametrize("mode", ["add", "update", "mixed"])
def test_concurrent_adds_lose_nothing(backend: str, mode: str) -> None:
    if backend == "python" and mode == "add":
        pytest.skip("the GIL serializes the Python backend; update/mixed cover it")
    # 400k keys over 3.8M bits (480 KB): the threads keep writing into the same cache lines.
    # Checked: with the C core's atomic OR replaced by a plain read-modify-write, this test failed
    # in 3 runs out of 3 on a 2-vCPU machine (lost bits show up in the exact comparison below).
    n = PER_THREAD[backend]
    bf = BloomFilter(THREADS * n, 0.01, backend=backend)
    keys = [_keys(t, n) for t in range(THREADS)]

    def work(t: int) -> None:
        mine = keys[t]
        if mode == "add" or (mode == "mixed" and t % 2):
            add = bf.add
            for key in mine:
                add(key)
        else:
            for start in range(0, len(mine), 1000):  # many batch calls interleave
                bf.update(mine[start : start + 1000])

    _run_threads(work)
    missing = sum(not hit for t in range(THREADS) for hit in bf.contains_many(keys[t]))
    assert missing == 0, f"{missing} false negatives after concurrent adds"
    assert abs(bf.approx_count - THREADS * n) < 0.03 * THREADS * n
    serial = BloomFilter(THREADS * n, 0.01, backend=backend)
    for t in range(THREADS):
        serial.update(keys[t])
    assert bf == serial  # not one bit lost or extra


def test_concurrent_readers_and_writers(backend: str) -> None:
    bf = BloomFilter(100_000, 0.01, backend=backend)
    seeded = [f"seed:{i}" for i in range(20_000)]
    bf.update(seeded)

    def work(t: int) -> None:
        if t % 2:
            bf.update(f"w{t}:{i}" for i in range(10_000))
        else:
            for _ in range(5):
                assert all(bf.contains_many(seeded))

    _run_threads(work)
